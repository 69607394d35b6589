"""Swapping ``transformers.PerceiverImageProcessor`` for ours: same keywords, attributes, serialisation and
pixel values (types, shapes, dtypes, raised error kinds), hub ids from a local HF cache."""

from __future__ import annotations

import copy
import json
import pickle
import warnings

import numpy as np
import pytest
import torch
from _compat_helpers import outcome
from PIL import Image
from torchvision.transforms.v2 import InterpolationMode

from perceiver_core import PerceiverImageProcessor
from perceiver_core.batch_encoding import BatchFeature, UnsupportedOptionError

transformers = pytest.importorskip("transformers")
HF = transformers.PerceiverImageProcessor
TOL = 1e-5
RNG = np.random.default_rng(0)
PIL_IMAGES = [Image.fromarray(RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in ((40, 52), (61, 33))]
ARRAY = RNG.integers(0, 256, (2, 30, 44, 3), dtype=np.uint8)  # (B, H, W, C)
ATTRIBUTES = ("size", "crop_size", "resample", "do_resize", "do_center_crop", "do_rescale", "rescale_factor",
              "do_normalize", "image_mean", "image_std", "model_input_names")


@pytest.fixture(scope="module", autouse=True)
def quiet():
    transformers.logging.set_verbosity_error()


def assert_same_pixels(got, want):
    if isinstance(want, transformers.BatchFeature):
        assert isinstance(got, BatchFeature) and list(got.keys()) == list(want.keys())
        for key in want:
            assert_same_pixels(got[key], want[key])
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want)
        for g, w in zip(got, want):
            assert_same_pixels(g, w)
    else:
        assert type(got) is type(want) and got.shape == want.shape and got.dtype == want.dtype
        got, want = torch.as_tensor(got).double(), torch.as_tensor(want).double()
        assert (got - want).abs().max().item() <= TOL  # uint8 outputs are exactly equal


# Errors transformers raises from deep inside, and the clear error we raise instead.
CLEARER = {AttributeError: (TypeError, ValueError), IndexError: ValueError, RuntimeError: ValueError}


def compare(ours_fn, hf_fn, *args, **kwargs):
    """Call both with the same arguments and compare results or error kinds."""
    kind, want = outcome(lambda: hf_fn(*args, **kwargs))
    got_kind, got = outcome(lambda: ours_fn(*args, **kwargs))
    if kind == "error":
        clearer = CLEARER.get(want, ())
        assert got_kind == "error" and issubclass(got, (want, *(clearer if isinstance(clearer, tuple) else
                                                                 (clearer,)))), (got, want)
        return
    assert got_kind == "ok", got
    assert_same_pixels(got, want)


def assert_same_settings(ours, hf):
    for name in ATTRIBUTES:
        assert getattr(ours, name) == getattr(hf, name), name
    assert ours.size.height == hf.size.height and ours.crop_size.width == hf.crop_size.width
    assert dict(ours.size) == dict(hf.size) and ours.size == dict(hf.size)
    assert ours.to_dict() == hf.to_dict()
    assert ours.to_json_string() == hf.to_json_string()


CONSTRUCTOR_CASES = [
    {},
    {"size": {"height": 384, "width": 384}},  # transformers' own interpolation example
    {"size": 96},
    {"size": (64, 80), "crop_size": 200},
    {"crop_size": {"height": 300, "width": 240}},
    {"do_center_crop": False},
    {"do_center_crop": False, "do_resize": False},
    {"do_rescale": False},
    {"do_rescale": False, "do_normalize": False},
    {"rescale_factor": 1 / 127.5, "image_mean": [0.5, 0.5, 0.5], "image_std": 0.5},
    {"do_normalize": False, "image_mean": 0.5},
    {"resample": 2},
    {"resample": Image.Resampling.NEAREST},
    {"foo": 3, "do_convert_rgb": True, "disable_grouping": True},
]


@pytest.mark.parametrize("kwargs", CONSTRUCTOR_CASES, ids=lambda k: ",".join(f"{a}={b}" for a, b in k.items()) or
                         "default")
def test_constructor_attributes_and_pixels(kwargs):
    ours, hf = PerceiverImageProcessor(**kwargs), HF(**kwargs)
    assert_same_settings(ours, hf)
    for tensors in (None, "pt", "np"):
        for images in (PIL_IMAGES[0], PIL_IMAGES, ARRAY, torch.from_numpy(ARRAY).permute(0, 3, 1, 2)):
            compare(ours, hf, images, return_tensors=tensors)
    compare(ours.preprocess, hf.preprocess, ARRAY[0].astype(np.float32))


CALL_CASES = [
    {"size": {"height": 64, "width": 32}}, {"size": 48, "crop_size": 40}, {"do_normalize": False},
    {"do_rescale": False, "do_normalize": False}, {"image_mean": [0.1, 0.2, 0.3], "image_std": [0.3, 0.2, 0.1]},
    {"resample": Image.Resampling.BILINEAR}, {"do_center_crop": False, "size": 50}, {"rescale_factor": 0.5},
    {"do_convert_rgb": True}, {"disable_grouping": True}, {"device": "cpu"}, {"data_format": "channels_first"},
    {"bogus": 1}, {"return_tensors": "tf"}, {"size": {"shortest_edge": 30}},
]


@pytest.mark.parametrize("kwargs", CALL_CASES, ids=lambda k: ",".join(f"{a}={b}" for a, b in k.items()))
def test_per_call_overrides(kwargs):
    ours, hf = PerceiverImageProcessor(), HF()
    for images in (PIL_IMAGES, ARRAY):
        compare(ours, hf, images, **{"return_tensors": "pt", **kwargs})
    assert_same_settings(ours, hf)  # overrides do not stick


def test_input_layouts_and_dtypes(tmp_path):
    ours, hf = PerceiverImageProcessor(), HF()
    chw = RNG.integers(0, 256, (3, 20, 24), dtype=np.uint8)
    cases = [chw, chw.transpose(1, 2, 0), torch.from_numpy(chw), torch.from_numpy(chw.transpose(1, 2, 0).copy()),
             RNG.integers(0, 256, (3, 10, 3), dtype=np.uint8),  # ambiguous: channels first, as transformers
             [[PIL_IMAGES[0], PIL_IMAGES[1]], [PIL_IMAGES[0]]], chw.astype(np.float64), torch.from_numpy(chw).float()]
    for images in cases:
        compare(ours, hf, images, return_tensors="pt")
    compare(ours, hf, chw, input_data_format="channels_last", return_tensors="pt")
    path = tmp_path / "image.png"
    PIL_IMAGES[1].save(path)
    compare(ours, hf, str(path), return_tensors="pt")
    compare(ours, hf, "no-such-image.png")
    ragged = {"do_center_crop": False, "do_resize": False}
    for tensors in (None, "pt", "np"):
        compare(ours, hf, PIL_IMAGES, return_tensors=tensors, **ragged)
    # Deliberate: transformers cannot normalise gray or RGBA input without do_convert_rgb; we convert.
    for image in (Image.new("L", (20, 20), 90), Image.new("RGBA", (20, 20), (1, 2, 3, 4))):
        with pytest.raises(RuntimeError):
            hf(image, return_tensors="pt")
        want = hf(image.convert("RGB"), return_tensors="pt")
        assert_same_pixels(ours(image, return_tensors="pt"), want)
    assert_same_pixels(ours(Image.new("RGBA", (20, 20), (1, 2, 3, 4)), do_convert_rgb=True, return_tensors="pt"),
                       hf(Image.new("RGBA", (20, 20), (1, 2, 3, 4)), do_convert_rgb=True, return_tensors="pt"))


def test_batch_feature_record():
    got = PerceiverImageProcessor()(PIL_IMAGES, return_tensors="pt")
    want = HF()(PIL_IMAGES, return_tensors="pt")
    assert got.pixel_values.shape == want.pixel_values.shape and not isinstance(got, dict) and "pixel_values" in got
    for args, kwargs in (((torch.float16,), {}), (("cpu",), {}), (("cpu", torch.bfloat16), {}),
                         ((), {"device": "cpu", "dtype": torch.float64})):
        assert_same_pixels(copy.deepcopy(got).to(*args, **kwargs), copy.deepcopy(want).to(*args, **kwargs))
    compare(got.to, want.to, [1])
    compare(got.__getitem__, want.__getitem__, 0)
    compare(got.__getattr__, want.__getattr__, "nope")
    assert torch.equal(pickle.loads(pickle.dumps(got)).pixel_values, got.pixel_values)
    lists = PerceiverImageProcessor()(PIL_IMAGES)
    assert_same_pixels(lists.convert_to_tensors("np"), HF()(PIL_IMAGES).convert_to_tensors("np"))


def test_errors_are_clear():
    ours, hf = PerceiverImageProcessor(), HF()
    with pytest.raises(TypeError, match="do_resize"):  # transformers: huggingface_hub's StrictDataclass error
        ours(PIL_IMAGES[0], do_resize="yes")
    assert outcome(lambda: hf(PIL_IMAGES[0], do_resize="yes"))[0] == "error"
    for kwargs in ({"do_pad": True}, {"image_seq_length": 4}, {"data_format": "channels_last"},
                   {"size": 30, "default_to_square": False}):
        with pytest.raises(UnsupportedOptionError, match=next(iter(kwargs))):
            ours(PIL_IMAGES[0], **kwargs)
    with pytest.raises(ValueError, match="resample"):
        PerceiverImageProcessor(resample=Image.Resampling.LANCZOS)
    with pytest.raises(ValueError):
        ours([])


def _hub_cache(tmp_path, repo: str, files: dict[str, bytes]):
    commit = "89abcdef0123456789abcdef0123456789abcdef"
    root = tmp_path / "hub" / f"models--{repo.replace('/', '--')}"
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(commit)
    (root / "snapshots" / commit).mkdir(parents=True)
    for name, data in files.items():
        (root / "snapshots" / commit / name).write_bytes(data)
    return tmp_path / "hub"


def test_save_and_load_like_transformers(tmp_path):
    ours, hf = PerceiverImageProcessor(size=300, foo=2, resample=2), HF(size=300, foo=2, resample=2)
    written, hf_written = ours.save_pretrained(tmp_path / "ours"), hf.save_pretrained(tmp_path / "hf")
    assert written == [str(tmp_path / "ours" / "preprocessor_config.json")] and len(hf_written) == 1
    assert json.loads(open(written[0]).read()) == json.loads(open(hf_written[0]).read())
    for folder in ("hf", "ours"):  # each reads the other's file the same way
        assert_same_settings(PerceiverImageProcessor.from_pretrained(tmp_path / folder),
                             HF.from_pretrained(tmp_path / folder))
    for kwargs in ({"size": 100, "crop_size": 50}, {"do_normalize": False, "foo": 5}, {"resample": 0}):
        assert_same_settings(PerceiverImageProcessor.from_pretrained(tmp_path / "ours", **kwargs),
                             HF.from_pretrained(tmp_path / "ours", **kwargs))
    got = PerceiverImageProcessor.from_pretrained(tmp_path / "ours", bar=3, return_unused_kwargs=True)
    want = HF.from_pretrained(tmp_path / "ours", bar=3, return_unused_kwargs=True)
    assert got[1] == want[1] == {"bar": 3}
    assert_same_settings(got[0], want[0])
    with pytest.warns(UserWarning, match="bar"):  # transformers drops it silently
        PerceiverImageProcessor.from_pretrained(tmp_path / "ours", bar=3)
    json_file = tmp_path / "ours" / "preprocessor_config.json"
    assert_same_settings(PerceiverImageProcessor.from_pretrained(json_file), HF.from_pretrained(json_file))
    assert_same_settings(PerceiverImageProcessor.from_json_file(json_file), HF.from_json_file(json_file))
    assert_same_settings(PerceiverImageProcessor.from_dict({"size": 100}), HF.from_dict({"size": 100}))
    (tmp_path / "empty").mkdir()
    for folder in ("empty", "missing"):
        compare(PerceiverImageProcessor.from_pretrained, HF.from_pretrained, tmp_path / folder)
        with pytest.raises(OSError):
            PerceiverImageProcessor.from_pretrained(tmp_path / folder)
    assert "PerceiverImageProcessor {" in repr(ours)


def test_hub_id_from_local_cache(tmp_path, monkeypatch):
    import huggingface_hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # read at import time
    HF(size=64, crop_size=72).save_pretrained(tmp_path / "saved")
    cache = _hub_cache(tmp_path, "deepmind/vision-perceiver-learned",
                       {"preprocessor_config.json": (tmp_path / "saved" / "preprocessor_config.json").read_bytes()})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no unused-keyword warning for hub keywords
        ours = PerceiverImageProcessor.from_pretrained("deepmind/vision-perceiver-learned", cache_dir=cache,
                                                       do_normalize=False, revision="main", local_files_only=True)
    hf = HF.from_pretrained("deepmind/vision-perceiver-learned", cache_dir=cache, do_normalize=False, revision="main",
                            local_files_only=True)
    assert_same_settings(ours, hf)
    compare(ours, hf, PIL_IMAGES, return_tensors="pt")
    with pytest.raises(OSError):
        PerceiverImageProcessor.from_pretrained("deepmind/not-cached", cache_dir=cache)


def test_config_record_and_interpolation_modes():
    ours = PerceiverImageProcessor(resample=InterpolationMode.BILINEAR, size=80)
    assert ours.config.resample == "bilinear" and ours.config.size == (80, 80)
    compare(ours, HF(resample=InterpolationMode.BILINEAR, size=80), PIL_IMAGES, return_tensors="pt")
    assert PerceiverImageProcessor(ours.config).to_dict() == PerceiverImageProcessor(resample=2, size=80).to_dict()
    assert PerceiverImageProcessor(size=HF(size=70).size).size == {"height": 70, "width": 70}  # a SizeDict
    with pytest.raises(TypeError, match="keyword"):
        PerceiverImageProcessor(True)  # transformers' constructor takes keywords only
