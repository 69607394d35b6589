"""Perceiver / Perceiver IO in PyTorch, compatible with transformers' checkpoints and forward API."""

from .checkpoint import CheckpointMismatchError
from .config import PerceiverConfig
from .heads import (HEADS, PerceiverForImageClassificationConvProcessing, PerceiverForImageClassificationFourier,
                    PerceiverForImageClassificationLearned, PerceiverForMaskedLM, PerceiverForMultimodalAutoencoding,
                    PerceiverForOpticalFlow, PerceiverForSequenceClassification)
from .image_processor import PerceiverImageProcessor
from .model import PerceiverModel, PerceiverPreTrainedModel
from .size_check import CheckpointSizeError
from .tokenizer import PerceiverTokenizer


def load_pretrained(directory) -> PerceiverPreTrainedModel:
    """Load a checkpoint directory into the head class named in its config.json ``architectures``."""
    config = PerceiverConfig.from_pretrained(directory)
    name = (config.architectures or ["PerceiverModel"])[0]
    if name not in HEADS:
        raise ValueError(f"{directory}: unknown architecture {name!r}; known: {', '.join(HEADS)}")
    return HEADS[name].from_pretrained(directory)


__all__ = [
    "CheckpointMismatchError", "CheckpointSizeError", "PerceiverConfig", "PerceiverTokenizer", "PerceiverImageProcessor",
    "PerceiverModel", "PerceiverPreTrainedModel", "PerceiverForMaskedLM", "PerceiverForSequenceClassification",
    "PerceiverForImageClassificationLearned", "PerceiverForImageClassificationFourier",
    "PerceiverForImageClassificationConvProcessing", "PerceiverForOpticalFlow",
    "PerceiverForMultimodalAutoencoding", "load_pretrained",
]
