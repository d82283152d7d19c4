"""The registry of recognition task kinds (:data:`TASKS`), kept apart so label parsing can look kinds up.

A task kind is one class registered here (see :class:`visionfm.recognition.tasks.HeadTask`): it owns its label
format, loss, metrics, headline numbers and report. Everything else asks the registry; nothing branches on a kind's
name. Registering a subclass of ``HeadTask`` is all it takes to add a kind (``tests/recognition/test_task_registry.py``
does it for a toy kind).
"""

from __future__ import annotations

from ..registry import Registry

__all__ = ["TASKS", "task_class"]

TASKS: Registry[type] = Registry("recognition task")
# The built-in kinds are declared by name and imported on first use, so the command line can list them (one command
# each) without importing torch; the modules register their classes with ``@TASKS.register``.
for _kind, _module in (
    ("classify", "tasks_single"),
    ("forecast", "tasks_single"),
    ("multilabel", "tasks_multi"),
    ("regress", "tasks_multi"),
):
    TASKS.add_lazy(_kind, f"{__package__}.{_module}")


def task_class(kind: str) -> type:
    """The registered task class of ``kind`` (an unknown kind is a user error listing the valid ones)."""
    return TASKS.get(kind)
