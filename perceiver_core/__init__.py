"""Perceiver / Perceiver IO in PyTorch, compatible with transformers' checkpoints and forward API."""

from .checkpoint import CheckpointMismatchError
from .config import PerceiverConfig
from .heads import (
    HEADS,
    PerceiverForImageClassificationConvProcessing,
    PerceiverForImageClassificationFourier,
    PerceiverForImageClassificationLearned,
    PerceiverForMaskedLM,
    PerceiverForMultimodalAutoencoding,
    PerceiverForOpticalFlow,
    PerceiverForSequenceClassification,
)
from .image_processor import PerceiverImageProcessor
from .model import PerceiverModel, PerceiverPreTrainedModel
from .size_check import CheckpointSizeError
from .tokenizer import PerceiverTokenizer


def load_pretrained(name_or_path, **kwargs) -> PerceiverPreTrainedModel:
    """Load a checkpoint folder or hub id into the head class named in its config.json ``architectures``
    (transformers' ``AutoModel`` for our eight classes); keywords as ``from_pretrained``."""
    hub = {k: kwargs[k] for k in ("revision", "cache_dir", "local_files_only", "token", "subfolder",
                                  "force_download") if k in kwargs}
    config = PerceiverConfig.from_pretrained(name_or_path, **hub)
    name = (config.architectures or ["PerceiverModel"])[0]
    if name not in HEADS:
        raise ValueError(f"{name_or_path}: unknown architecture {name!r}; known: {', '.join(HEADS)}")
    return HEADS[name].from_pretrained(name_or_path, **kwargs)


__all__ = [
    "CheckpointMismatchError", "CheckpointSizeError", "PerceiverConfig", "PerceiverTokenizer",
    "PerceiverImageProcessor",
    "PerceiverModel", "PerceiverPreTrainedModel", "PerceiverForMaskedLM", "PerceiverForSequenceClassification",
    "PerceiverForImageClassificationLearned", "PerceiverForImageClassificationFourier",
    "PerceiverForImageClassificationConvProcessing", "PerceiverForOpticalFlow",
    "PerceiverForMultimodalAutoencoding", "load_pretrained",
]
