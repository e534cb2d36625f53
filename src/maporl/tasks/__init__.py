"""Task registry: built-in arithmetic families and file-backed tasks (`jsonl:PATH`, `gsm8k:PATH`)."""

from maporl.errors import UsageError, did_you_mean
from maporl.tasks.arithmetic import ArithmeticTask
from maporl.tasks.base import Split, Task, extract_number_answer, normalize_number, split_of

BUILTIN = ("arith_chain", "arith_long", "arith_word")
FILE_KINDS = ("jsonl", "gsm8k")


def get_task(name: str) -> Task:
    """A task by name: one of BUILTIN, or 'jsonl:PATH' / 'gsm8k:PATH'."""
    if name in BUILTIN:
        return ArithmeticTask(name)
    kind, sep, path = name.partition(":")
    if sep and kind in FILE_KINDS and path:
        from maporl.tasks.files import FileTask

        return FileTask(name)
    choices = list(BUILTIN) + [f"{k}:PATH" for k in FILE_KINDS]
    raise UsageError(f"unknown task {name!r}{did_you_mean(name, choices)}; choose one of: {', '.join(choices)}")


__all__ = ["BUILTIN", "Split", "Task", "extract_number_answer", "get_task", "normalize_number", "split_of"]
