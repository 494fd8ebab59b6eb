"""The details registry: every implementation detail of RLHF with PPO that nplus can flip.

Each detail is declared exactly once here, with its documentation, the value the paper used, the named
alternatives, the stage it affects and where the paper's value comes from. Everything else — the CLI's
``--details.<name>`` flags, ``nplus details``, the README table, one-at-a-time ablation variants and report
labels — is generated from this table. The branch that implements a detail lives in one small function that
receives the value as an argument (grep the detail's name to find it).

Sources: "sfd" = vwxyzjn/summarize_from_feedback_details at ee77a9a; "lmhp" = openai/lm-human-preferences;
"N+ §k" = item k of section 2 of the paper's details (shared/reference/DETAILS.md).

The policy-optimization stage runs one of ``ALGORITHMS`` (``Config.algorithm``). Details of the stages
``dpo``, ``rloo``, ``reinforce`` and ``grpo`` belong to that algorithm, and their "paper" value is the one of
the algorithm's own paper (Rafailov et al. 2023; Ahmadian et al. 2024; Shao et al. 2024). Each detail lists the
algorithms it means something under (``Detail.algorithms``); a configuration that moves a detail off its paper
value under an algorithm it does not apply to is rejected (nplus/config.py ``validate``).
"""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass
from typing import Literal, get_args

STAGES = ("data", "all", "sft", "rm", "ppo", "dpo", "rloo", "reinforce", "grpo", "eval")
# The algorithms of the policy-optimization stage (Config.algorithm); ppo is the reference.
ALGORITHMS = ("ppo", "dpo", "rloo", "reinforce", "grpo")
ONLINE = ("ppo", "rloo", "reinforce", "grpo")  # algorithms that sample rollouts and score them with the RM


@dataclass(frozen=True)
class Detail:
    """One implementation detail: a name, its paper value and the named alternatives."""

    name: str
    stage: str
    paper: str
    alternatives: tuple[str, ...]
    doc: str
    source: str
    algorithms: tuple[str, ...] = ALGORITHMS
    """The algorithms under which the detail means something."""

    @property
    def choices(self) -> tuple[str, ...]:
        return (self.paper, *self.alternatives)

    def applies_to(self, algorithm: str) -> bool:
        return algorithm in self.algorithms

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "stage": self.stage,
            "paper": self.paper,
            "alternatives": list(self.alternatives),
            "doc": self.doc,
            "source": self.source,
            "algorithms": list(self.algorithms),
        }


# The typed declaration. Field order = registry order; the Literal lists the choices (paper value first),
# the docstring under each field is its doc (tyro turns it into --help), and _META adds stage and source.
@dataclass(frozen=True)
class Details:
    """Implementation details of RLHF with PPO. Defaults are the paper's values."""

    # ---- data ----
    query_truncation: Literal["newline", "hard", "drop"] = "newline"
    """Shorten over-long queries by cutting the post at its last newline (paper); by a hard token cut that
    can slice mid-sentence and drop the TL;DR: cue (query + response totals then grow to query + response limit);
    or drop the rows whose query does not fit, in every split (TRL's ppo_tldr.py, DeepSpeed-Chat step 3)."""
    query_padding_side: Literal["left", "right"] = "left"
    """Pad generation queries on the left (paper) or the right (generation then continues after pads)."""
    pad_token: Literal["distinct", "eos"] = "distinct"
    """Use a distinct [PAD] token (paper) or reuse EOS as pad, so masks also drop real EOS tokens."""
    reference_leading_space: Literal["on", "off"] = "on"
    """Prefix SFT reference summaries with a space (paper), matching the token boundary after 'TL;DR:'."""
    reference_eos: Literal["on", "off"] = "on"
    """Append EOS to SFT reference summaries (paper) so the SFT model learns to stop."""
    preference_eos: Literal["on", "off"] = "on"
    """Append EOS to preference summaries (paper) so the reward is read at the EOS token."""
    # ---- all stages ----
    dropout: Literal["disabled", "model_default"] = "disabled"
    """Set every dropout probability to 0 (paper) or keep the base config's dropout."""
    learning_rate: Literal["single", "per_stage"] = "single"
    """One learning rate for SFT, RM and PPO (paper, 3e-6 at Pythia scale) or the preset's per-stage rates."""
    adam_eps: Literal["1e-5", "1e-8"] = "1e-5"
    """AdamW epsilon: 1e-5 (paper, following TF/OpenAI) or PyTorch's default 1e-8."""
    # ---- sft ----
    sft_loss_tokens: Literal["all", "response_only"] = "all"
    """SFT loss over the whole query + response sequence (sfd's code) or over response tokens only."""
    # ---- rm ----
    reward_head_init: Literal["scaled_normal", "default"] = "scaled_normal"
    """Reward head weight ~ N(0, 1/sqrt(d_model + 1)), bias 0 (paper), or nn.Linear's default init."""
    reward_token: Literal["eos", "last_position", "mean"] = "eos"
    """Read the reward at the last non-pad token, the EOS (paper); at the last position of the padded
    window; or as the mean over non-pad tokens."""
    reward_normalization: Literal["reference_bias", "none", "policy_gain_bias"] = "reference_bias"
    """Subtract the mean RM score of SFT reference summaries (paper); no normalization; or fit a gain and
    bias so SFT policy samples score N(0, 1) (lmhp)."""
    # ---- ppo ----
    value_init: Literal["reward_model", "sft", "random_head"] = "reward_model"
    """Initialize the critic from the reward model (paper), from the SFT model with a fresh head, or from the
    SFT trunk with a zero-initialized head."""
    value_network: Literal["separate", "shared_trunk"] = "separate"
    """A separate critic network (paper) or a value head on the policy's trunk."""
    response_sampling: Literal["fixed_length_then_truncate", "stop_at_eos"] = "fixed_length_then_truncate"
    """Always sample the full response length then pad everything after the first EOS (paper), or stop each
    sample at its first EOS."""
    missing_eos_penalty: Literal["replace", "subtract", "off"] = "replace"
    """A response without EOS gets score -1 (replace, paper), score - 1 (subtract, TRL's semantics), or no
    penalty."""
    temperature_in_training: Literal["on", "off"] = "on"
    """Divide training-time policy and reference logits by the sampling temperature (paper), so the ratio and
    KL use the distribution that was sampled."""
    rollout_logprobs: Literal["from_generation", "recomputed"] = "from_generation"
    """Old log-probs from the generation pass's scores (paper) or recomputed by a separate forward pass."""
    kl_estimator: Literal["k1", "k2", "k3"] = "k1"
    """Per-token estimator of KL(pi, pi_ref) on samples of pi: k1 = log(pi/pi_ref), k2 = (log(pi/pi_ref))^2 / 2,
    k3 = (r - 1) - log r with r = pi_ref/pi (Schulman's k3, as TRL, OpenRLHF and verl compute it)."""
    kl_placement: Literal["reward", "loss"] = "reward"
    """KL penalty as a per-token reward (paper) or as a term added to the policy loss (GRPO style)."""
    kl_controller: Literal["fixed", "adaptive"] = "fixed"
    """Fixed beta (paper's release) or lmhp's adaptive controller (target KL, horizon)."""
    reward_clipping: Literal["off", "5", "10"] = "off"
    """Clip the RM score to [-c, c] (DeepSpeed-Chat uses 5) or not (paper)."""
    reward_whitening: Literal["off", "on"] = "off"
    """Whiten per-token rewards before GAE (lmhp; sfd divides by std, keeps the mean). Off in the paper's runs."""
    advantage_whitening: Literal["on", "off"] = "on"
    """Whiten advantages over the rollout batch after GAE (paper)."""
    value_clipping: Literal["on", "off"] = "on"
    """Clip value predictions to within cliprange_value of the old values (paper)."""
    score_position: Literal["eos_plus_one", "eos"] = "eos_plus_one"
    """Add the score one position after the last real token when it fits (sfd/TRL quirk), or at the EOS."""
    lr_schedule: Literal["linear", "cosine", "constant"] = "linear"
    """PPO learning-rate schedule per update: linear decay to 0 (paper), cosine, or constant."""
    # ---- eval ----
    eval_temperature: Literal["near_greedy", "training"] = "near_greedy"
    """Evaluate with temperature 0.01 (paper) or the training temperature."""
    # ---- dpo (paper = Rafailov et al. 2023) ----
    dpo_loss: Literal["sigmoid", "ipo"] = "sigmoid"
    """DPO loss on the margin h = (log pi/pi_ref)(chosen) - (log pi/pi_ref)(rejected) of summed response
    log-probs: -log sigmoid(beta h) (DPO) or (h - 1/(2 beta))^2 (IPO, Azar et al. 2023)."""
    dpo_reference: Literal["frozen", "synced"] = "frozen"
    """The reference policy stays the SFT model (DPO) or is pulled towards the policy every dpo.ref_sync_steps
    updates, ref <- alpha pi + (1 - alpha) ref (TR-DPO, Gorbatovski et al. 2024; TRL sync_ref_model)."""
    # ---- rloo / reinforce (paper = Ahmadian et al. 2024) ----
    pg_update: Literal["vanilla", "clipped"] = "vanilla"
    """RLOO and REINFORCE update: one REINFORCE step per batch on -A * sum_t log pi(a_t) (Ahmadian et al.), or
    PPO's clipped ratio objective over ppo.ppo_epochs epochs, averaged over tokens (TRL's RLOOTrainer)."""
    reinforce_baseline: Literal["moving_average", "batch_mean", "none"] = "moving_average"
    """REINFORCE baseline subtracted from each sequence reward: the running mean of every earlier batch's rewards
    (Ahmadian et al.'s 'REINFORCE with baseline'), the current batch's mean, or no baseline."""
    # ---- grpo (paper = Shao et al. 2024) ----
    grpo_std_normalization: Literal["on", "off"] = "on"
    """Group-normalized advantages (r - mean_group) / std_group (GRPO), or mean-centred only (Dr. GRPO, Liu et
    al. 2025)."""
    grpo_kl_estimator: Literal["k3", "k1", "k2"] = "k3"
    """GRPO's per-token KL estimator (as details.kl_estimator); GRPO uses k3 = (pi_ref/pi - 1) - log(pi_ref/pi)."""
    grpo_kl_placement: Literal["loss", "reward"] = "loss"
    """GRPO's KL as a term of the loss, beta * KL_t per token (GRPO), or subtracted from the sequence reward
    before group normalization (as PPO and RLOO do)."""
    grpo_loss_averaging: Literal["per_sequence", "per_token", "max_length"] = "per_sequence"
    """Token losses averaged within each response, then over responses (GRPO); summed over all tokens and divided
    by their count (DAPO, Yu et al. 2025); or divided by responses x response length (Dr. GRPO)."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            check_value(f.name, getattr(self, f.name))

    def diff(self, other: Details | None = None) -> dict[str, str]:
        """Details whose value differs from ``other`` (default: the paper's)."""
        other = other or Details()
        return {k: v for k, v in self.as_dict().items() if getattr(other, k) != v}

    def as_dict(self) -> dict[str, str]:
        return dataclasses.asdict(self)

    def replace(self, **overrides: str) -> Details:
        return with_overrides(self, overrides)


class DetailError(ValueError):
    """An unknown detail name or value."""


# stage, source for each field of Details (the doc is the field's docstring, parsed below).
_META: dict[str, tuple[str, str]] = {
    "query_truncation": (
        "data",
        "N+ §2.2; sfd tasks truncate_field=post, truncate_text='\\n'; drop: trl@f2cd577 "
        "examples/scripts/ppo/ppo_tldr.py filter",
    ),
    "query_padding_side": ("data", "N+ §2.3; sfd pads queries left to 512"),
    "pad_token": ("data", "N+ §2.4; sfd adds [PAD]; trl PR #5303 review"),
    "reference_leading_space": ("data", "N+ §2.5; sfd prepends ' ' to summary"),
    "reference_eos": ("data", "N+ §2.5; sfd appends <|endoftext|>"),
    "preference_eos": ("data", "N+ §2.6"),
    "dropout": ("all", "N+ §2.9; trl PR #1540 review (ratio != 1 with dropout)"),
    "learning_rate": ("all", "N+ §2.10 (one LR 3e-6); Stiennon et al. swept per stage"),
    "adam_eps": ("all", "N+ §2.10"),
    "sft_loss_tokens": ("sft", "N+ §2.8 (sfd masks only pads)"),
    "reward_head_init": ("rm", "N+ §2.13; lmhp and Stiennon et al."),
    "reward_token": ("rm", "N+ §2.14; DeepSpeed-Chat #823/#316"),
    "reward_normalization": ("rm", "N+ §2.16; lmhp fits gain and bias"),
    "value_init": ("ppo", "N+ §2.19; trlx #203/#345"),
    "value_network": ("ppo", "N+ §2.18; trl #1063 / PR #1540"),
    "response_sampling": ("ppo", "N+ §2.21; trl #2387 / PR #2528"),
    "missing_eos_penalty": ("ppo", "N+ §2.22; trl #2012 (replace vs subtract)"),
    "temperature_in_training": ("ppo", "N+ §2.23"),
    "rollout_logprobs": ("ppo", "sfd uses generation scores; trl #454 (ratio != 1)"),
    "kl_estimator": ("ppo", "N+ §2.24; trl PR #3240 (k3); OpenRLHF PR #476/#797"),
    "kl_placement": ("ppo", "N+ §2.24; OpenRLHF/verl use_kl_loss"),
    "kl_controller": (
        "ppo",
        "N+ §2.24; lmhp AdaptiveKLController (target 6, horizon 10000), used in its books "
        "experiments (its TL;DR run used a fixed 0.03)",
    ),
    "reward_clipping": ("ppo", "DeepSpeed-Chat clip_reward_value=5"),
    "reward_whitening": ("ppo", "N+ §2.26; sfd PR #17"),
    "advantage_whitening": ("ppo", "N+ §2.27"),
    "value_clipping": ("ppo", "N+ §2.29"),
    "score_position": ("ppo", "N+ §2.25; trl #3750"),
    "lr_schedule": ("ppo", "N+ §2.30"),
    "eval_temperature": ("eval", "N+ §2.32"),
    "dpo_loss": ("dpo", "Rafailov et al. 2023 eq. 7; Azar et al. 2023 (IPO); TRL DPOConfig loss_type (sigmoid, ipo)"),
    "dpo_reference": (
        "dpo",
        "Rafailov et al. 2023 (frozen SFT reference); TRL DPOConfig sync_ref_model, "
        "ref_model_mixup_alpha 0.6, ref_model_sync_steps 512 (Gorbatovski et al. 2024)",
    ),
    "pg_update": (
        "rloo",
        "Ahmadian et al. 2024 §3 (vanilla REINFORCE, 1 step per batch); TRL RLOOConfig "
        "num_ppo_epochs 4, cliprange 0.2 (clipped)",
    ),
    "reinforce_baseline": ("reinforce", "Ahmadian et al. 2024 §3.1 (moving-average baseline); Williams 1992"),
    "grpo_std_normalization": (
        "grpo",
        "Shao et al. 2024 §4.1.2; Liu et al. 2025 (Dr. GRPO) drop the std; TRL GRPOConfig scale_rewards",
    ),
    "grpo_kl_estimator": ("grpo", "Shao et al. 2024 eq. 4 (k3, Schulman 2020); verl kl_loss_type low_var_kl"),
    "grpo_kl_placement": ("grpo", "Shao et al. 2024 eq. 3 (KL in the loss, beta 0.04); verl use_kl_loss"),
    "grpo_loss_averaging": (
        "grpo",
        "Shao et al. 2024 eq. 3 (1/G sum 1/|o_i| sum_t); Yu et al. 2025 (DAPO, token "
        "level); Liu et al. 2025 (Dr. GRPO, constant); TRL GRPOConfig loss_type",
    ),
}

# The algorithms each detail applies to, where it is not every algorithm (data, all, sft, rm and eval details
# are) or only the algorithm its stage names (dpo, rloo, reinforce, grpo details are).
_PPO_ONLY = ("ppo",)
_APPLIES: dict[str, tuple[str, ...]] = {
    **{
        name: _PPO_ONLY
        for name in (
            "value_init",
            "value_network",
            "reward_whitening",
            "advantage_whitening",
            "value_clipping",
            "score_position",
        )
    },
    **{
        name: ONLINE
        for name in (
            "response_sampling",
            "missing_eos_penalty",
            "temperature_in_training",
            "rollout_logprobs",
            "kl_controller",
            "reward_clipping",
        )
    },
    # the shared KL details; GRPO has its own (grpo_kl_estimator, grpo_kl_placement), with its paper's values
    **{name: ("ppo", "rloo", "reinforce") for name in ("kl_estimator", "kl_placement")},
    "pg_update": ("rloo", "reinforce"),
}


def _field_docs() -> dict[str, str]:
    """Read each field's docstring from this module's source, so the doc is written once (as tyro reads it)."""
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(Details))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for node, nxt in zip(body, body[1:]):
        if isinstance(node, ast.AnnAssign) and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant):
            docs[node.target.id] = " ".join(str(nxt.value.value).split())  # type: ignore[attr-defined]
    return docs


def _build_registry() -> dict[str, Detail]:
    docs = _field_docs()
    hints = typing.get_type_hints(Details)
    registry = {}
    for f in dataclasses.fields(Details):
        choices = get_args(hints[f.name])
        stage, source = _META[f.name]
        assert f.default == choices[0], f"{f.name}: the paper value must be listed first"
        algorithms = _APPLIES.get(f.name, (stage,) if stage in ALGORITHMS and stage != "ppo" else ALGORITHMS)
        registry[f.name] = Detail(f.name, stage, choices[0], tuple(choices[1:]), docs[f.name], source, algorithms)
    return registry


REGISTRY: dict[str, Detail] = _build_registry()
assert len(REGISTRY) == 37, len(REGISTRY)
assert set(_META) == set(REGISTRY) and set(_APPLIES) <= set(REGISTRY)


def stage_details(stage: str) -> tuple[str, ...]:
    """The names of the details of ``stage``, in registry order (``"data"``: what a built dataset depends on)."""
    return tuple(name for name, d in REGISTRY.items() if d.stage == stage)


def check_value(name: str, value: str) -> str:
    """``value`` if it is one of the detail's choices, else a DetailError listing them: the one check of a detail's
    value, for ``Details`` and for the functions that implement a detail when called with a raw value."""
    choices = REGISTRY[name].choices
    if value not in choices:
        raise DetailError(f"details.{name}: invalid value {value!r}; valid choices: {', '.join(choices)}")
    return value


def with_overrides(base: Details, overrides: dict[str, str]) -> Details:
    """Apply ``{name: value}`` overrides, rejecting unknown names and values with the valid choices listed."""
    for name, value in overrides.items():
        if name not in REGISTRY:
            raise DetailError(f"unknown detail {name!r}; valid details: {', '.join(REGISTRY)}")
        if str(value) not in REGISTRY[name].choices:  # a study's TOML may give a number: "5" is reward_clipping's
            check_value(name, value)
    return dataclasses.replace(base, **{k: str(v) for k, v in overrides.items()})


def misplaced(details: Details, algorithm: str) -> list[str]:
    """Details moved off their paper value that mean nothing under ``algorithm`` (``value_init`` under grpo)."""
    return [name for name, d in REGISTRY.items() if not d.applies_to(algorithm) and getattr(details, name) != d.paper]


def table_markdown() -> str:
    """The README's details table, generated from the registry."""
    rows = ["| stage | detail | paper value | alternatives | what it does |", "|---|---|---|---|---|"]
    for d in REGISTRY.values():
        alts = ", ".join(f"`{a}`" for a in d.alternatives)
        rows.append(f"| {d.stage} | `{d.name}` | `{d.paper}` | {alts} | {d.doc} |")
    return "\n".join(rows)


def registry_json() -> str:
    return json.dumps([d.as_dict() for d in REGISTRY.values()], indent=2)
