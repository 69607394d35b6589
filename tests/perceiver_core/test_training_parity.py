"""Training parity (issue #16): one fp32 training step of every head gives transformers' gradients.

Each head's tiny seeded transformers model is saved with its own ``save_pretrained`` and loaded into ours through
our ``from_pretrained``; both run forward + loss + backward in train mode with dropout 0 on the same batch.
Heads that transformers trains use each side's own loss (``labels=``); optical flow and multimodal autoencoding
compute no loss in transformers, so the same loss function (``endpoint_error`` / ``autoencoding_loss``) is
applied to both outputs. Every parameter's gradient is compared through the converter's name map.

The fast training routes (projections re-associated around the attention kernel, the oneDNN kernels) and
activation checkpointing must give the reference route's gradients too: they change the order of the
arithmetic, never the maths.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
import torch
from _hf_helpers import hf_config, sample_inputs, transformers

from perceiver_core import presets
from perceiver_core.attention import Attention
from perceiver_core.convert import to_transformers_key
from perceiver_core.heads import HEADS
from perceiver_core.kernels import kernel_options
from perceiver_core.kernels.attention import record_attention_calls
from perceiver_core.losses import autoencoding_loss, endpoint_error

PARITY_TOL = 1e-4  # ours against transformers: ||g_ours - g_hf|| / ||g_hf|| per parameter
ROUTE_TOL = 1e-5  # our fast routes against our reference route
NEGLIGIBLE = 1e-6  # gradients below this share of the largest gradient norm are zero up to rounding

PRESET_OF = {"PerceiverForMaskedLM": "language", "PerceiverForSequenceClassification": "language",
             "PerceiverForImageClassificationLearned": "vision-learned",
             "PerceiverForImageClassificationFourier": "vision-fourier",
             "PerceiverForImageClassificationConvProcessing": "vision-conv",
             "PerceiverForOpticalFlow": "optical-flow", "PerceiverForMultimodalAutoencoding": "multimodal"}
# heads whose tiny batch takes a re-associated cross-attention (checked, so the route tests cannot pass vacuously):
# all but the MLM, whose cross-attentions have two heads
REASSOCIATED = set(PRESET_OF) - {"PerceiverForMaskedLM"}
SMALLER = {"PerceiverForImageClassificationLearned": {"image_size": 16}}  # keeps the file fast (fp64 steps)
REFERENCE_ROUTE = {"reassociate": False, "onednn_linear": False, "onednn_attention": False}


@dataclass
class Step:
    """One head's models and batch: ``loss(model)`` runs the forward pass on ``kwargs`` and returns the loss."""

    name: str
    ours: torch.nn.Module
    hf: torch.nn.Module
    kwargs: dict
    loss_of: Callable  # model output -> scalar loss

    def loss(self, model: torch.nn.Module, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return self.loss_of(model(**_cast(self.kwargs, dtype)))


def _cast(x, dtype: torch.dtype):
    if isinstance(x, dict):
        return {k: _cast(v, dtype) for k, v in x.items()}
    return x.to(dtype) if isinstance(x, torch.Tensor) and x.is_floating_point() else x


def _batch(name: str, cfg, ours) -> tuple[dict, Callable]:
    """Model keywords and output -> loss; labels go in the keywords where transformers computes the loss."""
    kwargs = sample_inputs(PRESET_OF[name], cfg)
    g = torch.Generator().manual_seed(7)
    if name == "PerceiverForMaskedLM":
        ids = kwargs["inputs"]
        labels = torch.full((ids.shape[0], cfg.max_position_embeddings), -100)
        labels[:, 2:20] = ids[:, 2:20]  # transformers wants one label per output position
        labels[0, 17:20] = -100  # the padded positions of the first example
        return {**kwargs, "labels": labels}, lambda out: out.loss
    if name == "PerceiverForOpticalFlow":
        h, w = cfg.train_size
        target = torch.randn(kwargs["inputs"].shape[0], h, w, 2, generator=g)
        return kwargs, lambda out: endpoint_error(out.logits, target)
    if name == "PerceiverForMultimodalAutoencoding":
        video, audio = kwargs["inputs"]["image"], kwargs["inputs"]["audio"]
        labels = {"image": torch.rand(video.shape, generator=g), "audio": torch.rand(audio.shape, generator=g),
                  "label": torch.randint(0, cfg.num_labels, (video.shape[0],), generator=g)}
        targets = ours._targets(labels, kwargs["subsampled_output_points"])
        return kwargs, lambda out: autoencoding_loss(out.logits, targets, ours.loss_weights).total
    labels = torch.randint(0, cfg.num_labels, (kwargs["inputs"].shape[0],), generator=g)
    return {**kwargs, "labels": labels}, lambda out: out.loss


@pytest.fixture(scope="module", params=list(PRESET_OF))
def step(request, tmp_path_factory) -> Step:
    name = request.param
    cfg = presets.config(PRESET_OF[name], tiny=True, attention_probs_dropout_prob=0.0, **SMALLER.get(name, {}))
    cfg.architectures = [name]
    torch.manual_seed(0)
    hf = getattr(transformers, name)(hf_config(cfg))
    directory = tmp_path_factory.mktemp(name)
    hf.save_pretrained(directory)
    ours = HEADS[name].from_pretrained(directory)
    kwargs, loss_of = _batch(name, cfg, ours)
    return Step(name, ours.train(), hf.train(), kwargs, loss_of)


def gradients(model: torch.nn.Module, loss: Callable[[torch.nn.Module], torch.Tensor]) -> dict[str, torch.Tensor]:
    """Every parameter's gradient after one backward pass (zeros where none reached it), by parameter name;
    tied parameters appear under each of their names."""
    model.zero_grad(set_to_none=True)
    loss(model).backward()
    return {n: (p.grad.clone() if p.grad is not None else torch.zeros_like(p))
            for n, p in model.named_parameters(remove_duplicate=False)}


def assert_same_gradients(got: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], tol: float,
                          total_tol: float | None = None) -> None:
    """Per parameter ||got - expected|| <= tol ||expected||; a gradient that is zero up to rounding (below
    NEGLIGIBLE x the largest norm, e.g. a softmax's key bias) must be as small within tol x the largest norm.
    ``total_tol``: the same over all parameters together (the whole gradient vector)."""
    assert got.keys() == expected.keys()
    scale = max(g.norm().item() for g in expected.values())
    assert scale > 0
    errors, diff_sq, ref_sq = {}, 0.0, 0.0
    for name, ref in expected.items():
        diff, ref_norm = (got[name] - ref).norm().item(), ref.norm().item()
        errors[name] = diff / ref_norm if ref_norm >= NEGLIGIBLE * scale else diff / scale
        diff_sq, ref_sq = diff_sq + diff ** 2, ref_sq + ref_norm ** 2
    worst = max(errors, key=errors.get)
    assert errors[worst] <= tol, f"{worst}: relative error {errors[worst]:.2e} > {tol:.0e}"
    if total_tol is not None:
        total = (diff_sq / ref_sq) ** 0.5
        assert total <= total_tol, f"all parameters: relative error {total:.2e} > {total_tol:.0e}"


def test_gradients_equal_transformers(step):
    hf_grads = gradients(step.hf, step.loss)
    ours = gradients(step.ours, step.loss)
    mapped = {to_transformers_key(n, step.name): g for n, g in ours.items()}
    assert mapped.keys() == hf_grads.keys(), mapped.keys() ^ hf_grads.keys()  # every parameter, both ways
    assert_same_gradients(mapped, hf_grads, PARITY_TOL)


def _routes(model: torch.nn.Module, loss: Callable) -> tuple[dict, dict, list[str]]:
    """(gradients on the default routes, on the reference route, the attention calls of the default routes).
    Both passes start from one seed, so that attention dropout draws the same mask on either route."""
    torch.manual_seed(11)
    with record_attention_calls() as calls:
        fast = gradients(model, loss)
    torch.manual_seed(11)
    with kernel_options(**REFERENCE_ROUTE), record_attention_calls() as reference_calls:
        reference = gradients(model, loss)
    assert reference_calls and all(c.startswith("standard:") for c in reference_calls)
    return fast, reference, calls


@contextlib.contextmanager
def attention_dropout(model: torch.nn.Module, p: float) -> Iterator[None]:
    """Every attention module of ``model`` with dropout ``p`` on its probabilities, inside the block."""
    modules = [m for m in model.modules() if isinstance(m, Attention)]
    before = [m.dropout for m in modules]
    for m in modules:
        m.dropout = p
    try:
        yield
    finally:
        for m, value in zip(modules, before):
            m.dropout = value


@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_fast_routes_give_the_reference_gradients(step, dropout):
    """fp32: the kernels' own rounding only (per parameter as the parity bound, 1e-5 over the whole gradient);
    fp64, where that rounding vanishes, shows the re-associated maths is the same maths (per parameter 1e-6:
    the query-bias term of a re-associated decoder is computed in fp32 by design). Under attention dropout the
    re-associated orders draw the standard order's mask, so the gradients must agree just as closely."""
    with attention_dropout(step.ours, dropout):
        fast, reference, calls = _routes(step.ours, step.loss)
        assert_same_gradients(fast, reference, PARITY_TOL, total_tol=ROUTE_TOL)
        assert any(not c.startswith("standard:") for c in calls) == (step.name in REASSOCIATED), calls
        wide = copy.deepcopy(step.ours).double()
        fast64, reference64, _ = _routes(wide, lambda model: step.loss(model, torch.float64))
        assert_same_gradients(fast64, reference64, 1e-6)
        assert all(g.dtype == torch.float64 for g in fast64.values())
        if dropout:  # the mask matters: another draw gives other gradients
            torch.manual_seed(12)
            with pytest.raises(AssertionError):
                assert_same_gradients(gradients(step.ours, step.loss), reference, PARITY_TOL)


def test_checkpointing_gives_the_same_gradients(step):
    recomputed = []
    hook = step.ours.perceiver.encoder.cross_attn.register_forward_pre_hook(lambda *_: recomputed.append(1))
    try:
        plain = gradients(step.ours, step.loss)
        calls_plain = len(recomputed)
        step.ours.gradient_checkpointing_enable()
        checkpointed = gradients(step.ours, step.loss)
    finally:
        step.ours.gradient_checkpointing_disable()
        hook.remove()
    assert len(recomputed) == 3 * calls_plain  # checkpointed: the forward pass, then again in the backward pass
    assert_same_gradients(checkpointed, plain, ROUTE_TOL, total_tol=ROUTE_TOL)
