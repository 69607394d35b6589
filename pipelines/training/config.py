"""``TrainConfig``: everything one training run needs, validated on construction.

A common part (data, model, optimisation, evaluation and checkpoints, the run) plus one typed options
dataclass per task family: ``TextOptions`` (mlm, text-classification), ``ImageOptions``, ``FlowOptions`` and
``VideoOptions`` (multimodal autoencoding). Every run holds all four, at their defaults unless set, so that a
task reads ``config.flow.size`` without asking which task it is. The whole run travels to every Ray Train
worker as a plain nested dict (``to_dict`` / ``from_dict``), and ``run.json`` records that dict;
``from_dict`` also reads the flat ``train_config`` of run folders written before the split. Model
architecture lives in the ``PerceiverConfig`` of the preset (or of ``init_from``), changed with
``model_config`` overrides.

Every field has a command-line flag (``flag_of``): ``--max-steps`` for ``max_steps``, and for the options the
flag named in their field metadata (``--flow-size`` for ``flow.size``). The resume check names flags by it.

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

from perceiver_core import presets
from perceiver_core.hub import is_hub_id
from pipelines import storage
from pipelines.training.init_schemes import INIT_SCHEMES

TASKS = ("mlm", "text-classification", "image-classification", "optical-flow", "multimodal-autoencoding")
# The presets each task can train (the first is its default): the preset decides the head class.
TASK_PRESETS = {"mlm": ("language",), "text-classification": ("language",),
                "image-classification": ("vision-fourier", "vision-learned", "vision-conv"),
                "optical-flow": ("optical-flow",), "multimodal-autoencoding": ("multimodal",)}
DEFAULT_PRESETS = {task: names[0] for task, names in TASK_PRESETS.items()}
PAPER_LOSS_WEIGHTS = {"image": 0.03, "audio": 1.0, "label": 1e-4}  # Perceiver IO, Kinetics autoencoding
PRECISIONS = ("fp32", "bf16")
PACKINGS = ("pack", "crop")
SYNTHETIC = "synthetic"  # --data value for the built-in optical-flow generator
RETIRED_FIELDS = ("fail_at_step", "fail_mode")  # in run.json files of earlier versions; ignored


def _absolute(path: str) -> str:
    """A local path made absolute (``~`` expanded); URIs (``s3://...``) and the word ``synthetic`` unchanged;
    an unsupported scheme raises ``storage.StorageError``."""
    path = str(path)
    return path if path == SYNTHETIC else storage.resolve(path).uri


def _opt(default: Any = None, *, flag: str, factory: Any = None) -> Any:
    """An options field with its command-line flag (the flag is also its name in a flat, older run.json)."""
    if factory is not None:
        return field(default_factory=factory, metadata={"flag": flag})
    return field(default=default, metadata={"flag": flag})


def _positive(owner: object, *names: str) -> None:
    for name in names:
        if getattr(owner, name) <= 0:
            raise ValueError(f"{name} must be positive, got {getattr(owner, name)}")


@dataclass
class TextOptions:
    """Byte-level text tasks (mlm, text-classification)."""

    column: str = _opt("text", flag="--text-column")  # jsonl / parquet text field
    seq_len: int | None = _opt(flag="--seq-len")  # default: the model's max_position_embeddings
    packing: str = _opt("pack", flag="--packing")  # mlm: "pack" documents into full windows or "crop" each
    mask_prob: float = _opt(0.15, flag="--mask-prob")  # mlm
    mean_span: float = _opt(3.0, flag="--mean-span")  # mlm: mean masked span length in bytes (geometric)

    def __post_init__(self) -> None:
        if self.packing not in PACKINGS:
            raise ValueError(f"packing must be one of {PACKINGS}, got {self.packing!r}")
        if not 0 < self.mask_prob < 1 or self.mean_span < 1:
            raise ValueError("mask_prob must be in (0, 1) and mean_span >= 1")
        if self.seq_len is not None:
            _positive(self, "seq_len")


@dataclass
class ImageOptions:
    """image-classification."""

    size: int | None = _opt(flag="--image-size")  # model input side; default from the model config (or 224)

    def __post_init__(self) -> None:
        if self.size is not None:
            _positive(self, "size")


@dataclass
class FlowOptions:
    """optical-flow."""

    size: tuple[int, int] | None = _opt(flag="--flow-size")  # training crops (H, W): default model train_size
    synthetic_pairs: int = _opt(4096, flag="--synthetic-pairs")  # size of the synthetic dataset
    max_motion: float = _opt(3.0, flag="--flow-max-motion")  # largest synthetic translation, px
    output_points: int | None = _opt(flag="--flow-output-points")  # decode only this many pixels per pair
    eval_scale: float = _opt(1.0, flag="--flow-eval-scale")  # downscale real eval pairs by this before tiling
    input_gain: float = _opt(10.0, flag="--flow-input-gain")  # fresh models: patch projection's weights x this
    difference_units: int = _opt(32, flag="--flow-difference-units")  # units started as frame2 - frame1 filters
    difference_gain: float = _opt(3.0, flag="--flow-difference-gain")  # ... their weights x this, on top

    def __post_init__(self) -> None:
        if self.size is not None:
            self.size = tuple(int(v) for v in self.size)  # type: ignore[assignment]
        _positive(self, "synthetic_pairs")
        if self.difference_units < 0:
            raise ValueError(f"flow_difference_units must be >= 0, got {self.difference_units}")
        if self.eval_scale < 1:
            raise ValueError("flow_eval_scale is a downscaling factor and must be >= 1")


@dataclass
class VideoOptions:
    """multimodal-autoencoding."""

    clip_stride: int | None = _opt(flag="--clip-stride")  # frames between training clip starts (default: length)
    max_clips_per_video: int | None = _opt(flag="--max-clips-per-video")
    holdout_fraction: float = _opt(0.0, flag="--holdout-fraction")  # the last fraction (in time) is held out
    output_points: int = _opt(512, flag="--output-points")  # sampled video points per clip per step
    audio_output_points: int | None = _opt(flag="--audio-output-points")  # sampled audio patches (default all)
    loss_weights: dict[str, float] = _opt(flag="--loss-weights", factory=lambda: dict(PAPER_LOSS_WEIGHTS))

    def __post_init__(self) -> None:
        _positive(self, "output_points")
        if not 0 <= self.holdout_fraction < 1:
            raise ValueError("holdout_fraction must be in [0, 1)")
        unknown = set(self.loss_weights) - set(PAPER_LOSS_WEIGHTS)
        if unknown:
            raise ValueError(f"unknown loss_weights modalities {sorted(unknown)}; known: {sorted(PAPER_LOSS_WEIGHTS)}")


OPTION_GROUPS: dict[str, type] = {"text": TextOptions, "image": ImageOptions, "flow": FlowOptions,
                                  "video": VideoOptions}


@dataclass
class TrainConfig:
    task: str
    # ---------------------------------------------------------------- data
    data: tuple[str, ...] = ()  # files or folders; optical-flow: "synthetic" (default) or pair folders
    eval_data: tuple[str, ...] = ()  # held-out split (same formats)
    label_column: str = "label"  # jsonl / parquet / labels.csv label field
    label_names: str | None = None  # file with one class name per line, in id order (sets id2label)
    cache_data: bool = False  # materialize the preprocessed dataset once instead of re-reading every epoch
    sample_rows: int = 4096  # rows per split read before step 1 (label set, baselines): never a full pass
    augment: bool = True  # images / clips / flow pairs: random flips, crops, colour changes in training
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
    # ---------------------------------------------------------------- per task
    text: TextOptions = field(default_factory=TextOptions)
    image: ImageOptions = field(default_factory=ImageOptions)
    flow: FlowOptions = field(default_factory=FlowOptions)
    video: VideoOptions = field(default_factory=VideoOptions)

    def __post_init__(self) -> None:
        for group, cls in OPTION_GROUPS.items():  # plain dicts (from JSON, or written by hand) become options
            value = getattr(self, group)
            if isinstance(value, dict):
                setattr(self, group, cls(**value))
        self._resolve_paths()
        self._validate()
        if self.name is None:
            self.name = f"{self.task}-{time.strftime('%Y%m%d-%H%M%S')}"

    def _resolve_paths(self) -> None:
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

    def _validate(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"unknown task {self.task!r}; choose from {', '.join(TASKS)}")
        self._validate_preset()
        if self.init_scheme is not None and self.init_scheme not in INIT_SCHEMES:
            raise ValueError(f"init_scheme must be one of {INIT_SCHEMES}, got {self.init_scheme!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        _positive(self, "batch_size", "log_every", "cpus_per_worker", "sample_rows")
        for name in ("max_steps", "warmup_steps", "eval_every", "checkpoint_every", "num_workers", "max_failures"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.lr <= 0 or not 0 <= self.min_lr_ratio <= 1:
            raise ValueError("lr must be > 0 and min_lr_ratio in [0, 1]")
        if self.keep_checkpoints < 1:
            raise ValueError("keep_checkpoints must be >= 1 (the latest checkpoint is always kept)")
        if self.task != "optical-flow" and not self.data and self.max_steps:
            raise ValueError(f"task {self.task} needs --data")
        if self.max_steps == 0 and not (self.init_from and (self.eval_data or self.video.holdout_fraction)):
            raise ValueError("--max-steps 0 evaluates a model: it needs --init-from and held-out data")
        if self.resume and not self.name:
            raise ValueError("--resume needs the --name of the run to continue")

    def _validate_preset(self) -> None:
        """An unknown preset, or one whose head the task cannot train, stops the run before any work."""
        if self.preset is None:
            return
        if self.preset not in presets.names():
            raise ValueError(f"unknown --preset {self.preset!r}; choose from {', '.join(presets.names())}")
        fitting = TASK_PRESETS[self.task]
        if self.preset not in fitting:
            raise ValueError(f"--preset {self.preset} ({presets.get(self.preset).head.__name__}) does not fit "
                             f"--task {self.task}; choose from {', '.join(fitting)}")

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
        """The nested form: common fields at the top, ``text`` / ``image`` / ``flow`` / ``video`` dicts."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Inverse of ``to_dict``; also reads the flat form of earlier run.json files (``image_size``,
        ``flow_max_motion``, ... at the top; their fault-injection fields are dropped)."""
        data = {k: v for k, v in data.items() if k not in RETIRED_FIELDS}
        groups = {name: dict(data.pop(name, None) or {}) for name in OPTION_GROUPS}
        for (group, option), flag in option_flags().items():
            legacy = flag[2:].replace("-", "_")
            if legacy in data:
                groups[group].setdefault(option, data.pop(legacy))
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown TrainConfig fields {sorted(unknown)}")
        return cls(**data, **{name: OPTION_GROUPS[name](**values) for name, values in groups.items()})


def option_flags() -> dict[tuple[str, str], str]:
    """(group, option field) -> its command-line flag, for every options field."""
    return {(group, f.name): f.metadata["flag"] for group, cls in OPTION_GROUPS.items()
            for f in dataclasses.fields(cls)}


def flag_of(path: str) -> str:
    """The command-line flag of a config field: ``"lr"`` -> ``--lr``, ``"flow.size"`` -> ``--flow-size``."""
    if "." in path:
        group, option = path.split(".", 1)
        return option_flags()[(group, option)]
    return "--" + path.replace("_", "-")


def field_default(cls: type, name: str) -> Any:
    """The default of a dataclass field (calling its factory)."""
    f = cls.__dataclass_fields__[name]
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
