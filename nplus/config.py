"""Frozen run configuration.

A ``Config`` is everything that determines a pipeline run: the task (data), the model, the stage
hyperparameters, the details and the seed. Details (nplus/details.py) are *what* the implementation does;
hyperparameters (here) are *how much*. Presets (nplus/presets.py) are short, commented functions; a variant is a
small diff of a preset (``apply_overrides``). Configs are frozen after construction and validated up front
(divisibility,
ranges), so a bad value fails before any compute.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from nplus.details import ALGORITHMS, REGISTRY, DetailError, Details, misplaced, with_overrides


class ConfigError(ValueError):
    """A configuration value that is invalid (named field, valid choices)."""


# ---- value ranges, declared beside each field and checked for every field by ``validate`` ----
# A field without a declared range still gets its type's: an int (never a bool) in 0 .. INT_MAX (a seed is fed
# to 64-bit generators), a float that is finite, a bool that is a bool. ``ranged`` narrows that.
INT_MAX = 2**63 - 1


def ranged(default: Any, low: float | None = None, high: float | None = None, *, open_low: bool = False) -> Any:
    """A dataclass field whose value must lie in [low, high] ((low, high] with ``open_low``; None: unbounded)."""
    return field(default=default, metadata={"range": (low, high, open_low)})


def positive(default: Any) -> Any:
    """An int ≥ 1 or a float > 0 (a count, a size, a temperature)."""
    return ranged(default, 0, open_low=True)


def non_negative(default: Any) -> Any:
    """≥ 0 (a learning rate, a coefficient)."""
    return ranged(default, 0)


def share(default: Any) -> Any:
    """A fraction in [0, 1]."""
    return ranged(default, 0, 1)


@dataclass(frozen=True)
class TaskConfig:
    """Where the data comes from."""

    name: Literal["tldr-synth", "tldr"] = "tldr-synth"
    """`tldr-synth` (embedded, generated offline) or `tldr` (the public TL;DR datasets)."""
    sft_source: str = "tldr-synth"
    """`tldr-synth`, a hub dataset name or a local path (save_to_disk / json / parquet)."""
    comparisons_source: str = "tldr-synth"
    """`tldr-synth`, a hub dataset name or a local path. Under task.name=tldr-synth: `tldr-synth`,
    `tldr-synth:gold` / `tldr-synth:simulated-ai` (the training pairs relabelled by that judge in the pipeline, as
    `nplus label` does, cached) or a local path, e.g. AI-feedback labels written by `nplus label` (the path names
    the labels, so write new labels to a new path)."""
    synth_seed: int = 0
    """Seed of the generated corpus (shared by every training seed, like a public dataset)."""
    synth_scale: Literal["default", "small", "tiny"] = "default"
    """Size of the generated corpus."""
    max_sft_train: int | None = positive(None)
    """Use at most this many SFT training posts (None: all)."""
    synth_comparisons: int | None = None
    """tldr-synth: training comparisons to generate (None: the scale's, 4,000 at `default`; the paper's TL;DR has
    92,858). The scale's pairs come first and the validation pairs are the same, so a run with more pairs trains on
    a superset and is scored on the same pairs; posts, tokenizer and base models do not change."""
    max_comparisons_train: int | None = positive(None)
    """Use at most this many training comparisons (None: all)."""
    max_eval: int = positive(256)
    """Validation prompts used for generation-based evaluation (ROUGE, win rate)."""
    max_rm_eval: int = positive(1000)
    """Validation comparisons used for reward-model accuracy."""


@dataclass(frozen=True)
class ModelConfig:
    """The base model: a rung of the embedded GPT-NeoX ladder or a hub name / local path."""

    name: str = "tiny"
    """Ladder rung (`nano`, `nano2`, `micro`, `tiny`, `mini`, `micro4`, `xs`, `s`, `m`, `l`) or a `transformers`
    causal LM name/path."""
    pretrain_steps: int = 300
    """Language-model updates of base pretraining for ladder models (the analogue of Pythia's pretraining), after
    the induction phase."""
    pretrain_induction_steps: int = 0
    """Updates on repeated random-token spans before the language phase: the induction circuit (in-context
    copying) forms there; language-model training on posts alone does not produce it at this size."""
    pretrain_span_mix: float = share(0.0)
    """Share of each language-phase batch's rows that are repeated random spans (keeps the copying circuit
    exercised while the model learns language)."""
    pretrain_extra_posts: int = 0
    """Fresh generated posts (with their TL;DR lines) added to the pretraining corpus beyond the SFT training
    posts, so that the corpus does not repeat and predicting a TL;DR pays only by reading its post."""
    pretrain_lr: float = positive(3e-3)
    pretrain_lr_rule: Literal["fixed", "inverse_width"] = "fixed"
    """How the pretraining learning rates follow the rung. `fixed`: pretrain_lr and pretrain_language_lr as given
    (recipe 3, every rung alike). `inverse_width`: both are the rates of a 64-wide rung and scale as 64 / width
    (recipe 4, the ladder of `nplus base build`): Adam's update to a hidden weight moves its output in proportion
    to fan-in, so a constant rate is too large for wide rungs (96 × 2 and 128 × 3 never formed the induction
    circuit at 2e-3) and halving it per doubling of width formed it at 64 × 4 and 128 × 4 (docs/tldr-synth.md)."""
    pretrain_grad_clip: float | None = positive(None)
    """Clip the pretraining gradient's global norm to this (None: no clipping, recipe 3). Pythia clips at 1.0; the
    induction experiments at 64 × 4 and 128 × 4 that set the ladder's rule clipped at 1.0 too."""
    pretrain_language_lr: float | None = positive(None)
    """Peak learning rate of the language phase (None: pretrain_lr). Lower than the induction phase's so that
    learning language does not overwrite the copying circuit (measured: at 2e-3 copy_gain fell to 0.1 and the
    SFT policy restated 4 % of durations; at 1e-3 it stays above 2)."""
    pretrain_batch: int = positive(32)
    pretrain_seq_len: int = positive(128)
    """Window of the language phase (each window starts at a document)."""
    pretrain_span_len: int = positive(128)
    """Window of the induction phase."""
    pretrain_tldr_weight: float = non_negative(1.0)
    """Loss weight of the TL;DR tokens (and the EOS that ends them) in the language phase, relative to the post's
    tokens, which are ~88 % of a window: the TL;DR is where reading the post pays (span rows keep weight 1)."""
    pretrain_seed: int = 0
    """Base models are shared by every training seed, as Pythia checkpoints are."""
    pretrain_corpus: Literal["posts", "posts_tldr"] = "posts_tldr"
    """`posts`: training posts only. `posts_tldr`: each training post followed by its author's TL;DR line, as
    Reddit posts carry them (the TL;DR dataset was mined from such lines). Copying facts from post to summary
    needs attention circuits that only form on text where facts repeat; Pythia learned them on web text."""
    rotary_pct: float = share(0.25)
    """Share of each head's dimensions that carry rotary position embeddings in ladder models (Pythia: 0.25)."""
    dtype: Literal["float32", "bfloat16"] = "float32"


@dataclass(frozen=True)
class Lengths:
    """Token limits (paper: query 512, SFT response 53 / total 562, preference response 169 / total 638).

    Unlike the other sections it checks itself when built (with validate's checks and messages): the dataset
    builder and ``nplus data-build`` take it without a ``Config`` around it."""

    query: int = positive(512)
    sft_response: int = positive(53)
    sft_total: int = positive(562)  # query + SFT response
    pref_response: int = positive(169)  # preference summaries come from many policies and run longer
    pref_total: int = positive(638)  # query + preference response

    def __post_init__(self) -> None:
        _check_fields(self, "lengths.")
        if self.sft_total < self.sft_response or self.pref_total < self.pref_response:
            raise ConfigError("lengths: totals must be at least the response limits")


@dataclass(frozen=True)
class OptimConfig:
    """One stage's optimizer settings. ``lr`` is used when details.learning_rate = per_stage."""

    lr: float = non_negative(3e-6)
    epochs: int = positive(1)
    batch_size: int = positive(128)
    """Global batch (rollouts per batch for PPO)."""
    micro_batch: int = positive(128)
    """Per-process micro-batch; batch_size = micro_batch × grad_accum × processes."""


@dataclass(frozen=True)
class PPOConfig:
    """PPO hyperparameters (Stiennon et al. except the learning rate)."""

    lr: float = non_negative(3e-6)
    total_episodes: int = positive(1_000_000)
    batch_size: int = positive(512)
    micro_batch: int = positive(64)
    ppo_epochs: int = positive(4)
    num_minibatches: int = positive(1)
    response_length: int = positive(53)
    temperature: float = positive(0.7)
    kl_coef: float = non_negative(0.05)
    kl_target: float = positive(6.0)
    kl_horizon: int = positive(10_000)
    gamma: float = share(1.0)
    lam: float = share(0.95)
    cliprange: float = non_negative(0.2)
    cliprange_value: float = non_negative(0.2)
    vf_coef: float = non_negative(0.1)
    missing_eos_score: float = -1.0
    """The score a response without EOS gets (replace) or loses (subtract)."""
    group_size: int = positive(4)
    """RLOO k / GRPO G: responses sampled per prompt; batch_size counts responses, so an update holds
    batch_size / group_size prompts. Ahmadian et al. 2024 used k = 2 and 4; TRL's RLOO defaults to 2; Shao et al.
    2024 used G = 64; TRL's GRPO defaults to 8. REINFORCE samples one response per prompt."""
    eval_every: int = 0
    """Evaluate on validation prompts every N PPO updates (0: only at the end)."""
    length_chunks: int = positive(4)
    """Rollout scoring and training forward passes run over rows grouped by query length in this many groups,
    each without the leading padding all its rows share (nplus.models.by_length). The same function of the
    weights: only float rounding differs from one padded pass (1 = that pass, as before this option existed). At the
    demo's shapes, 4 took 16 % off a PPO update (9 % in `make bench-peers`; docs/performance.md)."""
    last_layer: Literal["response", "all"] = "response"
    """`response`: forward passes that read the response's positions only (the policy and critic of every PPO,
    RLOO, REINFORCE or GRPO epoch, the rollout's values, reference log-probs and one-position reward-model score)
    run the last transformer layer on those positions alone (nplus.models.suffix_hidden); the layers below run in
    full. The same function of the weights: only float rounding differs from `all` (every position, as before this
    option existed). At the demo's shapes it took 24 % off the PPO epochs (docs/performance.md)."""
    frozen_offload: bool = False
    """Wrap the frozen reference policy and reward model in DeepSpeed ZeRO-3 with CPU parameter offload
    (nplus/configs/ds_zero3_offload_frozen.json), as the paper did at 6.9B. Needs `pip install deepspeed` and
    GPUs launched with `accelerate launch`; the trained policy and critic are unaffected."""

    @property
    def num_updates(self) -> int:
        return self.total_episodes // self.batch_size

    @property
    def last_layer_suffix(self) -> bool:
        """last_layer = response: the ``suffix`` argument of the models' forward passes (nplus.models)."""
        return self.last_layer == "response"


@dataclass(frozen=True)
class DPOConfig(OptimConfig):
    """DPO hyperparameters (algorithm = dpo): offline, on the training comparisons, from the SFT policy. The
    optimizer settings are SFT's and RM's (``lr`` used with details.learning_rate = per_stage; sfd's dpo.py: 3e-6,
    1 epoch); a batch counts comparison pairs (sfd: 64; Rafailov et al.: 64)."""

    batch_size: int = positive(64)
    micro_batch: int = positive(64)
    beta: float = positive(0.05)
    """β of the implicit reward β·log(π/π_ref): sfd's dpo.py 0.05; Rafailov et al. (App. B) 0.5 for TL;DR, 0.1
    elsewhere; TRL's DPOConfig 0.1."""
    ref_sync_steps: int = positive(512)
    """details.dpo_reference = synced: updates between reference updates (TRL ref_model_sync_steps 512)."""
    ref_mixup_alpha: float = ranged(0.6, 0, 1, open_low=True)
    """details.dpo_reference = synced: weight of the policy in ref ← α·π + (1−α)·ref (TRL ref_model_mixup_alpha)."""


@dataclass(frozen=True)
class RewardConfig:
    """Where the policy-optimization stage's score comes from (nplus/rewards.py). The gold judge scores every
    run's evaluation samples whatever the source, so proxy and gold stay side by side."""

    source: str = "rm"
    """rm (the paper: the learned reward model), gold (tldr-synth's gold judge as the reward: the upper bound that
    separates reward-model error from optimization error) or rule (a programmatic reward, ``rule``)."""
    rule: str = "keywords"
    """reward.source = rule: the rule's name (nplus.rewards.RULES: keywords, sentiment)."""
    model: str = ""
    """reward.source = rm: the model the reward model is trained from ("": the policy's own, as in the paper; a
    ladder rung or model name: its own base and SFT, same data and recipe). A larger verifier than the policy is
    the generation–verification gap study's knob (ablations/gen_verify_gap.toml)."""


@dataclass(frozen=True)
class Config:
    """A fully resolved pipeline run."""

    preset: str = "smoke"
    seed: int = 1
    algorithm: str = "ppo"
    """The policy-optimization algorithm after SFT and RM: ppo (the paper), dpo (Rafailov et al. 2023), rloo
    (Ahmadian et al. 2024), reinforce (REINFORCE with a baseline) or grpo (Shao et al. 2024). All reuse the same
    SFT and RM artifacts (DPO trains without the RM; it scores DPO's samples in evaluation) and write the same
    run layout and ppo.* summary fields."""
    lr: float = non_negative(3e-6)
    """The single learning rate of every stage (details.learning_rate = single)."""
    lr_rule: Literal["fixed", "inverse_width"] = "fixed"
    """How the SFT, RM and policy rates (or the single `lr`) depend on the model trained: `fixed` (the paper's one
    set for every size) or `inverse_width` (the configured rates are a 64-wide model's, scaled by 64 / width: Adam
    moves every weight by about the rate whatever its gradient, so a unit's input moves in proportion to its
    fan-in; the scaling ladder's pretraining rule, ModelConfig.pretrain_lr_rule, carried downstream)."""
    eval_temperature: float = positive(0.01)
    """Near-greedy evaluation temperature (details.eval_temperature = near_greedy)."""
    task: TaskConfig = field(default_factory=TaskConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    lengths: Lengths = field(default_factory=Lengths)
    sft: OptimConfig = field(default_factory=OptimConfig)
    rm: OptimConfig = field(default_factory=lambda: OptimConfig(batch_size=64, micro_batch=64))
    ppo: PPOConfig = field(default_factory=PPOConfig)
    dpo: DPOConfig = field(default_factory=DPOConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    details: Details = field(default_factory=Details)
    processes: int = positive(1)
    """Data-parallel processes (accelerate); batch sizes are global."""

    def __post_init__(self) -> None:
        validate(self)

    # ---- derived values (one place) ----
    def stage_lr(self, stage: Literal["sft", "rm", "ppo", "dpo"], width: int) -> float:
        """details.learning_rate: one rate for every stage (paper) or the preset's per-stage rate; then lr_rule for a
        model ``width`` (hidden size) wide."""
        rate = self.lr if self.details.learning_rate == "single" else getattr(self, stage).lr
        return rate * width_scale(self.lr_rule, width)

    def grad_accum(self, stage: Literal["sft", "rm", "ppo", "dpo"]) -> int:
        cfg = getattr(self, stage)
        return cfg.batch_size // (cfg.micro_batch * self.processes)

    @property
    def sampling_eval_temperature(self) -> float:
        """details.eval_temperature: near-greedy (paper) or the training temperature."""
        return self.eval_temperature if self.details.eval_temperature == "near_greedy" else self.ppo.temperature

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def stage_dict(self, stage: Literal["base", "sft", "rm", "ppo"]) -> dict[str, Any]:
        """The part of the config a stage's artifact depends on (its own section and everything upstream)."""
        if stage == "rm" and (rm_cfg := self.reward_model_config()) is not self:  # an RM from another model
            return rm_cfg.stage_dict("rm")
        d = self.to_dict()
        # fields added with the scaling ladder: at their defaults they leave earlier hashes (committed bases) as they
        # were
        for key, default in (("pretrain_lr_rule", "fixed"), ("pretrain_grad_clip", None)):
            if d["model"][key] == default:
                del d["model"][key]
        if d["lr_rule"] == "fixed":  # likewise for every stage's hash (the base never reads it)
            del d["lr_rule"]
        base = {"task": d["task"], "model": d["model"], "base_recipe": BASE_RECIPE}
        if stage == "base":
            # Only what the base model depends on: the corpus it is pretrained on (generator version included) and
            # the model section. Evaluation sizes or length limits must not make a committed base unusable, nor
            # may the comparisons, which the base never reads (POSTS_VERSION).
            corpus = {k: d["task"][k] for k in ("name", "synth_seed", "synth_scale", "max_sft_train")}
            return {
                "task": corpus,
                "generator": self.generator_version("base"),
                "model": d["model"],
                "base_recipe": BASE_RECIPE,
            }
        upstream_stages = {"sft": {"data", "all", "sft", "eval"}, "rm": {"data", "all", "sft", "rm", "eval"}}
        # The generated data a stage reads: SFT the posts only, the RM and a whole run the comparisons too, so that a
        # generator bump never reuses an artifact trained on the previous corpus.
        generator = self.generator_version(stage)
        if stage == "ppo":
            return {**_run_identity(self, d), "base_recipe": BASE_RECIPE, "generator": generator}
        keep = upstream_stages[stage]
        details = {k: v for k, v in d["details"].items() if REGISTRY[k].stage in keep}
        if stage == "sft":  # SFT never reads the comparisons: relabelled pairs (nplus label) reuse its artifact
            base["task"] = {
                k: v
                for k, v in d["task"].items()
                if k not in ("comparisons_source", "max_comparisons_train", "max_rm_eval", "synth_comparisons")
            }
        out = {
            **base,
            "generator": generator,
            "seed": d["seed"],
            "lengths": d["lengths"],
            "lr": d["lr"],
            **({"lr_rule": d["lr_rule"]} if "lr_rule" in d else {}),
            "sft": d["sft"],
            "processes": d["processes"],
            "eval_temperature": d["eval_temperature"],
            "details": details,
        }
        if stage == "rm":
            out["rm"] = d["rm"]
        return out

    def generator_version(self, stage: Literal["base", "sft", "rm", "ppo"]) -> str | None:
        """The tldr-synth generator version a stage's inputs come from (None for the real task): base and SFT read
        the posts (POSTS_VERSION), the RM and PPO the comparisons too (VERSION)."""
        if self.task.name != "tldr-synth":
            return None
        from nplus.tasks.synth import POSTS_VERSION, VERSION  # here: the generator imports numpy; config stays light

        return POSTS_VERSION if stage in ("base", "sft") else VERSION

    def reward_model_config(self) -> "Config":
        """The config the reward model (and its SFT and base) is built with: this one, or with model.name =
        reward.model when the RM is trained from another model than the policy."""
        if not self.reward.model or self.reward.model == self.model.name:
            return self
        return apply_overrides(self, hparams={"model.name": self.reward.model, "reward.model": ""})

    def stage_hash(self, stage: Literal["base", "sft", "rm", "ppo"]) -> str:
        return config_hash(self.stage_dict(stage))

    @property
    def hash(self) -> str:
        """The whole run's identity (what a run directory's DONE marker records)."""
        return self.stage_hash("ppo")


def _run_identity(cfg: Config, d: dict[str, Any]) -> dict[str, Any]:
    """What a whole run depends on: everything but the preset's name, less what its algorithm never reads (the
    other algorithms' details and hyperparameters), so that adding an algorithm leaves PPO runs' hashes as they
    were and a DPO hyperparameter never invalidates a PPO run."""
    out = {k: v for k, v in d.items() if k not in ("preset", "algorithm", "dpo", "reward")}
    out["details"] = {k: v for k, v in d["details"].items() if REGISTRY[k].applies_to(cfg.algorithm)}
    if cfg.algorithm != "ppo":
        out["algorithm"] = cfg.algorithm
    if cfg.algorithm == "dpo":
        out["dpo"] = d["dpo"]
    # the learned RM (the default) leaves hashes as they were before reward sources existed; DPO reads no reward
    if cfg.reward.source != "rm" and cfg.algorithm != "dpo":
        out["reward"] = {
            "source": cfg.reward.source,
            **({"rule": cfg.reward.rule} if cfg.reward.source == "rule" else {}),
        }
    if cfg.reward.model and cfg.algorithm != "dpo":  # the policy's own model (the default) leaves hashes as they were
        out["reward"] = {"source": cfg.reward.source, "model": cfg.reward.model}
    if cfg.algorithm not in ("rloo", "grpo"):
        out["ppo"] = {k: v for k, v in d["ppo"].items() if k != "group_size"}
    return out


# task.comparisons_source values the embedded world builds itself (besides a local comparisons directory)
SYNTH_COMPARISONS = ("tldr-synth", "tldr-synth:gold", "tldr-synth:simulated-ai")

# The base-model recipe: bumped when pretrain_base's output for the same config changes (a code change, not a
# config change), so that cached base models, and the SFT/RM artifacts and finished runs built on them, are not
# reused across it. 2 (2026-11-21): pretraining without dropout, posts followed by their TL;DR lines.
# 3 (2026-12-01): an induction phase on repeated random spans, then document-aligned posts+TL;DR windows from a
# corpus with fresh generated posts, mixed with span batches; the base-stage hash covers the corpus only.
BASE_RECIPE = 3


# The width whose rates a preset configures under pretrain_lr_rule / lr_rule = inverse_width (the demo rung's)
REFERENCE_WIDTH = 64


def width_scale(rule: str, width: int) -> float:
    """The factor a learning-rate rule applies to a model ``width`` wide: 1 (fixed) or REFERENCE_WIDTH / width."""
    return REFERENCE_WIDTH / width if rule == "inverse_width" else 1.0


def config_hash(obj: Any) -> str:
    """A short content hash of a JSON-able object (sorted keys, so field order never matters)."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _range_text(low: float | None, high: float | None, open_low: bool, integer: bool) -> str:
    if integer:
        return f"an integer in {int(low) + open_low}..{int(high)}"
    lo = "" if low is None else f"{'>' if open_low else '≥'} {low:g}"
    hi = "" if high is None else f"≤ {high:g}"
    bounds = " and ".join(b for b in (lo, hi) if b)
    return f"a finite number{' ' + bounds if bounds else ''}"


def _check_value(name: str, hint: Any, value: Any, bounds: tuple | None) -> None:
    """One field's value against its type (Literal choices, bool, int, float, str, Optional) and declared range."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):  # X | None
        if value is None:
            return
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    if typing.get_origin(hint) is Literal:
        if value not in typing.get_args(hint):
            raise ConfigError(f"{name}={value!r}: valid choices: {', '.join(str(c) for c in typing.get_args(hint))}")
        return
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{name}={value!r}: must be true or false")
        return
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{name}={value!r}: must be a string")
        return
    if hint not in (int, float):
        return
    low, high, open_low = bounds or (None, None, False)
    if hint is int:  # an int is also within what a 64-bit seed or counter holds
        low, high = 0 if low is None else low, INT_MAX if high is None else high
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if (
        not number
        or (hint is int and not isinstance(value, int))
        or (hint is float and not math.isfinite(value))
        or (low is not None and (value <= low if open_low else value < low))
        or (high is not None and value > high)
    ):
        raise ConfigError(f"{name}={value!r}: must be {_range_text(low, high, open_low, hint is int)}")


def _check_fields(obj: Any, prefix: str = "") -> None:
    """Every field of every section holds a value of its type within its declared range (``ranged`` and its
    shorthands; a type's own bounds otherwise) and, for a ``Literal``, one of its choices: ``--set`` and a study's
    [hparams] set them from text, so a typo or an out-of-range number must fail here, before anything is written,
    not deep in a stage (or not at all)."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(hints[f.name]):
            _check_fields(value, f"{prefix}{f.name}.")
        else:
            _check_value(f"{prefix}{f.name}", hints[f.name], value, f.metadata.get("range"))


def check_declared_ranges(obj: Any, prefix: str = "--") -> None:
    """The fields of a command's dataclass (nested ones included) that declare a range hold a value in it; the
    error names the flag (``--threads``, ``--slurm.gpus``)."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        flag = prefix + f.name.replace("_", "-")
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            check_declared_ranges(value, flag + ".")
        elif "range" in f.metadata:
            _check_value(flag, hints[f.name], value, f.metadata["range"])


def ineffective(cfg: Config) -> dict[str, str]:
    """The fields the resolved configuration never reads, each with what governs it (setting one is an error)."""
    out: dict[str, str] = {}
    if cfg.details.learning_rate == "single":
        for stage in ("sft", "rm", "ppo", "dpo"):
            out[f"{stage}.lr"] = (
                "details.learning_rate=single trains every stage at the one rate `lr`; set lr, or "
                "add --details.learning-rate per_stage (a study: details = { learning_rate = "
                '"per_stage" })'
            )
    else:
        out["lr"] = (
            "details.learning_rate=per_stage trains each stage at its own rate; set sft.lr, rm.lr, ppo.lr or "
            "dpo.lr, or add --details.learning-rate single"
        )
    if cfg.reward.source != "rule":
        out["reward.rule"] = (
            f"reward.rule is read only with reward.source=rule (here reward.source={cfg.reward.source})"
        )
    return out


def _check_algorithm(cfg: Config) -> None:
    """The algorithm is known and no detail is set that only another algorithm reads."""
    if cfg.algorithm not in ALGORITHMS:
        raise ConfigError(f"algorithm={cfg.algorithm!r}: unknown algorithm; valid choices: {', '.join(ALGORITHMS)}")
    for name in misplaced(cfg.details, cfg.algorithm):
        raise ConfigError(
            f"details.{name}={getattr(cfg.details, name)!r} means nothing under algorithm={cfg.algorithm} "
            f"(it applies to: {', '.join(REGISTRY[name].algorithms)}); leave it at "
            f"{REGISTRY[name].paper!r} or pick one of those algorithms"
        )


def _check_reward(cfg: Config) -> None:
    """The reward source, rule and reward model fit the task and the algorithm."""
    from nplus.rewards import RULES, SOURCES  # here, not at the top: nplus.rewards imports torch, config stays light

    if cfg.reward.source not in SOURCES:
        raise ConfigError(
            f"reward.source={cfg.reward.source!r}: unknown reward source; valid choices: {', '.join(SOURCES)}"
        )
    if cfg.reward.rule not in RULES:
        raise ConfigError(f"reward.rule={cfg.reward.rule!r}: unknown rule; valid choices: {', '.join(RULES)}")
    if cfg.reward.source == "gold" and cfg.task.name != "tldr-synth":
        raise ConfigError(
            f"reward.source=gold needs the gold judge of task.name=tldr-synth (task.name={cfg.task.name}); "
            "valid choices here: rm, rule"
        )
    if cfg.reward.model and (cfg.reward.source != "rm" or cfg.algorithm == "dpo"):
        raise ConfigError(
            f"reward.model={cfg.reward.model!r} means nothing without a learned reward model to train "
            f"(reward.source={cfg.reward.source}, algorithm={cfg.algorithm}); leave it empty, or use "
            "reward.source=rm with ppo, rloo, reinforce or grpo"
        )
    if cfg.reward.model and cfg.details.value_network == "shared_trunk":
        raise ConfigError(
            f"reward.model={cfg.reward.model!r} with details.value_network=shared_trunk: the critic shares "
            "the policy's trunk, so it cannot start from another model's reward model; use "
            "value_network=separate or leave reward.model empty"
        )
    if cfg.reward.source != "rm" and cfg.algorithm == "dpo":
        raise ConfigError(
            f"reward.source={cfg.reward.source} means nothing under algorithm=dpo (offline, no reward); "
            "leave it at rm or pick ppo, rloo, reinforce or grpo"
        )


def _check_batch_divisions(cfg: Config) -> None:
    """Batches split exactly over processes, micro-batches, groups and minibatches."""
    if cfg.algorithm in ("rloo", "grpo"):
        local = cfg.ppo.batch_size // cfg.processes
        if cfg.ppo.group_size < 2 or local % cfg.ppo.group_size:
            raise ConfigError(
                f"ppo.group_size={cfg.ppo.group_size} must be at least 2 and divide the per-process batch "
                f"ppo.batch_size / processes = {local} (algorithm={cfg.algorithm} compares the responses of a prompt)"
            )
    # the dpo section is read (and checked) only when it is the algorithm, so it never blocks a PPO config
    for stage in ("sft", "rm", "ppo") + (("dpo",) if cfg.algorithm == "dpo" else ()):
        s = getattr(cfg, stage)
        if s.batch_size % (s.micro_batch * cfg.processes):
            raise ConfigError(
                f"{stage}.batch_size={s.batch_size} must be divisible by {stage}.micro_batch × processes "
                f"= {s.micro_batch} × {cfg.processes}"
            )
    if cfg.ppo.batch_size % cfg.ppo.num_minibatches:
        raise ConfigError(
            f"ppo.batch_size={cfg.ppo.batch_size} must be divisible by ppo.num_minibatches={cfg.ppo.num_minibatches}"
        )
    if cfg.ppo.total_episodes < cfg.ppo.batch_size:
        raise ConfigError(
            f"ppo.total_episodes={cfg.ppo.total_episodes} must be at least ppo.batch_size={cfg.ppo.batch_size}"
        )


def _check_lengths_and_task(cfg: Config) -> None:
    """Responses fit their length limit (Lengths checks its own nesting), and the task settings match the task
    (tldr-synth or public)."""
    if cfg.ppo.response_length > cfg.lengths.sft_response:
        raise ConfigError(
            f"ppo.response_length={cfg.ppo.response_length} exceeds lengths.sft_response={cfg.lengths.sft_response}"
        )
    if cfg.task.name == "tldr-synth" and cfg.task.sft_source != "tldr-synth":
        raise ConfigError("task.name=tldr-synth requires task.sft_source = tldr-synth")
    n_cmp = cfg.task.synth_comparisons
    if n_cmp is not None:
        from nplus.tasks.synth import comparisons_count

        if cfg.task.name != "tldr-synth":
            raise ConfigError(
                f"task.synth_comparisons={n_cmp}: only task.name=tldr-synth generates its comparisons; "
                "leave it unset (None) for the public datasets"
            )
        try:
            comparisons_count(cfg.task.synth_scale, n_cmp)
        except ValueError as e:
            raise ConfigError(f"task.synth_comparisons={n_cmp}: {e}") from None
    cmp = cfg.task.comparisons_source
    if cfg.task.name == "tldr-synth" and cmp not in SYNTH_COMPARISONS and not Path(cmp).exists():
        raise ConfigError(
            f"task.comparisons_source={cmp!r}: under task.name=tldr-synth it is one of "
            f"{', '.join(SYNTH_COMPARISONS)} (the corpus's pairs, their training split relabelled by "
            "that judge) or a local comparisons directory in the public schema (e.g. written by nplus label)"
        )


def validate(cfg: Config) -> None:
    """Check types, choices, ranges and exact divisions up front, naming the field."""
    _check_fields(cfg)
    _check_algorithm(cfg)
    _check_reward(cfg)
    _check_batch_divisions(cfg)
    _check_lengths_and_task(cfg)


def config_from_dict(d: dict[str, Any]) -> Config:
    """Rebuild a Config from ``to_dict()`` output (validated once, at the end)."""
    kinds = {
        "task": TaskConfig,
        "model": ModelConfig,
        "lengths": Lengths,
        "sft": OptimConfig,
        "rm": OptimConfig,
        "ppo": PPOConfig,
        "dpo": DPOConfig,
        "reward": RewardConfig,
        "details": Details,
    }
    return Config(**{k: (kinds[k](**v) if k in kinds else v) for k, v in d.items()})


def _field_hint(path: str) -> Any:
    """The type annotation of the dotted ``path`` (a field of Config or of one of its sections)."""
    cls: Any = Config
    for key in path.split("."):
        hint = typing.get_type_hints(cls)[key]
        cls = hint
    return hint


BOOLEANS = {"true": True, "false": False}


def _coerce(path: str, value: Any) -> Any:
    """A ``--set`` value (text) read as the field's declared type; other values (a study's TOML numbers) are
    checked as they are by ``validate``. A bool reads only true/false: `ture` is an error, not false."""
    if not isinstance(value, str):
        return value
    hint = _field_hint(path)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        if value.strip().lower() in ("none", "null"):
            return None
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    if hint is bool:
        if value.strip().lower() not in BOOLEANS:
            raise ConfigError(f"--set {path}={value!r}: not a boolean; valid choices: true, false")
        return BOOLEANS[value.strip().lower()]
    try:
        if hint is int:
            return int(value)
        if hint is float:
            return float(value)
    except ValueError as e:
        raise ConfigError(f"--set {path}: cannot read {value!r} as {hint.__name__}") from e
    return value


def apply_overrides(
    cfg: Config, hparams: dict[str, Any] | None = None, details: dict[str, str] | None = None
) -> Config:
    """A variant of ``cfg``: hyperparameter overrides by dotted path (``ppo.lr``) and detail overrides.

    All overrides are applied first and the result is validated once, so that values that only make sense
    together (``processes=2`` with ``sft.micro_batch=8``) can be given together.
    """
    d = cfg.to_dict()
    if details:  # into the dict, so that a detail and the algorithm it needs can be given together
        d["details"] = with_overrides(cfg.details, details).as_dict()
    for path, value in (hparams or {}).items():
        if path.startswith("details."):
            raise ConfigError(f"--set {path}: set details with --details.{path[8:]} (or a study's [details] table)")
        node, keys = d, path.split(".")
        for i, key in enumerate(keys):
            if not isinstance(node, dict) or key not in node:
                where = ".".join(keys[:i]) or "config"
                valid = ", ".join(node) if isinstance(node, dict) else "(none)"
                raise ConfigError(f"--set {path}: unknown field {key!r} in {where}; valid fields: {valid}")
            if i == len(keys) - 1:
                if isinstance(node[key], dict):
                    raise ConfigError(f"--set {path}: {path} is a config section, set one of its fields")
                node[key] = _coerce(path, value)
            else:
                node = node[key]
    new = config_from_dict(d)
    _refuse_ineffective(cfg, new, hparams or {})
    return new


def _refuse_ineffective(before: Config, after: Config, hparams: dict[str, Any]) -> None:
    """A field given a new value that the resolved configuration never reads is an error naming what governs it
    (setting it to the value it already has, as a study's shared [hparams] may, changes nothing and passes)."""
    unread = ineffective(after)
    old, new = before.to_dict(), after.to_dict()
    for path in hparams:
        if path in unread and _get(old, path) != _get(new, path):
            raise ConfigError(f"--set {path}={_get(new, path)!r} has no effect: {unread[path]}")


def _get(d: dict[str, Any], path: str) -> Any:
    for key in path.split("."):
        d = d[key]
    return d


__all__ = ["ALGORITHMS", "Config", "ConfigError", "DetailError", "Details", "apply_overrides", "config_hash"]
