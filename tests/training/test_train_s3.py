"""Training on object storage, end to end, through the real S3 API (moto's server, ``tests/conftest.py``).

What is checked against an independent reference:
* paths: URIs stay URIs, local paths become absolute, an unknown scheme is a one-line error before any work;
* data: globs / folders on S3 list the right keys; images read by Ray Data tasks from S3 equal the same files
  decoded locally;
* bounded pre-training reads: the S3 server's own request log shows which objects were read before step 1
  (the same log sees every object of a full pass, so the bound is not an artefact of the counter);
* the run: checkpoints, metrics.csv, run.json and final/ are S3 keys, nothing lands in the working
  directory, a resumed run continues from the saved step, and the exported model, downloaded with boto3,
  gives the in-run model's logits in our implementation and in transformers'.

The module restarts Ray with the S3 variables in the environment: ``fit`` starts it (``init_ray``, which
passes ``storage.worker_env()`` as the runtime_env), as the command line does.
"""

from __future__ import annotations

import json
import logging
import os
import re
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from _faults import Fault, inject

from jobs import train as train_cmd
from perceiver_core import load_pretrained
from pipelines import storage
from pipelines.storage import StorageError
from pipelines.training import data
from pipelines.training.checkpointing import CHECKPOINT_FILES
from pipelines.training.config import TrainConfig
from pipelines.training.reporting import read_metrics_csv
from pipelines.training.tasks import get_task
from pipelines.training.tasks.images import RESIZE_RATIO, load_images_batch
from pipelines.training.trainer import fit, init_ray, prepare_run

DATA = Path(__file__).resolve().parents[1] / "data"
UDHR = DATA / "text" / "udhr"
GET = re.compile(r'"(?:\x1b\[[0-9;]*m)*GET (/[^\s?]+) HTTP')


@pytest.fixture(scope="module")
def store(s3_server):
    """The S3 server, its endpoint and credentials in os.environ for the whole module, and no Ray running
    (the code under test starts it, so that its workers get the variables through the runtime_env)."""
    ray = pytest.importorskip("ray")
    with pytest.MonkeyPatch.context() as mp:
        for key, value in s3_server.env().items():
            mp.setenv(key, value)
        if ray.is_initialized():
            ray.shutdown()
        yield s3_server
        ray.shutdown()


@contextmanager
def objects_read(bucket: str):
    """The keys of ``bucket`` the S3 server was asked to GET (object reads; listings have no key path)."""
    keys: set[str] = set()

    class Handler(logging.Handler):
        def emit(self, record):
            m = GET.search(record.getMessage())
            if m and m.group(1).startswith(f"/{bucket}/"):
                keys.add(m.group(1)[len(bucket) + 2:])

    logger = logging.getLogger("werkzeug")  # moto's server logs every request it serves
    handler, level = Handler(), logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        yield keys
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def put(store, bucket: str, key: str, body: bytes | str) -> str:
    store.client().put_object(Bucket=bucket, Key=key, Body=body.encode() if isinstance(body, str) else body)
    return f"s3://{bucket}/{key}"


def download(store, bucket: str, prefix: str, target: Path) -> Path:
    target.mkdir(parents=True)
    for key in store.keys(bucket, prefix + "/"):
        if not key.endswith("/"):
            store.client().download_file(bucket, key, str(target / key[len(prefix) + 1:]))
    return target


# ---------------------------------------------------------------------------------------------- paths


def test_paths_are_resolved_once_and_bad_schemes_stop_before_any_work(monkeypatch, tmp_path, capsys):
    monkeypatch.chdir(tmp_path)
    config = TrainConfig(task="mlm", data=("s3://corpus/train/*.parquet", "local.txt"), eval_data=("s3://b/dev",),
                         init_from="s3://models/mlm/final", output_dir="runs", export_dir="s3://models/out",
                         name="r")
    assert config.data == ("s3://corpus/train/*.parquet", str(tmp_path / "local.txt"))
    assert (config.eval_data, config.init_from) == (("s3://b/dev",), "s3://models/mlm/final")
    assert (config.output_dir, config.export_dir) == (str(tmp_path / "runs"), "s3://models/out")
    assert TrainConfig(task="mlm", data=("x",), output_dir="s3://bucket/runs/", name="r").run_dir == \
        "s3://bucket/runs/r"
    assert TrainConfig.from_dict(config.to_dict()) == config  # workers get the same strings
    for flag in ("data", "eval_data", "init_from", "output_dir", "export_dir"):
        value = ("ftp://host/x",) if flag.endswith("data") else "ftp://host/x"
        with pytest.raises(StorageError, match="unsupported URI scheme 'ftp'"):
            TrainConfig(**{"task": "mlm", "data": ("x",), flag: value})

    started = []
    monkeypatch.setattr("pipelines.training.trainer.fit", lambda config: started.append(config))
    code = train_cmd.main(["--task", "mlm", "--data", "x.txt", "--output-dir", "ftp://host/runs"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and not started and len(err.splitlines()) == 1 and "ftp" in err


def test_ray_workers_get_the_storage_variables(store, monkeypatch):
    import ray

    calls = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kw: calls.append(kw))
    init_ray(TrainConfig(task="mlm", data=("x",)))
    env = calls[0]["runtime_env"]["env_vars"]
    assert env["AWS_ENDPOINT_URL"] == store.endpoint and env["AWS_ACCESS_KEY_ID"] == "testing"


def test_data_on_s3_globs_and_folders(store):
    bucket = store.new_bucket()
    for key in ("c/a.parquet", "c/b.parquet", "c/notes.md", "c/sub/d.parquet", "c/_meta/manifest/m.parquet",
                "c/_SUCCESS", "c/.hidden.parquet"):
        put(store, bucket, key, b"x")

    def keys(*paths):
        return [loc.uri.split(f"s3://{bucket}/")[1] for loc in data.find_files(paths, data.TEXT_SUFFIXES)]

    assert keys(f"s3://{bucket}/c/*.parquet") == ["c/a.parquet", "c/b.parquet"]
    assert keys(f"s3://{bucket}/c/**/*.parquet") == ["c/a.parquet", "c/b.parquet", "c/sub/d.parquet"]
    assert keys(f"s3://{bucket}/c") == ["c/a.parquet", "c/b.parquet", "c/sub/d.parquet"]
    assert keys(f"s3://{bucket}/c/_meta/*/*.parquet") == ["c/_meta/manifest/m.parquet"]  # named: matched
    with pytest.raises(FileNotFoundError):
        keys(f"s3://{bucket}/c/*.jsonl")
    with pytest.raises(FileNotFoundError):
        keys(f"s3://{bucket}/missing")


# ---------------------------------------------------------------------------------------------- the run


def test_mlm_on_s3_stops_resumes_and_exports_a_loadable_model(store, tmp_path, monkeypatch):
    import pyarrow as pa
    import pyarrow.parquet as pq

    bucket = store.new_bucket()
    for i, lang in enumerate(("eng", "fra")):  # the corpus as parquet shards, the held-out split as text
        lines = [line for line in (UDHR / f"{lang}.txt").read_text().splitlines() if line.strip()]
        sink = pa.BufferOutputStream()
        pq.write_table(pa.table({"body": lines}), sink)
        put(store, bucket, f"corpus/part-{i}.parquet", sink.getvalue().to_pybytes())
    put(store, bucket, "corpus/_SUCCESS", b"")
    put(store, bucket, "heldout/deu.txt", (UDHR / "deu_1996.txt").read_bytes())
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)

    kw = {"task": "mlm", "data": (f"s3://{bucket}/corpus/*.parquet",), "eval_data": (f"s3://{bucket}/heldout",),
          "text": {"column": "body"}, "tiny": True, "max_steps": 2, "batch_size": 2, "log_every": 1,
          "checkpoint_every": 2, "warmup_steps": 1, "eval_batches": 2, "num_workers": 0,
          "output_dir": f"s3://{bucket}/runs", "name": "mlm"}
    first = fit(TrainConfig(**kw))
    assert (first.step, first.run_dir) == (2, f"s3://{bucket}/runs/mlm")
    assert first.checkpoint_dir == f"s3://{bucket}/runs/mlm/checkpoint_00000002"
    second = fit(TrainConfig(**{**kw, "max_steps": 4, "resume": True, "export_dir": f"s3://{bucket}/export/mlm"}))
    assert (second.start_step, second.step) == (2, 4)  # continued from the saved checkpoint
    with pytest.raises(FileExistsError):  # the same name without --resume never silently continues
        fit(TrainConfig(**kw))
    # --init-from on S3 (config read by the driver, weights downloaded by the worker): evaluating the export
    # gives the trained model's held-out loss
    evaluation = fit(TrainConfig(**{**kw, "max_steps": 0, "init_from": f"s3://{bucket}/export/mlm",
                                    "name": "eval-export"}))
    assert evaluation.metrics["eval_loss"] == pytest.approx(second.metrics["eval_loss"], rel=1e-5)

    keys = set(store.keys(bucket))
    for step in (2, 4):
        assert {f"runs/mlm/checkpoint_{step:08d}/{name}" for name in CHECKPOINT_FILES} <= keys
    model_files = {"config.json", "model.safetensors", "tokenizer_config.json"}
    assert {"runs/mlm/metrics.csv", "runs/mlm/run.json"} | {f"runs/mlm/final/{n}" for n in model_files} | \
        {f"export/mlm/{n}" for n in model_files} <= keys
    assert not [k for k in keys if k.endswith(".tmp")]  # every staging object was moved into place
    assert os.listdir(cwd) == []  # nothing was written in the local working directory

    rows = read_metrics_csv(f"s3://{bucket}/runs/mlm/metrics.csv")
    assert [(r["attempt"], r["step"]) for r in rows if r["split"] == "train"] == [("1", "1"), ("1", "2"),
                                                                                 ("2", "3"), ("2", "4")]
    assert [r["step"] for r in rows if r["split"] == "eval"] == ["2", "4"]
    state = json.loads(storage.resolve(f"{second.checkpoint_dir}/trainer_state.json").read_text())
    assert (second.checkpoint_dir.rsplit("/", 1)[1], state["step"], state["attempt"]) == ("checkpoint_00000004", 4, 2)
    record = json.loads(storage.resolve(f"s3://{bucket}/runs/mlm/run.json").read_text())
    assert record["train_config"]["max_steps"] == 4 and 3.0 < record["baselines"]["unigram_bits_per_byte"] < 6.0

    # the export, downloaded: our loader and transformers' give the trained model's logits
    local = download(store, bucket, "export/mlm", tmp_path / "export")
    ours = load_pretrained(local).eval()
    trained = torch.tensor(second.probe)
    with torch.inference_mode():
        assert torch.allclose(get_task("mlm").probe(ours, ours.config), trained, atol=1e-5)
    transformers = pytest.importorskip("transformers")
    theirs = transformers.PerceiverForMaskedLM.from_pretrained(local).eval()
    ids = torch.randint(6, 262, (2, 32), generator=torch.Generator().manual_seed(0))  # MLM probe input
    ids[:, ::5] = 3
    with torch.inference_mode():
        assert torch.allclose(theirs(inputs=ids).logits, trained, atol=1e-4)


def test_rows_read_before_step_one_are_bounded(store):
    bucket = store.new_bucket()
    rows_per_file, files = 25, 40
    for i in range(files):
        put(store, bucket, f"clf/part-{i:03d}.txt", "".join(
            f"{'pos' if j % 2 else 'neg'} file {i} line {j}: {'a fine film' if j % 2 else 'dull'}\n"
            for j in range(rows_per_file)))
    dev = put(store, bucket, "dev/dev.txt", "".join(f"{'pos' if j % 3 else 'neg'} held-out text number {j} "
                                                    f"with enough bytes to fill a few windows\n" for j in range(60)))
    first_two = {"clf/part-000.txt", "clf/part-001.txt"}  # 30 rows = the first file and part of the second
    config = TrainConfig(task="text-classification", data=(f"s3://{bucket}/clf/",), eval_data=(dev,), tiny=True,
                         sample_rows=30, text={"seq_len": 64}, num_workers=0, output_dir=f"s3://{bucket}/runs",
                         name="c")
    init_ray(config)
    with objects_read(bucket) as read:
        prepared = prepare_run(config)
    assert read == first_two | {"dev/dev.txt"}
    assert prepared.model_config.id2label == {0: "neg", 1: "pos"}
    assert prepared.baselines["majority_accuracy"] == pytest.approx(40 / 60)  # 'pos' where j % 3 != 0

    with objects_read(bucket) as read:  # the reference: a pass over the training split reads every file
        assert prepared.datasets["train"].count() == rows_per_file * files
    assert len({k for k in read if k.startswith("clf/")}) == files

    mlm = TrainConfig(task="mlm", data=(f"s3://{bucket}/clf/*.txt",), eval_data=(dev,), tiny=True, sample_rows=30,
                      num_workers=0, output_dir=f"s3://{bucket}/runs", name="m")
    with objects_read(bucket) as read:
        baseline = prepare_run(mlm).baselines["unigram_bits_per_byte"]
    assert read == first_two | {"dev/dev.txt"} and 2.0 < baseline < 8.0


def test_image_classification_reads_its_images_from_s3(store, tmp_path):
    bucket = store.new_bucket()
    src = DATA / "images" / "natural"
    names = {"astronaut.png": "person", "chelsea.png": "cat", "coffee.png": "cup"}
    for name in names:
        put(store, bucket, f"imgs/{name}", (src / name).read_bytes())
    put(store, bucket, "imgs/labels.csv", "file,label\n" + "".join(f"{n},{c}\n" for n, c in names.items()))
    config = TrainConfig(task="image-classification", data=(f"s3://{bucket}/imgs",), tiny=True, image={"size": 32},
                         max_steps=1, num_workers=0, output_dir=str(tmp_path / "runs"), name="i")
    init_ray(config)
    prepared = prepare_run(config)
    assert prepared.model_config.id2label == {0: "cat", 1: "cup", 2: "person"}
    rows = prepared.datasets["train"].take_all()
    got = {int(r["label"]): np.asarray(r["image"]) for r in rows}
    paths = np.array([str(src / n) for n in names])
    local = load_images_batch({"path": paths, "label": np.array(list(names.values()))},
                              size=round(32 * RESIZE_RATIO), label2id={"cat": 0, "cup": 1, "person": 2})
    assert sorted(got) == [0, 1, 2]
    for image, label in zip(local["image"], local["label"]):  # the same pixels as decoding the local files
        assert np.array_equal(got[int(label)], image)


@pytest.mark.slow
def test_ray_train_worker_killed_then_resumed_from_s3(store, tmp_path, monkeypatch):
    """A real Ray Train worker (num_workers=1) checkpoints through RunConfig(storage_path, storage_filesystem),
    dies at step 3 (os._exit, no restarts allowed), and a rerun with --resume continues from checkpoint 2."""
    bucket = store.new_bucket()
    for lang in ("eng", "fra"):
        put(store, bucket, f"corpus/{lang}.txt", (UDHR / f"{lang}.txt").read_bytes())
    kw = {"task": "mlm", "data": (f"s3://{bucket}/corpus",), "tiny": True, "max_steps": 4, "batch_size": 2,
          "log_every": 1, "checkpoint_every": 2, "warmup_steps": 1, "num_workers": 1,
          "output_dir": f"s3://{bucket}/runs", "name": "ddp"}
    from ray.train import TrainingFailedError

    fault = Fault(step=3, mode="exit", marker_dir=str(tmp_path / "faults"))
    with monkeypatch.context() as patch:
        inject(patch, fault)
        with pytest.raises(TrainingFailedError):
            fit(TrainConfig(**kw, max_failures=0))
    keys = set(store.keys(bucket, "runs/ddp/"))
    assert fault.marker.exists() and "runs/ddp/checkpoint_00000002/trainer_state.json" in keys
    assert not any(k.startswith("runs/ddp/checkpoint_00000004") for k in keys)

    result = fit(TrainConfig(**kw, resume=True, export_dir=f"s3://{bucket}/export"))
    assert (result.start_step, result.step) == (2, 4)
    assert result.checkpoint_dir == f"s3://{bucket}/runs/ddp/checkpoint_00000004"
    rows = read_metrics_csv(f"{result.run_dir}/metrics.csv")
    assert [(r["attempt"], r["step"]) for r in rows if r["split"] == "train"] == [("1", "1"), ("1", "2"),
                                                                                 ("2", "3"), ("2", "4")]
    transformers = pytest.importorskip("transformers")
    theirs = transformers.PerceiverForMaskedLM.from_pretrained(download(store, bucket, "export", tmp_path / "e"))
    ids = torch.randint(6, 262, (2, 32), generator=torch.Generator().manual_seed(0))
    ids[:, ::5] = 3
    with torch.inference_mode():
        assert torch.allclose(theirs.eval()(inputs=ids).logits, torch.tensor(result.probe), atol=1e-4)
