"""Typed Perceiver configuration that reads and writes transformers' ``config.json``.

Field names and defaults are transformers' ``PerceiverConfig`` ones, so a ``config.json`` written by either
library loads in the other. Fields transformers keeps but never uses (``layer_norm_eps``, ``d_model`` for the
image heads) are kept for round-tripping only.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CONFIG_NAME = "config.json"

# Keys transformers writes that carry no meaning for the model; kept in ``extra`` so they round-trip.
_PASSTHROUGH_DEFAULTS: dict[str, Any] = {}


@dataclass
class PerceiverConfig:
    num_latents: int = 256
    d_latents: int = 1280
    d_model: int = 768
    num_blocks: int = 1
    num_self_attends_per_block: int = 26
    num_self_attention_heads: int = 8
    num_cross_attention_heads: int = 8
    qk_channels: int | None = None
    v_channels: int | None = None
    cross_attention_shape_for_attention: str = "kv"
    self_attention_widening_factor: int = 1
    cross_attention_widening_factor: int = 1
    hidden_act: str = "gelu"
    attention_probs_dropout_prob: float = 0.1
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12  # unused by transformers too: every LayerNorm uses eps=1e-5
    use_query_residual: bool = True
    vocab_size: int = 262
    max_position_embeddings: int = 2048
    image_size: int = 56
    train_size: tuple[int, int] = (368, 496)
    num_frames: int = 16
    audio_samples_per_frame: int = 1920
    samples_per_patch: int = 16
    output_shape: tuple[int, int, int, int] = (1, 16, 224, 224)
    output_num_channels: int = 512
    label_trainable_num_channels: int = 1024
    num_labels: int = 2
    id2label: dict[int, str] | None = None
    problem_type: str | None = None
    architectures: list[str] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.train_size = tuple(int(v) for v in self.train_size)  # type: ignore[assignment]
        self.output_shape = tuple(int(v) for v in self.output_shape)  # type: ignore[assignment]
        if isinstance(self.image_size, (list, tuple)):
            self.image_size = int(self.image_size[0])
        if self.id2label is not None:
            self.id2label = {int(k): str(v) for k, v in self.id2label.items()}
            self.num_labels = len(self.id2label)
        if self.cross_attention_shape_for_attention not in ("kv", "q"):
            raise ValueError("cross_attention_shape_for_attention must be 'kv' or 'q', got "
                             f"{self.cross_attention_shape_for_attention!r}")
        if len(self.train_size) != 2:
            raise ValueError(f"train_size must be (height, width), got {self.train_size}")
        if len(self.output_shape) != 4:
            raise ValueError(f"output_shape must be rank 4 (1, T, H, W), got {self.output_shape}")
        for name in ("num_latents", "d_latents", "num_blocks", "num_self_attends_per_block",
                     "num_self_attention_heads", "num_cross_attention_heads", "num_labels"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.d_latents % self.num_self_attention_heads:
            raise ValueError(f"d_latents={self.d_latents} is not divisible by "
                             f"num_self_attention_heads={self.num_self_attention_heads}")

    # ------------------------------------------------------------------ labels
    @property
    def labels(self) -> dict[int, str]:
        """``id2label``, with transformers' ``LABEL_i`` names when the checkpoint has none."""
        if self.id2label is not None:
            return self.id2label
        return {i: f"LABEL_{i}" for i in range(self.num_labels)}

    @property
    def label2id(self) -> dict[str, int]:
        return {name: i for i, name in self.labels.items()}

    # ------------------------------------------------------------------ (de)serialisation
    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PerceiverConfig":
        data = dict(data)
        known = {f.name for f in dataclasses.fields(cls)} - {"extra", "label_trainable_num_channels"}
        kwargs: dict[str, Any] = {k: data.pop(k) for k in list(data) if k in known}
        if "_label_trainable_num_channels" in data:
            kwargs["label_trainable_num_channels"] = data.pop("_label_trainable_num_channels")
        if "id2label" in kwargs and kwargs["id2label"] is not None:
            kwargs["num_labels"] = len(kwargs["id2label"])
        data.pop("label2id", None)
        data.pop("model_type", None)
        kwargs["extra"] = {**dict(kwargs.get("extra") or {}), **data}
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.extra)
        for f in dataclasses.fields(self):
            if f.name in ("extra", "id2label", "num_labels", "label_trainable_num_channels"):
                continue
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        out["_label_trainable_num_channels"] = self.label_trainable_num_channels
        out["id2label"] = {str(i): name for i, name in self.labels.items()}
        out["label2id"] = {name: i for i, name in self.labels.items()}
        out["model_type"] = "perceiver"
        if out.get("architectures") is None:
            out.pop("architectures", None)
        if out.get("problem_type") is None:
            out.pop("problem_type", None)
        return out

    @classmethod
    def from_json_file(cls, path: str | Path) -> "PerceiverConfig":
        with open(path, encoding="utf-8") as fh:
            return cls.from_dict(json.load(fh))

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> "PerceiverConfig":
        path = Path(directory)
        if path.is_dir():
            path = path / CONFIG_NAME
        if not path.exists():
            raise FileNotFoundError(f"no {CONFIG_NAME} found at {path}")
        return cls.from_json_file(path)

    def save_pretrained(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / CONFIG_NAME
        path.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
        return path

    def replace(self, **changes: Any) -> "PerceiverConfig":
        if "num_labels" in changes and "id2label" not in changes and changes["num_labels"] != self.num_labels:
            changes["id2label"] = None  # the old names no longer fit
        return dataclasses.replace(self, **changes)
