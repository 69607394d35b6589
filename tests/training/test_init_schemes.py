"""Fresh-model initialisation: DeepMind's variance scaling, and the optical-flow task's recipe."""

import pytest
import torch

from perceiver_core import PerceiverForOpticalFlow, presets
from pipelines.stages.flow_tiling import flow_model_inputs
from pipelines.training.config import TrainConfig
from pipelines.training.init_schemes import apply_init, variance_scaling_
from pipelines.training.models import build_model, resolve_model
from pipelines.training.tasks import get_task
from pipelines.training.tasks.flow import difference_filters_


def _flow_model(seed=0):
    torch.manual_seed(seed)
    return PerceiverForOpticalFlow(presets.config("optical-flow", tiny=True, d_latents=64, train_size=(16, 16)))


@torch.no_grad()
def test_variance_scaling_draws_std_one_over_sqrt_fan_in_and_zero_bias():
    model = variance_scaling_(_flow_model())
    attn = model.perceiver.encoder.cross_attn.attn
    for linear in (attn.to_k, attn.to_q, model.perceiver.encoder.self_attn[0].mlp.fc1):
        w = linear.weight
        std = linear.in_features ** -0.5
        assert float(w.std()) == pytest.approx(std * 0.88, rel=0.1)  # truncated at 2 std: 0.88 of std
        assert float(w.abs().max()) <= 2 * std + 1e-6
        assert torch.count_nonzero(linear.bias) == 0
    # latents keep their own init (std 0.02)
    assert float(model.perceiver.encoder.latents.std()) == pytest.approx(0.02, rel=0.3)


def test_transformers_scheme_leaves_the_model_alone_and_unknown_schemes_fail():
    a, b = _flow_model(), _flow_model()
    apply_init(b, "transformers")
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    with pytest.raises(ValueError, match="unknown init scheme"):
        apply_init(a, "xavier")


@torch.no_grad()
def test_optical_flow_fresh_models_get_the_flow_recipe_and_checkpoints_are_not_reinitialised(tmp_path):
    config = TrainConfig(task="optical-flow", tiny=True, model_config={"train_size": [16, 16]})
    task = get_task("optical-flow")
    head, model_config = resolve_model(config, task)
    model = build_model(config, head, model_config, task)
    proj = model.perceiver.input_preprocessor.patch_projection.weight
    # variance scaling (std 1/sqrt(54), truncated) times the input gain 10 ...
    assert float(proj[32:].std()) == pytest.approx(10 * 0.88 / 54 ** 0.5, rel=0.15)
    # ... and the first 32 units are frame2 - frame1 filters, 3x larger
    assert torch.equal(proj[:32, :27], -proj[:32, 27:])
    assert float(proj[:32].std()) == pytest.approx(30 * 0.88 / 54 ** 0.5, rel=0.15)
    to_k = model.perceiver.decoder.decoder.cross_attn.attn.to_k
    assert float(to_k.weight.std()) == pytest.approx(0.88 * to_k.in_features ** -0.5, rel=0.15)

    plain = TrainConfig(task="optical-flow", tiny=True, model_config={"train_size": [16, 16]},
                        init_scheme="transformers", flow={"input_gain": 1.0, "difference_units": 0})
    model2 = build_model(plain, head, model_config, task)
    assert float(model2.perceiver.input_preprocessor.patch_projection.weight.std()) == pytest.approx(0.02, rel=0.2)

    model.save_pretrained(tmp_path)
    tuned = TrainConfig(task="optical-flow", init_from=str(tmp_path))
    loaded = build_model(tuned, head, model_config, task)
    assert torch.equal(loaded.perceiver.input_preprocessor.patch_projection.weight, proj)


@torch.no_grad()
def test_difference_units_see_only_what_moved():
    model = _flow_model()
    proj = model.perceiver.input_preprocessor.patch_projection
    proj.bias.zero_()
    difference_filters_(proj.weight, 16, 2.0)
    g = torch.Generator().manual_seed(0)
    frame = torch.rand(1, 3, 16, 16, generator=g) * 255
    static = model.perceiver.input_preprocessor(flow_model_inputs(frame, frame)).inputs
    moved = model.perceiver.input_preprocessor(flow_model_inputs(frame, frame.roll(1, dims=-1))).inputs
    assert float(static[..., :16].abs().max()) < 1e-5  # no response to a static pair
    image_response = float(static[..., 16:64].abs().mean())  # the other units see the image itself
    assert image_response > 0.01
    assert float(moved[..., :16].abs().mean()) > 0.5 * image_response
    with pytest.raises(ValueError, match="difference units"):
        difference_filters_(proj.weight, 65, 1.0)
