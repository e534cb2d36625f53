"""One exception type for everything a user can fix: the CLI prints its message as one line and exits 2."""

import difflib


class UsageError(Exception):
    """Bad input from the user: the message says what is wrong and how to fix it, on one line."""


def did_you_mean(word: str, choices: list[str] | tuple[str, ...]) -> str:
    """A ' (did you mean X?)' suffix for an unknown name, or '' when nothing is close."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.5)
    return f" (did you mean '{close[0]}'?)" if close else ""


class WorkerLost(Exception):
    """A Ray actor (rollout worker, learner or verifier) died during a step: the trainer restarts it and redoes the
    step once."""
