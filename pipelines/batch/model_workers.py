"""Model workers: the actor-pool stage that holds a Perceiver and turns input rows into output rows.

``ModelSpec`` says which model (a transformers-format directory, or a preset built with random weights for
smoke runs) and how to run it (bf16). ``ModelWorker`` is the base of every job's model stage, following
Ray's batch-inference pattern: the model is loaded once per actor in ``__init__`` and warmed up with one
dummy batch, and ``__call__(batch) -> batch`` runs under ``torch.inference_mode()``.

Error handling: rows that arrive with ``error`` set (an earlier stage failed on them) pass through with
null outputs. If the model raises on a batch, each row is retried alone and the rows that still fail
become ``model_error`` rows, so one bad input cannot take its batch down. A failing warm-up is not caught:
a model that cannot run one dummy batch is a bug or a bad checkpoint, and the job stops.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from pipelines.batch import schemas
from pipelines.storage import OutputWriteError

logger = logging.getLogger(__name__)


class ModelLoadError(ValueError):
    """The model cannot be loaded (missing directory, corrupt checkpoint, wrong head for the job)."""


@dataclass(frozen=True)
class ModelSpec:
    """Which model to load. ``source`` is a checkpoint directory, or a preset name with ``random_init``."""

    source: str
    random_init: bool = False
    tiny: bool = False
    bf16: bool = False
    seed: int = 0
    head: str | None = None  # random_init: another head class on the preset's config (e.g. a text classifier)
    num_labels: int | None = None  # random_init with ``head``: classes of the classifier

    def describe(self) -> str:
        if self.random_init:
            head = f" as {self.head}" if self.head else ""
            return (f"preset {self.source!r}{' (tiny)' if self.tiny else ''}{head}, random weights "
                    f"(seed {self.seed})")
        return f"checkpoint {self.source}"

    def load(self) -> torch.nn.Module:
        """Build the model on the CPU in eval mode; every worker gets identical weights."""
        from perceiver_core import load_pretrained, presets
        from perceiver_core.heads import HEADS

        if self.random_init:
            torch.manual_seed(self.seed)
            if self.head is None:
                return presets.build(self.source, tiny=self.tiny).eval()
            overrides = {} if self.num_labels is None else {"num_labels": self.num_labels}
            config = presets.config(self.source, tiny=self.tiny, **overrides)
            config.architectures = [self.head]
            return HEADS[self.head](config).eval()
        return load_pretrained(local_checkpoint(self.source)).eval()


def local_checkpoint(source: str) -> str:
    """A local directory holding the checkpoint ``source``: itself; for a hub id (``owner/name``, no such local
    folder) its snapshot in the Hugging Face cache; for a URI a copy in a local cache (``$PERCEIVER_CACHE`` or
    ``~/.cache/perceiver-pipelines/models/<hash>``), fetched once per machine."""
    import hashlib
    import os

    from pipelines import storage

    if not storage.is_uri(source):
        from perceiver_core import presets
        from perceiver_core.hub import is_hub_id, resolve_pretrained

        if is_hub_id(source) and source not in presets.names():  # e.g. deepmind/optical-flow-perceiver
            return str(resolve_pretrained(source))  # huggingface_hub's cache (HF_HUB_OFFLINE, HF_HUB_CACHE)
        return source
    loc = storage.resolve(source)
    cache = os.path.join(os.environ.get("PERCEIVER_CACHE", os.path.expanduser("~/.cache/perceiver-pipelines")),
                         "models", hashlib.sha1(loc.uri.encode()).hexdigest()[:16])
    if os.path.isfile(os.path.join(cache, ".complete")):
        return cache
    if not loc.is_dir():
        raise FileNotFoundError(f"model directory not found: {source}")
    os.makedirs(cache, exist_ok=True)
    for entry in storage.walk_files(loc, recursive=False):
        storage.write_atomic(storage.resolve(os.path.join(cache, entry.location.name)), entry.location.read_bytes())
    storage.write_atomic(storage.resolve(os.path.join(cache, ".complete")), b"")
    return cache


def validate_model(spec: ModelSpec, expected: Sequence[type]) -> Any:
    """Load the model once on the driver, before any Ray work, and return its config.

    Turns every way a checkpoint can be wrong into a ``ModelLoadError`` with a readable message.
    """
    from perceiver_core import presets

    names = ", ".join(cls.__name__ for cls in expected)
    if spec.random_init:
        if spec.source not in presets.names():
            raise ModelLoadError(f"--random-init needs a preset name for --model ({', '.join(presets.names())}), "
                                 f"got {spec.source!r}")
    else:
        try:
            path = Path(local_checkpoint(spec.source))
        except (OSError, ValueError) as e:
            raise ModelLoadError(f"cannot fetch the model {spec.source}: {e}") from e
        if not path.is_dir():
            hint = (f"; to smoke-test with random weights use --model {spec.source} --random-init"
                    if spec.source in presets.names() else "")
            raise ModelLoadError(f"model directory not found: {spec.source}{hint}")
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"{spec.source} is not a checkpoint directory: no config.json")
    try:
        model = spec.load()
    except Exception as e:
        raise ModelLoadError(f"cannot load {spec.describe()}: {type(e).__name__}: {e}") from e
    if not isinstance(model, tuple(expected)):
        raise ModelLoadError(f"{spec.describe()} is a {type(model).__name__}; this job needs one of: {names}")
    return model.config


def _error_text(e: BaseException, limit: int = 2000) -> str:
    return f"{type(e).__name__}: {e}"[:limit]


class ModelWorker:
    """Base class of the model stages (see the module docstring).

    Subclasses set ``schema`` (the job's output schema, optionally widened in ``setup``) and implement
    ``predict(batch) -> dict[column, values]`` for rows without errors, and ``dummy_batch()`` for warm-up.
    Input columns whose names are in ``schema`` (ids, source, positions) are copied to the output.
    """

    schema: pa.Schema

    def __init__(self, spec: ModelSpec, device: str = "cpu", torch_threads: int = 1, **options: Any) -> None:
        torch.set_num_threads(max(1, torch_threads))  # reused Ray workers keep stale thread settings
        if device == "cuda" and not torch.cuda.is_available():
            logger.warning("a GPU was assigned but torch sees none; running on the CPU")
            device = "cpu"
        self.device = torch.device(device)
        self.spec = spec
        self.model = spec.load().to(self.device).eval()
        self.setup(**options)
        self.out_schema = schemas.with_bookkeeping(self.schema)
        self.warm_up()

    # ------------------------------------------------------------------ subclass hooks
    def setup(self, **options: Any) -> None:
        if options:
            raise TypeError(f"unexpected options {sorted(options)}")

    def dummy_batch(self) -> pa.Table:
        raise NotImplementedError

    def warm_up(self) -> None:
        """One dummy batch: allocations and kernels happen here; raises on a model that cannot run."""
        with torch.inference_mode():
            self.predict(self.dummy_batch())

    def predict(self, batch: pa.Table) -> dict[str, Any]:
        raise NotImplementedError

    # ------------------------------------------------------------------ helpers for subclasses
    def autocast(self) -> contextlib.AbstractContextManager:
        if not self.spec.bf16:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def to_device(self, array: np.ndarray) -> torch.Tensor:
        if not array.flags.writeable or not array.flags.c_contiguous:  # Arrow buffers are read-only views
            array = np.array(array, order="C")
        tensor = torch.from_numpy(array)
        if self.device.type == "cuda":
            return tensor.pin_memory().to(self.device, non_blocking=True)
        return tensor

    # ------------------------------------------------------------------ the stage
    def __call__(self, batch: pa.Table) -> pa.Table:
        failed = pc.is_valid(batch.column("error"))
        ok = batch.filter(pc.invert(failed))
        parts = []
        if ok.num_rows:
            parts.append(self._predict_isolating_errors(ok))
        if ok.num_rows < batch.num_rows:
            parts.append(self._passthrough(batch.filter(failed), {}))
        return pa.concat_tables(parts) if len(parts) > 1 else parts[0]

    def _predict_isolating_errors(self, ok: pa.Table) -> pa.Table:
        try:
            with torch.inference_mode():
                return self._passthrough(ok, self.predict(ok))
        except OutputWriteError:  # our own output failed: never the input's fault, the job must stop
            raise
        except Exception as batch_error:  # noqa: BLE001 - retried row by row below
            if ok.num_rows == 1:
                return self._passthrough(ok, {"error_type": ["model_error"], "error": [_error_text(batch_error)]})
            logger.warning("model failed on a batch of %d rows (%s); retrying rows one by one", ok.num_rows,
                           _error_text(batch_error, 200))
            return pa.concat_tables([self._predict_isolating_errors(ok.slice(i, 1)) for i in range(ok.num_rows)])

    def _passthrough(self, rows: pa.Table, outputs: dict[str, Any]) -> pa.Table:
        columns = {name: rows.column(name) for name in self.out_schema.names
                   if name in rows.column_names and name not in outputs}
        return schemas.build_table(self.out_schema, {**columns, **outputs}, rows.num_rows)


def top_k(logits: torch.Tensor, k: int, labels: dict[int, str]) -> dict[str, list]:
    """Softmax top-k of (B, C) logits -> columns top_k_ids, top_k_labels, top_k_scores."""
    probs = logits.float().softmax(dim=-1)
    scores, ids = probs.topk(min(k, probs.shape[-1]), dim=-1)
    ids_list = ids.cpu().tolist()
    return {"top_k_ids": ids_list,
            "top_k_labels": [[labels.get(i, str(i)) for i in row] for row in ids_list],
            "top_k_scores": scores.cpu().tolist()}


PICTURES_DIR = "_pictures"


def save_picture(output_dir: str, item_id: str, encode: Callable[[], bytes], folder: str = PICTURES_DIR,
                 suffix: str = ".png") -> str:
    """Write one sidecar for ``item_id`` under ``<output>/<folder>`` (any filesystem) and return its path
    relative to the output.

    The name comes from ``pictures.safe_filename`` (cannot leave the folder, whatever the id holds). The
    write is atomic (``storage.write_atomic``), so a retried task just replaces the file; a failure raises
    ``storage.OutputWriteError`` (the job stops; the input is not blamed).
    """
    from pipelines import storage
    from pipelines.stages.pictures import safe_filename

    name = f"{safe_filename(item_id)}{suffix}"
    out = storage.resolve(output_dir)
    storage.write_atomic(out.join(folder, name), encode(), out)
    return f"{folder}/{name}"
