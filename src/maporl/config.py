"""Configuration: one frozen dataclass per concern, a help string per field, YAML files plus dotted overrides.

    cfg = load_config("paper_gsm8k", ["discussion.num_agents=4", "generation.temperature=0.7"])

Every error is a UsageError with one line saying what is wrong and how to fix it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from maporl.config_parse import describe, load, opt
from maporl.config_parse import dump_yaml as dump_yaml  # how a run's is written
from maporl.config_parse import read_yaml as read_yaml  # how a run's saved config.yaml is read back
from maporl.config_parse import save_config as save_config
from maporl.errors import UsageError


@dataclass(frozen=True)
class ModelConfig:
    name_or_path: str = opt("embedded", "'embedded' (the shipped tiny base) or a local Hugging Face model directory")
    dtype: Literal["float32", "bfloat16", "float16"] = opt("float32", "weights dtype; float32 on CPU")
    device: str = opt("cpu", "torch device: cpu, cuda, cuda:1, ...")
    agent_models: tuple[str, ...] = opt(
        (), "heterogeneous team: one model directory per agent (empty: every agent uses name_or_path)"
    )
    autocast: bool = opt(
        False, "run the update's forward in bfloat16 autocast (on CUDA; adapters and optimizer state stay float32)"
    )
    activation_checkpointing: bool = opt(
        False, "recompute each decoder layer's activations in the backward pass instead of keeping them (less memory)"
    )


@dataclass(frozen=True)
class TaskConfig:
    name: str = opt(
        "arith_chain",
        "arith_chain | arith_long | arith_word | arith_word_unseen | gsm_symbolic | gsm8k | anli | jsonl:PATH | "
        "gsm8k:PATH | anli:PATH",
    )


@dataclass(frozen=True)
class DiscussionConfig:
    num_agents: int = opt(3, "number of agents N (>= 1)")
    turns: int = opt(3, "number of turns T (>= 1); turn 0 is each agent answering alone")
    peers_shown: int = opt(-1, "how many peers' previous answers an agent sees at turns > 0 (-1: all)")
    adapters: Literal["per_agent", "shared", "separate"] = opt(
        "per_agent", "per_agent: one base + one LoRA per agent; shared: one LoRA for all; separate: a model per agent"
    )


@dataclass(frozen=True)
class GenerationConfig:
    backend: Literal["hf", "vllm"] = opt(
        "hf", "hf: transformers generate, mixed-adapter batches; vllm: one vLLM engine, LoRA per agent"
    )
    temperature: float = opt(1.0, "sampling temperature (0: greedy)")
    max_new_tokens: int = opt(64, "maximum tokens generated per answer")
    batch_size: int = opt(256, "rows per generate call (all agents x problems of a turn are batched together)")
    merge_adapters: Literal["auto", "always", "never"] = opt(
        "auto",
        "hf: decode from a merged copy of the weights per adapter (the base model's speed) - always | never | auto "
        "(merged while the copies take at most 64M parameters)",
    )
    vllm_gpu_memory_utilization: float = opt(
        0.3, "vllm: share of the GPU the engine reserves (weights + KV cache); the rest is the update's"
    )
    max_model_len: int = opt(0, "vllm: longest sequence (prompt + answer) the engine serves (0: the model's own)")
    vllm_sleep: bool = opt(
        False, "vllm: sleep after each rollout (weights to CPU memory, KV cache freed) and wake before the next"
    )


@dataclass(frozen=True)
class EvalConfig:
    num_problems: int = opt(500, "evaluation problems (drawn from the eval split, disjoint from training)")
    seed: int = opt(1234, "picks the evaluation problems; the same seed gives the same problems")


@dataclass(frozen=True)
class VerifierConfig:
    kind: Literal["label", "model", "http"] = opt(
        "label", "label: ground-truth check; model: a learned verifier directory; http: a `maporl verifier serve` URL"
    )
    path: str = opt("", "verifier directory for kind=model (from `maporl verifier train`)")
    url: str = opt("http://127.0.0.1:8000", "server URL for kind=http")
    timeout: float = opt(30.0, "seconds per HTTP request (kind=http); 3 tries with back-off")


@dataclass(frozen=True)
class RewardConfig:
    gamma: float = opt(0.3, "discount of later turns' team scores in the influence-aware reward (paper: 0.3)")
    alpha: tuple[float, float] = opt((1.0, 1.0), "corrective incentive weights (alpha0: adopt/talked, alpha1: alone)")
    beta: tuple[float, float] = opt(
        (0.5, 0.5), "persuasive incentive weights (beta0: agent wrong too, beta1: agent right)"
    )
    convention: Literal["paper", "official"] = opt(
        "paper", "paper: the rules of docs/algorithm.md; official: the released code's (inverted persuasion signs)"
    )
    incentive_source: Literal["label", "verifier"] = opt(
        "label", "correctness used by the incentive terms: ground truth, or verifier score >= 0.5"
    )
    invalid_penalty: float = opt(-0.5, "score given to an answer with no parseable final answer")


@dataclass(frozen=True)
class AlgoConfig:
    name: Literal["ppo", "grpo", "rloo", "sft"] = opt(
        "grpo",
        "ppo: value head + GAE (paper); grpo / rloo: group baselines; sft: the naive-SFT baseline (the untrained "
        "team's discussions whose final answers are all right, as targets; in-process hf generation only)",
    )
    incentive_placement: Literal["reward", "advantage"] = opt(
        "reward",
        "grpo/rloo: reward = the incentives are part of R before the group baseline (paper); advantage = they are "
        "added to each answer's advantage after the baseline and GRPO's std, which then neither absorb nor rescale "
        "them (incentive_adv/* metrics, docs/metrics.md)",
    )
    group_by: Literal["problem", "agent_turn", "problem_turn", "rollout"] = opt(
        "rollout",
        "grpo/rloo groups: rollout = same (problem, agent, turn) over rollouts_per_problem discussions; problem; "
        "agent_turn = same slot across problems (AT-GRPO); problem_turn",
    )
    rollouts_per_problem: int = opt(4, "independent discussions of each problem per step (group size for 'rollout')")
    lr: float = opt(1e-3, "AdamW learning rate of the LoRA adapters (and value heads)")
    lr_final_ratio: float = opt(1.0, "linear decay to lr * ratio at train.max_steps (1: constant; released code: 0.1)")
    epochs: int = opt(1, "optimisation passes over each step's rollouts")
    minibatches: int = opt(1, "optimizer steps per epoch")
    micro_batch_size: int = opt(32, "answers per forward/backward, at most (gradient accumulation inside a minibatch)")
    micro_batch_tokens: int = opt(
        0, "tokens per forward/backward, at most, counting padding to the longest row (0: rows only); a GPU's budget"
    )
    clip_eps: float = opt(0.2, "PPO ratio clip")
    value_clip_eps: float = opt(0.2, "PPO value clip")
    vf_coef: float = opt(0.1, "value loss weight (PPO)")
    kl_coef: float = opt(0.0, "KL to the reference (base, adapters off): in the reward for PPO, else in the loss")
    kl_estimator: Literal["k1", "k2", "k3"] = opt("k3", "KL estimator for the loss term (grpo/rloo)")
    gae_lambda: float = opt(0.95, "GAE lambda within an answer (PPO)")
    whiten: Literal["agent_turn", "batch", "none"] = opt("agent_turn", "advantage whitening groups (PPO)")
    agg: Literal["token_mean", "seq_mean_token_mean", "seq_mean_token_sum"] = opt(
        "token_mean", "how token losses are averaged (see docs/algorithm.md)"
    )
    max_grad_norm: float = opt(1.0, "gradient clipping, per agent")
    lora_rank: int = opt(8, "LoRA rank (released code: 8)")
    lora_alpha: int = opt(16, "LoRA alpha (released code: 16)")
    max_nonfinite: int = opt(5, "stop (with a checkpoint) after this many consecutive non-finite updates")


@dataclass(frozen=True)
class TrainConfig:
    max_steps: int = opt(312, "training steps (each: sample, discuss, verify, reward, update every agent)")
    minutes: float = opt(0.0, "wall-clock budget; then evaluate, checkpoint and stop (0: no limit)")
    problems_per_step: int = opt(8, "problems sampled per step (each discussed rollouts_per_problem times)")
    agents: tuple[int, ...] = opt((), "agents to train (empty: all); others stay frozen")
    turns: tuple[int, ...] = opt((), "turns whose answers are trained (empty: all)")
    eval_every: int = opt(0, "evaluate every k steps on eval.num_problems (0: only at the end)")
    checkpoint_every: int = opt(50, "save a checkpoint every k steps (and at the end)")
    keep_last: int = opt(3, "checkpoints kept on disk (older ones are deleted; 0: keep all)")
    transcripts_every: int = opt(10, "save that step's transcripts every k steps")
    report_to: tuple[Literal["jsonl", "tensorboard", "wandb"], ...] = opt(
        ("jsonl",),
        "where metric rows go: metrics.jsonl always, plus tensorboard (RUN_DIR/tensorboard) and/or wandb "
        "(WANDB_MODE=offline works without network); e.g. train.report_to=[jsonl,tensorboard]",
    )
    init_from: str = opt(
        "",
        "a maporl run or checkpoint directory whose adapters (and value heads) this run starts from; optimizer, "
        "schedule and step count start fresh (--resume takes precedence)",
    )
    async_rollout: bool = opt(
        False,
        "backend=ray: start step k+1's discussions (with step k's weights) while step k updates; one step "
        "off-policy, the update's ratio is taken against the sampler's log-probs",
    )


@dataclass(frozen=True)
class VerifierTrainConfig:
    kind: Literal["generative", "classifier"] = opt(
        "generative", "generative: solves, then judges the answer against its own; classifier: a last-token head"
    )
    base: str = opt("embedded", "base model directory the verifier is fine-tuned from ('embedded': the shipped base)")
    epochs: int = opt(3, "passes over the training split of the rollout rows")
    lr: float = opt(1e-3, "peak learning rate (AdamW)")
    lr_final_ratio: float = opt(0.1, "linear decay to lr * ratio by the last step (1: constant)")
    batch_size: int = opt(32, "rollout rows per step (practice rows come on top)")
    samples: int = opt(1, "generative: solutions per score (1: greedy; k > 1 samples k and averages, k times slower)")
    score: Literal["answer", "verdict"] = opt(
        "answer",
        "generative: P(correct) from the likelihood of the response's answer after the verifier's own solution "
        "(answer) or from its Yes/No verdict (verdict); docs/verifier.md",
    )
    practice: int = opt(
        -1,
        "generative: synthetic rows on fresh training problems of task.name (half right), spread over the steps; "
        "-1: 16000 for the generative kind, 0 for the classifier",
    )
    minutes: float = opt(0.0, "wall-clock budget for training (0: none)")


@dataclass(frozen=True)
class RayConfig:
    address: str = opt(
        "",
        "backend=ray: cluster to join, HOST:PORT or 'auto' (the one `ray start` recorded on this machine); empty: "
        "RAY_ADDRESS, else a private local instance (never a cluster `ray start` left running or dead)",
    )
    rollout_workers: int = opt(
        1, "backend=ray: generator actors; each runs whole discussions for a shard of a step's problems"
    )
    cpus_per_actor: float = opt(
        1.0, "backend=ray: CPUs reserved per rollout worker and per learner (torch threads: this, at least 1)"
    )
    gpus_per_rollout_worker: float = opt(0.0, "backend=ray: GPUs reserved per rollout worker (0 on CPU)")
    gpus_per_learner: float = opt(
        0.0, "backend=ray: GPUs reserved per learner actor, one per trained adapter (0 on CPU; 1 puts each on its GPU)"
    )
    start_timeout_s: float = opt(
        60.0,
        "backend=ray: how long to wait for the cluster's address to answer when joining, and for the cluster to place "
        "every actor",
    )


@dataclass(frozen=True)
class Config:
    seed: int = opt(0, "master seed: sampling seeds derive from (seed, step, problem, agent, turn)")
    run_name: str = opt("tiny", "run directory name under out_dir")
    out_dir: str = opt("runs", "where run directories are written")
    backend: Literal["local", "ray"] = opt(
        "local",
        "local: everything in this process; ray: rollout workers, one learner per adapter and the verifier as Ray "
        "actors (extra 'ray')",
    )
    model: ModelConfig = field(default_factory=ModelConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    discussion: DiscussionConfig = field(default_factory=DiscussionConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    verifier: VerifierConfig = field(default_factory=VerifierConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    algo: AlgoConfig = field(default_factory=AlgoConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    verifier_train: VerifierTrainConfig = field(default_factory=VerifierTrainConfig)
    ray: RayConfig = field(default_factory=RayConfig)

    def __post_init__(self) -> None:
        checks = [
            (self.discussion.num_agents >= 1, "discussion.num_agents must be >= 1, e.g. discussion.num_agents=3"),
            (self.discussion.turns >= 1, "discussion.turns must be >= 1, e.g. discussion.turns=3"),
            (self.discussion.peers_shown >= -1, "discussion.peers_shown must be -1 (all) or >= 0"),
            (self.generation.temperature >= 0, "generation.temperature must be >= 0 (0 means greedy)"),
            (self.generation.max_new_tokens >= 1, "generation.max_new_tokens must be >= 1"),
            (self.generation.batch_size >= 1, "generation.batch_size must be >= 1"),
            (self.ray.rollout_workers >= 1, "ray.rollout_workers must be >= 1"),
            (
                self.ray.cpus_per_actor > 0 and min(self.ray.gpus_per_rollout_worker, self.ray.gpus_per_learner) >= 0,
                "ray.cpus_per_actor must be > 0, ray.gpus_per_rollout_worker and ray.gpus_per_learner >= 0",
            ),
            (
                0 < self.generation.vllm_gpu_memory_utilization <= 1,
                "generation.vllm_gpu_memory_utilization must be in (0, 1], e.g. 0.3",
            ),
            (self.generation.max_model_len >= 0, "generation.max_model_len must be >= 0 (0: the model's own)"),
            *self._vllm_checks(),
            (self.eval.num_problems >= 1, "eval.num_problems must be >= 1"),
            (bool(self.run_name) and "/" not in self.run_name, "run_name must be a non-empty name without '/'"),
            (self.algo.lr > 0, "algo.lr must be > 0, e.g. algo.lr=1e-3"),
            (0 <= self.reward.gamma <= 1, "reward.gamma must be in [0, 1]"),
            (min(self.reward.alpha + self.reward.beta) >= 0, "reward.alpha and reward.beta weights must be >= 0"),
            (self.algo.rollouts_per_problem >= 1, "algo.rollouts_per_problem must be >= 1"),
            (self.algo.epochs >= 1 and self.algo.minibatches >= 1, "algo.epochs and algo.minibatches must be >= 1"),
            (self.algo.micro_batch_size >= 1, "algo.micro_batch_size must be >= 1"),
            (self.algo.micro_batch_tokens >= 0, "algo.micro_batch_tokens must be >= 0 (0: count rows only)"),
            (self.train.max_steps >= 1, "train.max_steps must be >= 1"),
            (self.train.minutes >= 0, "train.minutes must be >= 0 (0: no limit)"),
            (self.train.problems_per_step >= 1, "train.problems_per_step must be >= 1"),
            (
                (self.train.problems_per_step * self.algo.rollouts_per_problem) % self.algo.minibatches == 0,
                "train.problems_per_step * algo.rollouts_per_problem must be divisible by algo.minibatches",
            ),
            (
                all(0 <= a < self.discussion.num_agents for a in self.train.agents),
                f"train.agents must name agents 0..{self.discussion.num_agents - 1}",
            ),
            (all(0 <= t < self.discussion.turns for t in self.train.turns), "train.turns must name turns 0..T-1"),
            (self.algo.lora_rank >= 1, "algo.lora_rank must be >= 1"),
            (self.algo.clip_eps > 0 and self.algo.value_clip_eps > 0, "algo.clip_eps and value_clip_eps must be > 0"),
            (self.algo.kl_coef >= 0 and self.algo.vf_coef >= 0, "algo.kl_coef and algo.vf_coef must be >= 0"),
            (self.algo.max_nonfinite >= 1, "algo.max_nonfinite must be >= 1"),
            (
                self.algo.incentive_placement == "reward" or self.algo.name in ("grpo", "rloo"),
                "algo.incentive_placement=advantage adds the incentives after a group baseline: it needs "
                "algo.name=grpo or rloo",
            ),
            (
                self.algo.name != "sft" or (self.backend == "local" and self.generation.backend == "hf"),
                "algo.name=sft samples the untrained team beside the trained one: it needs backend=local and "
                "generation.backend=hf",
            ),
            (
                not self.train.async_rollout or (self.backend == "ray" and self.algo.name != "sft"),
                "train.async_rollout=true overlaps the rollout workers with the learners: it needs backend=ray "
                "(and an RL algo.name, not sft)",
            ),
            (self.verifier.timeout > 0, "verifier.timeout must be > 0 seconds"),
            (
                self.verifier.kind != "model" or bool(self.verifier.path),
                "verifier.kind=model needs verifier.path=DIR; pass a directory made by `maporl verifier train`",
            ),
            (
                len(self.model.agent_models) in (0, self.discussion.num_agents),
                f"model.agent_models must name one model per agent ({self.discussion.num_agents}) or none",
            ),
            (
                not self.model.agent_models or self.discussion.adapters == "per_agent",
                "model.agent_models (a heterogeneous team) needs discussion.adapters=per_agent",
            ),
            (self.train.keep_last >= 0, "train.keep_last must be >= 0 (0: keep every checkpoint)"),
            (
                min(self.train.checkpoint_every, self.train.eval_every, self.train.transcripts_every) >= 0,
                "train.checkpoint_every, eval_every and transcripts_every must be >= 0 (0: off)",
            ),
            (
                min(self.verifier_train.epochs, self.verifier_train.batch_size, self.verifier_train.samples) >= 1,
                "verifier_train.epochs, batch_size and samples must be >= 1",
            ),
            (self.verifier_train.lr > 0, "verifier_train.lr must be > 0, e.g. verifier_train.lr=1e-3"),
            (0 <= self.verifier_train.lr_final_ratio <= 1, "verifier_train.lr_final_ratio must be in [0, 1]"),
            (self.verifier_train.practice >= -1, "verifier_train.practice must be >= 0 (or -1: the kind's default)"),
            (
                self.verifier_train.practice <= 0 or self.verifier_train.kind == "generative",
                "verifier_train.practice needs verifier_train.kind=generative (the classifier cannot solve)",
            ),
            (self.verifier_train.minutes >= 0, "verifier_train.minutes must be >= 0 (0: no limit)"),
        ]
        for ok, message in checks:
            if not ok:
                raise UsageError(message)

    def _vllm_checks(self) -> list[tuple[bool, str]]:
        """What vLLM 0.33 would refuse or crash on, refused before any model or engine is loaded."""
        if self.generation.backend != "vllm":
            return []
        t = self.generation.temperature
        return [
            (
                self.model.dtype in ("bfloat16", "float16"),
                f"generation.backend=vllm needs 16-bit weights, not model.dtype={self.model.dtype} (vLLM's LoRA "
                "kernels take float16/bfloat16 inputs only): set model.dtype=bfloat16",
            ),
            (
                t == 0 or 0.01 <= t <= 2,
                f"generation.backend=vllm samples at temperature 0 or 0.01 to 2, not {t} (vLLM raises smaller ones "
                "to 0.01, where the update would take log-probs at another temperature, and refuses larger ones)",
            ),
            (self.algo.lora_rank <= 512, "generation.backend=vllm holds LoRA ranks up to 512: lower algo.lora_rank"),
            (
                not self.model.agent_models and self.discussion.adapters != "separate",
                "generation.backend=vllm serves one base model: use discussion.adapters=per_agent or shared and no "
                "model.agent_models (or generation.backend=hf)",
            ),
            (
                self.backend != "ray" or self.ray.gpus_per_rollout_worker > 0,
                "generation.backend=vllm in Ray rollout workers needs a GPU share for each: set "
                "ray.gpus_per_rollout_worker (e.g. 1)",
            ),
        ]


def load_config(
    path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = (), base: dict[str, Any] | None = None
) -> Config:
    """Defaults <- `base` (e.g. a run's saved config) <- YAML file (a path or a shipped recipe's name) <- dotted
    overrides, validated."""
    return load(Config, path, overrides, base)


def to_dict(cfg: Config) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def with_overrides(cfg: Config, overrides: list[str] | tuple[str, ...]) -> Config:
    """`cfg` with dotted overrides applied on top, validated like any config."""
    return load_config(None, overrides, base=to_dict(cfg))


def keys() -> list[tuple[str, Any, str]]:
    """(dotted key, default, help) of every run setting: `maporl config --keys` lists these, then the study's
    (`maporl.study.settings`)."""
    return describe(Config)
