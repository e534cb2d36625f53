"""`backend=ray`: the generator and the verifier run as Ray actors wrapping the same objects as in-process.

The driver loop does not change: `trainer.train` calls `generator.generate(requests)` and `verifier.score(...)`
exactly as before; here those calls go to actors. The generator actor holds its own copy of the team (base +
one LoRA per agent) and receives every trained adapter's weights after each update (`sync`), so it always samples
from the current policies. Updates stay in the driver, which owns the optimizer state and checkpoints.
Ray is imported lazily; selecting it without `pip install 'maporl[ray]'` is a one-line error.
"""

from __future__ import annotations

from collections.abc import Sequence

from maporl.errors import UsageError
from maporl.generation import Completion, GenRequest


def _ray():
    try:
        import ray
    except ImportError:
        raise UsageError("backend=ray needs Ray: `pip install 'maporl[ray]'` (or use backend=local)") from None
    if not ray.is_initialized():
        ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
    return ray


class _GeneratorWorker:
    """Lives in the actor: the same team and HFGenerator the in-process backend builds."""

    def __init__(self, cfg, threads: int):
        import torch

        from maporl.team import build_generator, build_team

        torch.set_num_threads(threads)  # as many as the driver: same kernels, same sampled tokens
        self.team = build_team(cfg, with_adapters=True)
        self.generator = build_generator(cfg, self.team)

    def generate(self, requests):
        return self.generator.generate(requests)

    def load_adapters(self, states: dict) -> None:
        from peft import set_peft_model_state_dict

        for (key, name), state in states.items():
            set_peft_model_state_dict(self.team.models[key], state, adapter_name=name)

    def tokens_generated(self) -> int:
        return self.generator.tokens_generated


class _VerifierWorker:
    def __init__(self, cfg):
        from maporl.tasks import get_task
        from maporl.verifiers import build_verifier

        self.verifier = build_verifier(cfg, get_task(cfg.task.name))

    def score(self, transcripts):
        return self.verifier.score(transcripts)


class RayGenerator:
    """Generator protocol over a Ray actor; `sync(team)` pushes the driver's adapters to it."""

    def __init__(self, cfg):
        import torch

        ray = _ray()
        self._ray = ray
        self.actor = ray.remote(_GeneratorWorker).remote(cfg, torch.get_num_threads())

    def generate(self, requests: Sequence[GenRequest]) -> list[Completion]:
        return self._ray.get(self.actor.generate.remote(list(requests)))

    def sleep(self) -> None:
        """The actor keeps its own copy of the team: nothing of the learner's to free."""

    def sync(self, team) -> None:
        from peft import get_peft_model_state_dict

        states = {}
        for key, name in team.adapters():
            state = get_peft_model_state_dict(team.models[key], adapter_name=name)
            states[(key, name)] = {k: v.detach().clone() for k, v in state.items()}
        self._ray.get(self.actor.load_adapters.remote(states))

    @property
    def tokens_generated(self) -> int:
        return self._ray.get(self.actor.tokens_generated.remote())


class RayVerifier:
    def __init__(self, cfg):
        ray = _ray()
        self._ray = ray
        self.actor = ray.remote(_VerifierWorker).remote(cfg)

    def score(self, transcripts):
        return self._ray.get(self.actor.score.remote(list(transcripts)))
