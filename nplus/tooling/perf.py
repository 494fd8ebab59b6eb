"""Throughput of one PPO update on random-weight models: FLOP formulas, phase timing, cost tables.

Used by `make bench` (nplus/tooling/bench.py) and `make bench-gpu` (nplus/tooling/bench_gpu.py); no figure here is
asserted by
a test. Shapes: B = rollouts, Lq = query tokens (left-padded), T = response tokens, L = Lq + T, h = hidden size,
n = layers, V = vocabulary, f = FFN width.

FLOP convention (as in the Megatron / PaLM MFU papers): 2 FLOPs per multiply-add of every matmul; a backward pass
costs twice its forward; attention counts the dense L × L score and value products that the (masked) SDPA kernel
computes, not only the causal half; layer norms, softmax, GELU and the optimizer are not counted.
"""

from __future__ import annotations

import copy
import gc
import resource
import statistics
import time
from dataclasses import dataclass

import torch

from nplus.models import LADDER, ScalarModel, ladder_config, set_dropout
from nplus.presets import preset
from nplus.rewards import rm_score_fn
from nplus.stages.common import make_optimizer, minibatches
from nplus.stages.online import Actor, rollout
from nplus.stages.ppo import advantages_and_returns, ppo_losses


@dataclass(frozen=True)
class Shape:
    """The matmul-relevant shape of a GPT-NeoX model."""

    hidden: int
    layers: int
    vocab: int
    ffn: int

    @classmethod
    def of(cls, config) -> "Shape":
        return cls(config.hidden_size, config.num_hidden_layers, config.vocab_size, config.intermediate_size)


def trunk_flops(s: Shape, batch: int, query: int, new: int) -> float:
    """FLOPs of one trunk forward over ``new`` tokens per row that attend to ``query + new`` keys (a KV cache
    holding ``query`` earlier tokens; query = 0 for a plain forward). Per layer and token: QKV 3h², output h²,
    FFN 2hf weights; attention 2 · keys · h for the scores and again for the values."""
    weights = 4 * s.hidden**2 + 2 * s.hidden * s.ffn
    keys = query + new
    return 2.0 * batch * new * s.layers * (weights + 2 * keys * s.hidden)


def suffix_trunk_flops(s: Shape, batch: int, length: int, keep: int) -> float:
    """FLOPs of a plain forward over ``length`` tokens whose last layer runs on the last ``keep`` positions only
    (``models.suffix_hidden``): the layers below in full; in the last, QKV for every position, then the attention
    of ``keep`` queries over ``length`` keys, the output projection and the FFN for ``keep`` positions."""
    below = trunk_flops(Shape(s.hidden, s.layers - 1, s.vocab, s.ffn), batch, 0, length)
    last = length * 3 * s.hidden**2 + keep * (s.hidden**2 + 2 * s.hidden * s.ffn + 2 * length * s.hidden)
    return below + 2.0 * batch * last


def head_flops(s: Shape, batch: int, positions: int) -> float:
    """FLOPs of the vocabulary projection at ``positions`` positions per row."""
    return 2.0 * batch * positions * s.hidden * s.vocab


def generation_flops(s: Shape, batch: int, query: int, response: int) -> float:
    """Sampling ``response`` tokens with a KV cache: the query prefill (logits of its last position only), then
    response − 1 single-token steps, each attending to everything before it."""
    total = trunk_flops(s, batch, 0, query) + head_flops(s, batch, 1)
    for t in range(1, response):
        total += trunk_flops(s, batch, query + t - 1, 1) + head_flops(s, batch, 1)
    return total


def scoring_flops(s: Shape, batch: int, query: int, response: int) -> float:
    """The rollout's forward passes over (B, L) after sampling, with old log-probs from generation (the paper):
    critic values (trunk + a scalar head), reference log-probs (logits for T + 1 positions) and the reward model
    (its EOS lies in the response), each with the last layer on the T + 1 response positions."""
    L = query + response
    return 3 * suffix_trunk_flops(s, batch, L, response + 1) + head_flops(s, batch, response + 1)


def training_flops(s: Shape, batch: int, query: int, response: int, epochs: int) -> float:
    """PPO epochs: policy (logits for T + 1 positions) and separate critic, their last layer on those positions,
    forward and backward (3× forward)."""
    L = query + response
    forward = 2 * suffix_trunk_flops(s, batch, L, response + 1) + head_flops(s, batch, response + 1)
    return 3.0 * forward * epochs


def phase_flops(s: Shape, batch: int, query: int, response: int, epochs: int) -> dict[str, float]:
    return {
        "generation": generation_flops(s, batch, query, response),
        "scoring": scoring_flops(s, batch, query, response),
        "training": training_flops(s, batch, query, response, epochs),
    }


def matmul_peak_flops(
    n: int = 2048, repeats: int = 3, device: str = "cpu", dtype: torch.dtype = torch.float32
) -> float:
    """Measured peak of this machine: the best FLOP/s of an n × n × n torch.matmul over ``repeats`` runs."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b  # warm-up
    best = float("inf")
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        a @ b
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n**3 / best


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


# ---- random-weight models and queries ----------------------------------------------------------------------------

PAD_ID, EOS_ID = 1, 0


def random_models(config, seed: int = 0):
    """(policy, ref_policy, reward_model, critic) with random weights from a GPTNeoXConfig; dropout off.

    The reference starts as a copy of the policy and the critic as a copy of the reward model, as in the paper's
    initialization, so the first-minibatch ratio is 1 here as well."""
    from transformers import GPTNeoXForCausalLM, GPTNeoXModel

    torch.manual_seed(seed)
    policy = set_dropout(GPTNeoXForCausalLM(config), "disabled")
    reward_model = ScalarModel(set_dropout(GPTNeoXModel(config), "disabled"))
    return policy, copy.deepcopy(policy).eval(), reward_model.eval(), copy.deepcopy(reward_model)


def ladder_models(rung: str, vocab: int = 1750, max_positions: int = 256, seed: int = 0):
    return random_models(ladder_config(rung, vocab, max_positions, EOS_ID, PAD_ID), seed)


def random_queries(batch: int, query: int, vocab: int, seed: int = 0) -> torch.Tensor:
    """(B, Lq) left-padded random token ids; real lengths uniform in [Lq/2, Lq]."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, vocab, (batch, query), generator=g)
    lengths = torch.randint(query // 2, query + 1, (batch,), generator=g)
    return ids.masked_fill(torch.arange(query)[None, :] < (query - lengths)[:, None], PAD_ID)


# ---- one PPO update, timed per phase --------------------------------------------------------------------------


def time_update(cfg, models, queries: torch.Tensor, autocast_dtype: torch.dtype | None = None) -> dict[str, float]:
    """Run one PPO update (rollout, advantages, cfg.ppo.ppo_epochs × minibatches) → seconds per phase.

    ``models`` = (policy, ref_policy, reward_model, critic) on the queries' device; the trained models are
    updated in place. ``autocast_dtype`` (CUDA) runs the trained models' forward passes under autocast.
    """
    p, dev = cfg.ppo, queries.device
    policy, ref_policy, reward_model, critic = models
    actor = Actor(policy, critic, None, p.length_chunks, p.last_layer_suffix).train()
    opt = make_optimizer(
        [q for q in actor.parameters() if q.requires_grad],
        cfg.stage_lr("ppo", policy.config.hidden_size),
        cfg.details.adam_eps,
    )
    gen, sample_gen = torch.Generator().manual_seed(cfg.seed + 2), torch.Generator().manual_seed(cfg.seed + 3)
    autocast = (
        torch.autocast(dev.type, dtype=autocast_dtype)
        if autocast_dtype is not None
        else torch.autocast(dev.type, enabled=False)
    )
    _sync(dev)
    t0 = time.perf_counter()
    with autocast:
        score = rm_score_fn(
            reward_model, 0.0, 1.0, PAD_ID, cfg.details.reward_token, p.length_chunks, p.last_layer_suffix
        )
        ro = rollout(cfg, actor, ref_policy, score, queries, [""] * queries.size(0), PAD_ID, EOS_ID, sample_gen)
    _sync(dev)
    t1 = time.perf_counter()
    _, adv, returns = advantages_and_returns(cfg, ro, p.kl_coef)
    B = queries.size(0)
    for _ in range(p.ppo_epochs):
        for mb in minibatches(B, B // p.num_minibatches, gen):
            opt.zero_grad(set_to_none=True)
            for micro in mb.split(p.micro_batch):
                with autocast:
                    loss, _ = ppo_losses(cfg, actor, ro, adv, returns, micro, PAD_ID, p.kl_coef)
                (loss * micro.numel() / mb.numel()).backward()
            opt.step()
    _sync(dev)
    t2 = time.perf_counter()
    return {"generation": ro.generation_s, "scoring": t1 - t0 - ro.generation_s, "training": t2 - t1}


def current_rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def peak_rss_mib() -> float:
    """The process's peak RSS (Linux updates ru_maxrss lazily, so it can briefly trail the current RSS)."""
    return max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, current_rss_mib())


def cost_row(
    rung: str, batch: int, query: int, response: int, epochs: int, vocab: int = 1750, repeats: int = 1
) -> dict:
    """Episodes/s and memory of one PPO update at (rung, batch) with random weights (median over ``repeats``)."""
    from dataclasses import replace

    base = preset("demo", 1)
    cfg = replace(
        base,
        ppo=replace(
            base.ppo,
            batch_size=batch,
            micro_batch=batch,
            num_minibatches=1,
            ppo_epochs=epochs,
            response_length=response,
        ),
    )
    queries = random_queries(batch, query, vocab)
    rss0, times = current_rss_mib(), []
    for r in range(repeats):
        models = ladder_models(rung, vocab, query + response + 8, seed=r)
        t = time_update(cfg, models, queries)
        times.append(sum(t.values()))
        del models
        gc.collect()
    seconds = statistics.median(times)
    return {
        "rung": rung,
        "batch": batch,
        "update_s": round(seconds, 3),
        "episodes_per_s": round(batch / seconds, 1),
        "peak_rss_mib": round(peak_rss_mib(), 1),
        "rss_before_mib": round(rss0, 1),
    }


def _cost_row_star(args: tuple) -> dict:
    import torch as _torch

    _torch.set_num_threads(args[-1])
    return cost_row(*args[:-1])


def cost_table(
    rungs=("nano", "tiny", "xs"),
    batches=(16, 32, 64),
    query: int = 160,
    response: int = 40,
    epochs: int = 4,
    vocab: int = 1750,
    repeats: int = 1,
    isolate: bool = True,
) -> list[dict]:
    """One row per (rung, batch). ``isolate`` runs each in a fresh spawned process so that its peak RSS is its
    own (ru_maxrss never decreases within a process)."""
    jobs = [
        (rung, b, query, response, epochs, vocab, repeats, torch.get_num_threads()) for rung in rungs for b in batches
    ]
    if not isolate:
        return [_cost_row_star(j) for j in jobs]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    rows = []
    for job in jobs:  # one process at a time: never two heavy processes at once
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            rows.append(pool.submit(_cost_row_star, job).result())
    return rows


def format_table(rows: list[dict]) -> str:
    """Rows of equal keys → an aligned plain-text table."""
    if not rows:
        return ""
    keys = list(rows[0])
    width = {k: max(len(k), *(len(str(r[k])) for r in rows)) for k in keys}
    lines = ["  ".join(k.rjust(width[k]) for k in keys)]
    lines += ["  ".join(str(r[k]).rjust(width[k]) for k in keys) for r in rows]
    return "\n".join(lines)


def ladder_shape(rung: str, vocab: int = 1750) -> Shape:
    hidden, layers, _ = LADDER[rung]
    return Shape(hidden, layers, vocab, 4 * hidden)
