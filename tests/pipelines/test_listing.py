"""Input discovery on odd names: bytes that are not UTF-8, Unicode normalisation twins, several roots."""

from __future__ import annotations

import os
import unicodedata

from pipelines import storage
from pipelines.readers import listing
from pipelines.readers.image_io import load_image
from pipelines.readers.listing import normalize_relpath, stable_id
from pipelines.readers.video_decode import open_video

DATA = os.path.join(os.path.dirname(__file__), "..", "data")
VIDEO = os.path.join(DATA, "videos", "torchcodec__h265_video.mp4")


def _latin1_name(folder, suffix: str) -> str:
    name = os.fsdecode(b"caf\xe9" + suffix.encode())  # a Latin-1 archive's name: not valid UTF-8
    return os.path.join(folder, name)


def test_names_that_are_not_utf8_are_listed_and_reopen(tmp_path):
    path = _latin1_name(str(tmp_path), ".mp4")
    with open(VIDEO, "rb") as src, open(path, "wb") as dst:
        dst.write(src.read())
    found = list(listing.iter_files([str(tmp_path)], frozenset({".mp4"})))
    assert len(found) == 1
    uri = found[0].uri
    uri.encode("utf-8")  # storable in Arrow and JSON
    assert uri.startswith("file://") and "caf%E9.mp4" in uri
    assert storage.resolve(uri).path == path  # the same file, byte for byte
    assert storage.resolve(uri).read_bytes() == open(VIDEO, "rb").read()
    with open_video(uri) as container:
        assert len(container.streams.video) == 1
    assert found[0].relpath == "caf\\xe9.mp4" and len(found[0].id) == 24


def test_image_with_a_latin1_name_decodes(tmp_path):
    from PIL import Image

    path = _latin1_name(str(tmp_path), ".png")
    Image.new("RGB", (4, 3), (10, 20, 30)).save(path, format="PNG")
    found = list(listing.iter_files([str(tmp_path)], frozenset({".png"})))
    image = load_image(found[0].uri)
    assert image.shape == (3, 4, 3) and tuple(image[0, 0]) == (10, 20, 30)


def test_normalisation_twins_get_two_ids(tmp_path):
    nfc = unicodedata.normalize("NFC", "café.mp4")
    nfd = unicodedata.normalize("NFD", "café.mp4")
    assert nfc != nfd
    (tmp_path / nfc).write_bytes(b"a")
    (tmp_path / nfd).write_bytes(b"b")
    (tmp_path / unicodedata.normalize("NFD", "thé.mp4")).write_bytes(b"c")  # alone: its id stays NFC
    found = list(listing.iter_files([str(tmp_path)], frozenset({".mp4"})))
    ids = [f.id for f in found]
    assert len(found) == 3 and len(set(ids)) == 3
    alone = next(f for f in found if f.relpath.startswith("th"))
    assert alone.id == listing.file_id(unicodedata.normalize("NFC", "thé.mp4"))


def test_the_same_name_under_two_roots_gives_two_inputs(tmp_path):
    for day in ("day1", "day2"):
        (tmp_path / day).mkdir()
        (tmp_path / day / "cam.mp4").write_bytes(day.encode())
    found = list(listing.iter_files([str(tmp_path / "day1"), str(tmp_path / "day2")], frozenset({".mp4"})))
    assert [f.relpath for f in found] == ["cam.mp4", "cam.mp4"]
    assert found[0].id != found[1].id


def test_stable_id():
    assert stable_id("a/b.mp4") == stable_id("a/b.mp4") and len(stable_id("a/b.mp4")) == 24
    assert len({stable_id("a/b.mp4"), stable_id("a/b.mp4", 0), stable_id("a/b.mp4", 1), stable_id("a/c.mp4")}) == 4
    # NFC: a decomposed "é" names the same file as the composed one.
    decomposed = normalize_relpath("/x/cafe\u0301.txt", "/x")
    assert decomposed == normalize_relpath("/x/caf\u00e9.txt", "/x") == "caf\u00e9.txt"
