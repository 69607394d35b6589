"""Swapping ``transformers.PerceiverTokenizer`` for ours: same arguments, same results (values, types, keys,
key order, raised error kinds), including ``DataCollatorWithPadding`` and hub ids from a local HF cache."""

from __future__ import annotations

import copy
import json
import pickle

import numpy as np
import pytest
import torch
from _compat_helpers import outcome

from perceiver_core import PerceiverTokenizer
from perceiver_core.batch_encoding import BatchEncoding, UnsupportedOptionError

transformers = pytest.importorskip("transformers")
HF = transformers.PerceiverTokenizer

TEXTS = ["Hello world, this is long.", "é", "", "a [MASK] b[SEP]", "Grüße aus Köln — 東京", "xy"]
PAIRS = ["second one", "zz", "pair text here", "", "q", "the last pair"]
LONG = ["abcdefghijklmnop", "ABCDEFGHIJKLMNOPQRST"]  # all overflow at max_length 8


@pytest.fixture(scope="module", autouse=True)
def quiet():
    transformers.logging.set_verbosity_error()


@pytest.fixture(scope="module")
def pair():
    return PerceiverTokenizer(), HF()


def assert_same(got, want):
    """Same type family, keys in the same order, equal values with equal types/dtypes."""
    if isinstance(want, transformers.BatchEncoding):
        assert isinstance(got, BatchEncoding)
        assert list(got.keys()) == list(want.keys())
        for key in want:
            assert_same(got[key], want[key])
    elif isinstance(want, torch.Tensor):
        assert isinstance(got, torch.Tensor) and got.dtype == want.dtype and torch.equal(got, want)
    elif isinstance(want, np.ndarray):
        assert isinstance(got, np.ndarray) and got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)
    else:
        assert type(got) is type(want) and got == want


# Errors transformers raises from deep inside (a failed assert, a missing attribute), and the clear error
# we raise instead.
CLEARER = {AssertionError: ValueError, AttributeError: (TypeError, ValueError), IndexError: ValueError}


def compare(ours_fn, hf_fn, *args, **kwargs):
    """Call both with the same arguments (deep-copied: pad() may modify its input) and compare."""
    kind, want = outcome(lambda: hf_fn(*copy.deepcopy(args), **copy.deepcopy(kwargs)))
    got_kind, got = outcome(lambda: ours_fn(*copy.deepcopy(args), **copy.deepcopy(kwargs)))
    if kind == "error":
        clearer = CLEARER.get(want, ())
        assert got_kind == "error" and issubclass(got, (want, *(clearer if isinstance(clearer, tuple) else
                                                                 (clearer,)))), (got, want)
        return
    if isinstance(want, transformers.BatchEncoding) and any(
            isinstance(v, np.ndarray) and v.dtype == object for v in want.values()):
        assert got_kind == "error" and issubclass(got, ValueError)  # deliberate: no ragged object arrays
        return
    assert got_kind == "ok", got
    assert_same(got, want)


CALL_CASES = [
    {},
    {"padding": True},
    {"padding": "max_length", "max_length": 12, "truncation": True},
    {"max_length": 7},  # max_length alone truncates (longest_first)
    {"padding": True, "pad_to_multiple_of": 8},
    {"padding": "longest", "truncation": "only_first", "max_length": 9},
    {"truncation": "only_second", "max_length": 10, "padding": True},
    {"return_length": True, "padding": True},
    {"return_special_tokens_mask": True, "return_token_type_ids": True, "padding": True},
    {"return_attention_mask": False, "padding": True},
    {"add_special_tokens": False, "padding": True, "return_special_tokens_mask": True},
    {"padding": True, "padding_side": "left", "return_token_type_ids": True},
    {"padding": "bogus"},
    {"truncation": "bogus"},
    {"padding": True, "truncation": True, "max_length": 10, "pad_to_multiple_of": 8},  # not a multiple: error
]


@pytest.mark.parametrize("kwargs", CALL_CASES, ids=lambda k: ",".join(f"{a}={b}" for a, b in k.items()) or "default")
@pytest.mark.parametrize("tensors", [None, "pt", "np"])
def test_call_matches(pair, kwargs, tensors):
    ours, hf = pair
    kw = {**kwargs, "return_tensors": tensors}
    compare(ours, hf, TEXTS[0], **kw)
    compare(ours, hf, TEXTS[0], PAIRS[0], **kw)
    compare(ours, hf, TEXTS, **kw)
    compare(ours, hf, TEXTS, PAIRS, **kw)
    tuples = list(zip(TEXTS, PAIRS))
    compare(ours, hf, tuples, **kw)
    compare(ours.encode, hf.encode, TEXTS[3], PAIRS[2], **kw)


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("strategy,stride", [("only_first", 0), ("only_first", 3), ("longest_first", 2),
                                             ("only_second", 4)])
def test_overflow_stride_and_truncation_side(side, strategy, stride):
    ours, hf = PerceiverTokenizer(truncation_side=side), HF(truncation_side=side)
    assert ours.truncation_side == hf.truncation_side == side
    kw = {"max_length": 8, "truncation": strategy, "stride": stride, "return_overflowing_tokens": True,
          "return_length": True}
    compare(ours, hf, LONG[0], **kw)
    compare(ours, hf, LONG[0], LONG[1], **kw)  # longest_first: error
    compare(ours, hf, LONG, **kw)  # every example overflows
    compare(ours, hf, LONG, padding=True, return_tensors="pt", **kw)
    kw.pop("return_overflowing_tokens")
    compare(ours, hf, LONG, LONG[::-1], **kw)


def test_mixed_overflow_batch_is_filled_where_transformers_fails():
    ours, hf = PerceiverTokenizer(), HF()
    kw = {"max_length": 8, "truncation": True, "return_overflowing_tokens": True, "stride": 1}
    with pytest.raises(AssertionError):
        hf([LONG[0], "ab"], **kw)
    enc = ours([LONG[0], "ab"], **kw)
    assert enc["overflowing_tokens"] == [hf(LONG[0], **kw)["overflowing_tokens"], []]
    assert enc["num_truncated_tokens"] == [hf(LONG[0], **kw)["num_truncated_tokens"], 0]


@pytest.mark.parametrize("inputs", [
    [4, 7, 8], [[4, 7], [8]], ["ab", ("c", "d")], [("a", "b", "c")], [("a",)], ["ab", ["x", "y"]], [],
    "x", ["abc"],
], ids=repr)
def test_input_forms_match(pair, inputs):
    ours, hf = pair
    compare(ours, hf, inputs)
    compare(ours, hf, inputs, is_split_into_words=True)


def test_targets_keywords_and_errors(pair):
    ours, hf = pair
    compare(ours, hf, "abc", text_target="de")
    compare(ours, hf, ["abc", "d"], text_target=["de", "f"], padding=True, return_tensors="pt")
    compare(ours, hf, text_target="de")
    compare(ours, hf, None)
    compare(ours, hf, ["a", "b"], ["x"])
    compare(ours, hf, "a", return_tensors="tf")
    compare(ours, hf, "a[MASK]", split_special_tokens=True)
    compare(ours, hf, "abc", tokenizer_kwargs={"max_length": 3})
    # Deliberately stricter: transformers ignores these silently.
    with pytest.raises(TypeError, match="bogus_kw"):
        ours("a", bogus_kw=1)
    with pytest.raises(UnsupportedOptionError, match="return_offsets_mapping"):
        ours("a", return_offsets_mapping=True)


def test_vocabulary_and_conversions(pair):
    ours, hf = pair
    for name in ("all_special_tokens", "all_special_ids", "special_tokens_map", "vocab_size", "unk_token",
                 "unk_token_id", "model_input_names", "max_len_single_sentence", "max_len_sentences_pair",
                 "pad_token_type_id", "is_fast", "clean_up_tokenization_spaces", "added_tokens_encoder"):
        assert getattr(ours, name) == getattr(hf, name), name
    assert ours.get_vocab() == hf.get_vocab() and len(ours) == len(hf)
    for name in ("pad", "bos", "eos", "mask", "cls", "sep"):
        assert getattr(ours, f"{name}_token") == str(getattr(hf, f"{name}_token"))
        assert getattr(ours, f"{name}_token_id") == getattr(hf, f"{name}_token_id")
    assert [ours.num_special_tokens_to_add(p) for p in (False, True)] == [hf.num_special_tokens_to_add(p)
                                                                          for p in (False, True)]
    for text in TEXTS:
        compare(ours.tokenize, hf.tokenize, text)
        tokens = hf.tokenize(text)
        compare(ours.convert_tokens_to_ids, hf.convert_tokens_to_ids, tokens)
        compare(ours.convert_tokens_to_string, hf.convert_tokens_to_string, tokens)
    compare(ours.tokenize, hf.tokenize, "a[MASK]b", split_special_tokens=True)
    for tokens in ("h", "[MASK]", "ab", "é", ["h", "ab", "[PAD]"], ()):
        compare(ours.convert_tokens_to_ids, hf.convert_tokens_to_ids, tokens)
    every_id = list(range(262)) + [300, 5000]  # ids past 262 still have a token string in transformers
    for ids in (every_id, 7, 0, [3, 4, 7], np.array([7, 8]), torch.tensor([4, 7]), [-1]):
        compare(ours.convert_ids_to_tokens, hf.convert_ids_to_tokens, ids)
        compare(ours.convert_ids_to_tokens, hf.convert_ids_to_tokens, ids, skip_special_tokens=True)
    for tokens in (["Ā"], ["ab"], []):
        compare(ours.convert_tokens_to_string, hf.convert_tokens_to_string, tokens)
    assert ours.get_special_tokens_mask([7, 8], [9]) == hf.get_special_tokens_mask([7, 8], [9])
    assert ours.get_special_tokens_mask([4, 7, 5], already_has_special_tokens=True) == hf.get_special_tokens_mask(
        [4, 7, 5], already_has_special_tokens=True)
    assert ours.build_inputs_with_special_tokens([7], [8]) == hf.build_inputs_with_special_tokens([7], [8])
    compare(ours.create_token_type_ids_from_sequences, hf.create_token_type_ids_from_sequences, [7], [8, 9])
    for strategy in ("longest_first", "only_first", "only_second"):
        args = ([1, 2, 3, 4], [5, 6]), {"num_tokens_to_remove": 3, "truncation_strategy": strategy, "stride": 1}
        assert ours.truncate_sequences(*args[0], **args[1]) == hf.truncate_sequences(*args[0], **args[1])


def test_decode_matches(pair):
    ours, hf = pair
    ids = hf(TEXTS, padding=True)["input_ids"]
    for value in (ids[0], ids, torch.tensor(ids), np.array(ids[3]), 7, np.int64(7), [], [[]], [4, 262], [-3]):
        for skip in (False, True):
            compare(ours.decode, hf.decode, value, skip_special_tokens=skip)
        compare(ours.batch_decode, hf.batch_decode, value)
    spaced = hf.encode("a , b . c 's d n't ?")
    for clean in (None, True, False):
        compare(ours.decode, hf.decode, spaced, clean_up_tokenization_spaces=clean)
        compare(ours.batch_decode, hf.batch_decode, [spaced], clean_up_tokenization_spaces=clean)


def test_batch_encoding_record(pair):
    ours, hf = pair
    got, want = ours(["hi", "abc"], padding=True, return_tensors="pt"), hf(["hi", "abc"], padding=True,
                                                                         return_tensors="pt")
    assert got.to("cpu") is got and torch.equal(got.input_ids, want.input_ids)
    assert got.input_ids.device.type == "cpu" and isinstance(got.to(torch.device("cpu")), BatchEncoding)
    with pytest.warns(UserWarning, match="cast"):
        assert got.to(torch.float16).input_ids.dtype == torch.int64  # ids are never cast
    assert_same(BatchEncoding(got[:1]), transformers.BatchEncoding(want[:1]))
    for key in (0, 1.5):
        with pytest.raises(KeyError):
            got[key]
        with pytest.raises(KeyError):
            want[key]
    with pytest.raises(AttributeError):
        _ = got.nope
    with pytest.raises(ValueError):
        got.word_ids()
    assert got.is_fast is want.is_fast is False and got.encodings is want.encodings is None
    assert "input_ids" in got and dict(got).keys() == dict(want).keys() and got.data.keys() == want.data.keys()
    for clone in (pickle.loads(pickle.dumps(got)), copy.deepcopy(got)):
        assert torch.equal(clone.input_ids, got.input_ids)
    lists = ours(["hi", "abc"], padding=True)
    assert_same(lists.convert_to_tensors("np"), hf(["hi", "abc"], padding=True).convert_to_tensors("np"))


FEATURES = [{"input_ids": [4, 7, 8, 5], "label": 1}, {"input_ids": [4, 9, 5], "label": 0},
            {"input_ids": [4, 5], "label": 1}]


@pytest.mark.parametrize("kwargs", [
    {}, {"return_tensors": "pt"}, {"return_tensors": "np"}, {"padding": "max_length", "max_length": 6},
    {"padding": "max_length"}, {"pad_to_multiple_of": 8, "padding_side": "left"}, {"padding": False},
    {"padding": False, "return_tensors": "pt"}, {"return_attention_mask": False, "max_length": 5,
                                                 "padding": "max_length"}, {"padding": "bogus"},
], ids=lambda k: ",".join(f"{a}={b}" for a, b in k.items()) or "default")
def test_pad_matches(pair, kwargs):
    ours, hf = pair
    compare(ours.pad, hf.pad, [dict(f) for f in FEATURES], **kwargs)
    batch = {"input_ids": [[4, 7, 8, 5], [4, 5]], "attention_mask": [[1, 1, 1, 1], [1, 1]],
             "token_type_ids": [[0, 0, 1, 1], [0, 0]], "special_tokens_mask": [[1, 0, 0, 1], [1, 1]]}
    compare(ours.pad, hf.pad, json.loads(json.dumps(batch)), **kwargs)
    compare(ours.pad, hf.pad, {"input_ids": [4, 7, 8]}, **kwargs)
    tensors = [{"input_ids": torch.tensor([4, 7, 8, 5])}, {"input_ids": torch.tensor([4, 5])}]
    compare(ours.pad, hf.pad, tensors, **kwargs)
    arrays = [{"input_ids": np.array([4, 7, 8, 5])}, {"input_ids": np.array([4, 5])}]
    compare(ours.pad, hf.pad, arrays, **kwargs)


def test_pad_edge_cases(pair):
    ours, hf = pair
    compare(ours.pad, hf.pad, [{"attention_mask": [1]}])
    compare(ours.pad, hf.pad, {"input_ids": []})
    compare(ours.pad, hf.pad, {"input_ids": [[4, 5], [4]], "label": [1]})  # different batch sizes
    compare(ours.pad, hf.pad, hf(["abc", "d"]))
    compare(ours.pad, hf.pad, ours(["abc", "d"]))
    compare(ours.pad, hf.pad, hf(["abc", "d"], return_special_tokens_mask=True), return_tensors="pt")
    with pytest.raises(ValueError):
        ours.pad([])  # transformers: AttributeError from inside


def test_data_collator_with_padding_runs_on_ours(pair):
    """transformers' own DataCollatorWithPadding, given our tokenizer, batches like it does with its own."""
    ours, hf = pair
    features = [{**ours(text, truncation=True, max_length=12), "label": i % 2} for i, text in enumerate(TEXTS)]
    hf_features = [{**hf(text, truncation=True, max_length=12), "label": i % 2} for i, text in enumerate(TEXTS)]
    for kwargs in ({}, {"pad_to_multiple_of": 8}, {"return_tensors": "np"},
                   {"padding": "max_length", "max_length": 16}):
        got = transformers.DataCollatorWithPadding(ours, **kwargs)([dict(f) for f in features])
        want = transformers.DataCollatorWithPadding(hf, **kwargs)([dict(f) for f in hf_features])
        assert_same(got, want)
        assert "labels" in got and "label" not in got


def _hub_cache(tmp_path, repo: str, files: dict[str, bytes]):
    """A Hugging Face cache holding ``files`` as the main revision of ``repo`` (no network involved)."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    root = tmp_path / "hub" / f"models--{repo.replace('/', '--')}"
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(commit)
    snapshot = root / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for name, data in files.items():
        (snapshot / name).write_bytes(data)
    return tmp_path / "hub"


@pytest.fixture
def offline(monkeypatch):
    import huggingface_hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # read at import time


def test_from_pretrained_keywords_and_files(tmp_path):
    HF(model_max_length=100, truncation_side="left", foo="bar").save_pretrained(tmp_path / "hf")
    kwargs = {"model_max_length": 16, "padding_side": "left", "truncation_side": "left", "pad_token": "[PAD]",
              "unknown_option": 3}
    for folder in ("hf",):
        ours = PerceiverTokenizer.from_pretrained(tmp_path / folder, **kwargs)
        hf = HF.from_pretrained(tmp_path / folder, **kwargs)
        for name in ("model_max_length", "padding_side", "truncation_side", "name_or_path"):
            assert getattr(ours, name) == getattr(hf, name), name
        assert ours.init_kwargs["unknown_option"] == hf.init_kwargs["unknown_option"] == 3
        assert ours.init_kwargs["foo"] == hf.init_kwargs["foo"] == "bar"
        kw = {"padding": "max_length", "truncation": True}
        compare(ours, hf, TEXTS, **kw)
    # Our files load in transformers with the same settings and outputs, unknown keys included.
    ours.save_pretrained(tmp_path / "ours")
    reloaded, by_hf = PerceiverTokenizer.from_pretrained(tmp_path / "ours"), HF.from_pretrained(tmp_path / "ours")
    for name in ("model_max_length", "padding_side", "truncation_side", "special_tokens_map", "all_special_ids"):
        assert getattr(reloaded, name) == getattr(by_hf, name) == getattr(ours, name), name
    assert by_hf.init_kwargs["unknown_option"] == 3
    compare(reloaded, by_hf, TEXTS, padding=True, truncation=True)
    written = json.loads((tmp_path / "ours" / "tokenizer_config.json").read_text())
    expected = json.loads((tmp_path / "hf" / "tokenizer_config.json").read_text())
    assert written["added_tokens_decoder"] == expected["added_tokens_decoder"]
    assert {k: written[k] for k in expected if k != "model_max_length"} == {k: v for k, v in expected.items()
                                                                             if k != "model_max_length"}
    # Settings that change behaviour are honoured the same way.
    for extra in ({"model_max_length": None}, {"clean_up_tokenization_spaces": True}, {"split_special_tokens": True},
                  {"model_input_names": ["input_ids"]}):
        ours, hf = PerceiverTokenizer.from_pretrained(tmp_path / "hf", **extra), HF.from_pretrained(tmp_path / "hf",
                                                                                                   **extra)
        compare(ours, hf, ["a [MASK] b ,", "x"], padding=True, truncation=True)
        assert ours.decode(ours.encode("a , b")) == hf.decode(hf.encode("a , b"))
    compare(PerceiverTokenizer.from_pretrained, HF.from_pretrained, tmp_path / "hf", padding_side="middle")
    compare(PerceiverTokenizer.from_pretrained, HF.from_pretrained, tmp_path / "missing")
    # Deliberate: transformers would add "<pad>" as id 262, beyond the model's embedding.
    assert HF.from_pretrained(tmp_path / "hf", pad_token="<pad>").pad_token_id == 262
    with pytest.raises(ValueError, match="262"):
        PerceiverTokenizer.from_pretrained(tmp_path / "hf", pad_token="<pad>")


def test_special_token_roles_can_be_reassigned():
    ours, hf = PerceiverTokenizer(), HF()
    for tok in (ours, hf):
        tok.pad_token = tok.eos_token
    assert ours.pad_token_id == hf.pad_token_id == 2
    compare(ours, hf, ["abc", "d"], padding=True)
    compare(ours.decode, hf.decode, [0, 2, 7], skip_special_tokens=True)
    ours.pad_token_id = hf.pad_token_id = 3
    assert ours.pad_token == hf.pad_token == "[MASK]"
    renamed, hf_renamed = PerceiverTokenizer(pad_token="<pad>"), HF(pad_token="<pad>")
    compare(renamed, hf_renamed, "<pad>[PAD]", padding="max_length", max_length=12)
    assert PerceiverTokenizer.pad_token_id == 0 and PerceiverTokenizer.mask_token_id == 3  # class constants


def test_reassigned_role_survives_save_and_old_file_layouts_load(tmp_path):
    ours = PerceiverTokenizer()
    ours.pad_token = ours.eos_token
    ours.save_pretrained(tmp_path / "roles")
    reloaded, by_hf = PerceiverTokenizer.from_pretrained(tmp_path / "roles"), HF.from_pretrained(tmp_path / "roles")
    assert reloaded.pad_token_id == by_hf.pad_token_id == 2
    compare(reloaded, by_hf, ["ab", "c"], padding=True)
    # The layout of older hub checkpoints: special_tokens_map.json beside a config without added_tokens_decoder.
    old = tmp_path / "old"
    old.mkdir()
    tokens = dict(zip(("pad_token", "bos_token", "eos_token", "mask_token", "cls_token", "sep_token"),
                      ("[PAD]", "[BOS]", "[EOS]", "[MASK]", "[CLS]", "[SEP]")))
    (old / "special_tokens_map.json").write_text(json.dumps(tokens))
    (old / "tokenizer_config.json").write_text(json.dumps({**tokens, "model_max_length": 2048, "name_or_path":
                                                           "deepmind/language-perceiver", "special_tokens_map_file":
                                                           None, "tokenizer_class": "PerceiverTokenizer"}))
    ours, hf = PerceiverTokenizer.from_pretrained(old), HF.from_pretrained(old)
    assert ours.model_max_length == hf.model_max_length == 2048
    compare(ours, hf, TEXTS, padding=True, return_special_tokens_mask=True)


def test_hub_id_from_local_cache(tmp_path, offline):
    HF(model_max_length=64).save_pretrained(tmp_path / "saved")
    cache = _hub_cache(tmp_path, "deepmind/language-perceiver",
                       {"tokenizer_config.json": (tmp_path / "saved" / "tokenizer_config.json").read_bytes()})
    ours = PerceiverTokenizer.from_pretrained("deepmind/language-perceiver", cache_dir=cache, padding_side="left")
    hf = HF.from_pretrained("deepmind/language-perceiver", cache_dir=cache, padding_side="left")
    assert ours.model_max_length == hf.model_max_length == 64 and ours.padding_side == "left"
    compare(ours, hf, TEXTS, padding="max_length", truncation=True, return_tensors="pt")
    with pytest.raises(OSError):
        PerceiverTokenizer.from_pretrained("deepmind/not-cached", cache_dir=cache)
