"""PerceiverTokenizer against transformers' PerceiverTokenizer on the UDHR and prose corpora."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from perceiver_core.tokenizer import PerceiverTokenizer

try:  # a test-only dependency: without it the parity tests skip and the others still run
    import transformers
except ImportError:
    transformers = None
parity = pytest.mark.skipif(transformers is None, reason="parity with transformers: transformers is not installed")

TEXT_DIR = Path(__file__).resolve().parents[1] / "data" / "text"
UDHR_FILES = sorted((TEXT_DIR / "udhr").glob("*.txt"))
PROSE_FILES = sorted((TEXT_DIR / "prose").glob("*.txt"))
ALL_FILES = UDHR_FILES + PROSE_FILES
# transformers' decode joins bytes with `+=` (quadratic): 10 s on the 1.1 MB Japanese novel, so the decode
# comparison uses the first ids only (it cuts through characters, which tests U+FFFD); our own round trip
# covers whole files.
HF_DECODE_IDS = 60_000


def read_text(path: Path) -> str:
    # Bytes, not open(): universal newlines would turn botchan's CRLF into LF.
    return path.read_bytes().decode("utf-8")


@pytest.fixture(scope="module")
def ours() -> PerceiverTokenizer:
    return PerceiverTokenizer()


@pytest.fixture(scope="module")
def hf():
    if transformers is None:
        pytest.skip("parity with transformers: transformers is not installed")
    transformers.logging.set_verbosity_error()  # silences "sequence longer than 2048" and pair-overflow notes
    return transformers.PerceiverTokenizer()


@pytest.fixture(scope="module")
def udhr_texts() -> list[str]:
    return [read_text(p) for p in UDHR_FILES]


def test_corpus_is_complete():
    with open(TEXT_DIR / "udhr" / "index.csv", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["file"] for r in rows) == sorted(p.name for p in UDHR_FILES)
    assert len(UDHR_FILES) == 54 and len(PROSE_FILES) == 2
    for row in rows:
        assert len((TEXT_DIR / "udhr" / row["file"]).read_bytes()) == int(row["utf8_bytes"])


@pytest.mark.parametrize("path", ALL_FILES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_file_matches_transformers(ours, hf, path):
    text = read_text(path)
    got, want = ours(text), hf(text)
    assert got["input_ids"] == want["input_ids"]
    assert got["attention_mask"] == want["attention_mask"]
    assert len(got["input_ids"]) == len(path.read_bytes()) + 2  # one id per byte, plus [CLS] and [SEP]
    ids = got["input_ids"]
    assert ours.decode(ids, skip_special_tokens=True) == text
    head = ids[:HF_DECODE_IDS]
    assert ours.decode(head) == hf.decode(head)
    assert ours.decode(head, skip_special_tokens=True) == hf.decode(head, skip_special_tokens=True)


KWARG_CASES = [
    {},
    {"max_length": 50},  # max_length alone turns on longest_first truncation
    {"truncation": True},  # truncates to model_max_length (2048); many UDHR texts are longer
    {"padding": True},
    {"padding": "longest", "truncation": True, "max_length": 300},
    {"padding": "max_length", "max_length": 64, "truncation": True},
    {"padding": "max_length", "max_length": 600},  # no truncation: longer texts stay long
    {"padding": True, "pad_to_multiple_of": 8, "max_length": 96, "truncation": True},
    {"padding": "max_length", "pad_to_multiple_of": 8, "max_length": 61},
    {"add_special_tokens": False, "padding": True, "max_length": 40, "truncation": True},
    {"padding": True, "max_length": 30, "truncation": True, "return_special_tokens_mask": True},
    {"truncation": "only_first", "max_length": 90},
    {"truncation": "only_second", "max_length": 90},
]


def _sample(texts: list[str]) -> list[str]:
    # Different lengths so padding and pair truncation have work to do; one empty text.
    return [t[: 17 * i] for i, t in enumerate(texts[:8])]


@pytest.mark.parametrize(
    "kwargs", KWARG_CASES, ids=lambda k: ",".join(f"{a}={b}" for a, b in k.items()) or "default"
)
def test_options_match_transformers(ours, hf, udhr_texts, kwargs):
    texts = _sample(udhr_texts)
    pairs = _sample(udhr_texts[8:])[::-1]
    for text in texts[:3]:
        assert dict(ours(text, **kwargs)) == dict(hf(text, **kwargs))
    assert dict(ours(texts[2], pairs[2], **kwargs)) == dict(hf(texts[2], pairs[2], **kwargs))
    assert dict(ours(texts, **kwargs)) == dict(hf(texts, **kwargs))
    assert dict(ours(texts, pairs, **kwargs)) == dict(hf(texts, pairs, **kwargs))
    # A ragged batch makes no tensor in either library. (With "np" transformers returns an object array of
    # arrays instead of raising; we raise for both.)
    try:
        want = hf(texts, pairs, return_tensors="pt", **kwargs)
    except ValueError:
        with pytest.raises(ValueError):
            ours(texts, pairs, return_tensors="pt", **kwargs)
        with pytest.raises(ValueError):
            ours(texts, pairs, return_tensors="np", **kwargs)
        return
    got = ours(texts, pairs, return_tensors="pt", **kwargs)
    assert got.keys() == want.keys()
    for key, value in got.items():
        assert torch.equal(value, want[key]), key
    for key, value in ours(texts, pairs, return_tensors="np", **kwargs).items():
        np.testing.assert_array_equal(value, want[key].numpy())


def test_whole_corpus_batch_as_tensors(ours, hf, udhr_texts):
    got = ours(udhr_texts, padding=True, truncation=True, max_length=512, return_tensors="pt")
    want = hf(udhr_texts, padding=True, truncation=True, max_length=512, return_tensors="pt")
    assert got["input_ids"].shape == (len(udhr_texts), 512) and got["input_ids"].dtype == torch.int64
    assert torch.equal(got["input_ids"], want["input_ids"])
    assert torch.equal(got.attention_mask, want["attention_mask"])
    assert ours.batch_decode(got["input_ids"], skip_special_tokens=True) == hf.batch_decode(
        want["input_ids"], skip_special_tokens=True
    )


def test_pairs_of_whole_files(ours, hf, udhr_texts):
    firsts, seconds = udhr_texts[:-1:3], udhr_texts[1::3]
    kwargs = {"padding": True, "truncation": True, "max_length": 1000}
    assert dict(ours(firsts, seconds, **kwargs)) == dict(hf(firsts, seconds, **kwargs))
    one = ours(udhr_texts[0], udhr_texts[1])["input_ids"]
    assert one == hf(udhr_texts[0], udhr_texts[1])["input_ids"]
    assert one.count(ours.sep_token_id) == 2 and one[0] == ours.cls_token_id


@pytest.mark.parametrize(
    "text",
    [
        "[MASK]hi",
        "a [MASK] b[SEP]",
        "[[MASK]]",
        "[CLS][CLS]",
        "[mask] [MASK ] [PAD][BOS][EOS]",
        "[",
        "]",
        "x[SEP",
    ],
)
def test_special_tokens_inside_text(ours, hf, text):
    assert ours(text) == hf(text)
    ids = ours(text)["input_ids"]
    assert ours.decode(ids) == hf.decode(ids)
    assert ours.decode(ids, skip_special_tokens=True) == hf.decode(ids, skip_special_tokens=True)
    assert ours.convert_ids_to_tokens(ids) == hf.convert_ids_to_tokens(ids)


def test_pad_to_multiple_must_divide_truncation_length(ours):
    with pytest.raises(ValueError, match="multiple"):
        ours(["a"], padding=True, truncation=True, max_length=100, pad_to_multiple_of=8)


def test_known_ids(ours):
    assert ours("[MASK]hi")["input_ids"] == [4, 3, 110, 111, 5]
    assert ours.encode("é") == [4, 201, 175, 5]
    assert ours.decode(ours.encode("hello é")) == "[CLS]hello é[SEP]"


def test_empty_string(ours, hf):
    assert ours("") == hf("") == {"input_ids": [4, 5], "attention_mask": [1, 1]}
    assert ours("", "") == hf("", "")
    assert ours("", add_special_tokens=False)["input_ids"] == []
    assert ours.decode([]) == ""


def test_bytes_input_with_invalid_utf8(ours, hf):
    data = b"ok\xff\xfe\xc3(" + b"[MASK]"
    ids = ours(data)["input_ids"]
    # Bytes are taken as they are: no UTF-8 check, and "[MASK]" stays six byte ids.
    assert ids == [4] + [b + 6 for b in data] + [5]
    assert ours.decode(ids) == hf.decode(ids) == "[CLS]ok\ufffd\ufffd\ufffd([MASK][SEP]"
    assert ours.decode(ids, skip_special_tokens=True) == data.decode("utf-8", errors="replace")
    # bytes and str agree whenever the bytes are valid UTF-8 without special-token names
    assert ours("Grüße".encode())["input_ids"] == ours("Grüße")["input_ids"]
    batch = ours([b"\x80", "ab"], padding=True, return_tensors="np")
    np.testing.assert_array_equal(batch["input_ids"], [[4, 134, 5, 0], [4, 103, 104, 5]])


def test_constants_match_transformers(ours, hf):
    assert ours.vocab_size == hf.vocab_size == 256
    assert len(ours) == len(hf) == 262
    assert ours.model_max_length == hf.model_max_length == 2048
    for name in ("pad", "bos", "eos", "mask", "cls", "sep"):
        assert getattr(ours, f"{name}_token_id") == getattr(hf, f"{name}_token_id")
        assert getattr(ours, f"{name}_token") == str(getattr(hf, f"{name}_token"))
    assert sorted(ours.all_special_ids) == sorted(hf.all_special_ids)
    assert ours.unk_token_id is hf.unk_token_id is None


def test_single_text_tensors_get_batch_axis(ours, hf):
    got = ours("hello", return_tensors="pt")
    assert got["input_ids"].shape == (1, 7)
    assert torch.equal(got["input_ids"], hf("hello", return_tensors="pt")["input_ids"])
    with pytest.raises(ValueError, match="padding"):
        ours(["a", "bcd"], return_tensors="np")


def test_decode_inputs_and_errors(ours, hf):
    ids = ours.encode("Perceiver IO")
    assert ours.decode(torch.tensor(ids)) == ours.decode(np.array(ids)) == hf.decode(ids)
    assert ours.batch_decode([ids, ids[:3]]) == hf.batch_decode([ids, ids[:3]])
    with pytest.raises(ValueError):
        ours.decode([4, 262])
    with pytest.raises(ValueError):
        hf.decode([4, 262])
    assert ours.decode([[4, 5]]) == hf.decode([[4, 5]]) == ["[CLS][SEP]"]  # transformers 5 decodes batches


def test_save_load_roundtrip_with_transformers(ours, hf, tmp_path, udhr_texts):
    sample = _sample(udhr_texts)
    kwargs = {"padding": True, "truncation": True, "max_length": 64}

    ours.save_pretrained(tmp_path / "ours")
    assert json.loads((tmp_path / "ours" / "special_tokens_map.json").read_text())["mask_token"] == "[MASK]"
    loaded_by_hf = transformers.PerceiverTokenizer.from_pretrained(tmp_path / "ours")
    assert dict(loaded_by_hf(sample, **kwargs)) == dict(hf(sample, **kwargs))
    assert loaded_by_hf.model_max_length == 2048 and len(loaded_by_hf) == 262
    ids = hf("[MASK] x")["input_ids"]
    assert loaded_by_hf.decode(ids, skip_special_tokens=True) == " x"

    hf.save_pretrained(tmp_path / "hf")
    loaded = PerceiverTokenizer.from_pretrained(tmp_path / "hf")
    assert dict(loaded(sample, **kwargs)) == dict(hf(sample, **kwargs))

    short = PerceiverTokenizer(model_max_length=512)
    short.save_pretrained(tmp_path / "short")
    assert PerceiverTokenizer.from_pretrained(tmp_path / "short").model_max_length == 512
    assert transformers.PerceiverTokenizer.from_pretrained(tmp_path / "short").model_max_length == 512
    with pytest.raises(FileNotFoundError):
        PerceiverTokenizer.from_pretrained(tmp_path / "missing")


def test_input_list_not_modified(ours):
    texts = ["b", "aaa"]
    ours(texts, padding=True)
    assert texts == ["b", "aaa"]


@parity
def test_left_padding_matches_transformers(udhr_texts):
    left_ours = PerceiverTokenizer(padding_side="left")
    left_hf = transformers.PerceiverTokenizer(padding_side="left")
    texts = _sample(udhr_texts)
    kwargs = {"padding": True, "truncation": True, "max_length": 80, "return_special_tokens_mask": True}
    assert dict(left_ours(texts, **kwargs)) == dict(left_hf(texts, **kwargs))
