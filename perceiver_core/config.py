"""Typed Perceiver configuration that reads and writes transformers' ``config.json``.

Field names and defaults are transformers' ``PerceiverConfig`` ones, so a ``config.json`` written by either
library loads in the other. Fields transformers keeps but never uses (``layer_norm_eps``, ``d_model`` for the
image heads) are kept for round-tripping only. The fields every transformers config has (labels,
``output_hidden_states``, ``return_dict``, ``dtype``...) and transformers' constructor / serialisation contract
come from ``config_compat.TransformersConfig``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .config_compat import CONFIG_NAME, TransformersConfig

__all__ = ["CONFIG_NAME", "PerceiverConfig"]


@dataclass(init=False)
class PerceiverConfig(TransformersConfig):
    model_type: ClassVar[str] = "perceiver"
    attribute_map: ClassVar[dict[str, str]] = {"torch_dtype": "dtype",
                                               "_label_trainable_num_channels": "label_trainable_num_channels"}
    serialized_names: ClassVar[dict[str, str]] = {"label_trainable_num_channels": "_label_trainable_num_channels"}

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

    def __post_init__(self) -> None:
        self.train_size = tuple(int(v) for v in self.train_size)  # type: ignore[assignment]
        self.output_shape = tuple(int(v) for v in self.output_shape)  # type: ignore[assignment]
        if isinstance(self.image_size, (list, tuple)):
            self.image_size = int(self.image_size[0])
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
