import numpy as np
import pytest

from pipelines.training.masking import (
    IGNORE_INDEX,
    MASK_ID,
    PAD_ID,
    byte_ids,
    crop_documents,
    pack_documents,
    span_mask,
)


def test_byte_ids_match_the_tokenizer():
    from perceiver_core import PerceiverTokenizer

    text = "héllo wörld"
    assert byte_ids(text).tolist() == PerceiverTokenizer().text_to_ids(text).tolist()


def test_pack_uses_every_byte_once_and_pads_the_tail():
    docs = ["abc", "defgh", "ij"]
    windows = pack_documents(docs, seq_len=4, min_tail=0.5)
    stream = byte_ids("abc\ndefgh\nij")  # 12 bytes -> 3 full windows, no tail
    assert windows.shape == (3, 4) and windows.dtype == np.int16
    assert windows.ravel().tolist() == stream.tolist()
    windows = pack_documents(["abcdef"], seq_len=4)  # 6 bytes -> one full window + a 2-byte tail (kept)
    assert windows.shape == (2, 4) and windows[1, 2:].tolist() == [PAD_ID, PAD_ID]
    assert pack_documents(["abcde"], seq_len=4).shape == (1, 4)  # 1-byte tail < half a window: dropped


def test_crop_keeps_one_window_per_document():
    windows = crop_documents(["abcdef", "", "xy"], seq_len=4)
    assert windows.shape == (2, 4)
    assert windows[0].tolist() == byte_ids("abcd").tolist()
    assert windows[1].tolist() == [*byte_ids("xy").tolist(), PAD_ID, PAD_ID]


def test_span_mask_rate_spans_and_labels():
    rng = np.random.default_rng(0)
    ids = np.stack([byte_ids("x" * 400 + "y" * 112)] * 8).astype(np.int64)  # (8, 512), no padding
    ids[:, -50:] = PAD_ID  # padding is never masked
    inputs, labels = span_mask(ids, rng, mask_prob=0.15, mean_span=3.0)
    chosen = labels != IGNORE_INDEX
    eligible = (ids != PAD_ID).sum(1)
    assert np.allclose(chosen.sum(1), np.round(0.15 * eligible), atol=1)
    assert not chosen[:, -50:].any()
    assert (labels[chosen] == ids[chosen]).all()
    assert (inputs[~chosen] == ids[~chosen]).all()
    frac_mask = (inputs[chosen] == MASK_ID).mean()
    assert 0.7 < frac_mask < 0.9  # 80 % [MASK], the rest random or unchanged
    # masked positions come in runs: mean run length near mean_span (capped by max_span and overlaps)
    runs = [len(r) for row in chosen for r in "".join("1" if c else "0" for c in row).split("0") if r]
    assert 2.0 < np.mean(runs) < 5.0


def test_span_mask_is_deterministic_per_seed_and_keeps_input():
    ids = np.stack([byte_ids("abcdefghij" * 10)] * 2)
    before = ids.copy()
    a = span_mask(ids, np.random.default_rng(3))
    b = span_mask(ids, np.random.default_rng(3))
    c = span_mask(ids, np.random.default_rng(4))
    assert all((x == y).all() for x, y in zip(a, b))
    assert not (a[1] == c[1]).all()
    assert (ids == before).all()


def test_span_mask_masks_at_least_one_byte_of_short_rows_and_rejects_bad_shapes():
    ids = np.array([[byte_ids("ab")[0], byte_ids("ab")[1], PAD_ID, PAD_ID]])
    _, labels = span_mask(ids, np.random.default_rng(0))
    assert (labels != IGNORE_INDEX).sum() == 1
    with pytest.raises(ValueError):
        span_mask(np.zeros(5, dtype=np.int64), np.random.default_rng(0))
