"""The arms of `maporl reproduce`, one entry each in `ARMS`: how the arm trains, the claim rows it feeds, and the
target each row is held to with where that target comes from. Adding an arm is adding an entry.

Every arm is trained on the training task (or not at all: the untrained team), then evaluated as a team of N agents x
T turns on the same held-out problems of the training task and of the transfer task. ARMS lists them in table order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

PAPER = "MAPoRL (Park et al. 2025, arXiv 2502.18439)"
SAME_PROBLEMS = "single_agent_rl_same_problems"
NO_INCENTIVES = "maporl_no_incentives"  # α = β = 0: the incentive arms and the ablation table are measured against it
ALONE = ("discussion.num_agents=1", "discussion.turns=1")  # one agent, trained on its turn-0 answers
ALPHA1_ONLY = ("reward.alpha=[0.0,2.0]", "reward.beta=[0.0,0.0]")
BETA0_ONLY = ("reward.alpha=[0.0,0.0]", "reward.beta=[2.0,0.0]")
# How far a 500-problem evaluation moves between runs (docs/algorithm.md): the scale every point target is set on.
NOISE = "a 500-problem evaluation moves by about ±2–4 points (docs/algorithm.md)"


@dataclass(frozen=True)
class Target:
    """What a claim row must clear: its whole 95% interval and every seed's own value (claims.py)."""

    op: Literal[">=", ">", "<="]
    value: float
    source: str  # the paper's finding it tests, and why the number is what it is
    share: bool = False  # a share of another row's difference, shown as a percentage

    def text(self) -> str:
        sign = {">=": "≥", ">": ">", "<=": "≤"}[self.op]
        return f"{sign} {100 * self.value:g}%" if self.share else f"{sign} {self.value:+g}"


@dataclass(frozen=True)
class Claim:
    """One row of the claims table, measured on the arm that lists it (final turn, points, unless a share)."""

    label: str
    measure: Literal["gain", "lead", "transfer_share", "behaviour"]
    target: Target
    against: str = ""  # lead, transfer_share, behaviour: the arm it is measured against (the row needs it to have run)
    behaviour: str = ""  # measure="behaviour": whose rate (turns >= 1, agents pooled) is compared

    @property
    def section(self) -> int:
        """Rows are listed (a), every arm's (b), every arm's (c) and (d), then the incentive rows."""
        return {"(a)": 0, "(b)": 1, "(c)": 2, "(d)": 2}.get(self.label[:3], 3)


@dataclass(frozen=True)
class Arm:
    what: str  # what the arm is, for `maporl reproduce --help`
    overrides: tuple[str, ...] = ()  # on the comparison's config, for training only
    default: bool = False  # part of the default comparison; the others run when named (or with `--methods all`)
    trained: bool = True  # False: the base team, evaluated as it is
    # Trained for as many steps as this arm took on the same seed (so on the same problems, with the same updates)
    # instead of for the budget: a wall-clock budget would also compare the hosts (one can be 1.7x slower).
    steps_of: str = ""
    solo_warmup: bool = False  # every agent alone first (reproduce.solo_warmup_share of the budget), then discussions
    claims: tuple[Claim, ...] = ()
    ablation: str = ""  # its row's name in the incentive ablation table (against maporl_no_incentives)


# Each point target's number is maporl's acceptance criterion for the paper's finding: the paper's own numbers come
# from other models and tasks (GSM8K, ANLI), so none carries over to the embedded base's arithmetic.
NO_GAIN_UNTRAINED = Target(
    "<=",
    1,
    f"{PAPER}: agents not trained to collaborate do not improve by discussing. Criterion for 'do not improve': the "
    "gain's interval stays at or below one point, a fifth of the gain (c) asks of a co-trained team, so no team can "
    "meet both",
)
LEAD_OVER_SINGLE = Target(
    ">=",
    8,
    f"{PAPER}: training one agent alone is not enough for collaboration; co-training does better. Criterion: twice "
    f"the upper end of evaluation noise ({NOISE}), so a lead that clears it is not noise",
)
LEAD_OVER_UNTRAINED = Target(
    ">=",
    15,
    f"{PAPER}: co-training lifts the team over the same models before post-training. Criterion: about four times "
    f"evaluation noise ({NOISE}), a lift no fluctuation of the untrained team explains",
)
GAIN_OVER_TURNS = Target(
    ">=",
    5,
    f"{PAPER}: co-trained agents get better as the discussion goes on. Criterion: above evaluation noise ({NOISE}) "
    "and five times (a)'s ceiling, so the gain is the discussion's, not the evaluation's",
)
TRANSFER_SHARE = Target(
    ">=",
    0.5,
    f"{PAPER}: the collaboration learned generalises to unseen domains. Criterion for 'transfers': at least half of "
    "(c)'s lead over the untrained team survives on a task no training step saw, so most of the gain is not specific "
    "to the training task",
    share=True,
)
RAISES_BEHAVIOUR = Target(
    ">",
    0,
    f"{PAPER}, reward shaping: the α1 (corrective, alone) and β0 (persuasive) incentives raise the behaviour they "
    "reward. Its sizes come from other models and tasks, so the target is the direction only: the rate rises, its "
    "interval above 0",
)


def _co_training(name: str, *more: Claim) -> tuple[Claim, ...]:
    """The rows a co-trained team feeds: (b) against single-agent RL at equal minutes (then `more`), (c) against the
    untrained team and over turns, and (d) the share of (c)'s lead kept on the transfer task. A trial becomes the
    default only if (c) and (d) still hold for it."""
    return (
        Claim(f"(b) {name} − single-agent RL, same minutes", "lead", LEAD_OVER_SINGLE, against="single_agent_rl"),
        *more,
        Claim(f"(c) {name} − untrained", "lead", LEAD_OVER_UNTRAINED, against="untrained"),
        Claim(f"(c) {name}: final − turn 0", "gain", GAIN_OVER_TURNS),
        Claim(f"(d) transfer task: {name} − untrained, share of (c)", "transfer_share", TRANSFER_SHARE, "untrained"),
    )


def _incentive(what: str, behaviour: str, overrides: tuple[str, ...], after_baseline: bool = False) -> Arm:
    """One of the paper's incentive ablations: one incentive at weight 2 and the others 0, against α = β = 0 on the
    behaviour that incentive is designed to raise; step-matched to α = β = 0, so only the reward differs."""
    if after_baseline:  # added to each answer's advantage after the group baseline and std, which cannot absorb it
        what, overrides = f"{what}, after the baseline", (*overrides, "algo.incentive_placement=advantage")
    label = f"incentives: {what} − α = β = 0, {behaviour.replace('_', '-')} rate"
    return Arm(
        f"{what}: {' '.join(overrides)}",
        overrides,
        steps_of=NO_INCENTIVES,
        claims=(Claim(label, "behaviour", RAISES_BEHAVIOUR, NO_INCENTIVES, behaviour),),
        ablation=what,
    )


ARMS: dict[str, Arm] = {
    "untrained": Arm(
        "the base team, not trained",
        default=True,
        trained=False,
        claims=(Claim("(a) untrained team: final − turn 0", "gain", NO_GAIN_UNTRAINED),),
    ),
    "single_agent_rl": Arm(
        "one agent trained alone on turn-0 answers with the same RL algorithm, copied into every seat",
        ALONE,
        default=True,
    ),
    # A wall-clock budget gives single-agent RL about N x T times more problems (a step samples one answer per
    # rollout, not N x T); as many steps as maporl took draws the same problems (the same seed and step draw them).
    SAME_PROBLEMS: Arm(
        "single_agent_rl for as many steps as maporl took on the seed: the same training problems and rollouts",
        ALONE,
        default=True,
        steps_of="maporl",
    ),
    # Maximum likelihood on the kept traces: one on-policy pass, no KL (the learner's ratio is then exactly 1).
    "sft_traces": Arm(
        "naive SFT on the base team's discussions whose final answers are all correct (algo.name=sft)",
        ("algo.name=sft", "algo.epochs=1", "algo.minibatches=1", "algo.kl_coef=0.0"),
        default=True,
    ),
    "maporl": Arm(
        "co-training with the MAPoRL reward (the config as given)",
        default=True,
        claims=_co_training(
            "MAPoRL",
            Claim("(b) MAPoRL − single-agent RL on the same problems", "lead", LEAD_OVER_SINGLE, SAME_PROBLEMS),
        ),
        ablation="the config's weights",
    ),
    NO_INCENTIVES: Arm(
        "maporl with the corrective and persuasive weights at 0 (α = β = 0)",
        ("reward.alpha=[0.0,0.0]", "reward.beta=[0.0,0.0]"),
        default=True,
    ),
    "maporl_alpha1_only": _incentive("α1 = 2 alone", "self_correction", ALPHA1_ONLY),
    "maporl_beta0_only": _incentive("β0 = 2 alone", "persuasion", BETA0_ONLY),
    "maporl_alpha1_after_baseline": _incentive("α1 = 2 alone", "self_correction", ALPHA1_ONLY, after_baseline=True),
    "maporl_beta0_after_baseline": _incentive("β0 = 2 alone", "persuasion", BETA0_ONLY, after_baseline=True),
    # Trials for claim (b) at equal minutes, each one change to maporl's training (docs/training.md).
    "maporl_solo_warmup": Arm(
        "for reproduce.solo_warmup_share of the budget every agent answers alone (one turn, its own adapter, a third "
        "of a discussion's cost), then co-training with discussions from those adapters for the rest",
        solo_warmup=True,
        claims=_co_training("MAPoRL after a solo warm-up"),
    ),
    "maporl_epochs2": Arm(
        "two optimizer epochs of two minibatches over each step's rollouts (MAPoRL's cost: reuse them PPO-style)",
        ("algo.epochs=2", "algo.minibatches=2"),
        claims=_co_training("MAPoRL with 2 epochs × 2 minibatches a step"),
    ),
    "maporl_wide": Arm(
        "16 problems x 2 rollouts a step instead of 8 x 4: more problems for the same answers",
        ("algo.rollouts_per_problem=2", "train.problems_per_step=16"),
        claims=_co_training("MAPoRL with 16 problems × 2 rollouts a step"),
    ),
    "maporl_shared": Arm(
        "one adapter shared by all agents: N times the data per adapter",
        ("discussion.adapters=shared",),
        claims=_co_training("MAPoRL with one shared adapter"),
    ),
}

DEFAULT_ARMS = tuple(name for name, arm in ARMS.items() if arm.default)
