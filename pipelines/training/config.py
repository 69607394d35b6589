"""``TrainConfig``: everything one training run needs, validated on construction.

One flat dataclass (grouped below) so that the CLI maps onto it one flag per field and the whole run travels to
every Ray Train worker as a plain dict (``to_dict`` / ``from_dict``). Model architecture lives in the
``PerceiverConfig`` of the preset (or of ``init_from``), changed with ``model_config`` overrides.

Every path (``data``, ``eval_data``, ``init_from``, ``output_dir``, ``export_dir``, ``label_names``) may be a
local path or a URI (``s3://bucket/corpus/*.parquet``). It is resolved once, in the driver, by
``pipelines.storage.resolve``: local paths become absolute, URIs stay URIs (workers on other nodes use them as
they are), and an unknown scheme raises ``StorageError`` (a ``ValueError``) before any work starts.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any

from perceiver_core.hub import is_hub_id
from pipelines import storage

from .init_schemes import INIT_SCHEMES

TASKS = ("mlm", "text-classification", "image-classification", "optical-flow", "multimodal-autoencoding")
DEFAULT_PRESETS = {"mlm": "language", "text-classification": "language", "image-classification": "vision-fourier",
                   "optical-flow": "optical-flow", "multimodal-autoencoding": "multimodal"}
PAPER_LOSS_WEIGHTS = {"image": 0.03, "audio": 1.0, "label": 1e-4}  # Perceiver IO, Kinetics autoencoding
PRECISIONS = ("fp32", "bf16")
FAIL_MODES = ("raise", "exit", "during-checkpoint")
PACKINGS = ("pack", "crop")
SYNTHETIC = "synthetic"  # --data value for the built-in optical-flow generator


def _absolute(path: str) -> str:
    """A local path made absolute (``~`` expanded); URIs (``s3://...``) and the word ``synthetic`` unchanged;
    an unsupported scheme raises ``storage.StorageError``."""
    path = str(path)
    return path if path == SYNTHETIC else storage.resolve(path).uri


@dataclass
class TrainConfig:
    task: str
    # ---------------------------------------------------------------- data
    data: tuple[str, ...] = ()  # files or folders; optical-flow: "synthetic" (default) or pair folders
    eval_data: tuple[str, ...] = ()  # held-out split (same formats)
    text_column: str = "text"  # jsonl / parquet text field
    label_column: str = "label"  # jsonl / parquet label field
    label_names: str | None = None  # file with one class name per line, in id order (sets id2label)
    cache_data: bool = False  # materialize the preprocessed dataset once instead of re-reading every epoch
    sample_rows: int = 4096  # rows per split read before step 1 (label set, baselines): never a full pass
    # ---------------------------------------------------------------- model
    preset: str | None = None  # default per task (DEFAULT_PRESETS)
    tiny: bool = False  # the preset's tiny variant (tests, CPU runs)
    model_config: dict[str, Any] = field(default_factory=dict)  # PerceiverConfig overrides
    init_from: str | None = None  # checkpoint directory to start from (fine-tuning)
    gradient_checkpointing: bool = False
    init_scheme: str | None = None  # fresh models: "transformers" or "variance-scaling"; None = the task's default
    # ---------------------------------------------------------------- optimisation
    max_steps: int = 1000  # 0 = only evaluate the --init-from model
    batch_size: int = 16  # per worker
    lr: float = 5e-4
    weight_decay: float = 0.01
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio at max_steps
    grad_clip: float = 1.0  # max global gradient norm; 0 = off
    precision: str = "fp32"  # or bf16 (autocast)
    seed: int = 0
    # ---------------------------------------------------------------- task knobs
    seq_len: int | None = None  # text: default max_position_embeddings
    packing: str = "pack"  # mlm: "pack" documents into full windows, or "crop" each to one window
    mask_prob: float = 0.15  # mlm
    mean_span: float = 3.0  # mlm: mean masked span length in bytes (geometric)
    image_size: int | None = None  # image-classification: default from the model config (or 224)
    flow_size: tuple[int, int] | None = None  # optical-flow training crops (H, W): default model train_size
    synthetic_pairs: int = 4096  # optical-flow: size of the synthetic dataset
    flow_max_motion: float = 3.0  # optical-flow: largest synthetic translation, px
    flow_output_points: int | None = None  # optical-flow: decode only this many sampled pixels per pair in training
    flow_eval_scale: float = 1.0  # optical-flow: downscale real eval pairs by this before tiling
    flow_input_gain: float = 10.0  # optical-flow, fresh models: the patch projection's initial weights x this
    flow_difference_units: int = 32  # optical-flow, fresh models: projection units started as frame2 - frame1 filters
    flow_difference_gain: float = 3.0  # ... and those units' initial weights x this (on top of flow_input_gain)
    clip_stride: int | None = None  # multimodal: frames between training clip starts (default: clip length)
    max_clips_per_video: int | None = None
    holdout_fraction: float = 0.0  # multimodal: the last fraction (in time) of every training video is held out
    output_points: int = 512  # multimodal: sampled video points per clip per step
    audio_output_points: int | None = None  # multimodal: sampled audio patches (default: all)
    loss_weights: dict[str, float] = field(default_factory=lambda: dict(PAPER_LOSS_WEIGHTS))
    augment: bool = True  # images / clips: random flips and colour changes (crops for images) in training
    # ---------------------------------------------------------------- evaluation, logging, checkpoints
    eval_every: int = 0  # steps; 0 = only at the end
    eval_batches: int | None = None  # cap on eval batches (None = whole held-out split)
    log_every: int = 10
    checkpoint_every: int = 500
    keep_checkpoints: int = 3
    # ---------------------------------------------------------------- run
    output_dir: str = "runs"
    name: str | None = None
    resume: bool = False
    export_dir: str | None = None  # also copy the final model (config.json + model.safetensors) here
    num_workers: int = 1  # 0 = Ray Train local mode (in-process, no restarts)
    use_gpu: bool = False
    cpus_per_worker: int = 1
    address: str | None = None  # Ray cluster address; None = start a local Ray
    max_failures: int = 3  # worker-group restarts from the latest checkpoint
    # ---------------------------------------------------------------- fault injection (tests)
    fail_at_step: int | None = None  # rank 0 fails once, at this step
    fail_mode: str = "raise"

    def __post_init__(self) -> None:
        # Local paths are made absolute here, in the driver: Ray Train workers run in another working directory.
        self.data = tuple(_absolute(d) for d in self.data)
        self.eval_data = tuple(_absolute(d) for d in self.eval_data)
        if self.init_from is not None and not is_hub_id(self.init_from):  # hub ids stay ids (models.py)
            self.init_from = _absolute(self.init_from)
        self.output_dir = _absolute(self.output_dir)  # metrics.csv and final/ are written by the workers
        if self.export_dir is not None:
            self.export_dir = _absolute(self.export_dir)
        if self.label_names is not None:
            self.label_names = _absolute(self.label_names)
        if self.flow_size is not None:
            self.flow_size = tuple(int(v) for v in self.flow_size)  # type: ignore[assignment]
        if self.task not in TASKS:
            raise ValueError(f"unknown task {self.task!r}; choose from {', '.join(TASKS)}")
        if self.init_scheme is not None and self.init_scheme not in INIT_SCHEMES:
            raise ValueError(f"init_scheme must be one of {INIT_SCHEMES}, got {self.init_scheme!r}")
        if self.flow_difference_units < 0:
            raise ValueError(f"flow_difference_units must be >= 0, got {self.flow_difference_units}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.fail_mode not in FAIL_MODES:
            raise ValueError(f"fail_mode must be one of {FAIL_MODES}, got {self.fail_mode!r}")
        if self.packing not in PACKINGS:
            raise ValueError(f"packing must be one of {PACKINGS}, got {self.packing!r}")
        for name in ("batch_size", "log_every", "synthetic_pairs", "output_points", "cpus_per_worker",
                     "sample_rows"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("max_steps", "warmup_steps", "eval_every", "checkpoint_every", "num_workers", "max_failures"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.lr <= 0 or not 0 <= self.min_lr_ratio <= 1:
            raise ValueError("lr must be > 0 and min_lr_ratio in [0, 1]")
        if not 0 < self.mask_prob < 1 or self.mean_span < 1:
            raise ValueError("mask_prob must be in (0, 1) and mean_span >= 1")
        if self.keep_checkpoints < 1:
            raise ValueError("keep_checkpoints must be >= 1 (the latest checkpoint is always kept)")
        if self.flow_eval_scale < 1:
            raise ValueError("flow_eval_scale is a downscaling factor and must be >= 1")
        unknown = set(self.loss_weights) - set(PAPER_LOSS_WEIGHTS)
        if unknown:
            raise ValueError(f"unknown loss_weights modalities {sorted(unknown)}; known: {sorted(PAPER_LOSS_WEIGHTS)}")
        if self.task != "optical-flow" and not self.data and self.max_steps:
            raise ValueError(f"task {self.task} needs --data")
        if self.max_steps == 0 and not (self.init_from and (self.eval_data or self.holdout_fraction)):
            raise ValueError("--max-steps 0 evaluates a model: it needs --init-from and held-out data")
        if not 0 <= self.holdout_fraction < 1:
            raise ValueError("holdout_fraction must be in [0, 1)")
        if self.resume and not self.name:
            raise ValueError("--resume needs the --name of the run to continue")
        if self.name is None:
            self.name = f"{self.task}-{time.strftime('%Y%m%d-%H%M%S')}"

    @property
    def preset_name(self) -> str:
        return self.preset or DEFAULT_PRESETS[self.task]

    @property
    def run_location(self) -> storage.Location:
        """Where Ray Train keeps this run's checkpoints; metrics.csv, run.json and final/ sit beside them."""
        return storage.resolve(self.output_dir).join(str(self.name))

    @property
    def run_dir(self) -> str:
        """``run_location`` as an absolute local path or a URI."""
        return self.run_location.uri

    @property
    def synthetic_flow(self) -> bool:
        return self.task == "optical-flow" and (not self.data or self.data == (SYNTHETIC,))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown TrainConfig fields {sorted(unknown)}")
        return cls(**data)
