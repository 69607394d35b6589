"""Task registry: ``get_task(name)`` for the five trainable tasks."""

from __future__ import annotations

from .base import StepOutput, Task, TaskCollate, TrainingModule
from .flow import OpticalFlow
from .images import ImageClassification
from .text import MaskedLanguageModelling, TextClassification
from .video import MultimodalAutoencoding

_TASKS: dict[str, type[Task]] = {cls.name: cls for cls in (
    MaskedLanguageModelling, TextClassification, ImageClassification, OpticalFlow, MultimodalAutoencoding)}


def get_task(name: str) -> Task:
    if name not in _TASKS:
        raise KeyError(f"unknown task {name!r}; choose from {', '.join(_TASKS)}")
    return _TASKS[name]()


__all__ = ["StepOutput", "Task", "TaskCollate", "TrainingModule", "get_task"]
