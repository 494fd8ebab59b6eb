"""The metrics contract: every name written to metrics.jsonl or summary.json, documented once.

Every policy-optimization algorithm (``Config.algorithm``) writes its step rows under the stage ``ppo`` and its
results into the ``ppo.*`` summary fields, so statistics and reports compare algorithms like any other variant;
the online ones (rloo, reinforce, grpo) log PPO's rollout metrics under the same names, DPO logs ``dpo/*``.

Direction: "up" = higher is better, "down" = lower is better, "none" = descriptive (a change, not a verdict).
Names are stable: reports and statistics read them, so renaming one is a breaking change.
"""

from __future__ import annotations

# name → (direction, doc)
STEP_METRICS: dict[str, tuple[str, str]] = {
    "base/loss": (
        "down",
        "next-token loss of base pretraining: on repeated random spans in the induction phase, then on posts+TL;DR windows mixed with span rows",
    ),
    "sft/loss": ("down", "SFT next-token cross-entropy over details.sft_loss_tokens"),
    "sft/lr": ("none", "SFT learning rate at the step"),
    "rm/loss": ("down", "Bradley–Terry loss −log σ(r_chosen − r_rejected)"),
    "rm/accuracy": ("up", "training-batch fraction with r_chosen > r_rejected"),
    "rm/lr": ("none", "RM learning rate at the step"),
    "objective/kl": ("none", "mean over rollouts of the summed per-token KL estimate (details.kl_estimator)"),
    "objective/entropy": ("none", "mean over rollouts of −Σ log π(a_t) of the sampled tokens"),
    "objective/non_score_reward": ("none", "mean of −β·Σ KL (0 when details.kl_placement = loss)"),
    "objective/scores": (
        "up",
        "mean final score (score of reward.source, the normalized RM's by default, after EOS penalty and clipping)",
    ),
    "objective/raw_scores": (
        "up",
        "mean score of reward.source (normalized RM score by default) before EOS penalty and clipping",
    ),
    "objective/rlhf_reward": ("up", "scores + non_score_reward: the objective PPO maximizes"),
    "objective/kl_coef": ("none", "β in use (changes only with details.kl_controller = adaptive)"),
    "policy/approxkl": ("none", "½·mean (log ratio)² over trained tokens, a PPO step-size diagnostic"),
    "policy/clipfrac": ("none", "fraction of tokens where the policy ratio was clipped"),
    "policy/entropy": ("none", "mean entropy of the training-time token distribution"),
    "value/clipfrac": ("none", "fraction of tokens where the value prediction was clipped"),
    "loss/policy": ("down", "clipped policy-gradient loss"),
    "loss/value": ("down", "(clipped) value loss"),
    "val/ratio": ("none", "mean π_new/π_old over trained tokens (1 at the first minibatch when consistent)"),
    "val/num_eos": ("none", "rollouts in the batch that contain an EOS token"),
    "val/eos_rate": ("up", "fraction of rollouts that contain an EOS token"),
    "val/mean_length": ("none", "mean response length in tokens (EOS included) of the rollouts"),
    "val/advantage_mean": ("none", "mean advantage over real tokens after whitening"),
    "val/rewards_std": (
        "none",
        "standard deviation of the per-token rewards (PPO); of the sequence rewards (rloo, reinforce, grpo)",
    ),
    "lr": ("none", "PPO learning rate at the update (details.lr_schedule)"),
    "time/rollout_s": ("down", "seconds of the update spent sampling and scoring (per rank)"),
    "time/generation_s": ("down", "seconds of the update spent sampling responses, part of time/rollout_s (per rank)"),
    "time/train_s": ("down", "seconds of the update spent in the PPO epochs (per rank)"),
    "time/sampled_tokens": ("none", "response tokens sampled in the update (per rank)"),
    "time/train_tokens": ("none", "query+response tokens passed through training forward/backward (per rank)"),
    "dpo/loss": ("down", "DPO loss on the training batch (details.dpo_loss: sigmoid or ipo)"),
    "dpo/accuracy": (
        "up",
        "training-batch fraction of pairs whose implicit reward β·log(π/π_ref) is higher for the chosen summary",
    ),
    "dpo/margin": ("none", "mean implicit-reward margin, chosen − rejected, on the training batch"),
    "dpo/chosen_reward": ("none", "mean implicit reward β·log(π/π_ref) of the chosen summaries"),
    "dpo/rejected_reward": ("none", "mean implicit reward β·log(π/π_ref) of the rejected summaries"),
    "eval/win_rate": ("up", "gold/LLM-judge win rate against the reference on validation prompts"),
    "eval/gold_score": ("up", "mean gold-judge score of validation samples"),
    "eval/proxy_reward": ("up", "mean score of reward.source (normalized RM by default) on validation samples"),
    "eval/repetition_rate": ("down", "fraction of validation samples with a word trigram repeated within it"),
    "eval/distinct_1": ("up", "distinct word unigrams / all unigrams of the validation samples"),
    "eval/distinct_2": ("up", "distinct word bigrams / all bigrams of the validation samples"),
}

SUMMARY_METRICS: dict[str, tuple[str, str]] = {
    "sft.rouge1": ("up", "ROUGE-1 F of near-greedy SFT samples against the reference"),
    "sft.rouge2": ("up", "ROUGE-2 F"),
    "sft.rouge_l": ("up", "ROUGE-L F"),
    "sft.win_rate": ("up", "judge win rate of SFT samples against the reference"),
    "sft.mean_length": ("none", "mean SFT response length in tokens"),
    "sft.eos_rate": ("up", "fraction of SFT samples that end with EOS within the response limit"),
    "sft.gold_score": ("up", "mean gold score of SFT samples"),
    "sft.post_swap_gap": (
        "up",
        "NLL of the reference TL;DR given another post's body (same title) minus given its own, nats/token on validation posts: 0 means the SFT model does not read the body",
    ),
    "sft.fact_accuracy": (
        "up",
        "share of post-body facts (ages, duration, feeling) inside the query that near-greedy SFT summaries state correctly (gold judge's reading; null without a gold judge)",
    ),
    "rm.accuracy": ("up", "validation accuracy of the reward model"),
    "rm.accuracy_gold": (
        "up",
        "share of validation pairs the reward model orders as the gold judge does, whatever their label says (tldr-synth; null elsewhere)",
    ),
    "rm.fact_check_accuracy": (
        "up",
        "share of minimal pairs (a summary with every fact right vs the same summary with one fact wrong, 128 validation posts) the reward model ranks right: 0.5 means it does not check facts against the post (tldr-synth; null elsewhere)",
    ),
    "rm.fact_check_sft_likelihood": (
        "none",
        "share of the same minimal pairs whose right summary the SFT model (the RM's initial weights) finds more likely: what the model knows about the post's facts before RM training, to read rm.fact_check_accuracy against (tldr-synth; null elsewhere)",
    ),
    "rm.accuracy_valid1": ("up", "validation accuracy on split valid1"),
    "rm.accuracy_valid2": ("up", "validation accuracy on split valid2"),
    "rm.reward_bias": ("none", "bias subtracted from every reward (details.reward_normalization)"),
    "ppo.win_rate": (
        "up",
        "judge win rate of near-greedy samples of the trained policy (PPO or config.algorithm) against the reference",
    ),
    "ppo.kl": ("none", "sequence KL(π‖π_ref) at the training temperature on validation prompts (k1, summed)"),
    "ppo.mean_length": ("none", "mean PPO response length in tokens"),
    "ppo.eos_rate": ("up", "fraction of PPO samples that contain EOS"),
    "ppo.proxy_reward": (
        "none",
        "mean score of reward.source (normalized RM by default) on PPO samples: rises under over-optimization too",
    ),
    "ppo.gold_score": ("up", "mean gold score of PPO samples"),
    "ppo.fact_accuracy": (
        "up",
        "share of post-body facts inside the query that near-greedy PPO summaries state correctly",
    ),
    "ppo.rouge_l": ("up", "ROUGE-L of PPO samples against the reference (RLHF is not trained for it)"),
    "ppo.repetition_rate": ("down", "fraction of PPO samples with a word trigram repeated within it (reward hacking)"),
    "ppo.distinct_2": ("up", "distinct word bigrams / all bigrams of the PPO samples"),
    "dpo.implicit_accuracy": (
        "up",
        "algorithm = dpo: accuracy of the DPO policy's implicit reward β·log(π/π_SFT) on the validation comparisons the RM is scored on (N+ paper at 1B: 0.621, RM 0.629)",
    ),
    "dpo.implicit_accuracy_valid1": ("up", "dpo.implicit_accuracy on split valid1"),
    "dpo.implicit_accuracy_valid2": ("up", "dpo.implicit_accuracy on split valid2"),
    "wall_time_s": (
        "none",
        "seconds of compute of the whole run, including the upstream stages it built (variants that reuse the baseline's SFT and RM are shorter, so this is descriptive)",
    ),
    "ppo_wall_time_s": ("down", "seconds of compute of the PPO stage"),
}


def direction(name: str) -> str:
    for table in (SUMMARY_METRICS, STEP_METRICS):
        if name in table:
            return table[name][0]
    return "none"
