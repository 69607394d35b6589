"""The commit protocol without Ray: storage writes, the manifest's shards, part names, per-shard stats.

The shard worker is a plain class, so these tests run it in-process on the video job's real code path (the
tiny multimodal preset over two sample files) and check what it commits against values computed another way
(pyarrow over the part, the accounting rule done by hand).
"""

from __future__ import annotations

import json
import os

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from _job_helpers import DATA

from pipelines import storage
from pipelines.batch import sink, work_plan
from pipelines.batch.accounting import ShardStats, metrics, shard_stats

VIDEOS = DATA / "videos"


# ----------------------------------------------------------------------------- storage


def test_resolve_local_and_uris(tmp_path):
    loc = storage.resolve(str(tmp_path / "a" / ".." / "b"))
    assert loc.is_local and loc.uri == str(tmp_path / "b") and loc.path == loc.uri
    assert storage.resolve(f"file://{tmp_path}").path == str(tmp_path)
    s3 = storage.resolve("s3://bucket/some/prefix/")
    assert not s3.is_local and s3.path == "bucket/some/prefix" and s3.uri == "s3://bucket/some/prefix"
    assert s3.join("part-1.parquet").uri == "s3://bucket/some/prefix/part-1.parquet"
    with pytest.raises(storage.StorageError, match="unsupported URI scheme 'xyz'"):
        storage.resolve("xyz://bucket/x")
    with pytest.raises(storage.StorageError, match="no bucket"):
        storage.resolve("s3:///key")


def test_write_atomic_local_replaces_whole(tmp_path):
    target = storage.resolve(str(tmp_path / "out" / "x.bin"))
    storage.write_atomic(target, b"first")
    storage.write_atomic(target, b"second, longer")
    assert (tmp_path / "out" / "x.bin").read_bytes() == b"second, longer"
    assert os.listdir(tmp_path / "out") == ["x.bin"]  # no temporary left behind
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "out" / "x.bin").stat().st_mode & 0o777 == 0o666 & ~mask  # as open() would make it


def test_write_atomic_failure_leaves_nothing(tmp_path, monkeypatch):
    target = storage.resolve(str(tmp_path / "x.bin"))

    def full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(storage.OutputWriteError, match=r"x.bin: ENOSPC \(No space left on device\)"):
        storage.write_atomic(target, b"data")
    assert os.listdir(tmp_path) == []


def test_write_atomic_refuses_planted_symlinks(tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("precious")
    out = tmp_path / "out"
    out.mkdir()
    (out / "_summary.json").symlink_to(outside)
    with pytest.raises(storage.OutputWriteError, match="symlink"):
        storage.write_atomic(storage.resolve(str(out / "_summary.json")), b"{}")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (out / "_pictures").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(storage.OutputWriteError, match="symlink"):
        storage.write_atomic(storage.resolve(str(out / "_pictures" / "a.png")), b"png")
    assert outside.read_text() == "precious" and list(elsewhere.iterdir()) == []


def test_write_atomic_on_s3(s3):
    bucket = s3.new_bucket()
    out = storage.resolve(f"s3://{bucket}/out")
    storage.write_atomic(out.join("part-00000000.parquet"), b"whole part", out)
    assert s3.client().get_object(Bucket=bucket, Key="out/part-00000000.parquet")["Body"].read() == b"whole part"
    # The staging object was moved, not left behind (pyarrow keeps an empty "folder/" marker key).
    assert [k for k in s3.keys(bucket) if not k.endswith("/")] == ["out/part-00000000.parquet"]


class _FailingMove(pafs.FileSystemHandler):
    """The S3 filesystem, except that the server-side copy to the final key fails (a dropped connection)."""

    def __init__(self, fs):
        self.fs = fs

    def __getattr__(self, name):
        return getattr(self.fs, name)

    def get_type_name(self):
        return "failing-move"

    def equals(self, other):
        return self is other

    def normalize_path(self, path):
        return path

    def get_file_info(self, paths):
        return self.fs.get_file_info(paths)

    def get_file_info_selector(self, selector):
        return self.fs.get_file_info(selector)

    def create_dir(self, path, recursive):
        self.fs.create_dir(path, recursive=recursive)

    def delete_dir(self, path):
        self.fs.delete_dir(path)

    def delete_dir_contents(self, path, missing_dir_ok=False):
        self.fs.delete_dir_contents(path, missing_dir_ok=missing_dir_ok)

    def delete_root_dir_contents(self):
        raise NotImplementedError

    def delete_file(self, path):
        self.fs.delete_file(path)

    def move(self, src, dest):
        raise OSError("connection reset during the copy to the final key")

    def copy_file(self, src, dest):
        self.fs.copy_file(src, dest)

    def open_input_stream(self, path):
        return self.fs.open_input_stream(path)

    def open_input_file(self, path):
        return self.fs.open_input_file(path)

    def open_output_stream(self, path, metadata):
        return self.fs.open_output_stream(path, metadata=metadata)

    def open_append_stream(self, path, metadata):
        raise NotImplementedError


def test_s3_upload_failure_never_shows_a_partial_object(s3):
    bucket = s3.new_bucket()
    real = storage.resolve(f"s3://{bucket}/out")
    out = storage.Location(pafs.PyFileSystem(_FailingMove(real.fs)), real.path, real.uri)
    with pytest.raises(storage.OutputWriteError, match="part-00000001.parquet"):
        storage.write_atomic(out.join("part-00000001.parquet"), b"x" * 1000, out)
    assert not s3.keys(bucket, "out/part-")  # only the staging area holds anything


def test_walk_files_sorted_hidden_dangling_and_loops(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "z.mp4").write_bytes(b"1")
    (tmp_path / "a.mp4").write_bytes(b"22")
    (tmp_path / ".hidden.mp4").write_bytes(b"3")
    (tmp_path / "dangling.mp4").symlink_to(tmp_path / "gone.mp4")
    (tmp_path / "b" / "loop").symlink_to(tmp_path, target_is_directory=True)
    found = [(os.path.relpath(e.location.path, tmp_path), e.size) for e in storage.walk_files(storage.resolve(
        str(tmp_path)))]
    assert found == [("a.mp4", 2), ("b/z.mp4", 1), ("dangling.mp4", -1)]


# ----------------------------------------------------------------------------- manifest and part names


def test_manifest_shards_cover_every_item_once(tmp_path):
    schema = pa.schema([("id", pa.string()), ("n", pa.int64())])
    n = work_plan.ITEMS_PER_FILE + 3000
    out = storage.resolve(str(tmp_path))
    plan = work_plan.write_manifest(out, ({"id": f"i{k}", "n": k} for k in range(n)), schema, max_shard_size=4096)
    assert plan.num_files == 2 and plan.shard_size == 512  # smallest power of two giving <= 256 shards
    seen = []
    for shard in range(plan.num_shards):
        seen += work_plan.read_shard(out, plan, shard).column("n").to_pylist()
    assert seen == list(range(n))
    assert work_plan.choose_shard_size(8, 64) == 1 and work_plan.choose_shard_size(10**7, 64) == 64
    # at least the batch size (a power of two above it), still capped by the maximum
    assert work_plan.choose_shard_size(8, 64, min_shard_size=16) == 16 == work_plan.choose_shard_size(10, 64, 12)
    assert work_plan.choose_shard_size(10**4, 1024, 16) == 64 and work_plan.choose_shard_size(8, 8, 16) == 8


def test_part_names_have_no_width_limit(tmp_path):
    for shard in (0, 99_999, 100_000, 123_456_789):
        (tmp_path / sink.part_name(shard)).write_bytes(b"")
    (tmp_path / "part-00000001.parquet.tmp").write_bytes(b"")
    (tmp_path / "_summary.json").write_bytes(b"")
    assert sink.committed_shards(storage.resolve(str(tmp_path))) == {0, 99_999, 100_000, 123_456_789}


# ----------------------------------------------------------------------------- accounting


def _rows(units, errors, ids=None, psnr=None):
    n = len(units)
    return pa.table({
        "id": ids or [f"{u}:{i}" for i, u in enumerate(units)], "input_id": units,
        "error": errors, "error_type": [None if e is None else "decode_error" for e in errors],
        "warning": [None] * n, "psnr_video": psnr or [20.0] * n, "psnr_audio": [None] * n,
        "label_index": [None] * n, "top_k_ids": [None] * n})


def test_shard_stats_accounting_rule():
    table = _rows(["a", "a", "b", "c", "c", "d", "d"],
                  [None, None, "bad", None, "bad", "bad", "bad"])
    stats = shard_stats("video", table, "input_id", ["a", "b", "c", "d", "e"])
    c = stats.counts
    # a: ok; b: failed (one error row); c: success + error row, d: two error rows -> both counted twice;
    # e: no row at all -> missing.
    assert (c["inputs"], c["inputs_ok"], c["inputs_failed"], c["inputs_missing"]) == (5, 1, 1, 1)
    assert c["duplicate_ids"] == 2 and c["rows"] == 7 and c["rows_error"] == 4
    assert stats.errors_by_type == {"decode_error": 4}


def test_metrics_over_empty_sets_are_null():
    table = _rows(["a"], ["bad"])
    stats = shard_stats("video", table, "input_id", ["a"])
    assert metrics("video", stats.sums) == {"psnr_video_db": None, "psnr_audio_db": None}
    flow = pa.table({"id": ["p"], "input_id": ["p"], "error": [None], "error_type": [None], "warning": [None],
                     "flow_mean_px": [1.5], "has_gt": [True], "num_valid_px": [0], "epe": [None],
                     "acc_1px": [None], "acc_3px": [None], "acc_5px": [None], "fl_all": [None]})
    m = metrics("flow", shard_stats("flow", flow, "input_id", ["p"]).sums)
    assert m["flow_mean_px"] == 1.5 and m["pairs_with_gt"] == 1 and m["valid_px"] == 0 and m["epe"] is None


def test_stats_merge_equals_stats_of_the_union():
    a = _rows(["a", "a"], [None, None], psnr=[10.0, 20.0])
    b = _rows(["b"], [None], psnr=[40.0])
    merged = ShardStats()
    merged.merge(shard_stats("video", a, "input_id", ["a"]))
    merged.merge(shard_stats("video", b, "input_id", ["b"]))
    union = shard_stats("video", pa.concat_tables([a, b]), "input_id", ["a", "b"])
    assert merged.counts == union.counts
    assert metrics("video", merged.sums)["psnr_video_db"] == pytest.approx(70 / 3)
    assert ShardStats.from_json(merged.to_json()) == merged


# ----------------------------------------------------------------------------- the shard worker in-process


@pytest.fixture(scope="module")
def video_job(tmp_path_factory):
    from jobs.cli import build_parser
    from jobs.video import build_job, config_from_args
    from pipelines.batch.runner import prepare_run, shard_job

    tmp = tmp_path_factory.mktemp("commit")
    inputs = tmp / "in"
    inputs.mkdir()
    for name in ("torchcodec__h265_video.mp4", "moviepy__big_buck_bunny_432_433.webm"):
        (inputs / name).symlink_to(VIDEOS / name)
    (inputs / "broken.mp4").write_bytes(b"")
    out = tmp / "out"
    args = build_parser().parse_args(["video", "--input", str(inputs), "--output", str(out), "--model", "multimodal",
                                      "--random-init", "--tiny", "--clips-per-video", "2"])
    job = build_job(config_from_args(args))
    prepared = prepare_run(job, str(out))
    return out, job, prepared, shard_job(job, prepared)


def test_worker_commits_each_shard_whole_with_its_stats(video_job):
    from pipelines.batch.shard_worker import ShardWorker

    out, _, prepared, sj = video_job
    assert prepared.plan.num_items == 3 and prepared.pending == [0, 1, 2]
    worker = ShardWorker(sj)
    result = worker(pa.table({"shard": list(range(prepared.plan.num_shards))}))
    assert result.column("part").to_pylist() == [sink.part_name(k) for k in range(3)]
    manifest = work_plan.read_manifest(prepared.out, prepared.plan)
    for k, text in enumerate(result.column("stats").to_pylist()):
        part = pq.read_table(out / sink.part_name(k))
        assert set(part.column("input_id").to_pylist()) == {manifest.column("id")[k].as_py()}
        stats = json.loads(text)
        ok = part.filter(pa.compute.is_null(part.column("error")))
        assert stats["counts"]["rows"] == part.num_rows and stats["counts"]["rows_ok"] == ok.num_rows
        assert stats["sums"]["psnr_video.sum"] == pytest.approx(sum(ok.column("psnr_video").to_pylist()), rel=1e-6)
        assert sink.read_part_stats(prepared.out.join(sink.part_name(k))).to_json() == text


def test_second_worker_on_a_committed_shard_changes_nothing(video_job):
    """A retried task or a second job on the same folder: the shard is already committed, nothing changes."""
    from pipelines.batch.shard_worker import ShardWorker

    out, _, _, sj = video_job
    before = {k: (out / sink.part_name(k)).read_bytes() for k in range(3)}
    again = ShardWorker(sj)(pa.table({"shard": [1]}))
    assert again.column("part").to_pylist() == [sink.part_name(1)]
    assert {k: (out / sink.part_name(k)).read_bytes() for k in range(3)} == before


def test_redone_shard_is_replaced_by_the_same_rows(video_job):
    """A part lost (or never committed) is redone under the same name with the same rows: exactly once."""
    from pipelines.batch.shard_worker import ShardWorker

    out, _, _, sj = video_job
    before = pq.read_table(out / sink.part_name(0))
    (out / sink.part_name(0)).unlink()
    ShardWorker(sj)(pa.table({"shard": [0]}))
    after = pq.read_table(out / sink.part_name(0))
    assert after.column("id").to_pylist() == before.column("id").to_pylist()
    assert after.column("psnr_video").to_pylist() == before.column("psnr_video").to_pylist()


def test_summary_merges_log_and_footers(video_job):
    out, _, prepared, _ = video_job
    log = sink.CommitLog(prepared.out)
    parts = [sink.part_name(k) for k in range(2)]  # shard 2's log entry "lost in a kill"
    log.add(pa.table({"shard": [0, 1], "part": parts,
                      "stats": [sink.read_part_stats(prepared.out.join(p)).to_json() for p in parts]}))
    log.flush()
    merged, footers = sink.merged_stats(prepared.out, {0, 1, 2})
    assert footers == 1
    table = pq.read_table(out)  # what a user reads: only the parts
    assert merged.counts["rows"] == table.num_rows
    assert merged.counts["inputs"] == 3 and merged.counts["inputs_failed"] == 1 and merged.counts["inputs_ok"] == 2


def test_a_worker_that_cannot_see_a_local_output_says_so(tmp_path):
    """On a cluster without shared storage a worker node lacks the driver's local output folder: the
    shard fails with a message naming the fix, not a bare FileNotFoundError."""
    plan = work_plan.PlanInfo(num_items=3, shard_size=1)
    with pytest.raises(FileNotFoundError, match="not visible on worker node .*NFS, EFS.*s3://"):
        work_plan.read_shard(storage.resolve(str(tmp_path / "elsewhere")), plan, 0)
