"""Tasks: text-to-text examples, label words, splits and metrics names (see `tasks/base.py`)."""

from mptune.tasks.base import Example, Task
from mptune.tasks.registry import get_task, resolve_data_dir, task_names

__all__ = ["Example", "Task", "get_task", "resolve_data_dir", "task_names"]
