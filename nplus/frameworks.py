"""Framework-emulation presets: other RLHF systems' defaults expressed as nplus details.

Each preset answers "what would this system have done for each detail?" with a value from the details registry
and a note that cites the system's repository at a fixed commit and the file that sets the value (flag name and
default, or the code that hard-wires it); shared/reference/PEERS.md §1 is the matrix these notes were checked
against. Where a system has no counterpart for a detail (lmhp has no SFT stage; trlx ships no reward-model
trainer) the paper's value is kept and the note says so, so every preset names every detail (the other
algorithms' at their paper values) and a diff against `paper` shows only real differences. Where a system's
behaviour only approximates an nplus alternative the note starts with "≈" and says what differs.

The presets describe the config-class defaults, not a tuned example script; where a shipped TL;DR example
overrides a default, the note says so. Versions: TRL = huggingface/trl@f2cd577 (`trl/experimental/ppo`),
OpenRLHF = OpenRLHF/OpenRLHF@f372a2d (`openrlhf/cli/train_ppo_ray.py`), DeepSpeed-Chat =
microsoft/DeepSpeedExamples@83757d9 (`applications/DeepSpeed-Chat`), trlx = CarperAI/trlx@3340c2f
(`trlx/data/default_configs.py:default_ppo_config`), lmhp = openai/lm-human-preferences@cbfd210 (TF, 2019).
docs/frameworks.md is generated from this module (:func:`docs_markdown`).
"""

from __future__ import annotations

from nplus.details import REGISTRY


class FrameworkError(ValueError):
    """An unknown framework-emulation preset."""


# Each note cites "<repo>@<commit> <file>" (the path in that repository; tests/test_frameworks.py checks it),
# after a leading "≈ " where the value only approximates the system.
_T = "trl@f2cd577"
_O = "OpenRLHF@f372a2d"
_D = "DeepSpeedExamples@83757d9 applications/DeepSpeed-Chat/"
_X = "trlx@3340c2f"
_L = "lmhp@cbfd210"

# Explicit settings per system: detail -> (value, source). Details not listed keep the paper's value.
_TRL_PPO = {
    "query_truncation": (
        "drop",
        f"≈ {_T} examples/scripts/ppo/ppo_tldr.py: prompts over 512 tokens are filtered out, nothing is cut (examples/datasets/tldr.py keeps the whole post); TRL drops only PPO prompts, nplus drops the rows of every split",
    ),
    "query_padding_side": (
        "left",
        f"{_T} examples/scripts/ppo/ppo_tldr.py: tokenizer padding_side='left' (set by the example script)",
    ),
    "pad_token": (
        "distinct",
        f"{_T} examples/scripts/ppo/ppo_tldr.py: add_special_tokens({{'pad_token': '[PAD]'}}); trl PR #5303 review",
    ),
    "reference_leading_space": (
        "on",
        f"{_T} examples/datasets/tldr.py: the completion is ' ' + summary (dataset-building script)",
    ),
    "reference_eos": ("on", f"{_T} trl/trainer/sft_trainer.py: EOS appended to each example (add_eos)"),
    "preference_eos": ("on", f"{_T} trl/trainer/reward_trainer.py: EOS appended to chosen and rejected (add_eos)"),
    "dropout": (
        "disabled",
        f"{_T} trl/experimental/ppo/ppo_trainer.py: disable_dropout_in_model on policy, ref, value and reward models",
    ),
    "learning_rate": (
        "per_stage",
        f"{_T} trl/experimental/ppo/ppo_config.py: learning_rate 3e-6; SFTConfig 2e-5, RewardConfig 1e-4 (trl/trainer/{{sft,reward}}_config.py)",
    ),
    "adam_eps": (
        "1e-8",
        f"{_T} trl/experimental/ppo/ppo_config.py inherits transformers TrainingArguments.adam_epsilon = 1e-8",
    ),
    "sft_loss_tokens": (
        "response_only",
        f"{_T} trl/trainer/sft_config.py: completion_only_loss=None means completion-only for prompt-completion data such as trl-lib/tldr",
    ),
    "reward_head_init": (
        "default",
        f"{_T} trl/trainer/reward_trainer.py: AutoModelForSequenceClassification 'score' head, not re-initialized by TRL (transformers' own init)",
    ),
    "reward_token": (
        "eos",
        f"{_T} trl/experimental/utils.py get_reward: the last non-pad token; in PPO that is EOS only when a stop token is set, with the defaults it is the window's last token",
    ),
    "reward_normalization": (
        "none",
        f"{_T} trl/trainer/reward_trainer.py: no reward bias or gain is fitted after training",
    ),
    "value_init": ("reward_model", f"{_T} examples/scripts/ppo/ppo_tldr.py: value_model loaded from reward_model_path"),
    "value_network": (
        "separate",
        f"{_T} trl/experimental/ppo/ppo_trainer.py: PolicyAndValueWrapper around two models (trl #1063 / PR #1540)",
    ),
    "response_sampling": (
        "fixed_length_then_truncate",
        f"≈ {_T} trl/experimental/ppo/ppo_config.py: stop_token=None, so ppo_trainer.py clears generation_config.eos_token_id and every sample runs the full response_length, but nothing after an EOS is truncated; ppo_tldr.py's --stop_token eos gives stop_at_eos (PR #2528, trl #2387)",
    ),
    "missing_eos_penalty": (
        "off",
        f"{_T} trl/experimental/ppo/ppo_config.py: missing_eos_penalty=None; when set it is subtracted (trl #2012 / PR #2033); ppo_tldr.py passes 1.0",
    ),
    "temperature_in_training": (
        "on",
        f"{_T} trl/experimental/ppo/ppo_trainer.py: training logits divided by (temperature + 1e-7)",
    ),
    "rollout_logprobs": (
        "from_generation",
        f"{_T} trl/experimental/ppo/ppo_trainer.py: rollout log-probs from the logits batch_generation returns",
    ),
    "kl_estimator": ("k1", f"{_T} trl/experimental/ppo/ppo_config.py: kl_estimator='k1' (k3 since PR #3240)"),
    "kl_placement": ("reward", f"{_T} trl/experimental/ppo/ppo_trainer.py: non_score_reward = -kl_coef * KL per token"),
    "kl_controller": ("fixed", f"{_T} trl/experimental/ppo/ppo_config.py: kl_coef=0.05, no adaptive controller"),
    "reward_clipping": ("off", f"{_T} trl/experimental/ppo/ppo_trainer.py: the score is not clipped"),
    "reward_whitening": ("off", f"{_T} trl/experimental/ppo/ppo_config.py: whiten_rewards=False"),
    "advantage_whitening": (
        "on",
        f"{_T} trl/experimental/ppo/ppo_trainer.py: advantages always pass through masked_whiten",
    ),
    "value_clipping": ("on", f"{_T} trl/experimental/ppo/ppo_config.py: cliprange_value=0.2"),
    "score_position": (
        "eos_plus_one",
        f"{_T} trl/experimental/ppo/ppo_trainer.py: score added at actual_end = sequence_lengths + 1 when it fits (trl #3750)",
    ),
    "lr_schedule": (
        "linear",
        f"{_T} trl/experimental/ppo/ppo_config.py inherits TrainingArguments.lr_scheduler_type='linear'",
    ),
    "eval_temperature": (
        "near_greedy",
        f"{_T} trl/experimental/ppo/ppo_trainer.py generate_completions: temperature 0.01 + 1e-7",
    ),
}

_OPENRLHF = {
    "query_truncation": (
        "hard",
        f"{_O} openrlhf/trainer/ppo_utils/experience_maker.py tokenize_fn: truncation at --prompt_max_len (1024, openrlhf/cli/train_ppo_ray.py)",
    ),
    "query_padding_side": (
        "left",
        f"≈ {_O} openrlhf/utils/utils.py get_tokenizer(..., padding_side='left'), but vLLM receives unpadded prompts and samples are stored without pads between prompt and response",
    ),
    "pad_token": ("eos", f"{_O} openrlhf/utils/utils.py get_tokenizer: pad_token = eos_token when the model has none"),
    "reference_eos": (
        "on",
        f"≈ {_O} openrlhf/datasets/sft_dataset.py: ' ' + EOS appended (a space before the EOS), last token forced to EOS after truncation",
    ),
    "preference_eos": (
        "on",
        f"≈ {_O} openrlhf/datasets/reward_dataset.py: ' ' + EOS appended (a space before the EOS), last token forced to EOS after truncation (OpenRLHF #300)",
    ),
    "dropout": (
        "model_default",
        f"{_O} openrlhf/models/actor.py, openrlhf/models/model.py: configs loaded unchanged, no dropout override",
    ),
    "learning_rate": (
        "per_stage",
        f"{_O} openrlhf/cli/train_ppo_ray.py: --actor_learning_rate 1e-6, --critic_learning_rate 9e-6; train_sft.py 5e-6, train_rm.py 9e-6",
    ),
    "adam_eps": (
        "1e-8",
        f"{_O} openrlhf/cli/train_ppo_ray.py: only --adam_betas is a flag, FusedAdam's eps 1e-8 applies (HEAD 3c3be62 adds --actor.adam.eps, default 1e-8)",
    ),
    "sft_loss_tokens": (
        "response_only",
        f"{_O} openrlhf/datasets/sft_dataset.py: prompt tokens masked unless --pretrain_mode",
    ),
    "reward_head_init": (
        "scaled_normal",
        f"≈ {_O} openrlhf/models/model.py get_llm_for_sequence_regression: fresh head ~ N(0, std = 1/(hidden_size + 1)), no bias: about sqrt(d) smaller than the paper's 1/sqrt(d + 1)",
    ),
    "reward_token": (
        "eos",
        f"{_O} openrlhf/models/model.py: reward gathered at the last attended token; truncated rollouts are no longer given an EOS (OpenRLHF #238, removed in #923), so they are scored at their last generated token",
    ),
    "reward_normalization": (
        "none",
        f"{_O} openrlhf/cli/train_ppo_ray.py: --normalize_reward off; when on it applies a fixed mean/std computed on the RM eval set by openrlhf/trainer/rm_trainer.py (not running statistics)",
    ),
    "value_init": (
        "reward_model",
        f"{_O} openrlhf/cli/train_ppo_ray.py: --critic_pretrain defaults to --reward_pretrain",
    ),
    "value_network": ("separate", f"{_O} openrlhf/models/model.py: a separate CriticModel"),
    "response_sampling": (
        "stop_at_eos",
        f"{_O} openrlhf/trainer/ppo_utils/experience_maker.py: vLLM generation stops at EOS",
    ),
    "missing_eos_penalty": ("off", f"{_O} openrlhf/cli/train_ppo_ray.py: no missing-EOS penalty"),
    "temperature_in_training": (
        "on",
        f"{_O} openrlhf/models/actor.py: since PR #857 policy and reference Actors take temperature=--temperature and openrlhf/models/utils.py log_probs_from_logits divides by it (a no-op at the default 1.0)",
    ),
    "rollout_logprobs": (
        "recomputed",
        f"{_O} openrlhf/trainer/ppo_utils/experience_maker.py: action log-probs recomputed by an actor forward pass after vLLM generation",
    ),
    "kl_estimator": ("k1", f"{_O} openrlhf/cli/train_ppo_ray.py: --kl_estimator k1 (k2/k3: PR #476 / #797)"),
    "kl_placement": (
        "reward",
        f"{_O} openrlhf/cli/train_ppo_ray.py: --use_kl_loss off, KL enters the per-token reward",
    ),
    "kl_controller": (
        "fixed",
        f"{_O} openrlhf/cli/train_ppo_ray.py: --kl_target None gives a fixed controller, --init_kl_coef 0.01",
    ),
    "reward_clipping": ("10", f"{_O} openrlhf/cli/train_ppo_ray.py: --reward_clip_range (-10, 10)"),
    "reward_whitening": ("off", f"{_O} openrlhf/trainer/ppo_utils/experience_maker.py: no per-token reward whitening"),
    "advantage_whitening": (
        "on",
        f"{_O} openrlhf/trainer/ppo_utils/experience_maker.py: advantages normalized over the rollout batch (--no_advantage_std_norm keeps only the centering)",
    ),
    "value_clipping": ("on", f"{_O} openrlhf/cli/train_ppo_ray.py: --value_clip 0.5"),
    "score_position": ("eos", f"{_O} openrlhf/models/utils.py compute_reward: score placed at the EOS index"),
    "lr_schedule": (
        "cosine",
        f"{_O} openrlhf/cli/train_ppo_ray.py: --lr_scheduler cosine_with_min_lr, --lr_warmup_ratio 0.03",
    ),
    "eval_temperature": (
        "training",
        f"≈ {_O} openrlhf/cli/train_ppo_ray.py: --eval_temperature 0.6 (training --temperature 1.0), so neither value; it runs only with --eval_dataset and remote-RM or agent rewards",
    ),
}

_DEEPSPEED_CHAT = {
    "query_truncation": (
        "drop",
        f"≈ {_D}dschat/utils/data/data_utils.py create_dataset_split: step-3 prompts over --max_prompt_seq_len (256) are skipped, nothing is cut (the cut in training/step3_rlhf_finetuning/main.py is commented out); nplus drops the rows of every split, not only PPO prompts",
    ),
    "query_padding_side": (
        "left",
        f"{_D}dschat/utils/data/data_utils.py DataCollatorRLHF: prompts left-padded by flipping",
    ),
    "pad_token": ("eos", f"{_D}dschat/utils/utils.py get_tokenizer: pad_token = eos_token for non-Llama models"),
    "reference_eos": (
        "on",
        f"≈ {_D}dschat/utils/data/data_utils.py: the literal text '<|endoftext|>' is appended, one EOS token only for GPT-2-vocabulary models or with --add_eot_token",
    ),
    "preference_eos": (
        "on",
        f"≈ {_D}dschat/utils/data/data_utils.py (phase 2): the literal text '<|endoftext|>' is appended, one EOS token only for GPT-2-vocabulary models or with --add_eot_token",
    ),
    "dropout": (
        "model_default",
        f"{_D}training/step3_rlhf_finetuning/main.py: --actor_dropout / --critic_dropout default None keeps the model config (since #746 they replace --disable_actor_dropout)",
    ),
    "learning_rate": (
        "per_stage",
        f"{_D}training/step3_rlhf_finetuning/main.py: actor 9.65e-6, critic 5e-6; step-1 1e-3 and step-2 5e-5 in their own main.py",
    ),
    "adam_eps": ("1e-8", f"{_D}dschat/rlhf/rlhf_engine.py: DeepSpeed FusedAdam's default eps"),
    "sft_loss_tokens": ("all", f"{_D}dschat/utils/data/data_utils.py: phase-1 labels = input_ids (whole sequence)"),
    "reward_head_init": (
        "default",
        f"{_D}dschat/utils/model/reward_model.py: v_head = nn.Linear(n_embd, 1, bias=False), default init",
    ),
    "reward_token": (
        "eos",
        f"≈ {_D}dschat/utils/model/reward_model.py forward_value: with pad = EOS the last non-pad token is the one before EOS; the RM loss is per token over the span where chosen and rejected differ (DeepSpeedExamples #316/#823)",
    ),
    "reward_normalization": ("none", f"{_D}dschat/rlhf/ppo_trainer.py: no reward normalization"),
    "value_init": (
        "reward_model",
        f"{_D}training/step3_rlhf_finetuning/main.py: --critic_model_name_or_path (required) is the step-2 reward model",
    ),
    "value_network": ("separate", f"{_D}dschat/rlhf/rlhf_engine.py: a separate critic engine"),
    "response_sampling": (
        "stop_at_eos",
        f"{_D}dschat/rlhf/ppo_trainer.py _generate_sequence: generate stops at EOS and pads after it, answers of <= 1 token dropped; no do_sample or temperature is passed, so decoding follows the model's generation config (greedy for the usual ones, Llama forced greedy)",
    ),
    "missing_eos_penalty": ("off", f"{_D}dschat/rlhf/ppo_trainer.py: no missing-EOS penalty"),
    "temperature_in_training": (
        "off",
        f"{_D}dschat/rlhf/ppo_trainer.py: gather_log_probs on raw logits (moot when rollouts are greedy)",
    ),
    "rollout_logprobs": (
        "recomputed",
        f"{_D}dschat/rlhf/ppo_trainer.py generate_experience: the actor is re-run on the generated sequence",
    ),
    "kl_estimator": ("k1", f"{_D}dschat/rlhf/ppo_trainer.py compute_rewards: kl_ctl * (log_probs - ref_log_probs)"),
    "kl_placement": ("reward", f"{_D}dschat/rlhf/ppo_trainer.py compute_rewards: -kl_ctl * KL per token"),
    "kl_controller": ("fixed", f"{_D}dschat/rlhf/ppo_trainer.py: self.kl_ctl = 0.1 hard-wired"),
    "reward_clipping": ("5", f"{_D}dschat/rlhf/ppo_trainer.py: self.clip_reward_value = 5 hard-wired"),
    "reward_whitening": ("off", f"{_D}dschat/rlhf/ppo_trainer.py: no reward whitening"),
    "advantage_whitening": ("off", f"{_D}dschat/rlhf/ppo_trainer.py get_advantages_and_returns: raw GAE advantages"),
    "value_clipping": ("on", f"{_D}dschat/rlhf/ppo_trainer.py: self.cliprange_value = 0.2 hard-wired"),
    "score_position": (
        "eos",
        f"{_D}dschat/rlhf/ppo_trainer.py compute_rewards: rewards[j, start:ends[j]][-1], the EOS action when pad = EOS; with a distinct pad (Llama) the same slice gives EOS+1 (PR #672)",
    ),
    "lr_schedule": (
        "cosine",
        f"{_D}training/step3_rlhf_finetuning/main.py: --lr_scheduler_type cosine, 100 warmup steps",
    ),
    "eval_temperature": (
        "near_greedy",
        f"no counterpart: {_D}dschat/rlhf/ppo_trainer.py and training/step3_rlhf_finetuning/main.py generate no evaluation samples; paper value kept",
    ),
}

_TRLX = {
    "query_truncation": (
        "hard",
        f"{_X} trlx/data/configs.py: TokenizerConfig(truncation_side='right'), a token-level cut",
    ),
    "pad_token": (
        "distinct",
        f"{_X} trlx/trainer/accelerate_base_trainer.py __init__: a tokenizer without pad gets '<|padding|>', a real token (id 1) in the Pythia vocabulary; only under GPT-2 it resolves to the EOS id (the summarize_rlhf example sets pad = EOS itself)",
    ),
    "reference_leading_space": (
        "on",
        f"≈ {_X} examples/summarize_rlhf/sft/summarize_dataset.py: the space stays at the end of the prompt text ('TL;DR: ') rather than starting the summary",
    ),
    "reference_eos": (
        "off",
        f"≈ {_X} examples/summarize_rlhf/sft/summarize_dataset.py: prompt + label with no EOS (trlx/trainer/accelerate_sft_trainer.py appends none); pad = EOS and pads are in the labels, so EOS is learnt through them",
    ),
    "dropout": (
        "disabled",
        f"≈ {_X} trlx/trainer/accelerate_base_trainer.py learn(): models stay in eval mode except around backward(), so rollout and loss forwards run without dropout; no flag",
    ),
    "learning_rate": (
        "per_stage",
        f"{_X} trlx/data/default_configs.py: an OptimizerConfig per trainer (PPO 3e-5, SFT 1e-4)",
    ),
    "adam_eps": ("1e-8", f"{_X} trlx/data/default_configs.py default_ppo_config: optimizer kwargs eps=1e-8"),
    "sft_loss_tokens": ("all", f"{_X} trlx/trainer/accelerate_sft_trainer.py: labels cover the whole sequence"),
    "reward_head_init": (
        "default",
        f"no RM trainer in {_X}; examples/summarize_rlhf/reward_model/reward_model.py v_head = nn.Linear(bias=False), default init",
    ),
    "reward_token": (
        "eos",
        f"≈ {_X} examples/summarize_rlhf/reward_model/reward_model.py (no RM trainer in the library): with pad = EOS the score is read at the token before the appended EOS, and the loss runs over all divergent tokens",
    ),
    "reward_normalization": (
        "reference_bias",
        f"≈ {_X} examples/summarize_rlhf/trlx_gptj_text_summarization.py reward_fn: subtracts each post's reference-summary score (a per-post baseline, not one global bias); the core's scale_reward divides by a std",
    ),
    "value_init": (
        "sft",
        f"≈ {_X} trlx/models/modeling_ppo.py make_value_branch: a fresh MLP value head on the policy (trlx #203 / #345)",
    ),
    "value_network": (
        "shared_trunk",
        f"{_X} trlx/models/modeling_ppo.py: AutoModelForCausalLMWithHydraValueHead, value head on the policy trunk",
    ),
    "response_sampling": (
        "stop_at_eos",
        f"{_X} trlx/trainer/accelerate_ppo_trainer.py: HF generate with eos_token_id in generate_kwargs",
    ),
    "missing_eos_penalty": ("off", f"{_X} trlx/trainer/accelerate_ppo_trainer.py: no missing-EOS penalty"),
    "temperature_in_training": (
        "off",
        f"{_X} trlx/trainer/accelerate_ppo_trainer.py: logprobs_of_labels on raw logits",
    ),
    "rollout_logprobs": (
        "recomputed",
        f"{_X} trlx/trainer/accelerate_ppo_trainer.py make_experience: a forward pass after generation, on the decoded-then-re-tokenized response rather than the sampled ids",
    ),
    "kl_estimator": (
        "k1",
        f"{_X} trlx/trainer/accelerate_ppo_trainer.py make_experience: per-token log-ratio penalty (k3 only logged)",
    ),
    "kl_placement": (
        "reward",
        f"{_X} trlx/trainer/accelerate_ppo_trainer.py make_experience: -kl_coef * log-ratio added to per-token rewards",
    ),
    "kl_controller": (
        "fixed",
        f"{_X} trlx/data/default_configs.py default_ppo_config: target=None, fixed init_kl_coef 0.001 (the TL;DR example sets target 6)",
    ),
    "reward_clipping": ("10", f"{_X} trlx/data/default_configs.py default_ppo_config: cliprange_reward=10"),
    "reward_whitening": ("off", f"{_X} trlx/data/default_configs.py default_ppo_config: scale_reward='ignored'"),
    "advantage_whitening": ("on", f"{_X} trlx/models/modeling_ppo.py get_advantages_and_returns(use_whitening=True)"),
    "value_clipping": ("on", f"{_X} trlx/data/default_configs.py default_ppo_config: cliprange_value=0.2"),
    "score_position": (
        "eos_plus_one",
        f"≈ {_X} trlx/trainer/accelerate_ppo_trainer.py make_experience: the slice end `ends` overshoots by one (PR #401), so with pad = EOS the score lands one action after EOS except in a batch's longest sample, two actions past with a distinct pad (index arithmetic, not a trlx run)",
    ),
    "lr_schedule": (
        "constant",
        f"≈ {_X} trlx/data/default_configs.py default_ppo_config: cosine_annealing with T_max 1e12 and eta_min = the base LR, so the LR never moves (the TL;DR example does the same)",
    ),
    "eval_temperature": (
        "training",
        f"{_X} trlx/trainer/accelerate_base_trainer.py evaluate: reuses the training gen_kwargs",
    ),
}

_LMHP = {
    "query_truncation": (
        "hard",
        f"≈ {_L} lm_human_preferences/language/datasets.py Dataset.tf_dataset: the TL;DR task (launch.py) sets no end_text, so the post is cut at 500 tokens with no newline search; the 'TL;DR:' suffix is appended after the cut, so unlike nplus's hard the cue is kept",
    ),
    "query_padding_side": (
        "left",
        f"≈ {_L} lm_human_preferences/language/datasets.py, lm_tasks.py: the post is right-padded, then the suffix appended, so pads sit between post and 'TL;DR:' (neither left nor right)",
    ),
    "pad_token": ("distinct", f"{_L} lm_human_preferences/language/encodings.py: a dedicated padding_token"),
    "reference_leading_space": (
        "on",
        f"no SFT stage in {_L} (lm_human_preferences/train_policy.py and train_reward.py only); paper value kept",
    ),
    "reference_eos": (
        "on",
        f"no SFT stage in {_L} (lm_human_preferences/train_policy.py and train_reward.py only); paper value kept",
    ),
    "preference_eos": (
        "off",
        f"≈ {_L} lm_human_preferences/train_reward.py, lm_tasks.py: no EOS is appended; labelled responses end at the '\\n' truncation token and are padded, and the reward is read at the window's last position",
    ),
    "dropout": ("disabled", f"{_L} lm_human_preferences/language/model.py: do_dropout is never switched on"),
    "learning_rate": (
        "per_stage",
        f"{_L} lm_human_preferences/train_policy.py PpoHParams lr 5e-6, train_reward.py 5e-5 (TL;DR launch.py: 2e-6 / 2.5e-5)",
    ),
    "adam_eps": (
        "1e-5",
        f"{_L} lm_human_preferences/utils/core.py minimize: Adam epsilon 1e-5 (the origin of the paper's value)",
    ),
    "sft_loss_tokens": (
        "all",
        f"no SFT stage in {_L} (lm_human_preferences/train_policy.py and train_reward.py only); paper value kept",
    ),
    "reward_head_init": (
        "scaled_normal",
        f"{_L} lm_human_preferences/language/model.py fc_layer: std 1/sqrt(d_model + 1), bias 0",
    ),
    "reward_token": (
        "last_position",
        f"{_L} lm_human_preferences/rewards.py: reward[:, -1], the last position of the fixed-length window",
    ),
    "reward_normalization": (
        "none",
        f"{_L} lm_human_preferences/train_reward.py HParams: normalize_before = normalize_after = False (the TL;DR launch.py config turns both on, which is policy_gain_bias)",
    ),
    "value_init": (
        "random_head",
        f"{_L} lm_human_preferences/policy.py: value head fc_layer with init scale 0 on the policy trunk",
    ),
    "value_network": (
        "shared_trunk",
        f"{_L} lm_human_preferences/policy.py: scalar_heads=['value'] on the policy trunk (Stiennon et al. later separated them)",
    ),
    "response_sampling": (
        "fixed_length_then_truncate",
        f"{_L} lm_human_preferences/language/sample.py sample_sequence samples the full window; the task's truncate_token / truncate_after (lm_tasks.py) then cut it",
    ),
    "missing_eos_penalty": (
        "replace",
        f"{_L} lm_human_preferences/lm_tasks.py: penalty_reward_value -1 replaces the score; for TL;DR the 'EOS' is the newline token (198) at or after position 55",
    ),
    "temperature_in_training": (
        "on",
        f"{_L} lm_human_preferences/policy.py analyze_responses_op: logits divided by the sampling temperature",
    ),
    "rollout_logprobs": (
        "from_generation",
        f"{_L} lm_human_preferences/policy.py respond_op: log-probs recorded while sampling",
    ),
    "kl_estimator": ("k1", f"{_L} lm_human_preferences/train_policy.py compute_rewards: per-token log-ratio"),
    "kl_placement": (
        "reward",
        f"{_L} lm_human_preferences/train_policy.py compute_rewards: KL penalty in the per-token reward",
    ),
    "kl_controller": (
        "fixed",
        f"{_L} lm_human_preferences/train_policy.py RewardHParams: adaptive_kl=None, kl_coef 0.2 (TL;DR launch.py: fixed 0.03; the adaptive controller, target 6, only in its books experiments)",
    ),
    "reward_clipping": ("off", f"{_L} lm_human_preferences/train_policy.py: the score is not clipped"),
    "reward_whitening": (
        "on",
        f"{_L} lm_human_preferences/train_policy.py PpoHParams: whiten_rewards=True; launch.py's TL;DR config tries to turn it off with 'rewards.whiten', which is no field (N+ §2.26)",
    ),
    "advantage_whitening": ("on", f"{_L} lm_human_preferences/train_policy.py PPOTrainer.loss: advantages whitened"),
    "value_clipping": ("on", f"{_L} lm_human_preferences/train_policy.py PpoHParams: cliprange_value 0.2"),
    "score_position": (
        "eos",
        f"≈ {_L} lm_human_preferences/train_policy.py compute_rewards: score added at the window's last position, wherever the '\\n' cut fell",
    ),
    "lr_schedule": (
        "linear",
        f"{_L} lm_human_preferences/train_policy.py train_minibatch: lrnow annealed linearly to 0",
    ),
    "eval_temperature": (
        "training",
        f"≈ {_L} sample.py: no evaluation loop in training; sample.py samples at temperature 1.0 while TL;DR training uses 0.7, so neither value (training is the closer)",
    ),
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


def table_markdown() -> str:
    """The framework matrix: one row per PPO detail (the systems emulated are PPO trainers), one column per
    framework (paper values as ·)."""
    names = [n for n in FRAMEWORKS if n != "sfd"]
    rows = ["| detail | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for d in (d for d in REGISTRY.values() if d.applies_to("ppo")):
        cells = [
            f"`{FRAMEWORKS[n][d.name][0]}`" if FRAMEWORKS[n][d.name][0] != d.paper or n == "paper" else "·"
            for n in names
        ]
        rows.append(f"| `{d.name}` | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def docs_markdown() -> str:
    """docs/frameworks.md: the matrix, then each preset's values with their sources."""
    parts = [
        "# Framework-emulation presets",
        "",
        "Generated from `nplus/frameworks.py` by `nplus.frameworks.docs_markdown()`; tests/test_frameworks.py checks",
        "that this file is current. Each preset gives another RLHF system's config-class defaults as nplus details.",
        'Use one in a study (`framework = "openrlhf"`) or a run (`nplus pipeline --framework trlx`). `sfd` (the',
        "paper's code) is an alias of `paper`. `learning_rate = per_stage` switches to the preset's per-stage learning",
        "rates, so framework variants also differ from the paper's configuration in PPO's learning rate.",
        "",
        "Every source names the system's repository at the commit it was read at and the file that sets the value.",
        'A source that starts with "≈" marks a value that only approximates the system\'s behaviour and says what',
        'differs; "no counterpart" marks a detail the system has no step for (the paper\'s value is kept). Where a',
        "shipped TL;DR example overrides a default, the source says so.",
        "",
        "## Matrix",
        "",
        "`·` = the paper's value.",
        "",
        table_markdown(),
    ]
    for name, explicit in _EXPLICIT.items():
        if not explicit:
            continue
        parts += ["", f"## {name}", "", "| detail | value | source |", "|---|---|---|"]
        for detail, (value, source) in FRAMEWORKS[name].items():
            if detail in explicit:
                cell = source.replace("|", "\\|")  # DeepSpeed-Chat's '<|endoftext|>' inside a table
                parts.append(f"| `{detail}` | `{value}` | {cell} |")
    return "\n".join(parts) + "\n"
