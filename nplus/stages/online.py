"""The online-training framework that PPO, RLOO, REINFORCE and GRPO share (DETAILS.md §2, items 18–25).

What every online loop holds (``Online``: actor, frozen reference and reward, optimizer, generators, metrics log,
per-rank batch split) and does each update: the rollout (sample, then sfd's response processing 1–3: truncate after
EOS, score, EOS penalty; per-token KL), the epochs over minibatches of micro-batches, the metrics row, the β update
and the periodic evaluation. The algorithms differ only in their advantages and losses: nplus/stages/ppo.py,
nplus/stages/critic_free.py. DPO (nplus/stages/dpo.py) borrows the policy-only ``Actor`` and the log-prob helpers.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
import torch.nn as nn

from nplus import ops
from nplus.config import Config
from nplus.models import (
    RewardNormalization,
    ScalarModel,
    SharedTrunkPolicy,
    by_length,
    count_parameters,
    lm_logits,
    load_causal_lm,
)
from nplus.rewards import ScoreFn, TrainingReward, rm_score_fn
from nplus.stages.common import (
    MetricsLog,
    check_finite,
    dist,
    make_optimizer,
    minibatches,
    rank_generator,
    sample,
    seed_everything,
    zero3_offload,
)

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
    raw_scores: torch.Tensor  # (B,) scores of reward.source (the RM's normalized) before penalty/clipping
    padding_mask: torch.Tensor  # (B, T) True at positions after the last real token
    value_mask: torch.Tensor  # (B, T) True where values/returns are trained
    kl: torch.Tensor  # (B, T) per-token KL estimate (0 at pads)
    seq_last: torch.Tensor  # (B,) index of the last real response token
    has_eos: torch.Tensor  # (B,)
    generation_s: float = 0.0  # wall seconds of step 1 (sampling), for the throughput figures


class Actor(nn.Module):
    """Policy (+ critic) behind one interface: details.value_network picks separate or shared trunk. With neither a
    critic nor a shared trunk it is the policy alone (the critic-free algorithms and DPO): values are zeros."""

    def __init__(
        self,
        policy,
        critic: ScalarModel | None,
        shared: SharedTrunkPolicy | None,
        chunks: int = 1,
        suffix: bool = False,
    ):
        super().__init__()
        self.policy, self.critic, self.shared = policy, critic, shared
        self.chunks = chunks  # ppo.length_chunks: forward passes over rows grouped by length (models.by_length)
        self.suffix = suffix  # ppo.last_layer = response: the last layer on the kept positions (models.suffix_hidden)

    def lm(self):
        return self.shared.lm if self.shared is not None else self.policy

    def forward(
        self, query_responses: torch.Tensor, pad_id: int, response_length: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, Lq+T) → (B, T, V) logits predicting the response tokens and (B, T) values of the states before them."""
        return by_length(lambda ids: self._forward(ids, pad_id, response_length), query_responses, pad_id, self.chunks)

    def _forward(
        self, query_responses: torch.Tensor, pad_id: int, response_length: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        keep = response_length + 1
        if self.shared is not None:
            logits, values = self.shared(query_responses, pad_id, keep, self.suffix)
        elif self.critic is None:
            logits = lm_logits(self.policy, query_responses, pad_id, keep, self.suffix)
            values = torch.zeros(logits.shape[:2], device=logits.device)
        else:
            logits = lm_logits(self.policy, query_responses, pad_id, keep, self.suffix)
            values = self.critic(query_responses, pad_id, keep, self.suffix)
        return logits[:, :-1], values[:, -keep:-1]

    def values(self, query_responses: torch.Tensor, pad_id: int, response_length: int) -> torch.Tensor:
        """(B, Lq+T) → (B, T) values alone (a rollout whose old log-probs come from generation needs no logits).

        The same forward as ``forward`` (hidden states do not depend on how many logits are kept), so the values
        are bit-identical; the separate-critic case skips the policy's forward pass entirely. The shared trunk
        computes the kept positions' logits as well (one vocabulary projection of ``keep`` positions).
        """
        keep = response_length + 1
        if self.critic is None and self.shared is None:
            return torch.zeros(query_responses.size(0), response_length, device=query_responses.device)

        def values_of(ids: torch.Tensor) -> torch.Tensor:
            if self.shared is not None:
                out = self.shared(ids, pad_id, keep if self.suffix else 1, self.suffix)[1]
            else:
                out = self.critic(ids, pad_id, keep, self.suffix)
            return out[:, -keep:-1]

        return by_length(values_of, query_responses, pad_id, self.chunks)


def response_logprobs(
    logits: torch.Tensor, responses: torch.Tensor, temperature: float, temperature_in_training: str
) -> torch.Tensor:
    """(B, T, V) logits predicting the response tokens → (B, T) log-probs of those tokens."""
    return ops.logprobs_of(ops.training_logits(logits, temperature, temperature_in_training), responses)


def response_logits(
    ref_policy, query_responses: torch.Tensor, pad_id: int, response_length: int, chunks: int = 1, suffix: bool = False
) -> torch.Tensor:
    """(B, Lq+T) → (B, T, V) logits of a plain causal LM for the response positions (``chunks``: models.by_length;
    ``suffix``: ppo.last_layer = response, models.suffix_hidden)."""
    return by_length(
        lambda ids: lm_logits(ref_policy, ids, pad_id, response_length + 1, suffix)[:, :-1],
        query_responses,
        pad_id,
        chunks,
    )


def masks_for(
    responses: torch.Tensor, pad_id: int, score_position: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
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
def rollout(
    cfg: Config,
    actor: Actor,
    ref_policy,
    score_fn: ScoreFn,
    queries: torch.Tensor,
    posts: Sequence[str],
    pad_id: int,
    eos_id: int,
    gen: torch.Generator,
    kl_estimator: str | None = None,
) -> Rollout:
    """The rollout of an update, up to sfd's step 4: sample, old and reference log-probs, response processing 1–3
    (truncate, score with ``score_fn``: reward.source, given the queries' posts as text; EOS penalty), masks and
    per-token KL (``kl_estimator``: the algorithm's estimator, details.kl_estimator unless given)."""
    d, p = cfg.details, cfg.ppo
    t0 = time.perf_counter()
    # sample responses from the current policy at the training temperature
    out = sample(actor.lm(), queries, pad_id, eos_id, p.response_length, p.temperature, d.response_sampling, gen)
    responses = out.responses
    generation_s = time.perf_counter() - t0
    query_responses_raw = torch.cat([queries, responses], 1)
    # old log-probs: from the sampling pass, or recomputed by a forward pass (details.rollout_logprobs); values
    T = responses.size(1)
    if d.rollout_logprobs == "from_generation":
        logprobs, values = out.logprobs, actor.values(query_responses_raw, pad_id, T)
    elif d.rollout_logprobs == "recomputed":
        logits, values = actor(query_responses_raw, pad_id, T)
        logprobs = response_logprobs(logits, responses, p.temperature, d.temperature_in_training)
    else:
        raise ValueError(f"rollout_logprobs={d.rollout_logprobs!r}")
    ref_logits = response_logits(ref_policy, query_responses_raw, pad_id, T, p.length_chunks, p.last_layer_suffix)
    ref_logprobs = response_logprobs(ref_logits, responses, p.temperature, d.temperature_in_training)
    # Response Processing 1. truncate after the first EOS (EOS kept)
    post = ops.truncate_after_eos(responses, eos_id, pad_id)
    query_responses = torch.cat([queries, post], 1)
    seq_last, padding_mask, value_mask = masks_for(post, pad_id, d.score_position)
    has_eos = (post == eos_id).any(1)
    # Response Processing 2. score the truncated text
    raw = score_fn(queries, post, posts)
    # Response Processing 3. a response without EOS gets the penalty (details.missing_eos_penalty); clipping
    scores = ops.clip_score(
        ops.apply_missing_eos_penalty(raw, has_eos, p.missing_eos_score, d.missing_eos_penalty), d.reward_clipping
    )
    # mask log-probs and values at pads; the per-token KL (sfd computes it at the start of step 4)
    logprobs = logprobs.masked_fill(padding_mask, ops.INVALID_LOGPROB)
    ref_logprobs = ref_logprobs.masked_fill(padding_mask, ops.INVALID_LOGPROB)
    values = values.masked_fill(~value_mask, 0)
    kl = ops.kl_per_token(logprobs, ref_logprobs, kl_estimator or d.kl_estimator).masked_fill(padding_mask, 0)
    return Rollout(
        query_responses,
        post,
        logprobs,
        ref_logprobs,
        values,
        scores,
        raw,
        padding_mask,
        value_mask,
        kl,
        seq_last,
        has_eos,
        generation_s,
    )


def rollout_logprobs_now(cfg: Config, logits: torch.Tensor, ro: Rollout, mb: torch.Tensor) -> torch.Tensor:
    """(b, T, V) logits of the policy being trained on micro-batch ``mb`` → (b, T) log-probs of the rollout's
    tokens, with the sampling temperature as details.temperature_in_training says and pads set to INVALID_LOGPROB
    (every online loss reads them this one way, so the ratio and the KL always compare like with like)."""
    new_logprobs = response_logprobs(logits, ro.responses[mb], cfg.ppo.temperature, cfg.details.temperature_in_training)
    return new_logprobs.masked_fill(ro.padding_mask[mb], ops.INVALID_LOGPROB)


def load_frozen(cfg: Config, sft_dir: Path, rm_dir: Path, device: torch.device, with_rm: bool = True):
    """The frozen reference policy (SFT) and reward model (None unless ``with_rm``), in the low-precision dtype
    when model.dtype asks for it on a GPU (trained models stay fp32); under ZeRO-3 CPU offload when
    ppo.frozen_offload is set."""
    frozen_dtype = torch.bfloat16 if cfg.model.dtype == "bfloat16" and device.type == "cuda" else torch.float32
    frozen = [load_causal_lm(sft_dir, frozen_dtype).to(device).eval()]
    if with_rm:
        frozen.append(ScalarModel.load(rm_dir, frozen_dtype).to(device).eval())
    for m in frozen:
        m.requires_grad_(False)
    if cfg.ppo.frozen_offload:  # the paper at 6.9B: frozen models under ZeRO-3 with parameters offloaded to the CPU
        frozen = [zero3_offload(m) for m in frozen]
    return frozen[0], (frozen[1] if with_rm else None)


@dataclass
class Online:
    """What an online loop (PPO, RLOO, REINFORCE, GRPO) holds besides its rollouts: models, optimizer, generators,
    the metrics log and the per-rank batch split."""

    cfg: Config
    actor: Actor
    ddp_actor: nn.Module  # the actor as wrapped for training (DDP / DeepSpeed); rollouts use ``actor``
    ref_policy: nn.Module
    score: ScoreFn  # reward.source
    posts: Sequence[str]  # the training queries' posts as text (what a text reward reads), aligned with them, or ()
    opt: torch.optim.Optimizer
    base_lr: float
    gen: torch.Generator  # data order, shared by all ranks
    sample_gen: torch.Generator  # sampling, per rank
    log: MetricsLog
    local_batch_size: int
    local_minibatch_size: int
    accum: int

    def posts_of(self, rows: torch.Tensor) -> list[str]:
        """The posts of the training queries ``rows`` (empty strings when no text reward reads them)."""
        return [self.posts[i] for i in rows.tolist()] if self.posts else [""] * rows.numel()


def start_online(
    cfg: Config,
    make_actor,
    sft_dir: Path,
    rm_dir: Path,
    run_dir: Path,
    norm: RewardNormalization,
    reward: TrainingReward | None,
    pad_id: int,
) -> Online:
    """Seeds, then the actor (``make_actor()``: fresh heads draw from the seeded global RNG), the frozen models,
    the score function (the frozen RM with ``norm`` unless ``reward`` gives a text score), the optimizer over the
    actor's trainable parameters and the data-parallel wrap."""
    D, p = dist(), cfg.ppo
    gen = seed_everything(cfg.seed + 2, D.rank)
    sample_gen = rank_generator(cfg.seed + 3, D.rank)
    actor = make_actor().to(D.device)
    actor.train()
    reward = reward or TrainingReward()  # the learned RM, which reads no posts
    ref_policy, reward_model = load_frozen(cfg, sft_dir, rm_dir, D.device, with_rm=reward.score is None)
    score = reward.score or rm_score_fn(
        reward_model,
        norm.bias,
        norm.gain,
        pad_id,
        cfg.details.reward_token,
        cfg.ppo.length_chunks,
        cfg.ppo.last_layer_suffix,
    )
    base_lr = cfg.stage_lr("ppo", ref_policy.config.hidden_size)
    opt = make_optimizer([q for q in actor.parameters() if q.requires_grad], base_lr, cfg.details.adam_eps)
    # local_ = per rank (sfd's vocabulary): each rank rolls out and trains on its share of the global batch
    local_batch_size = p.batch_size // D.world
    local_minibatch_size = local_batch_size // p.num_minibatches
    accum = max(1, local_minibatch_size // p.micro_batch)
    # DDP averages the trained models' gradients over ranks; rollouts use the unwrapped module (same parameters)
    ddp_actor, opt = D.prepare_training(actor, opt, p.micro_batch, accum)
    # the policy-optimization stage's namespace, whatever the algorithm
    log = MetricsLog(run_dir / "metrics.jsonl", "ppo")
    return Online(
        cfg,
        actor,
        ddp_actor,
        ref_policy,
        score,
        reward.posts,
        opt,
        base_lr,
        gen,
        sample_gen,
        log,
        local_batch_size,
        local_minibatch_size,
        accum,
    )


def end_update(
    o: Online, update: int, row: dict[str, float], kl_coef: float, bar, evaluate, evals: list[dict]
) -> float:
    """Log the update's row (means over ranks), adapt β (details.kl_controller), evaluate when due; returns β."""
    d, p = o.cfg.details, o.cfg.ppo
    mean_kl = log_update(o.log, update, row)
    kl_coef = ops.next_kl_coef(kl_coef, mean_kl, p.batch_size, d.kl_controller, p.kl_target, p.kl_horizon)
    bar.update(1)
    bar.set_postfix(score=f"{row['objective/scores']:.2f}", kl=f"{mean_kl:.2f}")
    periodic_eval(evaluate, o.actor.lm(), update, p.num_updates, p, o.log, evals)
    return kl_coef


def finish_online(o: Online, sanity: dict, evals: list[dict], kl_coef: float) -> dict:
    """The sanity verdicts (ratio 1 and KL 0 at the first update) and what the pipeline reads from a loop."""
    sanity["first_ratio_ok"] = abs(sanity["first_ratio"] - 1.0) < SANITY_TOL
    sanity["initial_kl_ok"] = abs(sanity["initial_kl"]) < SANITY_TOL
    return {
        "actor": o.actor,
        "ref_policy": o.ref_policy,
        "sanity": sanity,
        "evals": evals,
        "params": count_parameters(o.actor.lm()),
        "final_kl_coef": kl_coef,
    }


def train_epochs(
    loss_fn,
    opt: torch.optim.Optimizer,
    epochs: int,
    local_batch_size: int,
    local_minibatch_size: int,
    accum: int,
    gen: torch.Generator,
    where: tuple[str, int],
    sanity: dict,
) -> dict[str, list[float]]:
    """``epochs`` passes over a fresh permutation of the local rollout batch: one optimizer step per minibatch,
    accumulated over ``accum`` micro-batches. ``loss_fn(indices) -> (loss, stats)``; returns every micro-batch's
    stats. The first micro-batch's policy ratio of the first update goes to ``sanity["first_ratio"]``."""
    D = dist()
    stage, update = where
    stats_acc: dict[str, list[float]] = {}
    for epoch in range(epochs):
        for mb_idx, mb in enumerate(minibatches(local_batch_size, local_minibatch_size, gen)):
            opt.zero_grad(set_to_none=True)
            micros = mb.chunk(accum)
            for i, micro in enumerate(micros):
                loss, stats = loss_fn(micro)
                check_finite(loss, stage, update)
                D.backward(loss, accum, last=i == len(micros) - 1)
                if update == 1 and epoch == 0 and mb_idx == 0 and "first_ratio" not in sanity:
                    sanity["first_ratio"] = float(stats["ratio"])
                for k, v in stats.items():
                    stats_acc.setdefault(k, []).append(float(v))
            opt.step()
    return stats_acc


# loss statistics → metric names (nplus/metrics_doc.py)
STAT_NAMES = {
    "pg_loss": "loss/policy",
    "vf_loss": "loss/value",
    "vf_clipfrac": "value/clipfrac",
    "clipfrac": "policy/clipfrac",
    "approxkl": "policy/approxkl",
    "ratio": "val/ratio",
    "entropy": "policy/entropy",
}


def rollout_metrics(
    ro: Rollout,
    kl_coef: float,
    kl_placement: str,
    adv: torch.Tensor,
    episode: int,
    lr: float,
    times: tuple[float, float, float],
    epochs: int,
    stats_acc: dict[str, list[float]],
) -> dict[str, float]:
    """One update's metrics row shared by every online algorithm (rollout statistics, losses, throughput)."""
    t_rollout, t_train, t_done = times
    nonscore = -kl_coef * ro.kl.sum(1) if kl_placement == "reward" else torch.zeros_like(ro.scores)
    row = {
        "episode": episode,
        "objective/kl": float(ro.kl.sum(1).mean()),
        "objective/entropy": float((-ro.logprobs.masked_fill(ro.padding_mask, 0)).sum(1).mean()),
        "objective/non_score_reward": float(nonscore.mean()),
        "objective/scores": float(ro.scores.mean()),
        "objective/raw_scores": float(ro.raw_scores.mean()),
        "objective/rlhf_reward": float((ro.scores + nonscore).mean()),
        "objective/kl_coef": kl_coef,
        "val/num_eos": float(ro.has_eos.sum()),
        "val/eos_rate": float(ro.has_eos.float().mean()),
        "val/mean_length": float((ro.seq_last + 1).float().mean()),
        "val/advantage_mean": float(ops.masked_mean(adv, ~ro.padding_mask)),
        "lr": lr,
        # throughput (make bench): rollout = sampling + scoring passes, train = the optimization epochs
        "time/rollout_s": t_train - t_rollout,
        "time/generation_s": ro.generation_s,
        "time/train_s": t_done - t_train,
        "time/sampled_tokens": float(ro.responses.numel()),
        "time/train_tokens": float(ro.query_responses.numel() * epochs),
    }
    for k, v in stats_acc.items():
        row[STAT_NAMES[k]] = sum(v) / len(v)
    return row


def log_update(log: MetricsLog, update: int, row: dict[str, float]) -> float:
    """Average the row over ranks (the KL first: the controller needs the global value), write it on the main
    process; returns the mean KL."""
    D = dist()
    row["objective/kl"] = D.mean(row["objective/kl"])
    row.update({k: D.mean(v) for k, v in row.items() if k not in ("episode", "objective/kl")})
    if D.is_main:
        log.log(update, **row)
    return row["objective/kl"]


def periodic_eval(evaluate, policy, update: int, num_updates: int, p, log: MetricsLog, evals: list[dict]) -> None:
    """Evaluate every ``p.eval_every`` updates (the final evaluation is the pipeline's), on the main process."""
    D = dist()
    if evaluate is not None and p.eval_every and update % p.eval_every == 0 and update != num_updates:
        if D.is_main:
            e = evaluate(policy, update)
            log.log(
                update, episode=update * p.batch_size, **{f"eval/{k}": v for k, v in e.items() if isinstance(v, float)}
            )
            evals.append({"update": update, **e})
        D.barrier()


def query_stream(n: int, batch_size: int, gen: torch.Generator):
    """Endless seeded batches of query indices, reshuffled each pass over the data."""
    while True:
        yield from minibatches(n, batch_size, gen)
