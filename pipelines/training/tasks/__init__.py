"""Task registry: ``get_task(name)`` for the five trainable tasks."""

from __future__ import annotations

from pipelines.training.tasks.base import StepOutput, Task, TaskCollate, TrainingModule
from pipelines.training.tasks.flow import OpticalFlow
from pipelines.training.tasks.images import ImageClassification
from pipelines.training.tasks.text import MaskedLanguageModelling, TextClassification
from pipelines.training.tasks.video import MultimodalAutoencoding

_TASKS: dict[str, type[Task]] = {cls.name: cls for cls in (
    MaskedLanguageModelling, TextClassification, ImageClassification, OpticalFlow, MultimodalAutoencoding)}


def get_task(name: str) -> Task:
    if name not in _TASKS:
        raise KeyError(f"unknown task {name!r}; choose from {', '.join(_TASKS)}")
    return _TASKS[name]()


__all__ = ["StepOutput", "Task", "TaskCollate", "TrainingModule", "get_task"]
