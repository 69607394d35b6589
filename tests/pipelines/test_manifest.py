"""pipelines.manifest: input discovery, stable unique ids, schemas, errors."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipelines.flow_data import write_flo
from pipelines.image_io import load_image
from pipelines.manifest import (
    FILE_SCHEMA,
    FLOW_SCHEMA,
    TEXT_SCHEMA,
    VIDEO_SCHEMA_PROBED,
    flow_manifest,
    image_manifest,
    image_manifest_from_parquet,
    iter_line_spans,
    normalize_relpath,
    stable_id,
    text_manifest,
    video_manifest,
    write_manifest,
)
from pipelines.text_io import read_texts

DATA = Path(__file__).resolve().parents[1] / "data"
VIDEOS = DATA / "videos"


def touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_stable_id():
    assert stable_id("a/b.mp4") == stable_id("a/b.mp4") and len(stable_id("a/b.mp4")) == 24
    assert len({stable_id("a/b.mp4"), stable_id("a/b.mp4", 0), stable_id("a/b.mp4", 1), stable_id("a/c.mp4")}) == 4
    # NFC: a decomposed "é" names the same file as the composed one.
    decomposed = normalize_relpath("/x/cafe\u0301.txt", "/x")
    assert decomposed == normalize_relpath("/x/caf\u00e9.txt", "/x") == "caf\u00e9.txt"


def test_video_manifest_folder_recursive():
    table = video_manifest(VIDEOS)
    assert table.schema == FILE_SCHEMA
    rel = table.column("relpath").to_pylist()
    assert rel == sorted(rel) and "broken/truncated_tail__bbb.avi" in rel
    assert "torchcodec__av1_video.mkv" in rel and "moviepy__big_buck_bunny_432_433.webm" in rel
    assert table.column("id").to_pylist() == [stable_id(r) for r in rel]
    assert len(set(table.column("id").to_pylist())) == table.num_rows
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in table.column("path").to_pylist())
    assert video_manifest(VIDEOS).equals(table)
    assert video_manifest(VIDEOS, recursive=False).num_rows == table.num_rows - 4


def test_ids_do_not_depend_on_mount_point(tmp_path):
    for name in ("a.mp4", "sub/b.webm", "sub/notes.txt", ".hidden.mp4", ".cache/c.mp4"):
        touch(tmp_path / "one/videos" / name)
    shutil.copytree(tmp_path / "one", tmp_path / "two")
    first, second = video_manifest(tmp_path / "one/videos"), video_manifest(tmp_path / "two/videos")
    assert first.column("relpath").to_pylist() == ["a.mp4", "sub/b.webm"]  # hidden and non-video skipped
    assert first.column("id").equals(second.column("id"))


def test_video_manifest_probe():
    table = video_manifest(VIDEOS, probe=True)
    assert table.schema == VIDEO_SCHEMA_PROBED
    rows = {r["relpath"]: r for r in table.to_pylist()}
    nasa = rows["torchcodec__nasa_13013.mp4"]
    assert (nasa["fps"], nasa["num_frames"], nasa["num_video_streams"], nasa["has_audio"]) == (25.0, 325, 2, True)
    assert rows["broken/moviepy__result_empty.webm"]["probe_error"].startswith("empty_file")
    assert rows["broken/truncated_no_moov__bbb.mp4"]["probe_error"].startswith("open_failed")
    assert rows["broken/truncated_no_moov__bbb.mp4"]["duration_s"] is None


def test_globs_files_and_lists(tmp_path):
    top = video_manifest(str(VIDEOS / "*.mp4"))
    assert top.column("relpath").to_pylist() == ["torchcodec__h265_video.mp4", "torchcodec__nasa_13013.mp4"]
    deep = video_manifest(str(VIDEOS / "**" / "*.avi"))
    assert deep.column("relpath").to_pylist() == ["broken/truncated_tail__bbb.avi"]
    single = video_manifest(VIDEOS / "torchcodec__h265_video.mp4")
    assert single.column("id").to_pylist() == [stable_id("torchcodec__h265_video.mp4")]
    both = video_manifest([VIDEOS / "torchcodec__h265_video.mp4", str(VIDEOS / "*.mp4")])
    assert both.num_rows == 2  # the same file given twice appears once


def test_missing_and_empty_inputs(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        video_manifest(tmp_path / "nope")
    with pytest.raises(FileNotFoundError):
        video_manifest(str(tmp_path / "nope" / "*.mp4"))
    (tmp_path / "empty").mkdir()
    touch(tmp_path / "empty/readme.txt")
    with pytest.raises(ValueError, match="no inputs found under"):
        video_manifest(tmp_path / "empty")
    with pytest.raises(ValueError, match="no inputs found under"):
        video_manifest(str(tmp_path / "empty" / "*.mp4"))


def test_duplicate_relpaths_need_a_common_root(tmp_path):
    touch(tmp_path / "a/x.mp4")
    touch(tmp_path / "b/x.mp4")
    with pytest.raises(ValueError, match="share the id"):
        video_manifest([tmp_path / "a", tmp_path / "b"])
    table = video_manifest([tmp_path / "a", tmp_path / "b"], root=tmp_path)
    assert table.column("relpath").to_pylist() == ["a/x.mp4", "b/x.mp4"]


def test_image_manifest():
    table = image_manifest(DATA / "images")
    rel = table.column("relpath").to_pylist()
    assert "edge_cases/hopper.jpg" in rel and "edge_cases/transparent.png" in rel
    assert len(set(table.column("id").to_pylist())) == table.num_rows


def test_image_manifest_from_parquet(tmp_path):
    def png(seed: int) -> bytes:
        buffer = io.BytesIO()
        Image.fromarray(np.full((4, 5, 3), seed, np.uint8)).save(buffer, format="PNG")
        return buffer.getvalue()

    images = [png(i) for i in range(3)]
    hf_struct = pa.array([{"bytes": b, "path": f"{i}.png"} for i, b in enumerate(images)])
    pq.write_table(pa.table({"image": pa.array(images, pa.binary()), "hf": hf_struct, "key": ["k0", "k1", "k2"]}),
                   tmp_path / "imgs.parquet")
    table = image_manifest_from_parquet(tmp_path / "imgs.parquet")
    assert table.column_names == ["id", "path", "relpath", "row_index", "image"]
    assert table.column("id").to_pylist() == [stable_id("imgs.parquet", i) for i in range(3)]
    assert load_image(table.column("image")[2].as_py())[0, 0].tolist() == [2, 2, 2]
    hf = image_manifest_from_parquet(tmp_path, column="hf", id_column="key")
    assert hf.column("id").to_pylist() == ["k0", "k1", "k2"] and hf.column("image").equals(table.column("image"))
    assert image_manifest_from_parquet(tmp_path / "imgs.parquet", include_bytes=False).num_columns == 4
    with pytest.raises(ValueError, match="no column"):
        image_manifest_from_parquet(tmp_path / "imgs.parquet", column="pixels")
    with pytest.raises(ValueError, match="image bytes"):
        image_manifest_from_parquet(tmp_path / "imgs.parquet", column="key")


def test_text_manifest_matches_reader_ids(tmp_path):
    touch(tmp_path / "corpus/a.txt", b"\xef\xbb\xbfone\r\n\ntwo\nthr\xffee")
    touch(tmp_path / "corpus/sub/b.jsonl", b'{"text": "x"}\n\n{"text": "y"}\n')
    pq.write_table(pa.table({"text": ["p", "q", "r"]}), tmp_path / "corpus/c.parquet")
    touch(tmp_path / "corpus/skip.csv", b"a,b\n")
    table = text_manifest(tmp_path / "corpus")
    assert table.schema == TEXT_SCHEMA
    assert [(r["relpath"], r["index"]) for r in table.to_pylist()] == [
        ("a.txt", 0), ("a.txt", 2), ("a.txt", 3), ("c.parquet", 0), ("c.parquet", 1), ("c.parquet", 2),
        ("sub/b.jsonl", 0), ("sub/b.jsonl", 2)]
    reader_ids = [r["id"] for name in ("a.txt", "c.parquet", "sub/b.jsonl")
                  for r in read_texts(tmp_path / "corpus" / name, root=tmp_path / "corpus")]
    assert table.column("id").to_pylist() == reader_ids
    data = (tmp_path / "corpus/a.txt").read_bytes()
    spans = [data[r["byte_offset"]: r["byte_offset"] + r["byte_length"]] for r in table.to_pylist()[:3]]
    lines = [line for _, _, line in iter_line_spans(tmp_path / "corpus/a.txt")]
    assert spans == [b"one", b"two", b"thr\xffee"] == lines
    files = text_manifest(tmp_path / "corpus/a.txt", mode="file")
    assert files.to_pylist()[0]["index"] is None and files.column("id").to_pylist() == [stable_id("a.txt")]


def test_text_manifest_without_lines(tmp_path):
    touch(tmp_path / "blank.txt", b"\n  \n")
    with pytest.raises(ValueError, match="no inputs found"):
        text_manifest(tmp_path)


def test_flow_manifest(tmp_path):
    for name in ("frame_0001.png", "frame_0002.png", "frame_0003.png"):
        touch(tmp_path / "clean/alley" / name)
    (tmp_path / "flow/alley").mkdir(parents=True)
    write_flo(tmp_path / "flow/alley/frame_0001.flo", np.zeros((2, 2, 2), np.float32))
    table = flow_manifest(tmp_path)
    assert table.schema == FLOW_SCHEMA
    rows = table.to_pylist()
    assert [r["pair_id"] for r in rows] == ["clean/alley/frame_0001", "clean/alley/frame_0002"]
    assert [r["flow_format"] for r in rows] == ["flo", None] and rows[0]["layout"] == "sintel"
    assert [r["id"] for r in rows] == [stable_id(r["pair_id"]) for r in rows]
    (tmp_path / "nothing").mkdir()
    with pytest.raises(ValueError, match="no inputs found"):
        flow_manifest(tmp_path / "nothing")
    with pytest.raises(FileNotFoundError):
        flow_manifest(tmp_path / "missing")


def test_write_manifest_round_trip(tmp_path):
    table = video_manifest(VIDEOS)
    path = write_manifest(table, tmp_path / "out/manifest.parquet")
    assert pq.read_table(path).equals(table)
