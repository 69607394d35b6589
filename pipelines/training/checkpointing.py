"""Training checkpoints: a transformers-format model directory plus optimizer, scheduler and trainer state.

Layout of one checkpoint (``checkpoint_<step:08d>``)::

    config.json, model.safetensors     transformers format: our from_pretrained and transformers' load it
    optimizer.pt, scheduler.pt         torch state dicts, read back with weights_only=True
    trainer_state.json                 step, epoch, samples, attempt, metrics; written last

A checkpoint is written into a fresh temporary directory and only then handed to Ray Train (which registers
it after the copy into the run directory completes) or, in local mode, renamed into place (on object
storage: uploaded file by file, each file whole, ``trainer_state.json`` last). A crash while writing
therefore leaves at most an orphaned temporary directory or an incomplete folder without
``trainer_state.json``, never a checkpoint that resume could pick.

Run directories and checkpoints may live on any filesystem: the functions here take a ``storage.Location``
(or a local path / URI string) for them, and ``run_storage.local_copy`` gives loaders a local directory.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from pipelines import storage
from pipelines.storage import Location
from pipelines.training import run_storage

MODEL_FILES = ("config.json", "model.safetensors")
STATE_FILE = "trainer_state.json"
CHECKPOINT_FILES = (*MODEL_FILES, "optimizer.pt", "scheduler.pt", STATE_FILE)
PREFIX = "checkpoint_"


@dataclass
class TrainerState:
    step: int = 0  # optimizer steps taken
    epoch: int = 0  # passes over the training data started
    samples: int = 0  # training examples consumed (all workers)
    attempt: int = 0  # how many times this run has (re)started
    metrics: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def read(cls, directory: str | Path) -> TrainerState:
        return cls(**json.loads((Path(directory) / STATE_FILE).read_text(encoding="utf-8")))


def checkpoint_name(step: int) -> str:
    return f"{PREFIX}{step:08d}"


def write_checkpoint(directory: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                     scheduler: Any, state: TrainerState) -> Path:
    """Write every file of a checkpoint into ``directory``; ``trainer_state.json`` goes last (a folder
    without it is incomplete and never resumed from)."""
    directory = Path(directory)
    model.save_pretrained(directory)
    torch.save(optimizer.state_dict(), directory / "optimizer.pt")
    torch.save(scheduler.state_dict(), directory / "scheduler.pt")
    (directory / STATE_FILE).write_text(json.dumps(asdict(state), indent=2, default=float), encoding="utf-8")
    return directory


def as_location(directory: str | Path | Location) -> Location:
    return directory if isinstance(directory, Location) else storage.resolve(str(directory))


def is_complete(directory: str | Path | Location) -> bool:
    return set(CHECKPOINT_FILES) <= run_storage.file_names(as_location(directory))


def restore(directory: str | Path, head: type, device: torch.device, optimizer_factory, scheduler_factory):
    """(model on ``device``, optimizer, scheduler, state) from a checkpoint directory; raises if incomplete."""
    directory = Path(directory)
    if not is_complete(directory):
        missing = [n for n in CHECKPOINT_FILES if not (directory / n).is_file()]
        raise FileNotFoundError(f"checkpoint {directory} is incomplete (missing {missing})")
    model = head.from_pretrained(directory).train().to(device)
    optimizer = optimizer_factory(model)
    optimizer.load_state_dict(torch.load(directory / "optimizer.pt", map_location=device, weights_only=True))
    scheduler = scheduler_factory(optimizer)
    scheduler.load_state_dict(torch.load(directory / "scheduler.pt", map_location="cpu", weights_only=True))
    return model, optimizer, scheduler, TrainerState.read(directory)


def latest_checkpoint(run_dir: str | Path | Location) -> Location | None:
    """The complete checkpoint with the highest step in ``run_dir`` (local mode; Ray Train tracks its own)."""
    run = as_location(run_dir)
    for name in reversed([n for n in run_storage.list_folders(run) if n.startswith(PREFIX)]):
        if is_complete(run.join(name)):
            return run.join(name)
    return None


def persist_local(source: str | Path, run_dir: str | Path | Location, step: int, keep: int) -> Location:
    """Store a finished checkpoint (a local folder) as ``run_dir/checkpoint_<step>``; keep the newest ``keep``.

    Local: copied into a staging folder and renamed into place. Object storage: uploaded file by file, each
    file whole, ``trainer_state.json`` last (``is_complete`` is false until then)."""
    run = as_location(run_dir)
    final = run.join(checkpoint_name(step))
    if run.is_local:
        os.makedirs(run.path, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=run.path))
        shutil.copytree(source, staging, dirs_exist_ok=True)
        if os.path.exists(final.path):
            shutil.rmtree(final.path)
        staging.rename(final.path)
    else:
        run_storage.delete_tree(final)
        run_storage.upload_tree(source, final, staging_root=run, last=(STATE_FILE,))
    for old in [n for n in run_storage.list_folders(run) if n.startswith(PREFIX)][:-keep]:
        run_storage.delete_tree(run.join(old))
    return final


def save_model_atomically(model: torch.nn.Module, directory: str | Path | Location, extras=None) -> Location:
    """Save ``model`` (transformers format) to ``directory``, replacing it only once fully written.

    Local: written to a staging folder beside it, then renamed. Object storage: written locally, then
    uploaded with ``config.json`` last, so that a loader that finds ``config.json`` finds every file."""
    target = as_location(directory)
    if not target.is_local:
        with tempfile.TemporaryDirectory(prefix="perceiver-model-") as tmp:
            model.save_pretrained(tmp)
            if extras is not None:
                extras(Path(tmp))
            target.join("config.json").delete()  # first: a half-replaced model is never loadable
            run_storage.delete_tree(target)
            run_storage.upload_tree(tmp, target, staging_root=run_storage.parent_of(target), last=("config.json",))
        return target
    directory = Path(target.path)
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}-", dir=directory.parent))
    model.save_pretrained(staging)
    if extras is not None:
        extras(staging)
    staging.chmod(0o755)  # mkdtemp makes it private; a saved model is meant to be shared
    for f in staging.iterdir():
        f.chmod(0o644)
    if directory.exists():
        shutil.rmtree(directory)
    staging.rename(directory)
    return target
