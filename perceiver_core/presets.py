"""The six published checkpoint configurations, buildable by name (random weights), plus tiny variants.

``build("multimodal")`` gives the architecture of deepmind/multimodal-perceiver with random weights (for smoke
runs and benchmarks); ``build("multimodal", tiny=True)`` a few-hundred-kilobyte model of the same family for
tests. Load real weights with ``Class.from_pretrained(directory)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .config import PerceiverConfig
from .heads import (
    PerceiverForImageClassificationConvProcessing,
    PerceiverForImageClassificationFourier,
    PerceiverForImageClassificationLearned,
    PerceiverForMaskedLM,
    PerceiverForMultimodalAutoencoding,
    PerceiverForOpticalFlow,
)
from .model import PerceiverPreTrainedModel

_VISION = {"num_latents": 512, "d_latents": 1024, "num_blocks": 8, "num_self_attends_per_block": 6,
               "num_self_attention_heads": 8, "num_cross_attention_heads": 1, "num_labels": 1000}


@dataclass(frozen=True)
class Preset:
    name: str
    head: type[PerceiverPreTrainedModel]
    hub_id: str
    published: dict[str, Any]
    tiny: dict[str, Any]

    def config(self, tiny: bool = False, **overrides: Any) -> PerceiverConfig:
        values = {**self.published, **(self.tiny if tiny else {}), **overrides}
        return PerceiverConfig(architectures=[self.head.__name__], **values)

    def build(self, tiny: bool = False, **overrides: Any) -> PerceiverPreTrainedModel:
        return self.head(self.config(tiny, **overrides))


_TINY_LATENTS = {"num_latents": 8, "d_latents": 32, "num_blocks": 2, "num_self_attends_per_block": 2,
                     "num_self_attention_heads": 2, "num_cross_attention_heads": 1}

PRESETS: dict[str, Preset] = {p.name: p for p in [
    Preset("language", PerceiverForMaskedLM, "deepmind/language-perceiver",
           {"num_latents": 256, "d_latents": 1280, "d_model": 768, "num_blocks": 1, "num_self_attends_per_block": 26,
                "num_self_attention_heads": 8, "num_cross_attention_heads": 8, "qk_channels": 256, "v_channels": 1280,
                "vocab_size": 262, "max_position_embeddings": 2048},
           dict(_TINY_LATENTS, d_model=32, qk_channels=16, v_channels=32, num_cross_attention_heads=2,
                max_position_embeddings=128)),
    Preset("vision-learned", PerceiverForImageClassificationLearned, "deepmind/vision-perceiver-learned",
           dict(_VISION, d_model=512, image_size=224), dict(_TINY_LATENTS, num_labels=10, image_size=32)),
    Preset("vision-fourier", PerceiverForImageClassificationFourier, "deepmind/vision-perceiver-fourier",
           dict(_VISION, d_model=261), dict(_TINY_LATENTS, num_labels=10)),
    Preset("vision-conv", PerceiverForImageClassificationConvProcessing, "deepmind/vision-perceiver-conv",
           dict(_VISION, d_model=322), dict(_TINY_LATENTS, num_labels=10)),
    Preset("optical-flow", PerceiverForOpticalFlow, "deepmind/optical-flow-perceiver",
           {"num_latents": 2048, "d_latents": 512, "d_model": 322, "num_blocks": 1, "num_self_attends_per_block": 24,
                "num_self_attention_heads": 16, "num_cross_attention_heads": 1, "train_size": (368, 496)},
           dict(_TINY_LATENTS, train_size=(32, 48))),
    Preset("multimodal", PerceiverForMultimodalAutoencoding, "deepmind/multimodal-perceiver",
           {"num_latents": 784, "d_latents": 512, "d_model": 704, "num_blocks": 1, "num_self_attends_per_block": 8,
                "num_self_attention_heads": 8, "num_cross_attention_heads": 1, "num_labels": 700, "num_frames": 16,
                "audio_samples_per_frame": 1920, "samples_per_patch": 16, "output_shape": (1, 16, 224, 224),
                "image_size": 224, "output_num_channels": 512},
           dict(_TINY_LATENTS, num_labels=5, num_frames=4, audio_samples_per_frame=64, samples_per_patch=16,
                output_shape=(1, 4, 32, 32), image_size=32, output_num_channels=32,
                label_trainable_num_channels=32)),
]}


def names() -> list[str]:
    return list(PRESETS)


def get(name: str) -> Preset:
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    return PRESETS[name]


def config(name: str, tiny: bool = False, **overrides: Any) -> PerceiverConfig:
    return get(name).config(tiny, **overrides)


def build(name: str, tiny: bool = False, **overrides: Any) -> PerceiverPreTrainedModel:
    return get(name).build(tiny, **overrides)
