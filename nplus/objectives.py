"""Pure tensor math of the algorithms that replace PPO: DPO, RLOO, REINFORCE with a baseline, and GRPO.

As in nplus/ops.py, every function takes tensors and plain values (never the config), contains the one branch of
the detail it implements, and is checked by hand in tests/test_objectives.py. Shapes: B = responses (or pairs),
T = response length, k = responses per prompt. Grouped tensors hold each prompt's k responses in consecutive
rows (``queries.repeat_interleave(k, 0)``), so a (B,) tensor reshapes to (B / k, k).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from nplus import ops

# GRPO's std normalization divides by std + this (TRL's GRPOTrainer uses 1e-4), so a group of equal rewards
# gives zero advantages instead of 0 / 0.
GROUP_STD_EPS = 1e-4


# ---- DPO ------------------------------------------------------------------------------------------------------


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float,
    loss_type: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """details.dpo_loss on (B,) summed response log-probs → (mean loss, (B,) chosen and (B,) rejected rewards).

    The implicit reward is β·(log π − log π_ref) of a response (Rafailov et al. eq. 5); h is the margin of the
    log-ratios. sigmoid (DPO, eq. 7): −log σ(β·h); ipo (Azar et al. eq. 17, τ = β): (h − 1/(2β))².
    """
    h = (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)
    if loss_type == "sigmoid":
        losses = -F.logsigmoid(beta * h)
    elif loss_type == "ipo":
        losses = (h - 1.0 / (2.0 * beta)) ** 2
    else:
        raise ValueError(f"dpo_loss={loss_type!r}")
    chosen_rewards = beta * (policy_chosen - ref_chosen).detach()
    rejected_rewards = beta * (policy_rejected - ref_rejected).detach()
    return losses.mean(), chosen_rewards, rejected_rewards


def sequence_logprobs(token_logprobs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, T) per-token log-probs, (B, T) response-token mask → (B,) log-prob of each whole response (summed, as
    DPO's log π(y|x))."""
    return (token_logprobs * mask).sum(1)


# ---- sequence rewards and baselines ---------------------------------------------------------------------------


def sequence_rewards(scores: torch.Tensor, kl: torch.Tensor, kl_coef: float, kl_placement: str) -> torch.Tensor:
    """details.kl_placement (rloo, reinforce) / details.grpo_kl_placement: (B,) scores, (B, T) per-token KL (0 at
    pads) → (B,) the reward of each whole response.

    reward: R = score − β·Σ_t KL_t (Ahmadian et al. treat the response as one action); loss: R = score (the KL
    enters the loss instead).
    """
    if kl_placement == "reward":
        return scores - kl_coef * kl.sum(1)
    if kl_placement == "loss":
        return scores.clone()
    raise ValueError(f"kl_placement={kl_placement!r}")


def leave_one_out_advantages(rewards: torch.Tensor, k: int) -> torch.Tensor:
    """RLOO (Ahmadian et al. eq. 6): (B,) rewards in groups of k → (B,) R_i − mean of the other k − 1 rewards."""
    grouped = rewards.view(-1, k)  # (B/k, k)
    baseline = (grouped.sum(1, keepdim=True) - grouped) / (k - 1)
    return (grouped - baseline).reshape(-1)


def group_advantages(rewards: torch.Tensor, k: int, std_normalization: str) -> torch.Tensor:
    """details.grpo_std_normalization: (B,) rewards in groups of k → (B,) group-relative advantages.

    on (GRPO, Shao et al. §4.1.2): (R − mean_group) / (std_group + 1e-4), the std Bessel-corrected as in TRL;
    off (Dr. GRPO, Liu et al. 2025): R − mean_group.
    """
    grouped = rewards.view(-1, k)  # (B/k, k)
    centred = grouped - grouped.mean(1, keepdim=True)
    if std_normalization == "on":
        return (centred / (grouped.std(1, keepdim=True) + GROUP_STD_EPS)).reshape(-1)
    if std_normalization == "off":
        return centred.reshape(-1)
    raise ValueError(f"grpo_std_normalization={std_normalization!r}")


def reinforce_baseline(
    rewards: torch.Tensor, mode: str, running_mean: float, count: int
) -> tuple[torch.Tensor, float, int]:
    """details.reinforce_baseline: (B,) rewards → ((B,) baseline, running mean and count after this batch).

    moving_average (Ahmadian et al. §3.1): the mean of every reward of the earlier batches (0 before the first);
    batch_mean: this batch's mean; none: 0. The running statistics are updated in every mode.
    """
    n = rewards.numel()
    new_count = count + n
    new_mean = (running_mean * count + float(rewards.sum())) / new_count
    if mode == "moving_average":
        baseline = torch.full_like(rewards, running_mean)
    elif mode == "batch_mean":
        baseline = torch.full_like(rewards, float(rewards.mean()))
    elif mode == "none":
        baseline = torch.zeros_like(rewards)
    else:
        raise ValueError(f"reinforce_baseline={mode!r}")
    return baseline, new_mean, new_count


# ---- losses ---------------------------------------------------------------------------------------------------


def aggregate_token_loss(token_loss: torch.Tensor, mask: torch.Tensor, mode: str) -> torch.Tensor:
    """details.grpo_loss_averaging: (B, T) per-token losses, (B, T) mask → scalar.

    per_sequence (GRPO eq. 3): mean over responses of each response's token mean; per_token (DAPO): sum over all
    tokens / their count, so long responses weigh more; max_length (Dr. GRPO): sum / (B · T), no length bias.
    """
    m = mask.to(token_loss.dtype)
    if mode == "per_sequence":
        return ((token_loss * m).sum(1) / m.sum(1).clamp(min=1)).mean()
    if mode == "per_token":
        return (token_loss * m).sum() / m.sum().clamp(min=1)
    if mode == "max_length":
        return (token_loss * m).sum() / token_loss.numel()
    raise ValueError(f"grpo_loss_averaging={mode!r}")


def policy_gradient_loss(
    mode: str,
    new_logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    cliprange: float,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """details.pg_update (rloo, reinforce): (B, T) log-probs, (B, T) advantages (one value per response, repeated
    over its tokens) → (loss, stats).

    vanilla (Ahmadian et al.): −mean over responses of A·Σ_t log π(a_t), the REINFORCE estimator of the whole
    response; clipped (TRL's RLOOTrainer): PPO's clipped surrogate, averaged over tokens (nplus/ops.py).
    """
    if mode == "clipped":
        return ops.policy_loss(new_logprobs, old_logprobs, advantages, mask, cliprange)
    if mode != "vanilla":
        raise ValueError(f"pg_update={mode!r}")
    m = mask.to(new_logprobs.dtype)
    loss = -(advantages * new_logprobs * m).sum(1).mean()
    with torch.no_grad():
        logratio = new_logprobs - old_logprobs
        stats = {
            "clipfrac": torch.zeros(()),
            "approxkl": 0.5 * ops.masked_mean(logratio**2, mask),
            "ratio": ops.masked_mean(torch.exp(logratio), mask),
        }
    return loss, stats
