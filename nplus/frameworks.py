"""Framework-emulation presets: other RLHF systems' defaults expressed as nplus details.

Each preset answers "what would this system have done for each detail?" with a value from the details registry
and a note saying where the value comes from (flag name and default, the file that hard-wires it, or the
issue that documents it; shared/reference/PEERS.md lists the systems and issues). Where a system has no
counterpart for a detail (lmhp has no SFT stage; trlx ships no reward-model trainer) the paper's value is kept
and the note says so, so every preset names every detail (the other algorithms' at their paper values) and a diff against `paper` shows only real
differences. Where a system's semantics only approximate an nplus alternative the note starts with "≈".

The presets describe the config-class defaults, not a tuned example script; where a shipped TL;DR example
overrides a default, the note says so. Versions: TRL = the PPOv2 / experimental PPOTrainer (2024–2025),
OpenRLHF = `openrlhf/cli/train_ppo_ray.py` (2025), DeepSpeed-Chat = `dschat/rlhf/ppo_trainer.py`,
trlx = `trlx/data/default_configs.py:default_ppo_config`, lmhp = openai/lm-human-preferences (TF, 2019).
"""

from __future__ import annotations

from nplus.details import REGISTRY


class FrameworkError(ValueError):
    """An unknown framework-emulation preset."""


# Explicit settings per system: detail -> (value, source). Details not listed keep the paper's value.
_TRL_PPO = {
    "query_truncation": ("hard", "no newline truncation: trl-lib/tldr prompts are filtered by token length, not cut at '\\n'"),
    "pad_token": ("distinct", "examples/scripts/ppo: tokenizer.add_special_tokens({'pad_token': '[PAD]'}); trl PR #5303 review"),
    "dropout": ("disabled", "PPOTrainer calls disable_dropout_in_model on policy, ref, value and reward models"),
    "learning_rate": ("per_stage", "SFT, reward and PPO trainers each take their own TrainingArguments.learning_rate"),
    "adam_eps": ("1e-8", "transformers TrainingArguments.adam_epsilon default 1e-8"),
    "sft_loss_tokens": ("response_only", "SFTConfig.completion_only_loss (default: on for prompt-completion data such as trl-lib/tldr)"),
    "reward_head_init": ("default", "AutoModelForSequenceClassification 'score' head, transformers' init (std = initializer_range)"),
    "reward_token": ("eos", "get_reward reads the last non-pad token (first_true_indices(pad) - 1)"),
    "reward_normalization": ("none", "no reward bias or gain is fitted after RewardTrainer"),
    "value_init": ("reward_model", "examples/scripts/ppo: value_model loaded from reward_model_path"),
    "value_network": ("separate", "separate value model wrapped with the policy (trl #1063 / PR #1540)"),
    "response_sampling": ("stop_at_eos", "since PR #2528 (trl #2387) generation stops at EOS; before it sampled fixed length like sfd"),
    "missing_eos_penalty": ("off", "PPOConfig.missing_eos_penalty = None; when set it subtracts (trl #2012); the TL;DR example passes 1.0"),
    "temperature_in_training": ("on", "training logits divided by (temperature + 1e-7), as in sfd"),
    "rollout_logprobs": ("from_generation", "rollout log-probs from the logits returned by batch_generation"),
    "kl_estimator": ("k1", "PPOConfig.kl_estimator = 'k1' (k3 added in PR #3240)"),
    "kl_placement": ("reward", "per-token -kl_coef * KL added to the rewards"),
    "kl_controller": ("fixed", "PPOConfig.kl_coef = 0.05, no adaptive controller in PPOv2"),
    "reward_clipping": ("off", "no score clipping"),
    "reward_whitening": ("off", "PPOConfig.whiten_rewards = False"),
    "advantage_whitening": ("on", "advantages always whitened (masked_whiten)"),
    "value_clipping": ("on", "PPOConfig.cliprange_value = 0.2"),
    "score_position": ("eos_plus_one", "score added at sequence_lengths + 1 when it fits (trl #3750, still EOS+1)"),
    "lr_schedule": ("linear", "TrainingArguments.lr_scheduler_type = 'linear'"),
    "eval_temperature": ("near_greedy", "generate_completions samples at temperature 0.01 + 1e-7"),
}

_OPENRLHF = {
    "query_truncation": ("hard", "prompts tokenized with truncation at --prompt_max_len"),
    "pad_token": ("eos", "utils.get_tokenizer sets pad_token = eos_token when the model has none"),
    "dropout": ("model_default", "Actor / critic load AutoModel configs unchanged (no dropout override)"),
    "learning_rate": ("per_stage", "--actor_learning_rate 1e-6, --critic_learning_rate 9e-6; SFT/RM scripts have their own"),
    "adam_eps": ("1e-8", "DeepSpeed (Fused)Adam default eps; only --adam_betas is exposed"),
    "sft_loss_tokens": ("response_only", "train_sft masks prompt tokens unless --pretrain_mode"),
    "reward_head_init": ("scaled_normal", "≈ value head weight ~ N(0, 1/(hidden_size + 1)) when the head is freshly initialized"),
    "reward_token": ("eos", "reward read at the EOS index; truncated samples get EOS written in (OpenRLHF #238, #300)"),
    "reward_normalization": ("none", "--normalize_reward (running mean/std) is off by default"),
    "value_init": ("reward_model", "--critic_pretrain defaults to --reward_pretrain"),
    "value_network": ("separate", "separate CriticModel"),
    "response_sampling": ("stop_at_eos", "vLLM / generate stop at EOS"),
    "missing_eos_penalty": ("off", "no missing-EOS penalty (EOS is forced into truncated samples instead)"),
    "temperature_in_training": ("off", "Actor.forward computes log_softmax of raw logits (sampling --temperature 1.0 by default)"),
    "rollout_logprobs": ("recomputed", "action log-probs recomputed by an actor forward pass after vLLM generation"),
    "kl_estimator": ("k1", "--kl_estimator default k1 (k2/k3: PR #476 / #797)"),
    "kl_placement": ("reward", "--use_kl_loss False: KL enters the per-token reward"),
    "kl_controller": ("fixed", "--kl_target None: FixedKLController with --init_kl_coef 0.01"),
    "reward_clipping": ("10", "--reward_clip_range (-10, 10)"),
    "reward_whitening": ("off", "no per-token reward whitening"),
    "advantage_whitening": ("on", "advantages normalized (--no_advantage_std_norm only drops the std)"),
    "value_clipping": ("on", "--value_clip 0.5"),
    "score_position": ("eos", "score scattered at eos_indices"),
    "lr_schedule": ("cosine", "--lr_scheduler cosine_with_min_lr, --lr_warmup_ratio 0.03"),
    "eval_temperature": ("training", "≈ no near-greedy evaluation; --eval_temperature 0.6 only for remote-RM eval sets"),
}

_DEEPSPEED_CHAT = {
    "query_truncation": ("hard", "prompts truncated to --max_prompt_seq_len tokens"),
    "pad_token": ("eos", "dschat/utils/utils.get_tokenizer: pad_token = eos_token for non-Llama models"),
    "dropout": ("model_default", "--disable_actor_dropout / --disable_critic_dropout are off by default"),
    "learning_rate": ("per_stage", "--actor_learning_rate and --critic_learning_rate, separate step-1/2 scripts"),
    "adam_eps": ("1e-8", "DeepSpeed FusedAdam default eps"),
    "sft_loss_tokens": ("all", "step 1 trains on labels = input_ids (whole sequence)"),
    "reward_head_init": ("default", "RewardModel v_head = nn.Linear(n_embd, 1, bias=False), default init"),
    "reward_token": ("eos", "≈ chosen_end_scores: value at the last non-pad token (DeepSpeedExamples #823/#316)"),
    "reward_normalization": ("none", "no reward normalization"),
    "value_init": ("reward_model", "critic initialized from the step-2 reward model"),
    "value_network": ("separate", "separate critic engine"),
    "response_sampling": ("stop_at_eos", "HF generate with eos, padded after; too-short answers dropped"),
    "missing_eos_penalty": ("off", "no missing-EOS penalty"),
    "temperature_in_training": ("off", "gather_log_probs on raw logits"),
    "rollout_logprobs": ("recomputed", "generate_experience re-runs the actor on the generated sequence"),
    "kl_estimator": ("k1", "kl_ctl * (log_probs - ref_log_probs)"),
    "kl_placement": ("reward", "compute_rewards: -kl_ctl * KL per token"),
    "kl_controller": ("fixed", "self.kl_ctl = 0.1 hard-wired"),
    "reward_clipping": ("5", "self.clip_reward_value = 5 hard-wired"),
    "reward_whitening": ("off", "no reward whitening"),
    "advantage_whitening": ("off", "get_advantages_and_returns returns raw GAE advantages (no whitening)"),
    "value_clipping": ("on", "self.cliprange_value = 0.2 hard-wired"),
    "score_position": ("eos", "score added to the last response token (rewards[j, start:ends[j]][-1])"),
    "lr_schedule": ("cosine", "--lr_scheduler_type cosine"),
    "eval_temperature": ("training", "no separate evaluation temperature"),
}

_TRLX = {
    "query_truncation": ("hard", "TokenizerConfig(truncation_side='right'): token-level truncation"),
    "pad_token": ("eos", "pad token set to EOS when the tokenizer has none (GPT-2 / Pythia)"),
    "dropout": ("model_default", "models loaded with their dropout"),
    "learning_rate": ("per_stage", "OptimizerConfig per trainer (PPO default lr 3e-5)"),
    "adam_eps": ("1e-8", "default_ppo_config optimizer kwargs eps=1e-8"),
    "sft_loss_tokens": ("all", "AccelerateSFTTrainer trains on the whole sequence"),
    "reward_head_init": ("default", "no RM trainer; the summarize_rlhf example uses nn.Linear(bias=False), default init"),
    "reward_normalization": ("reference_bias", "≈ summarize_rlhf example subtracts the reference summary's score per post"),
    "value_init": ("sft", "fresh value head on the policy (trlx #203 / #345: blog said RM, code uses a new head)"),
    "value_network": ("shared_trunk", "AutoModelForCausalLMWithHydraValueHead: value head on the policy trunk"),
    "response_sampling": ("stop_at_eos", "HF generate with gen_kwargs (max_new_tokens 40), stops at EOS"),
    "missing_eos_penalty": ("off", "no missing-EOS penalty"),
    "temperature_in_training": ("off", "log-probs of raw logits; gen_kwargs sample at temperature 1"),
    "rollout_logprobs": ("recomputed", "make_experience runs a forward pass after generation"),
    "kl_estimator": ("k1", "per-token log-ratio penalty"),
    "kl_placement": ("reward", "-kl_coef * log-ratio added to per-token rewards"),
    "kl_controller": ("fixed", "default_ppo_config target=None: FixedKLController(init_kl_coef 0.001)"),
    "reward_clipping": ("10", "default_ppo_config cliprange_reward=10"),
    "reward_whitening": ("off", "scale_reward='ignored'"),
    "advantage_whitening": ("on", "get_advantages_and_returns(use_whitening=True)"),
    "value_clipping": ("on", "cliprange_value=0.2"),
    "score_position": ("eos", "score added at the last generated token"),
    "lr_schedule": ("cosine", "SchedulerConfig(name='cosine_annealing')"),
    "eval_temperature": ("training", "evaluation reuses gen_kwargs"),
}

_LMHP = {
    "query_truncation": ("newline", "tldr dataset: truncate the post at its last '\\n' (sfd copied this)"),
    "pad_token": ("distinct", "a dedicated padding token id"),
    "reference_leading_space": ("on", "no SFT stage in lmhp; paper value kept"),
    "reference_eos": ("on", "no SFT stage in lmhp; paper value kept"),
    "dropout": ("disabled", "the TF GPT-2 is run without dropout"),
    "learning_rate": ("per_stage", "separate reward-model and policy learning rates"),
    "adam_eps": ("1e-5", "TF Adam epsilon 1e-5 (the origin of the paper's value)"),
    "sft_loss_tokens": ("all", "no SFT stage in lmhp; paper value kept"),
    "reward_head_init": ("scaled_normal", "reward head std 1/sqrt(d_model + 1), bias 0"),
    "reward_token": ("last_position", "reward read at the last position of the fixed-length response window"),
    "reward_normalization": ("policy_gain_bias", "gain and bias fitted so policy samples score N(0, 1)"),
    "value_init": ("random_head", "zero-initialized value head on the policy trunk"),
    "value_network": ("shared_trunk", "value head on the policy trunk (Stiennon et al. later separated them)"),
    "response_sampling": ("fixed_length_then_truncate", "fixed-length sampling, truncate_token / truncate_after"),
    "missing_eos_penalty": ("replace", "penalty_reward_value = -1 replaces the score of untruncated samples"),
    "temperature_in_training": ("on", "policy logits divided by the sampling temperature in training"),
    "rollout_logprobs": ("from_generation", "log-probs recorded while sampling"),
    "kl_estimator": ("k1", "per-token log-ratio"),
    "kl_placement": ("reward", "KL penalty in the per-token reward"),
    "kl_controller": ("adaptive", "AdaptiveKLController (target 6, horizon 10000)"),
    "reward_clipping": ("off", "no clipping"),
    "reward_whitening": ("on", "rewards whitened by default (N+ §2.26)"),
    "advantage_whitening": ("on", "advantages whitened"),
    "value_clipping": ("on", "cliprange_value 0.2"),
    "score_position": ("eos", "≈ score added at the last position of the window, not EOS+1"),
    "lr_schedule": ("linear", "learning rate annealed linearly to 0"),
    "eval_temperature": ("training", "samples drawn at the training temperature"),
}

_EXPLICIT: dict[str, dict[str, tuple[str, str]]] = {
    "paper": {},
    "trl-ppo": _TRL_PPO,
    "openrlhf": _OPENRLHF,
    "deepspeed-chat": _DEEPSPEED_CHAT,
    "trlx": _TRLX,
    "lmhp": _LMHP,
}


def _complete(name: str, explicit: dict[str, tuple[str, str]]) -> dict[str, tuple[str, str]]:
    """Every detail in registry order: the explicit settings, the paper's value (with its source) elsewhere."""
    out = {}
    for detail in REGISTRY.values():
        if detail.name in explicit:
            out[detail.name] = explicit[detail.name]
        elif name == "paper":
            out[detail.name] = (detail.paper, detail.source)
        else:
            out[detail.name] = (detail.paper, f"no counterpart in {name}; paper value kept")
    return out


FRAMEWORKS: dict[str, dict[str, tuple[str, str]]] = {name: _complete(name, ex) for name, ex in _EXPLICIT.items()}
# `sfd` (the paper's code) is the paper preset under its repository's name.
FRAMEWORKS["sfd"] = FRAMEWORKS["paper"]


def framework_details(name: str) -> dict[str, str]:
    """``{detail: value}`` of a framework-emulation preset (every detail)."""
    if name not in FRAMEWORKS:
        raise FrameworkError(f"unknown framework {name!r}; valid frameworks: {', '.join(FRAMEWORKS)}")
    return {detail: value for detail, (value, _) in FRAMEWORKS[name].items()}


def framework_diff(name: str) -> dict[str, str]:
    """The details where a framework departs from the paper."""
    return {k: v for k, v in framework_details(name).items() if v != REGISTRY[k].paper}


def table_markdown() -> str:
    """docs/ablations.md's framework table: one row per PPO detail (the systems emulated are PPO trainers), one
    column per framework (paper values as ·)."""
    names = [n for n in FRAMEWORKS if n != "sfd"]
    rows = ["| detail | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for d in (d for d in REGISTRY.values() if d.applies_to("ppo")):
        cells = [f"`{FRAMEWORKS[n][d.name][0]}`" if FRAMEWORKS[n][d.name][0] != d.paper or n == "paper" else "·" for n in names]
        rows.append(f"| `{d.name}` | " + " | ".join(cells) + " |")
    return "\n".join(rows)
