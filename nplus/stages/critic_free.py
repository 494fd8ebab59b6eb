"""The critic-free online algorithms: RLOO, REINFORCE with a baseline, and GRPO.

They share the online framework with PPO (nplus/stages/online.py: sampling, truncation after EOS, score of
reward.source, EOS penalty, per-token KL) and differ from it, and from each other, only in the advantage of a
response and the loss:

- rloo (Ahmadian et al. 2024): k responses per prompt; A_i = R_i − mean of the other k − 1 rewards, with
  R = score − β·Σ KL (details.kl_placement); one REINFORCE step per batch (details.pg_update).
- reinforce: one response per prompt; A_i = R_i − baseline (details.reinforce_baseline).
- grpo (Shao et al. 2024): G responses per prompt; A_i = group-normalized score (details.grpo_std_normalization);
  PPO's clipped ratio over ppo.ppo_epochs; β·KL_t in the loss (details.grpo_kl_estimator, grpo_kl_placement);
  token losses averaged per details.grpo_loss_averaging.

Batch vocabulary as in PPO: ``batch_size`` responses per update (``batch_size / group_size`` prompts), split into
``num_minibatches`` minibatches, each accumulated over micro-batches of ``micro_batch``.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from nplus import objectives, ops
from nplus.config import Config
from nplus.models import RewardNormalization, load_causal_lm, set_dropout
from nplus.rewards import TrainingReward
from nplus.stages.common import dist, lr_at, progress, set_lr
from nplus.stages.online import (
    Actor,
    Rollout,
    end_update,
    finish_online,
    query_stream,
    rollout,
    rollout_logprobs_now,
    rollout_metrics,
    start_online,
    train_epochs,
)


def kl_details(cfg: Config) -> tuple[str, str]:
    """The algorithm's KL estimator and placement: GRPO has its own details (its paper's k3 in the loss)."""
    d = cfg.details
    if cfg.algorithm == "grpo":
        return d.grpo_kl_estimator, d.grpo_kl_placement
    return d.kl_estimator, d.kl_placement


def group_size(cfg: Config) -> int:
    """Responses per prompt: ppo.group_size for rloo and grpo, one for reinforce."""
    return 1 if cfg.algorithm == "reinforce" else cfg.ppo.group_size


def advantages(
    cfg: Config, ro: Rollout, kl_coef: float, baseline_state: tuple[float, int]
) -> tuple[torch.Tensor, torch.Tensor, tuple[float, int]]:
    """Steps 5–6: (B,) sequence rewards, (B, T) advantages (one value per response over its real tokens) and the
    REINFORCE baseline's running (mean, count) after this batch."""
    d = cfg.details
    _, placement = kl_details(cfg)
    # 5. one reward per response: the score, less β·Σ KL when the KL is placed in the reward
    rewards = objectives.sequence_rewards(ro.scores, ro.kl, kl_coef, placement)
    # 6. the algorithm's baseline
    if cfg.algorithm == "rloo":
        adv = objectives.leave_one_out_advantages(rewards, cfg.ppo.group_size)
    elif cfg.algorithm == "grpo":
        adv = objectives.group_advantages(rewards, cfg.ppo.group_size, d.grpo_std_normalization)
    elif cfg.algorithm == "reinforce":
        baseline, *baseline_state = objectives.reinforce_baseline(rewards, d.reinforce_baseline, *baseline_state)
        adv = rewards - baseline
    else:
        raise ValueError(f"algorithm={cfg.algorithm!r} is not critic-free")
    return rewards, adv[:, None].expand_as(ro.padding_mask).masked_fill(ro.padding_mask, 0), tuple(baseline_state)


def critic_free_losses(
    cfg: Config, actor: Actor, ro: Rollout, adv: torch.Tensor, mb: torch.Tensor, pad_id: int, kl_coef: float
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Step 7 on one micro-batch: the algorithm's policy loss (+ β·KL when the KL is placed in the loss)."""
    d, p = cfg.details, cfg.ppo
    estimator, placement = kl_details(cfg)
    logits, _ = actor(ro.query_responses[mb], pad_id, ro.responses.size(1))
    new_logprobs = rollout_logprobs_now(cfg, logits, ro, mb)
    mask = ~ro.padding_mask[mb]
    kl_now = ops.kl_per_token(new_logprobs, ro.ref_logprobs[mb], estimator)
    if cfg.algorithm == "grpo":
        token_losses, stats = ops.clipped_surrogate(new_logprobs, ro.logprobs[mb], adv[mb], mask, p.cliprange)
        if placement == "loss":  # GRPO eq. 3: β·KL_t inside the per-token objective, averaged with it
            token_losses = token_losses + kl_coef * kl_now
        pg_loss = objectives.aggregate_token_loss(token_losses, mask, d.grpo_loss_averaging)
        loss = pg_loss
    else:
        pg_loss, stats = objectives.policy_gradient_loss(
            d.pg_update, new_logprobs, ro.logprobs[mb], adv[mb], mask, p.cliprange
        )
        loss = pg_loss + ops.kl_loss_term(kl_now, mask, kl_coef, placement)
    stats = {
        "pg_loss": pg_loss.detach(),
        **stats,
        "entropy": ops.masked_mean(ops.entropy_from_logits(logits.detach()), mask),
    }
    return loss, stats


def train_critic_free(
    cfg: Config,
    sft_dir: Path,
    rm_dir: Path,
    norm: RewardNormalization,
    train_queries: torch.Tensor,
    tokenizer,
    run_dir: Path,
    evaluate=None,
    reward: TrainingReward | None = None,
) -> dict:
    """The loop of rloo / reinforce / grpo; arguments and result as ``train_ppo``'s (the actor is the policy alone)."""
    d, p = cfg.details, cfg.ppo
    D = dist()
    pad_id, eos_id = tokenizer.pad_token_id, tokenizer.eos_token_id
    policy_only = lambda: Actor(
        set_dropout(load_causal_lm(sft_dir), d.dropout),
        None,
        None,
        p.length_chunks,  # noqa: E731
        p.last_layer_suffix,
    )
    o = start_online(cfg, policy_only, sft_dir, rm_dir, run_dir, norm, reward, pad_id)
    kl_coef, num_updates, k = p.kl_coef, p.num_updates, group_size(cfg)
    estimator, placement = kl_details(cfg)
    # vanilla REINFORCE / RLOO: one step per minibatch; clipped (and GRPO): ppo_epochs epochs
    epochs = 1 if cfg.algorithm != "grpo" and d.pg_update == "vanilla" else p.ppo_epochs
    sanity: dict = {}
    evals: list[dict] = []
    baseline_state: tuple[float, int] = (0.0, 0)
    prompt_order = query_stream(train_queries.size(0), p.batch_size // k, o.gen)
    bar = progress(num_updates, cfg.algorithm, disable=None if D.is_main else True)
    for update in range(1, num_updates + 1):
        set_lr(o.opt, lr_at(o.base_lr, update - 1, num_updates, d.lr_schedule))
        # each prompt k times in consecutive rows: its group
        rows = D.rank_slice(next(prompt_order)).repeat_interleave(k, 0)
        queries = train_queries[rows].to(D.device)
        t_rollout = time.perf_counter()
        # 1–4. rollout, exactly as PPO's (online.rollout; the KL with the algorithm's estimator)
        ro = rollout(
            cfg, o.actor, o.ref_policy, o.score, queries, o.posts_of(rows), pad_id, eos_id, o.sample_gen, estimator
        )
        t_train = time.perf_counter()
        if update == 1:
            sanity["initial_kl"] = float(ro.kl.sum(1).mean())
        # 5–6. sequence rewards and advantages
        rewards, adv, baseline_state = advantages(cfg, ro, kl_coef, baseline_state)
        # 7. policy updates over minibatches (micro-batches accumulated)
        stats_acc = train_epochs(
            lambda micro: critic_free_losses(cfg, o.ddp_actor, ro, adv, micro, pad_id, kl_coef),
            o.opt,
            epochs,
            o.local_batch_size,
            o.local_minibatch_size,
            o.accum,
            o.gen,
            (cfg.algorithm, update),
            sanity,
        )
        t_done = time.perf_counter()
        # 8. log (the same names as PPO's), adapt β, evaluate when due
        row = rollout_metrics(
            ro,
            kl_coef,
            placement,
            adv,
            update * p.batch_size,
            o.opt.param_groups[0]["lr"],
            (t_rollout, t_train, t_done),
            epochs,
            stats_acc,
        )
        row["val/rewards_std"] = float(rewards.std())
        kl_coef = end_update(o, update, row, kl_coef, bar, evaluate, evals)
    bar.close()
    return finish_online(o, sanity, evals, kl_coef)
