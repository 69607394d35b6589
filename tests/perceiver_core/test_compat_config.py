"""PerceiverConfig as a drop-in for transformers': the same constructor keywords, attributes, label maps,
serialisation and ``from_pretrained`` rules, checked by calling both with the same arguments.

Deliberate differences (README "Swapping the import"): no ``transformers_version`` key; ``PerceiverConfig(
id2label=...)`` fills ``label2id`` (transformers leaves it None) and assigning ``id2label`` refreshes it.
"""

from __future__ import annotations

import json

import pytest
import torch
from _hf_helpers import transformers
from _hub_cache import add_snapshot

from perceiver_core import PerceiverConfig, presets
from perceiver_core.hub import HubResolutionError

HF = transformers.PerceiverConfig
OURS_ONLY = {"transformers_version"}


def _dict(config, diff: bool = False) -> dict:
    data = config.to_diff_dict() if diff else config.to_dict()
    return {k: v for k, v in data.items() if k not in OURS_ONLY}


def _same(ours, theirs) -> None:
    assert _dict(ours) == _dict(theirs)
    assert _dict(ours, diff=True) == _dict(theirs, diff=True)
    for name in ("num_labels", "id2label", "label2id", "dtype", "output_hidden_states", "output_attentions",
                 "return_dict", "chunk_size_feed_forward", "problem_type", "model_type", "num_latents",
                 "_label_trainable_num_channels"):
        assert getattr(ours, name) == getattr(theirs, name), name


CONSTRUCTOR_CASES = {
    "defaults": {},
    "num_labels": {"num_labels": 3},
    "label_trainable_channels": {"_label_trainable_num_channels": 16},
    "output_flags": {"output_hidden_states": True, "output_attentions": True, "return_dict": False},
    "label2id_alone": {"label2id": {"a": 0, "b": 1}},  # transformers keeps LABEL_i names then
    "both_maps": {"id2label": {"0": "cat", "1": "dog", "2": "emu"}, "label2id": {"cat": 0, "dog": 1, "emu": 2}},
    "chunking": {"chunk_size_feed_forward": 4},
    "dtype_name": {"dtype": "bfloat16"},
    "torch_dtype": {"torch_dtype": "float16"},
    "dtype_object": {"dtype": torch.bfloat16, "torch_dtype": torch.float16},  # dtype wins
    "extra_keys": {"foo": 5, "bar": [1, 2], "transformers_version": "4.40.0"},
    "problem_type": {"problem_type": "multi_label_classification", "num_labels": 4},
    "tiny_multimodal": {k: v for k, v in presets.config("multimodal", tiny=True).to_dict().items()
                        if k not in ("architectures", "model_type", "_name_or_path")},
}


@pytest.mark.parametrize("kwargs", list(CONSTRUCTOR_CASES.values()), ids=list(CONSTRUCTOR_CASES))
def test_constructor_keywords_give_transformers_values(kwargs):
    ours, theirs = PerceiverConfig(**kwargs), HF(**kwargs)
    _same(ours, theirs)
    for key in ("foo", "bar"):
        if key in kwargs:
            assert getattr(ours, key) == getattr(theirs, key) == kwargs[key]


def test_id2label_alone_fills_label2id_where_transformers_leaves_none():
    labels = {0: "cat", 1: "dog"}
    ours, theirs = PerceiverConfig(id2label=labels), HF(id2label=labels)
    assert ours.id2label == theirs.id2label and ours.num_labels == theirs.num_labels == 2
    assert theirs.label2id is None and ours.label2id == {"cat": 0, "dog": 1}  # documented difference


def test_same_errors():
    for make in (PerceiverConfig, HF):
        with pytest.raises(ValueError, match="keyword arguments"):
            make(5)
        with pytest.raises(ValueError, match="num_labels > 1"):
            make(problem_type="single_label_classification", num_labels=1)


def test_num_labels_setter_rebuilds_the_maps_like_transformers():
    ours, theirs = PerceiverConfig(id2label={0: "a", 1: "b"}), HF(id2label={0: "a", 1: "b"})
    for config in (ours, theirs):
        config.num_labels = 2  # same count: the names stay
    assert ours.id2label == theirs.id2label == {0: "a", 1: "b"}
    for config in (ours, theirs):
        config.num_labels = 5
    assert ours.id2label == theirs.id2label and ours.label2id == theirs.label2id
    assert ours.num_labels == theirs.num_labels == 5 and ours.id2label[4] == "LABEL_4"


def test_attributes_set_later_are_kept_and_written():
    ours, theirs = PerceiverConfig(), HF()
    for config in (ours, theirs):
        config.custom_field = {"a": 1}
        config.output_hidden_states = True
        config._label_trainable_num_channels = 8
    _same(ours, theirs)
    assert ours.label_trainable_num_channels == 8 and ours.custom_field == {"a": 1}
    assert type(ours).model_type == HF.model_type == "perceiver"


@pytest.mark.parametrize("use_diff", [True, False])
def test_json_string_and_file(tmp_path, use_diff):
    kwargs = {"num_labels": 4, "output_attentions": True, "dtype": "bfloat16", "foo": 1, "d_latents": 64}
    ours, theirs = PerceiverConfig(**kwargs), HF(**kwargs)
    parsed = {k: v for k, v in json.loads(theirs.to_json_string(use_diff)).items() if k not in OURS_ONLY}
    assert json.loads(ours.to_json_string(use_diff)) == parsed
    ours.to_json_file(tmp_path / "ours.json", use_diff=use_diff)
    assert json.loads((tmp_path / "ours.json").read_text()) == parsed
    assert _dict(HF.from_json_file(tmp_path / "ours.json")) == _dict(PerceiverConfig.from_json_file(tmp_path /
                                                                                                  "ours.json"))


def test_from_pretrained_with_overrides_and_unused_kwargs(tmp_path):
    HF(**CONSTRUCTOR_CASES["tiny_multimodal"], foo_saved=3).save_pretrained(tmp_path)
    overrides = {"num_labels": 7, "d_model": 40, "output_hidden_states": True, "foo_saved": 4, "not_a_key": 1}
    ours, ours_unused = PerceiverConfig.from_pretrained(tmp_path, return_unused_kwargs=True, **overrides)
    theirs, their_unused = HF.from_pretrained(tmp_path, return_unused_kwargs=True, **overrides)
    assert ours_unused == their_unused == {"not_a_key": 1}
    _same(ours, theirs)
    assert ours.num_labels == 7 and ours.d_model == 40 and ours.foo_saved == 4
    plain = PerceiverConfig.from_pretrained(tmp_path / "config.json", num_labels=7)  # a file works too
    assert _dict(plain) == _dict(HF.from_pretrained(tmp_path / "config.json", num_labels=7))


def test_configs_cross_load(tmp_path):
    ours = PerceiverConfig(**CONSTRUCTOR_CASES["both_maps"], output_hidden_states=True, dtype="float16", foo=2)
    ours.save_pretrained(tmp_path / "ours")
    theirs = HF.from_pretrained(tmp_path / "ours")
    assert _dict(theirs) == _dict(ours)
    theirs.save_pretrained(tmp_path / "theirs")  # transformers writes only the differences
    assert _dict(PerceiverConfig.from_pretrained(tmp_path / "theirs")) == _dict(theirs)


def test_missing_folder_is_an_oserror_in_both(tmp_path):
    for make in (PerceiverConfig, HF):
        with pytest.raises(OSError):
            make.from_pretrained(tmp_path / "nope")


# ------------------------------------------------------------------------------------------- hub ids
@pytest.fixture
def hub(tmp_path, monkeypatch):
    """An offline cache holding owner/tiny at two commits: ``old`` (10 labels) and ``main`` (4 labels)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cache = tmp_path / "cache"
    presets.config("vision-fourier", tiny=True).save_pretrained(tmp_path / "old")
    presets.config("vision-fourier", tiny=True, num_labels=4).save_pretrained(tmp_path / "new")
    old = add_snapshot(cache, "owner/tiny", tmp_path / "old")
    add_snapshot(cache, "owner/tiny", tmp_path / "new")
    return cache, old, tmp_path


def test_hub_id_from_the_cache_by_ref_and_by_commit(hub):
    cache, old, tmp_path = hub
    main = PerceiverConfig.from_pretrained("owner/tiny", cache_dir=cache)
    assert _dict(main, diff=True) == _dict(HF.from_pretrained(tmp_path / "new"), diff=True)
    pinned = PerceiverConfig.from_pretrained("owner/tiny", cache_dir=cache, revision=old, num_labels=3)
    assert _dict(pinned) == _dict(HF.from_pretrained(tmp_path / "old", num_labels=3))
    assert main.num_labels == 4 and pinned.num_labels == 3


def test_unknown_hub_id_offline_is_a_clear_oserror(hub):
    cache, _, _ = hub
    with pytest.raises(HubResolutionError, match="owner/absent.*not in the Hugging Face cache"):
        PerceiverConfig.from_pretrained("owner/absent", cache_dir=cache)
    assert issubclass(HubResolutionError, OSError)  # transformers raises OSError there too
