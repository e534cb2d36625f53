"""Task registry: built-in arithmetic families, package/hub tasks and file-backed tasks (`KIND:PATH`)."""

from maporl.errors import UsageError, did_you_mean
from maporl.tasks.arithmetic import ArithmeticTask
from maporl.tasks.base import Split, Task, extract_number_answer, normalize_number, split_of

BUILTIN = ("arith_chain", "arith_long", "arith_word", "arith_word_unseen")
HUB_TASKS = ("gsm8k", "anli", "gsm_symbolic")
FILE_KINDS = ("jsonl", "gsm8k", "anli")


def get_task(name: str) -> Task:
    """A task by name: one of BUILTIN or HUB_TASKS, or 'jsonl:PATH' / 'gsm8k:PATH' / 'anli:PATH'."""
    if name in BUILTIN:
        return ArithmeticTask(name)
    if name == "gsm_symbolic":
        from maporl.tasks.hub import GsmSymbolicTask

        return GsmSymbolicTask()
    if name in HUB_TASKS:
        from maporl.tasks.hub import HubTask

        return HubTask(name)
    kind, sep, path = name.partition(":")
    if sep and kind in FILE_KINDS and path:
        from maporl.tasks.files import FileTask

        return FileTask(name)
    choices = list(BUILTIN) + list(HUB_TASKS) + [f"{k}:PATH" for k in FILE_KINDS]
    raise UsageError(f"unknown task {name!r}{did_you_mean(name, choices)}; choose one of: {', '.join(choices)}")


__all__ = [
    "BUILTIN",
    "HUB_TASKS",
    "Split",
    "Task",
    "extract_number_answer",
    "get_task",
    "normalize_number",
    "split_of",
]
