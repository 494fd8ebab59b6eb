"""Pure tensor math of SFT, reward modelling and PPO.

Every function takes tensors and plain values (never the config) and returns tensors, so each can be checked
by hand (tests/test_ops.py). Shapes: B = batch, T = response length, L = full sequence length, V = vocab.
Where a detail is implemented here, the function takes the detail's value as an argument and contains its one
branch; names follow the reference implementation (sfd) where readers will compare.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

INVALID_LOGPROB = 1.0  # sfd's fill value for log-probs at padded positions (never used unmasked)


# ---- masked statistics ----------------------------------------------------------------------------------------


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of ``x`` over positions where ``mask`` is true."""
    mask = mask.to(x.dtype)
    if dim is None:
        return (x * mask).sum() / mask.sum().clamp(min=1)
    return (x * mask).sum(dim) / mask.sum(dim).clamp(min=1)


def masked_var(x: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance over masked positions (Bessel-corrected by default, as sfd and TRL do)."""
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    if unbiased:
        n = mask.sum()
        if n < 2:
            return var
        var = var * n / (n - 1)
    return var


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """(x - mean) / std over masked positions; with ``shift_mean=False`` the mean is added back (sfd rewards)."""
    mean, var = masked_mean(x, mask), masked_var(x, mask)
    whitened = (x - mean) * torch.rsqrt(var + 1e-8)
    if not shift_mean:
        whitened = whitened + mean
    return whitened


# ---- sequences, padding, EOS ----------------------------------------------------------------------------------


def first_true_indices(bools: torch.Tensor) -> torch.Tensor:
    """(B, T) bool → (B,) index of the first True per row, or T when a row has none."""
    width = bools.size(-1)
    idx = torch.arange(width, device=bools.device).expand_as(bools)
    return torch.where(bools, idx, torch.full_like(idx, width)).min(-1).values


def truncate_after_eos(responses: torch.Tensor, eos_id: int, pad_id: int) -> torch.Tensor:
    """(B, T) → (B, T): keep everything up to and including the first EOS, replace the rest by pad."""
    eos_idx = first_true_indices(responses == eos_id)  # (B,)
    after = torch.arange(responses.size(1), device=responses.device)[None, :] > eos_idx[:, None]
    return responses.masked_fill(after, pad_id)


def response_lengths(responses: torch.Tensor, eos_id: int) -> torch.Tensor:
    """(B, T) truncated responses → (B,) number of real tokens (EOS included) = index of the last real token + 1."""
    eos_idx = first_true_indices(responses == eos_id)
    return torch.clamp(eos_idx + 1, max=responses.size(1))


def last_token_index(input_ids: torch.Tensor, pad_id: int) -> torch.Tensor:
    """(B, L) right-padded ids → (B,) index of the last non-pad token (the EOS, when the sequence has one).

    With pad = EOS (details.pad_token = eos) the EOS itself counts as pad, so this points at the token
    *before* it — exactly the bug that detail demonstrates.
    """
    nonpad = input_ids != pad_id
    idx = torch.arange(input_ids.size(1), device=input_ids.device).expand_as(input_ids)
    return torch.where(nonpad, idx, torch.full_like(idx, -1)).max(-1).values.clamp(min=0)


def pool_reward(scores: torch.Tensor, input_ids: torch.Tensor, pad_id: int, reward_token: str) -> torch.Tensor:
    """details.reward_token: (B, L) per-position head outputs → (B,) one reward per sequence.

    eos: the last non-pad token (paper); last_position: the last position of the (right-padded) window;
    mean: the mean over non-pad positions.
    """
    if reward_token == "eos":
        return scores.gather(1, last_token_index(input_ids, pad_id)[:, None]).squeeze(1)
    if reward_token == "last_position":
        return scores[:, -1]
    if reward_token == "mean":
        return masked_mean(scores, input_ids != pad_id, dim=1)
    raise ValueError(f"reward_token={reward_token!r}")


# ---- log-probabilities ----------------------------------------------------------------------------------------


def training_logits(logits: torch.Tensor, temperature: float, temperature_in_training: str) -> torch.Tensor:
    """details.temperature_in_training: divide training-time logits by the sampling temperature (paper) or not."""
    if temperature_in_training == "on":
        return logits / (temperature + 1e-7)
    if temperature_in_training == "off":
        return logits
    raise ValueError(f"temperature_in_training={temperature_in_training!r}")


def logprobs_of(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """(B, T, V) logits, (B, T) tokens → (B, T) log-probabilities of the tokens."""
    return torch.gather(F.log_softmax(logits.float(), dim=-1), 2, tokens[..., None]).squeeze(-1)


def entropy_from_logits(logits: torch.Tensor, rows: int = 256) -> torch.Tensor:
    """(B, T, V) → (B, T) entropy of the categorical distribution.

    Computed ``rows`` distributions at a time: the same values bit for bit (each row's reduction is its own), but
    three (rows, V) temporaries that stay in cache instead of three (B, T, V) ones (at the demo's 64 × 40 × 1,750,
    18 MB each); the PPO epochs log this statistic on every micro-batch."""
    flat = logits.reshape(-1, logits.size(-1))  # (B·T, V)
    parts = []
    for block in flat.split(rows):
        logp = F.log_softmax(block.float(), dim=-1)
        parts.append(-(logp.exp() * logp).sum(-1))
    return torch.cat(parts).view(logits.shape[:-1])


def kl_per_token(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: str) -> torch.Tensor:
    """details.kl_estimator: per-token estimate of KL(π‖π_ref) from samples of π. (B, T) → (B, T).

    With log r = log π − log π_ref: k1 = log r (unbiased, can be negative); k2 = (log r)² / 2 (biased, ≥ 0);
    k3 = (exp(−log r) − 1) + log r (unbiased, ≥ 0; Schulman's "approximating KL").
    """
    log_ratio = logprobs - ref_logprobs
    if estimator == "k1":
        return log_ratio
    if estimator == "k2":
        return 0.5 * log_ratio**2
    if estimator == "k3":
        return torch.expm1(-log_ratio) + log_ratio
    raise ValueError(f"kl_estimator={estimator!r}")


# ---- scores and rewards ---------------------------------------------------------------------------------------


def normalize_score(score: torch.Tensor, bias: float, gain: float) -> torch.Tensor:
    """Apply the reward model's stored normalization: gain · (score − bias).

    details.reward_normalization decides the stored values (rm stage): reference_bias → gain 1, bias = mean
    reference score; none → gain 1, bias 0; policy_gain_bias → fitted on SFT samples.
    """
    return gain * (score - bias)


def reward_normalization_params(
    mode: str, reference_scores: torch.Tensor, policy_scores: torch.Tensor | None
) -> tuple[float, float]:
    """details.reward_normalization → (bias, gain) such that gain · (s − bias) is the normalized score."""
    if mode == "reference_bias":
        return float(reference_scores.mean()), 1.0
    if mode == "none":
        return 0.0, 1.0
    if mode == "policy_gain_bias":
        if policy_scores is None:
            raise ValueError("policy_gain_bias needs policy sample scores")
        return float(policy_scores.mean()), float(1.0 / (policy_scores.std() + 1e-8))
    raise ValueError(f"reward_normalization={mode!r}")


def apply_missing_eos_penalty(scores: torch.Tensor, has_eos: torch.Tensor, penalty: float, mode: str) -> torch.Tensor:
    """details.missing_eos_penalty: (B,) scores, (B,) bool → (B,).

    replace: a response without EOS scores exactly ``penalty`` (paper, −1); subtract: it loses |penalty|
    (TRL's ``missing_eos_penalty``); off: unchanged.
    """
    if mode == "replace":
        return torch.where(has_eos, scores, torch.full_like(scores, penalty))
    if mode == "subtract":
        return torch.where(has_eos, scores, scores - abs(penalty))
    if mode == "off":
        return scores
    raise ValueError(f"missing_eos_penalty={mode!r}")


def clip_score(scores: torch.Tensor, mode: str) -> torch.Tensor:
    """details.reward_clipping: clip the score to [−c, c] for c in {5, 10}, or leave it (off, paper)."""
    if mode == "off":
        return scores
    c = float(mode)
    return scores.clamp(-c, c)


def score_index(seq_last: torch.Tensor, width: int, mode: str) -> torch.Tensor:
    """details.score_position: (B,) index of the last real response token → (B,) where the score is added.

    eos_plus_one (sfd/TRL): one past the last real token when it fits in the window, else the last token;
    eos: at the last real token.
    """
    if mode == "eos_plus_one":
        p1 = seq_last + 1
        return torch.where(p1 < width, p1, seq_last)
    if mode == "eos":
        return seq_last
    raise ValueError(f"score_position={mode!r}")


def per_token_rewards(
    kl: torch.Tensor, scores: torch.Tensor, score_idx: torch.Tensor, kl_coef: float, kl_placement: str
) -> torch.Tensor:
    """r_t = −β·KL_t (when details.kl_placement = reward) plus the score at ``score_idx``. (B, T) → (B, T)."""
    if kl_placement == "reward":
        rewards = -kl_coef * kl
    elif kl_placement == "loss":
        rewards = torch.zeros_like(kl)
    else:
        raise ValueError(f"kl_placement={kl_placement!r}")
    rewards = rewards.clone()
    rewards[torch.arange(rewards.size(0), device=rewards.device), score_idx] += scores
    return rewards


def whiten_rewards(rewards: torch.Tensor, mask: torch.Tensor, mode: str) -> torch.Tensor:
    """details.reward_whitening: divide rewards by their masked std keeping the mean (sfd), or not (paper)."""
    if mode == "off":
        return rewards
    if mode == "on":
        return masked_whiten(rewards, mask, shift_mean=False).masked_fill(~mask, 0)
    raise ValueError(f"reward_whitening={mode!r}")


def gae(rewards: torch.Tensor, values: torch.Tensor, gamma: float, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalized advantage estimation over (B, T) rewards and values; the episode ends after position T−1.

    Returns (advantages, returns) with returns = advantages + values (before any whitening).
    """
    T = rewards.size(1)
    lastgaelam = torch.zeros_like(rewards[:, 0])
    advantages_reversed = []
    for t in reversed(range(T)):
        nextvalues = values[:, t + 1] if t < T - 1 else torch.zeros_like(values[:, 0])
        delta = rewards[:, t] + gamma * nextvalues - values[:, t]
        lastgaelam = delta + gamma * lam * lastgaelam
        advantages_reversed.append(lastgaelam)
    advantages = torch.stack(advantages_reversed[::-1], dim=1)
    return advantages, advantages + values


def whiten_advantages(advantages: torch.Tensor, mask: torch.Tensor, mode: str) -> torch.Tensor:
    """details.advantage_whitening: masked (x − mean)/std over the rollout batch (paper), or not."""
    if mode == "on":
        return masked_whiten(advantages, mask).masked_fill(~mask, 0)
    if mode == "off":
        return advantages.masked_fill(~mask, 0)
    raise ValueError(f"advantage_whitening={mode!r}")


# ---- losses ---------------------------------------------------------------------------------------------------


def policy_loss(
    new_logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    cliprange: float,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped surrogate: mean over masked tokens of max(−A·r, −A·clip(r, 1±ε)). Returns (loss, stats)."""
    token_losses, stats = clipped_surrogate(new_logprobs, old_logprobs, advantages, mask, cliprange)
    return masked_mean(token_losses, mask), stats


def clipped_surrogate(
    new_logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    cliprange: float,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(B, T) → (B, T) per-token max(−A·r, −A·clip(r, 1±ε)) before any averaging (GRPO averages its own way),
    and the step-size stats over masked tokens."""
    logratio = new_logprobs - old_logprobs
    ratio = torch.exp(logratio)
    pg_losses = -advantages * ratio
    pg_losses2 = -advantages * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)
    token_losses = torch.max(pg_losses, pg_losses2)
    with torch.no_grad():
        stats = {
            "clipfrac": masked_mean((pg_losses2 > pg_losses).float(), mask),
            "approxkl": 0.5 * masked_mean(logratio**2, mask),
            "ratio": masked_mean(ratio, mask),
        }
    return token_losses, stats


def value_loss(
    new_values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    cliprange_value: float,
    value_clipping: str,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """details.value_clipping: 0.5·max((V−R)², (clip(V, V_old±ε)−R)²) (paper) or 0.5·(V−R)². (B, T) → scalar."""
    unclipped = (new_values - returns) ** 2
    if value_clipping == "on":
        clipped_values = old_values + torch.clamp(new_values - old_values, -cliprange_value, cliprange_value)
        clipped = (clipped_values - returns) ** 2
        loss = 0.5 * masked_mean(torch.max(unclipped, clipped), mask)
        clipfrac = masked_mean((clipped > unclipped).float(), mask)
    elif value_clipping == "off":
        loss = 0.5 * masked_mean(unclipped, mask)
        clipfrac = torch.zeros(())
    else:
        raise ValueError(f"value_clipping={value_clipping!r}")
    return loss, {"clipfrac": clipfrac.detach()}


def kl_loss_term(kl: torch.Tensor, mask: torch.Tensor, kl_coef: float, kl_placement: str) -> torch.Tensor:
    """details.kl_placement = loss adds β·mean KL to the policy loss (GRPO style); reward adds nothing here."""
    if kl_placement == "loss":
        return kl_coef * masked_mean(kl, mask)
    return torch.zeros((), device=kl.device)


def sft_loss_mask(labels_mask: torch.Tensor, query_lengths: torch.Tensor, mode: str) -> torch.Tensor:
    """details.sft_loss_tokens: (B, L) non-pad mask → (B, L) mask of positions whose *next* token is trained.

    all (sfd): every non-pad token of query + response; response_only: only tokens after the query.
    """
    if mode == "all":
        return labels_mask
    if mode == "response_only":
        pos = torch.arange(labels_mask.size(1), device=labels_mask.device)[None, :]
        return labels_mask & (pos >= query_lengths[:, None])
    raise ValueError(f"sft_loss_tokens={mode!r}")


def bradley_terry_loss(chosen: torch.Tensor, rejected: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """−log σ(r_chosen − r_rejected), mean over the batch; also returns per-pair accuracy. (B,) → scalar, (B,)."""
    return -F.logsigmoid(chosen - rejected).mean(), (chosen > rejected).float()


# ---- schedules and controllers --------------------------------------------------------------------------------


def lr_factor(step: int, total: int, schedule: str) -> float:
    """details.lr_schedule (and SFT/RM's cosine): multiplier of the base LR at update ``step`` of ``total``.

    linear: 1 − step/total (sfd anneals per update); cosine: ½(1 + cos(π·step/total)) to 0; constant: 1.
    """
    frac = min(step / max(total, 1), 1.0)
    if schedule == "linear":
        return 1.0 - frac
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * frac))
    if schedule == "constant":
        return 1.0
    raise ValueError(f"lr_schedule={schedule!r}")


def next_kl_coef(kl_coef: float, mean_kl: float, batch_size: int, mode: str, target: float, horizon: int) -> float:
    """details.kl_controller: fixed β (paper) or lmhp's adaptive controller (proportional, error clipped to ±0.2)."""
    if mode == "fixed":
        return kl_coef
    if mode == "adaptive":
        proportional_error = max(min(mean_kl / target - 1.0, 0.2), -0.2)
        return kl_coef * (1.0 + proportional_error * batch_size / horizon)
    raise ValueError(f"kl_controller={mode!r}")


def adam_eps(mode: str) -> float:
    """details.adam_eps: 1e-5 (paper, as TF/OpenAI) or PyTorch's default 1e-8."""
    return float(mode)
