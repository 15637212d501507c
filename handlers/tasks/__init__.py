"""The tasks a model can serve, by name: each is one module with its settings, decoding,
collation and encoding (``base.Task``), registered here.

- ``tensor``: arrays in (one input, or named inputs), the model's output out.
- ``image-classification``: a PNG/JPEG in, the top-k classes out.
- ``text-classification``: text (or token ids) in, the top-k classes out.
- ``custom``: every step a hook (``handlers.hooks``); the task only collates.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from handlers.tasks import custom, image, tensor, text
from handlers.tasks.base import TASK_KEYS, Task, TaskKind
from handlers.tasks.image import ImageClassificationTask
from handlers.tasks.tensor import TensorTask
from handlers.tasks.text import TextClassificationTask

if TYPE_CHECKING:
    from handlers.settings import HandlerSettings

KINDS: dict[str, TaskKind] = {
    kind.name: kind for kind in (tensor.KIND, image.KIND, text.KIND, custom.KIND)
}


def make_task(settings: HandlerSettings, base_dir: Path) -> Task:
    """The task object ``settings.task`` names, with its files (labels, vocabulary) read from
    ``base_dir``. Raises SettingsError when they can't be read."""
    return KINDS[settings.task].build(settings, base_dir)


__all__ = [
    "KINDS",
    "TASK_KEYS",
    "ImageClassificationTask",
    "Task",
    "TaskKind",
    "TensorTask",
    "TextClassificationTask",
    "make_task",
]
