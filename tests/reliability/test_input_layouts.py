"""Unusual input layouts through the whole video job.

* The output folder inside the input folder (``--input D --output D/out``): the job's own folder is never
  listed as input (``listing.iter_files(exclude=output)``), not even a video planted in it, and a rerun
  reuses the manifest (same ids) instead of listing again.
* Symlinks among the inputs: a dangling link is an input that fails with ``not_found`` (one error row);
  a symlinked sub-folder is followed (its files are inputs, under the link's name); a real folder reached a
  second time (a link loop, or two links to one folder) is walked once, so no file is processed twice.
"""

from __future__ import annotations

import pyarrow.parquet as pq
from _reliability_helpers import SMALL_CLIPS, check_exactly_once, make_clips, parts


def args(inp, out, *extra):
    return ["video", "--input", inp, "--output", out, "--model", "multimodal", "--random-init", "--tiny",
            "--no-progress", "--clips-per-video", 1, "--batch-size", 1, "--num-workers", 1, *extra]


def manifest(out):
    return pq.read_table(out / "_meta" / "manifest", columns=["id", "path", "relpath"]).to_pylist()


def test_output_inside_the_input_folder(cli, tmp_path):
    data = make_clips(tmp_path / "data", 2)
    out = data / "out"
    out.mkdir()
    (out / "planted.mp4").symlink_to(SMALL_CLIPS[0])  # a video inside the output folder: never an input
    rc, err = cli(*args(data, out, "--pictures"))
    assert rc == 0, err
    first = manifest(out)
    assert sorted(r["relpath"] for r in first) == ["clip_000.mp4", "clip_001.webm"]
    assert not [r for r in first if r["path"].startswith(str(out) + "/")]
    assert list((out / "_pictures").glob("*.png"))  # the job wrote files inside its input folder ...
    check_exactly_once(out, 1)

    for part in parts(out)[-1:]:  # ... then "was killed": the last shard is redone by the rerun
        part.unlink()
    (out / "_SUCCESS").unlink()
    rc, err = cli(*args(data, out, "--pictures"))
    assert rc == 0, err
    assert manifest(out) == first  # the same items: the rerun did not list its own files as inputs
    summary = check_exactly_once(out, 1)
    assert summary["run"]["processed_this_run"] == 1


def test_symlinks_among_the_inputs(cli, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.mp4").symlink_to(SMALL_CLIPS[0])
    (data / "dangling.mp4").symlink_to(data / "missing.mp4")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "b.webm").symlink_to(SMALL_CLIPS[1])
    (data / "linked").symlink_to(elsewhere)  # followed
    (data / "linked_again").symlink_to(elsewhere)  # the same real folder: walked once
    (data / "loop").symlink_to(data)  # a loop back to the input root: not walked again
    out = tmp_path / "out"
    rc, err = cli(*args(data, out))
    assert rc == 0, err
    assert sorted(r["relpath"] for r in manifest(out)) == ["a.mp4", "dangling.mp4", "linked/b.webm"]
    summary = check_exactly_once(out, 1)
    assert summary["counts"]["inputs_ok"] == 2 and summary["errors_by_type"] == {"not_found": 1}, summary
    rows = {r["source"].rsplit("/", 1)[-1]: r for r in pq.read_table(parts(out)).to_pylist()}
    assert rows["dangling.mp4"]["error_type"] == "not_found" and rows["dangling.mp4"]["error"]
    assert rows["b.webm"]["source"] == str(data / "linked" / "b.webm") and rows["b.webm"]["error"] is None
