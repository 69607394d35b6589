"""The eight model classes as a drop-in for transformers': forward return conventions, output records,
``from_pretrained`` keywords and the common ``PreTrainedModel`` methods, checked by calling transformers and
ours with the same arguments on the same tiny seeded checkpoints.

Deliberate differences (README "Swapping the import"): ``attn_implementation="sdpa"`` is accepted (our
attention is always fused); with ``return_dict=False`` and ``output_attentions=True`` the decoder's
cross-attention stays inside ``cross_attentions`` (transformers appends it as an extra tuple element);
``device_map`` takes one device without accelerate; keywords that are neither loading options nor config
attributes fail before anything is read.
"""

from __future__ import annotations

import copy
import pickle
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from _hf_helpers import hf_config, max_abs_diff, sample_inputs, transformers
from _hub_cache import add_snapshot

import perceiver_core
from perceiver_core import CheckpointMismatchError, PerceiverModel, load_pretrained, presets
from perceiver_core.heads import HEADS

TOL = 1e-4
PRESET_OF = {p.head.__name__: name for name, p in presets.PRESETS.items()}
PRESET_OF |= {"PerceiverModel": "language", "PerceiverForSequenceClassification": "language"}
CLASS_NAMES = list(HEADS)
TRANSFORMERS_TRAINS = {"PerceiverForMaskedLM", "PerceiverForSequenceClassification",
                       "PerceiverForImageClassificationLearned", "PerceiverForImageClassificationFourier",
                       "PerceiverForImageClassificationConvProcessing"}  # the others raise on labels there


@dataclass
class Case:
    name: str  # class name
    ours: type
    theirs: type
    config: perceiver_core.PerceiverConfig
    directory: Path  # transformers' save_pretrained of a seeded model
    loaded: tuple[torch.nn.Module, torch.nn.Module] | None = None

    def inputs(self, seed: int = 1) -> dict:
        if self.name == "PerceiverModel":  # no preprocessor: inputs are already (B, M, d_model)
            return {"inputs": torch.randn(1, 6, self.config.d_model, generator=torch.Generator().manual_seed(seed))}
        return sample_inputs(PRESET_OF[self.name], self.config, batch=1, seed=seed)

    def labels(self):
        if self.name not in TRANSFORMERS_TRAINS:
            return None
        if self.name == "PerceiverForMaskedLM":
            shape = (1, self.config.max_position_embeddings)  # one label per output position
            return torch.randint(0, self.config.vocab_size, shape, generator=torch.Generator().manual_seed(2))
        return torch.tensor([1])

    def load_both(self, **kwargs):
        """(ours, transformers') loaded from the checkpoint; without keywords copies of one load."""
        if kwargs:
            return (self.ours.from_pretrained(self.directory, **kwargs).eval(),
                    self.theirs.from_pretrained(self.directory, **kwargs).eval())
        if self.loaded is None:
            self.loaded = self.load_both(output_loading_info=False)
        return copy.deepcopy(self.loaded[0]), copy.deepcopy(self.loaded[1])


@pytest.fixture(scope="module", params=CLASS_NAMES)
def case(request, tmp_path_factory) -> Case:
    name = request.param
    config = presets.config(PRESET_OF[name], tiny=True, attention_probs_dropout_prob=0.0)
    config.architectures = [name]
    theirs = getattr(transformers, name)
    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp(name)
    theirs(hf_config(config)).save_pretrained(directory)
    return Case(name, HEADS[name], theirs, config, directory)


def _close(a, b) -> None:
    """Same structure (tuples, dicts, tensors) and values within TOL."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.shape == b.shape and a.dtype == b.dtype
        assert (a.float() - b.float()).abs().max().item() <= TOL
        return
    assert type(a) is type(b) or (isinstance(a, dict) and isinstance(b, dict)), (type(a), type(b))
    if isinstance(a, dict):
        assert list(a) == list(b)
        for key in a:
            _close(a[key], b[key])
    else:
        assert len(a) == len(b), (len(a), len(b))
        for x, y in zip(a, b):
            _close(x, y)


def _no_version(data: dict) -> dict:
    return {k: v for k, v in data.items() if k != "transformers_version"}


# ------------------------------------------------------------------------------------------- forward
def test_return_dict_false_gives_transformers_tuple(case):
    ours, theirs = case.load_both()
    variants = [{}, {"output_hidden_states": True}]
    if case.labels() is not None:
        variants.append({"labels": case.labels()})
    with torch.no_grad():
        for extra in variants:
            kwargs = {**case.inputs(), **extra}
            got, expected = ours(**kwargs, return_dict=False), theirs(**kwargs, return_dict=False)
            assert type(got) is tuple
            _close(got, expected)
            _close(ours(**kwargs).to_tuple(), expected)
    if case.labels() is not None:  # the unpacking fine-tuning scripts do
        loss, logits = ours(**case.inputs(), labels=case.labels(), return_dict=False)
        assert loss.ndim == 0 and logits.shape[0] == 1


def test_config_flags_are_used_when_the_call_keyword_is_none(case):
    ours, theirs = case.load_both()
    for model in (ours, theirs):
        model.config.output_hidden_states = True
        model.config.return_dict = False
    with torch.no_grad():
        got, expected = ours(**case.inputs()), theirs(**case.inputs())
        _close(got, expected)
        assert len(got) > 1  # hidden states are in
        for model in (ours, theirs):
            model.config.return_dict = True
            model.config.output_hidden_states = False
            model.config.output_attentions = True
        got, expected = ours(**case.inputs()), theirs(**case.inputs())
        _close(got.attentions, expected.attentions)
        _close(got.cross_attentions, expected.cross_attentions)
        assert got.hidden_states is None and expected.hidden_states is None
        got = ours(**case.inputs(), output_attentions=False)  # the keyword beats the config
        assert got.attentions is None


def test_attentions_with_return_dict_false_keep_the_record_layout(case):
    """Documented difference: transformers' tuple gets the decoder's cross-attention as one more element."""
    ours, theirs = case.load_both()
    with torch.no_grad():
        got = ours(**case.inputs(), output_attentions=True, return_dict=False)
        expected = theirs(**case.inputs(), output_attentions=True, return_dict=False)
        record = theirs(**case.inputs(), output_attentions=True)
    _close(got, record.to_tuple())
    if case.name == "PerceiverModel":  # no decoder: nothing appended
        _close(got, expected)
    else:
        assert len(expected) == len(got) + 1
        _close(expected[-1], got[-1][-1])


def test_outputs_are_mappings_like_model_output(case):
    ours, theirs = case.load_both()
    kwargs = {**case.inputs(), "output_hidden_states": True}
    if case.labels() is not None:
        kwargs["labels"] = case.labels()
    with torch.no_grad():
        got, expected = ours(**kwargs), theirs(**kwargs)
    assert isinstance(got, dict) and isinstance(expected, dict)
    assert list(got) == list(expected) == list(got.keys()) == list(expected.keys())
    assert [k for k, _ in got.items()] == list(expected)
    assert len(got) == len(expected) == len(got.values()) == len(got.to_tuple())
    assert all(k in got for k in expected) and "attentions" not in got and "attentions" not in expected
    _close(got[0], expected[0])
    first = next(iter(expected))
    _close(got[first], expected[first])
    _close(got[1:], expected[1:])
    for record in (got, expected):
        with pytest.raises(KeyError):
            record["attentions"]
    if case.name != "PerceiverModel":  # our latents: an attribute, never a key
        assert "last_hidden_state" not in got and got.last_hidden_state.shape[1] == case.config.num_latents
    back = pickle.loads(pickle.dumps(got))
    assert list(back) == list(got) and type(back) is type(got)
    got.logits = None  # fields and keys stay in step
    assert "logits" not in got and got.logits is None


# ------------------------------------------------------------------------------------------- from_pretrained
def test_output_loading_info(case):
    model, info = case.ours.from_pretrained(case.directory, output_loading_info=True)
    _, expected = case.theirs.from_pretrained(case.directory, output_loading_info=True)
    assert isinstance(model, case.ours)
    assert info == expected == {"missing_keys": set(), "unexpected_keys": set(), "mismatched_keys": set(),
                                "error_msgs": []}


@pytest.mark.parametrize("target", ["PerceiverForSequenceClassification", "PerceiverModel"])
def test_cross_architecture_loading_reports_the_same_keys(tmp_path, target):
    config = presets.config("language", tiny=True)
    torch.manual_seed(0)
    mlm = transformers.PerceiverForMaskedLM(hf_config(config)).eval()
    mlm.save_pretrained(tmp_path)
    ours, info = HEADS[target].from_pretrained(tmp_path, output_loading_info=True)
    theirs, expected = getattr(transformers, target).from_pretrained(tmp_path, output_loading_info=True)
    assert info == expected and (info["missing_keys"] or info["unexpected_keys"])
    assert torch.equal(ours.get_input_embeddings(), theirs.get_input_embeddings())  # the latents loaded


def test_new_num_labels_with_ignore_mismatched_sizes(case):
    ours, info = case.ours.from_pretrained(case.directory, num_labels=5, ignore_mismatched_sizes=True,
                                           output_loading_info=True)
    theirs, expected = case.theirs.from_pretrained(case.directory, num_labels=5, ignore_mismatched_sizes=True,
                                                   output_loading_info=True)
    assert info == expected
    assert ours.config.id2label == theirs.config.id2label and ours.config.num_labels == 5
    assert torch.equal(ours.get_input_embeddings(), theirs.get_input_embeddings())
    if info["mismatched_keys"]:  # a classifier: the re-initialised head has the new size
        with torch.no_grad():
            logits = ours(**{k: v for k, v in case.inputs().items() if k != "subsampled_output_points"}).logits
        width = logits["label"].shape[-1] if isinstance(logits, dict) else logits.shape[-1]
        assert width == 5
        for load in (case.ours.from_pretrained, case.theirs.from_pretrained):
            with pytest.raises(RuntimeError):  # CheckpointMismatchError is a RuntimeError, as transformers'
                load(case.directory, num_labels=5)


def test_dtype_keywords(case):
    for kwargs in ({"dtype": torch.bfloat16}, {"torch_dtype": "float16"}, {"dtype": "auto"}):
        ours, theirs = case.load_both(**kwargs)
        assert ours.dtype == theirs.dtype and ours.config.dtype == theirs.config.dtype
    ours = case.ours.from_pretrained(case.directory, dtype=torch.bfloat16)
    with torch.no_grad():
        out = ours(**_cast(case.inputs(), torch.bfloat16), return_dict=False)[0]
    first = next(iter(out.values())) if isinstance(out, dict) else out
    assert first.dtype == torch.bfloat16


def test_dtype_auto_follows_a_bf16_checkpoint(tmp_path):
    config = presets.config("vision-fourier", tiny=True)
    torch.manual_seed(0)
    transformers.PerceiverForImageClassificationFourier(hf_config(config)).to(torch.bfloat16).save_pretrained(tmp_path)
    ours = perceiver_core.PerceiverForImageClassificationFourier.from_pretrained(tmp_path)
    theirs = transformers.PerceiverForImageClassificationFourier.from_pretrained(tmp_path)
    assert ours.dtype == theirs.dtype == torch.bfloat16  # transformers 5's default dtype is "auto"
    forced = perceiver_core.PerceiverForImageClassificationFourier.from_pretrained(tmp_path, dtype=torch.float32)
    assert forced.dtype == forced.config.dtype == torch.float32


def _cast(tree, dtype):
    if isinstance(tree, dict):
        return {k: _cast(v, dtype) for k, v in tree.items()}
    if isinstance(tree, torch.Tensor) and tree.is_floating_point():
        return tree.to(dtype)
    return tree


def test_device_map_takes_one_device(case):
    cls = case.ours
    for device_map in ("cpu", torch.device("cpu"), {"": "cpu"}):
        model = cls.from_pretrained(case.directory, device_map=device_map)
        assert model.device == torch.device("cpu") and model.hf_device_map == {"": torch.device("cpu")}
    for device_map in ("auto", "balanced", {"perceiver.encoder": "cpu", "perceiver.decoder": "cpu"}, "nowhere"):
        with pytest.raises(ValueError, match="device_map"):
            cls.from_pretrained(case.directory, device_map=device_map)


def test_attn_implementation(case):
    ours, theirs = case.load_both(attn_implementation="eager")
    assert ours.config._attn_implementation == theirs.config._attn_implementation == "eager"
    assert case.ours.from_pretrained(case.directory, attn_implementation="sdpa").config._attn_implementation == "sdpa"
    for bad in ("flash_attention_2", "nope"):
        for cls in (case.ours, case.theirs):
            with pytest.raises(ValueError, match="attn|[Aa]ttention"):
                cls.from_pretrained(case.directory, attn_implementation=bad)


def test_keywords_go_to_the_config_or_fail_by_name(case):
    overrides = {"output_attentions": True, "output_hidden_states": True, "return_dict": False,
                 "num_labels": case.config.num_labels, "_label_trainable_num_channels":
                 case.config.label_trainable_num_channels}
    ours, theirs = case.load_both(**overrides)
    assert _no_version(ours.config.to_dict()) == _no_version(theirs.config.to_dict())
    for cls in (case.ours, case.theirs):
        with pytest.raises(TypeError, match="bogus_keyword"):
            cls.from_pretrained(case.directory, bogus_keyword=1)
    for bad in ({"quantization_config": {"bits": 4}}, {"tp_plan": "auto"}, {"weights_only": False},
                {"from_tf": True}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            case.ours.from_pretrained(case.directory, **bad)


def test_config_object_is_copied_and_extra_config_keys_count(tmp_path):
    config = presets.config("vision-fourier", tiny=True, custom_key=1)
    torch.manual_seed(0)
    transformers.PerceiverForImageClassificationFourier(hf_config(config)).save_pretrained(tmp_path)
    ours, theirs = (cls.from_pretrained(tmp_path, custom_key=2) for cls in
                    (perceiver_core.PerceiverForImageClassificationFourier,
                     transformers.PerceiverForImageClassificationFourier))
    assert ours.config.custom_key == theirs.config.custom_key == 2
    given = perceiver_core.PerceiverConfig.from_pretrained(tmp_path)
    model = perceiver_core.PerceiverForImageClassificationFourier.from_pretrained(tmp_path, config=given)
    assert model.config is not given and model.config.to_dict() == given.to_dict() | {"_name_or_path": str(tmp_path)}
    by_path = perceiver_core.PerceiverForImageClassificationFourier.from_pretrained(tmp_path, config=str(tmp_path))
    assert by_path.config.num_labels == given.num_labels
    theirs = transformers.PerceiverConfig.from_pretrained(tmp_path, num_labels=3)  # a transformers config object
    mixed = perceiver_core.PerceiverForImageClassificationFourier.from_pretrained(
        tmp_path, config=theirs, ignore_mismatched_sizes=True)
    assert mixed.config.id2label == theirs.id2label and isinstance(mixed.config, perceiver_core.PerceiverConfig)


def test_hub_keywords_on_a_local_folder(case, tmp_path):
    sub = tmp_path / "repo"
    case.theirs.from_pretrained(case.directory).save_pretrained(sub / "model")
    kwargs = {"subfolder": "model", "revision": "main", "local_files_only": True, "token": None,
              "force_download": False, "cache_dir": tmp_path / "cache", "use_safetensors": True}
    ours, theirs = (cls.from_pretrained(sub, **kwargs).eval() for cls in (case.ours, case.theirs))
    with torch.no_grad():
        _close(ours(**case.inputs(), return_dict=False), theirs(**case.inputs(), return_dict=False))


# ------------------------------------------------------------------------------------------- model methods
def test_model_methods(case):
    ours, theirs = case.load_both()
    for kwargs in ({}, {"only_trainable": True}, {"exclude_embeddings": True}):
        assert ours.num_parameters(**kwargs) == theirs.num_parameters(**kwargs), kwargs
    for model in (ours, theirs):
        model.get_input_embeddings().requires_grad_(False)
    assert ours.num_parameters(only_trainable=True) == theirs.num_parameters(only_trainable=True)
    embeddings = ours.get_input_embeddings()
    assert isinstance(embeddings, torch.nn.Parameter) and torch.equal(embeddings, theirs.get_input_embeddings())
    assert ours.get_output_embeddings() is None and theirs.get_output_embeddings() is None
    new = torch.nn.Parameter(torch.zeros_like(embeddings))
    ours.set_input_embeddings(new)
    theirs.set_input_embeddings(torch.nn.Parameter(torch.zeros_like(embeddings)))
    assert ours.get_input_embeddings() is new
    with torch.no_grad():
        _close(ours(**case.inputs(), return_dict=False), theirs(**case.inputs(), return_dict=False))
    assert ours.main_input_name == theirs.main_input_name and ours.base_model_prefix == theirs.base_model_prefix


def test_to_dtype_round_trips(case):
    ours, theirs = case.load_both()
    with torch.no_grad():
        before = ours(**case.inputs(), return_dict=False)
        back = ours.to(torch.float64).to(torch.float32)
        assert back is ours and ours.dtype == torch.float32
        _close(ours(**case.inputs(), return_dict=False), before)
        ours.to(torch.bfloat16)
        theirs.to(torch.bfloat16)
        assert ours.dtype == theirs.dtype == torch.bfloat16
        assert {p.dtype for p in ours.parameters()} == {p.dtype for p in theirs.parameters()}
        ours.to(torch.float32)
        assert max_abs_diff(ours(**case.inputs(), return_dict=False)[0], before[0]) < 0.1  # bf16 rounding


def test_save_pretrained_both_formats_load_in_transformers(tmp_path):
    ours = perceiver_core.PerceiverForSequenceClassification(presets.config("language", tiny=True)).eval()
    x = sample_inputs("language", ours.config)
    for safe in (True, False):
        folder = tmp_path / str(safe)
        ours.save_pretrained(folder, safe_serialization=safe)
        theirs = transformers.PerceiverForSequenceClassification.from_pretrained(folder).eval()
        with torch.no_grad():
            _close(theirs(**x, return_dict=False), ours(**x, return_dict=False))


# ------------------------------------------------------------------------------------------- fine-tuning
def _fine_tune(lib, start: Path, out: Path) -> tuple[list[float], torch.Tensor]:
    """A fine-tuning script written for transformers; ``lib`` is ``transformers`` or ``perceiver_core``."""
    tokenizer = lib.PerceiverTokenizer()
    model = lib.PerceiverForSequenceClassification.from_pretrained(start)
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    texts = ["a short one", "a somewhat longer sentence", "mid size", "x"]
    labels = torch.tensor([0, 1, 1, 0])
    features = [tokenizer(t, truncation=True, max_length=32) for t in texts]
    batch = tokenizer.pad(features, padding=True, return_tensors="pt")  # DataCollatorWithPadding's call
    losses = []
    for _ in range(3):
        loss, logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels,
                             return_dict=False)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    model.save_pretrained(out)
    relabelled = lib.PerceiverForSequenceClassification.from_pretrained(out, num_labels=3,
                                                                      ignore_mismatched_sizes=True).eval()
    with torch.no_grad():
        new_logits = relabelled(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert relabelled.config.num_labels == 3 and new_logits.shape == (4, 3)
    return losses, relabelled.get_input_embeddings().detach()


def test_fine_tuning_script_runs_unchanged_with_the_import_swapped(tmp_path):
    config = presets.config("language", tiny=True, attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    transformers.PerceiverForSequenceClassification(hf_config(config)).save_pretrained(tmp_path / "start")
    theirs = _fine_tune(transformers, tmp_path / "start", tmp_path / "theirs")
    ours = _fine_tune(perceiver_core, tmp_path / "start", tmp_path / "ours")
    assert ours[0] == pytest.approx(theirs[0], abs=1e-5) and ours[0][-1] < ours[0][0]
    assert max_abs_diff(ours[1], theirs[1]) < 1e-5  # the same trained encoder was saved and reloaded


# ------------------------------------------------------------------------------------------- hub ids
@pytest.fixture
def hub(tmp_path, monkeypatch):
    """An offline Hugging Face cache with owner/vision at two commits of different weights."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    config = presets.config("vision-fourier", tiny=True)
    for seed in (0, 1):
        torch.manual_seed(seed)
        transformers.PerceiverForImageClassificationFourier(hf_config(config)).save_pretrained(tmp_path / f"w{seed}")
    old = add_snapshot(tmp_path / "cache", "owner/vision", tmp_path / "w0")
    add_snapshot(tmp_path / "cache", "owner/vision", tmp_path / "w1")
    return tmp_path / "cache", old, tmp_path


def test_models_load_by_hub_id_from_the_cache(hub):
    cache, old, tmp_path = hub
    x = sample_inputs("vision-fourier", presets.config("vision-fourier", tiny=True))
    cls, theirs_cls = perceiver_core.PerceiverForImageClassificationFourier, \
        transformers.PerceiverForImageClassificationFourier
    with torch.no_grad():
        for kwargs, folder in (({}, "w1"), ({"revision": old}, "w0")):
            ours = cls.from_pretrained("owner/vision", cache_dir=cache, **kwargs).eval()
            theirs = theirs_cls.from_pretrained(tmp_path / folder).eval()
            _close(ours(**x, return_dict=False), theirs(**x, return_dict=False))
            assert ours.config.name_or_path == "owner/vision"
        auto = load_pretrained("owner/vision", cache_dir=cache, revision=old, local_files_only=True).eval()
        assert type(auto) is cls
        _close(auto(**x, return_dict=False), theirs(**x, return_dict=False))
    with pytest.raises(OSError, match="owner/absent"):
        cls.from_pretrained("owner/absent", cache_dir=cache)


def test_checkpoint_mismatch_error_is_both_kinds():
    assert issubclass(CheckpointMismatchError, ValueError) and issubclass(CheckpointMismatchError, RuntimeError)
    assert PerceiverModel.base_model_prefix == "perceiver"
