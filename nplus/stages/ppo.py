"""PPO with a KL penalty against the SFT policy (DETAILS.md §2, items 18–32).

The loop follows sfd's numbered steps; every detail enters through one function in nplus/ops.py or here.
Batch vocabulary: ``batch_size`` rollouts per update, split into ``num_minibatches`` minibatches for each of
``ppo_epochs`` epochs, each minibatch accumulated over micro-batches of ``micro_batch``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from nplus import ops
from nplus.config import Config
from nplus.models import (RewardNormalization, ScalarModel, SharedTrunkPolicy, count_parameters, init_critic,
                          init_reward_head, lm_logits, load_causal_lm, set_dropout)
from nplus.stages.common import (MetricsLog, check_finite, dist, lr_at, make_optimizer, minibatches, progress,
                                 rank_generator, sample, seed_everything, set_lr, zero3_offload)

# A sanity check passes when the quantity is within this of its ideal value (fp32 on CPU reaches ~1e-6).
SANITY_TOL = 1e-4


@dataclass
class Rollout:
    """One batch of experience. B rollouts, T response tokens, Lq query tokens."""

    query_responses: torch.Tensor  # (B, Lq+T) postprocessed (truncated after EOS)
    responses: torch.Tensor  # (B, T) postprocessed
    logprobs: torch.Tensor  # (B, T) old log-probs (INVALID_LOGPROB at pads)
    ref_logprobs: torch.Tensor  # (B, T)
    values: torch.Tensor  # (B, T) (0 beyond the value mask)
    scores: torch.Tensor  # (B,) final scores after normalization, EOS penalty, clipping
    raw_scores: torch.Tensor  # (B,) normalized RM scores before penalty/clipping
    padding_mask: torch.Tensor  # (B, T) True at positions after the last real token
    value_mask: torch.Tensor  # (B, T) True where values/returns are trained
    kl: torch.Tensor  # (B, T) per-token KL estimate (0 at pads)
    seq_last: torch.Tensor  # (B,) index of the last real response token
    has_eos: torch.Tensor  # (B,)
    generation_s: float = 0.0  # wall seconds of step 1 (sampling), for the throughput figures


class Actor(nn.Module):
    """Policy (+ critic) behind one interface: details.value_network picks separate or shared trunk."""

    def __init__(self, policy, critic: ScalarModel | None, shared: SharedTrunkPolicy | None):
        super().__init__()
        self.policy, self.critic, self.shared = policy, critic, shared

    def lm(self):
        return self.shared.lm if self.shared is not None else self.policy

    def forward(self, query_responses: torch.Tensor, pad_id: int, response_length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, Lq+T) → (B, T, V) logits predicting the response tokens and (B, T) values of the states before them."""
        keep = response_length + 1
        if self.shared is not None:
            logits, values = self.shared(query_responses, pad_id, keep)
        else:
            logits, values = lm_logits(self.policy, query_responses, pad_id, keep), self.critic(query_responses, pad_id)
        return logits[:, :-1], values[:, -keep:-1]

    def values(self, query_responses: torch.Tensor, pad_id: int, response_length: int) -> torch.Tensor:
        """(B, Lq+T) → (B, T) values alone (a rollout whose old log-probs come from generation needs no logits).

        The same forward as ``forward`` (hidden states do not depend on how many logits are kept), so the values
        are bit-identical; the separate-critic case skips the policy's forward pass entirely.
        """
        keep = response_length + 1
        if self.shared is not None:
            return self.shared(query_responses, pad_id, 1)[1][:, -keep:-1]
        return self.critic(query_responses, pad_id)[:, -keep:-1]


def build_actor(cfg: Config, sft_dir: Path, rm_dir: Path) -> Actor:
    """Policy from SFT; critic per details.value_init and details.value_network; dropout per details.dropout."""
    d = cfg.details
    policy = load_causal_lm(sft_dir)
    set_dropout(policy, d.dropout)
    if d.value_network == "separate":
        critic = init_critic(d.value_init, rm_dir, sft_dir)
        set_dropout(critic.backbone, d.dropout)
        return Actor(policy, critic, None)
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
        return Actor(None, None, SharedTrunkPolicy(policy, head))
    raise ValueError(f"value_network={d.value_network!r}")


def response_logprobs(logits: torch.Tensor, responses: torch.Tensor, temperature: float, temperature_in_training: str) -> torch.Tensor:
    """(B, T, V) logits predicting the response tokens → (B, T) log-probs of those tokens."""
    return ops.logprobs_of(ops.training_logits(logits, temperature, temperature_in_training), responses)


def response_logits(ref_policy, query_responses: torch.Tensor, pad_id: int, response_length: int) -> torch.Tensor:
    """(B, Lq+T) → (B, T, V) logits of a plain causal LM for the response positions."""
    return lm_logits(ref_policy, query_responses, pad_id, response_length + 1)[:, :-1]


def masks_for(responses: torch.Tensor, pad_id: int, score_position: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B, T) postprocessed responses → seq_last (B,), padding_mask (B, T), value_mask (B, T).

    sfd: sequence_lengths = first pad − 1; log-probs are masked after it; values are kept one step further
    (to the score's position) when the score lands at EOS + 1.
    """
    T = responses.size(1)
    seq_last = (ops.first_true_indices(responses == pad_id) - 1).clamp(min=0)
    idx = torch.arange(T, device=responses.device)[None, :]
    padding_mask = idx > seq_last[:, None]
    value_mask = ~(idx > ops.score_index(seq_last, T, score_position)[:, None])
    return seq_last, padding_mask, value_mask


@torch.no_grad()
def rollout(cfg: Config, actor: Actor, ref_policy, reward_model: ScalarModel, norm: RewardNormalization,
            queries: torch.Tensor, pad_id: int, eos_id: int, gen: torch.Generator) -> Rollout:
    """Steps 1–4 of an update: sample, postprocess, score and compute per-token KL."""
    d, p = cfg.details, cfg.ppo
    t0 = time.perf_counter()
    # 1. sample responses from the current policy at the training temperature
    out = sample(actor.lm(), queries, pad_id, eos_id, p.response_length, p.temperature, d.response_sampling, gen)
    responses = out.responses
    generation_s = time.perf_counter() - t0
    query_responses_raw = torch.cat([queries, responses], 1)
    # 2. old log-probs: from the sampling pass, or recomputed by a forward pass (details.rollout_logprobs)
    T = responses.size(1)
    if d.rollout_logprobs == "from_generation":
        logprobs, values = out.logprobs, actor.values(query_responses_raw, pad_id, T)
    elif d.rollout_logprobs == "recomputed":
        logits, values = actor(query_responses_raw, pad_id, T)
        logprobs = response_logprobs(logits, responses, p.temperature, d.temperature_in_training)
    else:
        raise ValueError(f"rollout_logprobs={d.rollout_logprobs!r}")
    ref_logits = response_logits(ref_policy, query_responses_raw, pad_id, T)
    ref_logprobs = response_logprobs(ref_logits, responses, p.temperature, d.temperature_in_training)
    # 3. truncate after the first EOS (EOS kept); score the truncated text
    post = ops.truncate_after_eos(responses, eos_id, pad_id)
    query_responses = torch.cat([queries, post], 1)
    seq_last, padding_mask, value_mask = masks_for(post, pad_id, d.score_position)
    has_eos = (post == eos_id).any(1)
    raw = norm.apply(ops.pool_reward(reward_model(query_responses, pad_id), query_responses, pad_id, d.reward_token))
    scores = ops.clip_score(ops.apply_missing_eos_penalty(raw, has_eos, p.missing_eos_score, d.missing_eos_penalty), d.reward_clipping)
    # 4. mask log-probs and values at pads; per-token KL
    logprobs = logprobs.masked_fill(padding_mask, ops.INVALID_LOGPROB)
    ref_logprobs = ref_logprobs.masked_fill(padding_mask, ops.INVALID_LOGPROB)
    values = values.masked_fill(~value_mask, 0)
    kl = ops.kl_per_token(logprobs, ref_logprobs, d.kl_estimator).masked_fill(padding_mask, 0)
    return Rollout(query_responses, post, logprobs, ref_logprobs, values, scores, raw, padding_mask, value_mask, kl, seq_last, has_eos,
                   generation_s)


def advantages_and_returns(cfg: Config, ro: Rollout, kl_coef: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Steps 5–7: per-token rewards, optional reward whitening, GAE, advantage whitening. → rewards, adv, returns."""
    d, p = cfg.details, cfg.ppo
    T = ro.responses.size(1)
    # 5. rewards: −β·KL per token plus the score at details.score_position
    rewards = ops.per_token_rewards(ro.kl, ro.scores, ops.score_index(ro.seq_last, T, d.score_position), kl_coef, d.kl_placement)
    # 6. whiten rewards (details.reward_whitening), over the positions that carry values
    rewards = ops.whiten_rewards(rewards, ro.value_mask, d.reward_whitening)
    # 7. GAE; returns before whitening; then whiten advantages over real tokens (details.advantage_whitening)
    advantages, returns = ops.gae(rewards, ro.values, p.gamma, p.lam)
    advantages = ops.whiten_advantages(advantages, ~ro.padding_mask, d.advantage_whitening)
    return rewards, advantages, returns


def ppo_losses(cfg: Config, actor: Actor, ro: Rollout, adv: torch.Tensor, returns: torch.Tensor, mb: torch.Tensor,
               pad_id: int, kl_coef: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Step 8 on one micro-batch: pg_loss + vf_coef · vf_loss (+ β·KL when details.kl_placement = loss)."""
    d, p = cfg.details, cfg.ppo
    logits, vpred = actor(ro.query_responses[mb], pad_id, ro.responses.size(1))
    new_logprobs = response_logprobs(logits, ro.responses[mb], p.temperature, d.temperature_in_training)
    new_logprobs = new_logprobs.masked_fill(ro.padding_mask[mb], ops.INVALID_LOGPROB)
    vpred = vpred.masked_fill(~ro.value_mask[mb], 0)
    pg_loss, pg_stats = ops.policy_loss(new_logprobs, ro.logprobs[mb], adv[mb], ~ro.padding_mask[mb], p.cliprange)
    vf_loss, vf_stats = ops.value_loss(vpred, ro.values[mb], returns[mb], ro.value_mask[mb], p.cliprange_value, d.value_clipping)
    kl_now = ops.kl_per_token(new_logprobs, ro.ref_logprobs[mb], d.kl_estimator)
    loss = pg_loss + p.vf_coef * vf_loss + ops.kl_loss_term(kl_now, ~ro.padding_mask[mb], kl_coef, d.kl_placement)
    stats = {"pg_loss": pg_loss.detach(), "vf_loss": vf_loss.detach(), "vf_clipfrac": vf_stats["clipfrac"], **pg_stats,
             "entropy": ops.masked_mean(ops.entropy_from_logits(logits.detach()), ~ro.padding_mask[mb])}
    return loss, stats


def train_ppo(cfg: Config, sft_dir: Path, rm_dir: Path, norm: RewardNormalization, train_queries: torch.Tensor,
              tokenizer, run_dir: Path, evaluate=None) -> dict:
    """The PPO loop. ``evaluate(actor_lm, update) -> dict`` is called every ``eval_every`` updates and at the end."""
    d, p = cfg.details, cfg.ppo
    D = dist()
    gen = seed_everything(cfg.seed + 2, D.rank)  # data order, shared by all ranks
    sample_gen = rank_generator(cfg.seed + 3, D.rank)  # sampling, per rank
    pad_id, eos_id = tokenizer.pad_token_id, tokenizer.eos_token_id
    actor = build_actor(cfg, sft_dir, rm_dir).to(D.device)
    actor.train()
    # frozen models may use the low-precision dtype (model.dtype); trained ones stay fp32
    frozen_dtype = torch.bfloat16 if cfg.model.dtype == "bfloat16" and D.device.type == "cuda" else torch.float32
    ref_policy = load_causal_lm(sft_dir, frozen_dtype).to(D.device).eval()
    reward_model = ScalarModel.load(rm_dir, frozen_dtype).to(D.device).eval()
    for m in (ref_policy, reward_model):
        m.requires_grad_(False)
    if p.frozen_offload:  # the paper at 6.9B: frozen models under ZeRO-3 with parameters offloaded to the CPU
        ref_policy, reward_model = zero3_offload(ref_policy), zero3_offload(reward_model)
    base_lr = cfg.stage_lr("ppo")
    opt = make_optimizer([q for q in actor.parameters() if q.requires_grad], base_lr, d.adam_eps)
    log = MetricsLog(run_dir / "metrics.jsonl", "ppo")
    kl_coef = p.kl_coef
    num_updates = p.num_updates
    # local_ = per rank (sfd's vocabulary): each rank rolls out and trains on its share of the global batch
    local_batch_size = p.batch_size // D.world
    local_minibatch_size = local_batch_size // p.num_minibatches
    accum = max(1, local_minibatch_size // p.micro_batch)
    # DDP averages policy and critic gradients over ranks; rollouts use the unwrapped module (same parameters)
    ddp_actor, opt = D.prepare_training(actor, opt, p.micro_batch, accum)
    sanity: dict = {}
    evals: list[dict] = []
    query_order = _query_stream(train_queries.size(0), p.batch_size, gen)
    bar = progress(num_updates, "ppo", disable=None if D.is_main else True)
    for update in range(1, num_updates + 1):
        set_lr(opt, lr_at(base_lr, update - 1, num_updates, d.lr_schedule))
        queries = train_queries[D.rank_slice(next(query_order))].to(D.device)
        t_rollout = time.perf_counter()
        # 1–4. rollout
        ro = rollout(cfg, actor, ref_policy, reward_model, norm, queries, pad_id, eos_id, sample_gen)
        t_train = time.perf_counter()
        if update == 1:
            sanity["initial_kl"] = float(ro.kl.sum(1).mean())
            sanity.update(_check_score_position(ro, d.score_position, eos_id))
        # 5–7. rewards, advantages, returns
        rewards, adv, returns = advantages_and_returns(cfg, ro, kl_coef)
        # 8. PPO epochs over minibatches (micro-batches accumulated)
        stats_acc: dict[str, list[float]] = {}
        for epoch in range(p.ppo_epochs):
            for mb_idx, mb in enumerate(minibatches(local_batch_size, local_minibatch_size, gen)):
                opt.zero_grad(set_to_none=True)
                micros = mb.chunk(accum)
                for i, micro in enumerate(micros):
                    loss, stats = ppo_losses(cfg, ddp_actor, ro, adv, returns, micro, pad_id, kl_coef)
                    check_finite(loss, "ppo", update)
                    D.backward(loss, accum, last=i == len(micros) - 1)
                    if update == 1 and epoch == 0 and mb_idx == 0 and "first_ratio" not in sanity:
                        sanity["first_ratio"] = float(stats["ratio"])
                    for k, v in stats.items():
                        stats_acc.setdefault(k, []).append(float(v))
                opt.step()
        t_done = time.perf_counter()
        # 9. log (names documented in nplus/metrics_doc.py; means over ranks) and adapt β
        mean_kl = D.mean(float(ro.kl.sum(1).mean()))
        nonscore = -kl_coef * ro.kl.sum(1) if d.kl_placement == "reward" else torch.zeros_like(ro.scores)
        row = {
            "episode": update * p.batch_size, "objective/kl": mean_kl,
            "objective/entropy": float((-ro.logprobs.masked_fill(ro.padding_mask, 0)).sum(1).mean()),
            "objective/non_score_reward": float(nonscore.mean()), "objective/scores": float(ro.scores.mean()),
            "objective/raw_scores": float(ro.raw_scores.mean()), "objective/rlhf_reward": float((ro.scores + nonscore).mean()),
            "objective/kl_coef": kl_coef, "val/num_eos": float(ro.has_eos.sum()), "val/eos_rate": float(ro.has_eos.float().mean()),
            "val/mean_length": float((ro.seq_last + 1).float().mean()),
            "val/advantage_mean": float(ops.masked_mean(adv, ~ro.padding_mask)), "val/rewards_std": float(rewards.std()),
            "lr": opt.param_groups[0]["lr"],
            # throughput (make bench): rollout = sampling + scoring passes, train = the PPO epochs
            "time/rollout_s": t_train - t_rollout, "time/generation_s": ro.generation_s, "time/train_s": t_done - t_train,
            "time/sampled_tokens": float(ro.responses.numel()),
            "time/train_tokens": float(ro.query_responses.numel() * p.ppo_epochs),
        }
        for k, v in stats_acc.items():
            prefix = {"pg_loss": "loss/policy", "vf_loss": "loss/value", "vf_clipfrac": "value/clipfrac",
                      "clipfrac": "policy/clipfrac", "approxkl": "policy/approxkl", "ratio": "val/ratio",
                      "entropy": "policy/entropy"}[k]
            row[prefix] = sum(v) / len(v)
        row = {k: (D.mean(v) if k not in ("episode", "objective/kl") else v) for k, v in row.items()}
        if D.is_main:
            log.log(update, **row)
        kl_coef = ops.next_kl_coef(kl_coef, mean_kl, p.batch_size, d.kl_controller, p.kl_target, p.kl_horizon)
        bar.update(1)
        bar.set_postfix(score=f"{row['objective/scores']:.2f}", kl=f"{mean_kl:.2f}")
        if evaluate is not None and p.eval_every and update % p.eval_every == 0 and update != num_updates:
            if D.is_main:
                e = evaluate(actor.lm(), update)
                log.log(update, episode=update * p.batch_size, **{f"eval/{k}": v for k, v in e.items() if isinstance(v, float)})
                evals.append({"update": update, **e})
            D.barrier()
    bar.close()
    sanity["first_ratio_ok"] = abs(sanity["first_ratio"] - 1.0) < SANITY_TOL
    sanity["initial_kl_ok"] = abs(sanity["initial_kl"]) < SANITY_TOL
    return {"actor": actor, "ref_policy": ref_policy, "reward_model": reward_model, "sanity": sanity, "evals": evals,
            "params": count_parameters(actor.lm()), "final_kl_coef": kl_coef}


def _query_stream(n: int, batch_size: int, gen: torch.Generator):
    """Endless seeded batches of query indices, reshuffled each pass over the data."""
    while True:
        yield from minibatches(n, batch_size, gen)


def _check_score_position(ro: Rollout, mode: str, eos_id: int) -> dict:
    """Where the score landed relative to the EOS token: +1 for eos_plus_one (when it fits), 0 for eos.

    Checked against the EOS found in the response tokens, independently of the mask bookkeeping, so pad = EOS
    (which shifts the last-real-token index) shows up here.
    """
    T = ro.responses.size(1)
    placed = ops.per_token_rewards(torch.zeros_like(ro.kl), ro.scores, ops.score_index(ro.seq_last, T, mode), 0.0, "reward")
    landed = placed.abs().argmax(1)
    eos_at = ops.first_true_indices(ro.responses == eos_id)
    want = 1 if mode == "eos_plus_one" else 0
    rows = ro.has_eos & (ro.scores != 0) & (eos_at + want < T)
    offset = (landed - eos_at)[rows]
    return {"score_position_ok": bool((offset == want).all()) and bool(rows.any()),
            "score_position_offset": float(offset.float().mean()) if bool(rows.any()) else math.nan,
            "score_position_expected_offset": float(want)}
