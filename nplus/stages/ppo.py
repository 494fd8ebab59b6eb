"""PPO with a KL penalty against the SFT policy (DETAILS.md §2, items 18–32).

The loop carries the numbered comments of the paper's own code (sfd's ppo.py): the rollout's response processing
1–3 (truncate after EOS, score, EOS penalty; nplus/stages/online.py), 4. compute rewards, 5. whiten rewards,
6. compute advantages and returns, then the PPO epochs. Every detail enters through one function in nplus/ops.py
or here. The framework around the loop (models, optimizer, rollout, epochs, logging) is nplus/stages/online.py.
Batch vocabulary: ``batch_size`` rollouts per update, split into ``num_minibatches`` minibatches for each of
``ppo_epochs`` epochs, each minibatch accumulated over micro-batches of ``micro_batch``.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch
import torch.nn as nn

from nplus import ops
from nplus.config import Config
from nplus.models import (
    RewardNormalization,
    ScalarModel,
    SharedTrunkPolicy,
    init_critic,
    init_reward_head,
    load_causal_lm,
    set_dropout,
)
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


def build_actor(cfg: Config, sft_dir: Path, rm_dir: Path) -> Actor:
    """Policy from SFT; critic per details.value_init and details.value_network; dropout per details.dropout."""
    d = cfg.details
    policy = load_causal_lm(sft_dir)
    set_dropout(policy, d.dropout)
    if d.value_network == "separate":
        critic = init_critic(d.value_init, rm_dir, sft_dir)
        set_dropout(critic.backbone, d.dropout)
        return Actor(policy, critic, None, cfg.ppo.length_chunks, cfg.ppo.last_layer_suffix)
    if d.value_network == "shared_trunk":
        hidden = policy.config.hidden_size
        if d.value_init == "reward_model":  # the RM's head on the policy's trunk (the trunks differ after RM training)
            head = ScalarModel.load(rm_dir).head
        elif d.value_init == "sft":
            head = init_reward_head(hidden, "scaled_normal")
        else:
            head = nn.Linear(hidden, 1)
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)
        return Actor(None, None, SharedTrunkPolicy(policy, head), cfg.ppo.length_chunks, cfg.ppo.last_layer_suffix)
    raise ValueError(f"value_network={d.value_network!r}")


def advantages_and_returns(cfg: Config, ro: Rollout, kl_coef: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """sfd's steps 4–6: per-token rewards, optional reward whitening, GAE, advantage whitening.
    → rewards, advantages, returns (each (B, T))."""
    d, p = cfg.details, cfg.ppo
    T = ro.responses.size(1)
    # 4. compute rewards: −β·KL per token plus the score at details.score_position
    rewards = ops.per_token_rewards(
        ro.kl, ro.scores, ops.score_index(ro.seq_last, T, d.score_position), kl_coef, d.kl_placement
    )
    # 5. whiten rewards (details.reward_whitening), over the positions that carry values
    rewards = ops.whiten_rewards(rewards, ro.value_mask, d.reward_whitening)
    # 6. compute advantages (GAE) and returns (before whitening); whiten advantages over real tokens
    #    (details.advantage_whitening)
    advantages, returns = ops.gae(rewards, ro.values, p.gamma, p.lam)
    advantages = ops.whiten_advantages(advantages, ~ro.padding_mask, d.advantage_whitening)
    return rewards, advantages, returns


def ppo_losses(
    cfg: Config,
    actor: Actor,
    ro: Rollout,
    adv: torch.Tensor,
    returns: torch.Tensor,
    mb: torch.Tensor,
    pad_id: int,
    kl_coef: float,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The PPO loss on one micro-batch: pg_loss + vf_coef · vf_loss (+ β·KL when details.kl_placement = loss)."""
    d, p = cfg.details, cfg.ppo
    logits, vpred = actor(ro.query_responses[mb], pad_id, ro.responses.size(1))
    new_logprobs = rollout_logprobs_now(cfg, logits, ro, mb)
    vpred = vpred.masked_fill(~ro.value_mask[mb], 0)
    pg_loss, pg_stats = ops.policy_loss(new_logprobs, ro.logprobs[mb], adv[mb], ~ro.padding_mask[mb], p.cliprange)
    vf_loss, vf_stats = ops.value_loss(
        vpred, ro.values[mb], returns[mb], ro.value_mask[mb], p.cliprange_value, d.value_clipping
    )
    kl_now = ops.kl_per_token(new_logprobs, ro.ref_logprobs[mb], d.kl_estimator)
    loss = pg_loss + p.vf_coef * vf_loss + ops.kl_loss_term(kl_now, ~ro.padding_mask[mb], kl_coef, d.kl_placement)
    stats = {
        "pg_loss": pg_loss.detach(),
        "vf_loss": vf_loss.detach(),
        "vf_clipfrac": vf_stats["clipfrac"],
        **pg_stats,
        "entropy": ops.masked_mean(ops.entropy_from_logits(logits.detach()), ~ro.padding_mask[mb]),
    }
    return loss, stats


def train_ppo(
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
    """The PPO loop. ``evaluate(actor_lm, update) -> dict`` is called every ``eval_every`` updates and at the end;
    ``reward``: the training posts and reward.source's text score (default: the learned RM, posts unread)."""
    d, p = cfg.details, cfg.ppo
    D = dist()
    pad_id, eos_id = tokenizer.pad_token_id, tokenizer.eos_token_id
    o = start_online(cfg, lambda: build_actor(cfg, sft_dir, rm_dir), sft_dir, rm_dir, run_dir, norm, reward, pad_id)
    actor, ddp_actor, opt, gen = o.actor, o.ddp_actor, o.opt, o.gen
    kl_coef = p.kl_coef
    num_updates = p.num_updates
    sanity: dict = {}
    evals: list[dict] = []
    query_order = query_stream(train_queries.size(0), p.batch_size, gen)
    bar = progress(num_updates, "ppo", disable=None if D.is_main else True)
    for update in range(1, num_updates + 1):
        set_lr(opt, lr_at(o.base_lr, update - 1, num_updates, d.lr_schedule))
        rows = D.rank_slice(next(query_order))
        queries = train_queries[rows].to(D.device)
        t_rollout = time.perf_counter()
        # rollout: sample, Response Processing 1–3 (truncate, score, EOS penalty), per-token KL (online.rollout)
        ro = rollout(cfg, actor, o.ref_policy, o.score, queries, o.posts_of(rows), pad_id, eos_id, o.sample_gen)
        t_train = time.perf_counter()
        if update == 1:
            sanity["initial_kl"] = float(ro.kl.sum(1).mean())
            sanity.update(_check_score_position(ro, d.score_position, eos_id))
        # 4–6. compute rewards, whiten them, compute advantages and returns
        rewards, adv, returns = advantages_and_returns(cfg, ro, kl_coef)
        # PPO epochs, each over a fresh shuffle of minibatches (micro-batches accumulated)
        stats_acc = train_epochs(
            lambda micro: ppo_losses(cfg, ddp_actor, ro, adv, returns, micro, pad_id, kl_coef),
            opt,
            p.ppo_epochs,
            o.local_batch_size,
            o.local_minibatch_size,
            o.accum,
            gen,
            ("ppo", update),
            sanity,
        )
        t_done = time.perf_counter()
        # log (names documented in nplus/metrics_doc.py; means over ranks), adapt β, evaluate when due
        row = rollout_metrics(
            ro,
            kl_coef,
            d.kl_placement,
            adv,
            update * p.batch_size,
            opt.param_groups[0]["lr"],
            (t_rollout, t_train, t_done),
            p.ppo_epochs,
            stats_acc,
        )
        row["val/rewards_std"] = float(rewards.std())
        kl_coef = end_update(o, update, row, kl_coef, bar, evaluate, evals)
    bar.close()
    return finish_online(o, sanity, evals, kl_coef)


def _check_score_position(ro: Rollout, mode: str, eos_id: int) -> dict:
    """Where the score landed relative to the EOS token: +1 for eos_plus_one (when it fits), 0 for eos.

    Checked against the EOS found in the response tokens, independently of the mask bookkeeping, so pad = EOS
    (which shifts the last-real-token index) shows up here.
    """
    T = ro.responses.size(1)
    placed = ops.per_token_rewards(
        torch.zeros_like(ro.kl), ro.scores, ops.score_index(ro.seq_last, T, mode), 0.0, "reward"
    )
    landed = placed.abs().argmax(1)
    eos_at = ops.first_true_indices(ro.responses == eos_id)
    want = 1 if mode == "eos_plus_one" else 0
    rows = ro.has_eos & (ro.scores != 0) & (eos_at + want < T)
    offset = (landed - eos_at)[rows]
    return {
        "score_position_ok": bool((offset == want).all()) and bool(rows.any()),
        "score_position_offset": float(offset.float().mean()) if bool(rows.any()) else math.nan,
        "score_position_expected_offset": float(want),
    }
