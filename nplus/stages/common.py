"""What every stage shares: seeding, the optimizer, batching, sampling and the metrics log."""

from __future__ import annotations

import functools
import inspect
import os
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from tqdm.auto import tqdm

from nplus import ops
from nplus.models import position_ids_from_mask
from nplus.rundir import append_jsonl


class NonFiniteLoss(RuntimeError):
    """Raised when a loss becomes NaN or inf; the runner records the run as failed."""


def seed_everything(seed: int, rank: int = 0) -> torch.Generator:
    """Seeds the global RNGs per rank (seed + rank × 100003, as sfd) and returns a *data-order* generator seeded
    identically on every rank, so that all ranks agree on each global batch and take their own slice of it."""
    s = seed + rank * 100003
    random.seed(s)
    np.random.seed(s % 2**32)
    torch.manual_seed(s)
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def rank_generator(seed: int, rank: int) -> torch.Generator:
    """A per-rank generator for sampling: ranks draw different responses for their different queries."""
    g = torch.Generator()
    g.manual_seed(seed + rank * 100003)
    return g


class Dist:
    """The data-parallel context of a stage (accelerate under `accelerate launch`, a no-op otherwise).

    global batch = micro_batch × grad_accum × processes: every rank sees the same permutation (shared seed), takes
    ``rank_slice`` of each global batch and splits it into ``grad_accum`` micro-batches; DDP averages gradients.
    """

    def __init__(self):
        from accelerate import Accelerator

        self.accelerator = Accelerator(cpu=not torch.cuda.is_available())
        self.rank, self.world = self.accelerator.process_index, self.accelerator.num_processes
        self.is_main = self.accelerator.is_main_process
        self.device = self.accelerator.device

    @property
    def deepspeed(self) -> bool:
        from accelerate.utils import DistributedType

        return self.accelerator.distributed_type == DistributedType.DEEPSPEED

    @property
    def wraps(self) -> bool:
        """Whether accelerate wraps the trained model: several processes, DeepSpeed, or mixed precision."""
        return self.world > 1 or self.deepspeed or self.accelerator.mixed_precision != "no"

    def prepare_training(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, micro_batch: int, accum: int):
        """Wrap a stage's trained model and its optimizer together (DDP, mixed precision or DeepSpeed ZeRO).

        Under DeepSpeed the engine owns accumulation and the optimizer step, so its config gets this stage's
        micro-batch and accumulation steps before the engine is built; gradient clipping stays off (0.0) unless
        the launch config sets it, as in the paper (no clipping among its hyperparameters). Plain single-process
        runs get the objects back unchanged.
        """
        if not self.wraps:
            return model, optimizer
        if self.deepspeed:
            ds = self.accelerator.state.deepspeed_plugin.deepspeed_config
            ds.update(
                train_micro_batch_size_per_gpu=micro_batch,
                gradient_accumulation_steps=accum,
                train_batch_size=micro_batch * accum * self.world,
            )
            if ds.get("gradient_clipping", "auto") == "auto":
                ds["gradient_clipping"] = 0.0
            self.accelerator.gradient_accumulation_steps = accum
        return self.accelerator.prepare(model, optimizer)

    def backward(self, loss: torch.Tensor, accum: int, last: bool) -> None:
        """Backward of one of ``accum`` micro-batches; ``last`` marks the global batch's final one.

        Gradients add up to the global batch mean: (loss / accum) per micro-batch, through the accelerator when it
        wraps (mixed-precision scaling). Under DeepSpeed the engine divides by its accumulation steps itself and
        steps the optimizer at ``last`` (the wrapped optimizer's step() is then a no-op).
        """
        if self.deepspeed:
            self.accelerator.gradient_state._set_sync_gradients(last)
            self.accelerator.backward(loss)
        elif self.wraps:
            self.accelerator.backward(loss / accum)
        else:
            (loss / accum).backward()

    def unwrap(self, model):
        return self.accelerator.unwrap_model(model) if self.wraps else model

    def rank_slice(self, idx: torch.Tensor) -> torch.Tensor:
        return idx.chunk(self.world)[self.rank]

    def mean(self, value: float) -> float:
        """The mean of a per-rank scalar over ranks (what a single process would log for the whole batch)."""
        if self.world == 1:
            return value
        return float(self.accelerator.reduce(torch.tensor([value], device=self.device), reduction="mean").item())

    def barrier(self) -> None:
        if self.world > 1:
            self.accelerator.wait_for_everyone()


FROZEN_OFFLOAD_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "ds_zero3_offload_frozen.json"


def zero3_offload(model: torch.nn.Module) -> torch.nn.Module:
    """A frozen (forward-only) model as a DeepSpeed ZeRO-3 engine with CPU parameter offload, called like the
    model itself. Written for the paper's 6.9B reference and reward models; not run on this project's CPU CI."""
    import deepspeed  # optional; run_pipeline checks that it is installed before writing anything

    engine, *_ = deepspeed.initialize(model=model, config=str(FROZEN_OFFLOAD_CONFIG))
    engine.eval()
    return engine


_DIST: Dist | None = None


def dist() -> Dist:
    """The process's Dist, created once (accelerate's state is per process)."""
    global _DIST
    if _DIST is None:
        _DIST = Dist()
    return _DIST


def make_optimizer(params, lr: float, adam_eps_mode: str) -> torch.optim.Optimizer:
    """AdamW with details.adam_eps; weight decay left at the library default (as the paper did)."""
    return torch.optim.AdamW(params, lr=lr, eps=ops.adam_eps(adam_eps_mode))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def check_finite(loss: torch.Tensor, stage: str, step: int) -> None:
    if not torch.isfinite(loss):
        raise NonFiniteLoss(f"{stage}: loss became {loss.item()} at step {step}")


def minibatches(
    n: int, size: int, generator: torch.Generator, shuffle: bool = True, drop_last: bool = True
) -> Iterator[torch.Tensor]:
    """Index batches over ``n`` rows: a fresh seeded permutation each call."""
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    stop = (n // size) * size if drop_last else n
    for start in range(0, stop, size):
        yield order[start : start + size]


def progress(total: int, desc: str, disable: bool | None = None):
    """A tqdm bar on stderr; silenced when NPLUS_PROGRESS=0 (workers) or stderr is not a terminal and CI is set."""
    if disable is None:
        disable = os.environ.get("NPLUS_PROGRESS", "1") == "0"
    return tqdm(total=total, desc=desc, disable=disable, file=sys.stderr, dynamic_ncols=True, leave=False)


class MetricsLog:
    """Appends one JSON object per step to metrics.jsonl (names documented in nplus/metrics_doc.py)."""

    def __init__(self, path: Path, stage: str):
        self.path, self.stage, self.t0 = Path(path), stage, time.time()

    def log(self, step: int, **metrics: float) -> None:
        row = {"stage": self.stage, "step": step, "time_s": round(time.time() - self.t0, 3)}
        row.update({k: float(v) for k, v in metrics.items()})
        append_jsonl(self.path, row)


@dataclass
class Samples:
    """Output of ``sample``: responses (B, T) as sampled and the log-probs of the sampling distribution."""

    responses: torch.Tensor
    logprobs: torch.Tensor


@functools.cache
def _cache_keyword(model_type: type) -> str:
    """The forward keyword of the KV cache: ``cache`` since transformers 5.2x, ``past_key_values`` before (passing the
    old name now prints a FutureWarning on every run)."""
    return "cache" if "cache" in inspect.signature(model_type.forward).parameters else "past_key_values"


def _kv_cache(out):
    """The KV cache of a forward's output under either name (reading ``.past_key_values`` logs a deprecation)."""
    cache = out.get("cache")
    return out.get("past_key_values") if cache is None else cache


@torch.no_grad()
def sample(
    model,
    queries: torch.Tensor,
    pad_id: int,
    eos_id: int,
    length: int,
    temperature: float,
    response_sampling: str,
    generator: torch.Generator,
) -> Samples:
    """Sample ``length`` tokens per query with a KV cache. (B, Lq) left-padded queries → (B, T).

    details.response_sampling: ``fixed_length_then_truncate`` (paper) keeps sampling after EOS (the caller
    truncates); ``stop_at_eos`` forces pad after a row's first EOS and stops when every row has finished.
    Written here rather than with ``generate()`` so that EOS never stops fixed-length sampling, no default
    logits processor (top-k, repetition penalty) alters the distribution, and the returned log-probs are
    exactly those of the distribution sampled from (logits / temperature).
    """
    B = queries.size(0)
    mask = queries != pad_id
    pos = position_ids_from_mask(mask)
    # logits of the last query position only: the vocabulary projection over the whole query is wasted work
    out = model(input_ids=queries, attention_mask=mask, position_ids=pos, use_cache=True, logits_to_keep=1)
    past, logits = _kv_cache(out), out.logits[:, -1]
    cache_kw = _cache_keyword(type(model))
    next_pos = pos[:, -1] + 1
    tokens, logps = [], []
    dev = queries.device
    finished = torch.zeros(B, dtype=torch.bool, device=dev)
    for t in range(length):
        logp = torch.log_softmax(logits.float() / temperature, dim=-1)
        # sampled on the CPU generator for reproducibility across devices; (B, V) probabilities are small
        tok = torch.multinomial(logp.exp().cpu(), 1, generator=generator).squeeze(1).to(dev)
        if response_sampling == "stop_at_eos":
            tok = torch.where(finished, torch.full_like(tok, pad_id), tok)
        elif response_sampling != "fixed_length_then_truncate":
            raise ValueError(f"response_sampling={response_sampling!r}")
        tokens.append(tok)
        logps.append(logp.gather(1, tok[:, None]).squeeze(1))
        finished |= tok == eos_id
        if t == length - 1 or (response_sampling == "stop_at_eos" and bool(finished.all())):
            break
        mask = torch.cat([mask, torch.ones(B, 1, dtype=torch.bool, device=dev)], dim=1)
        out = model(
            input_ids=tok[:, None],
            attention_mask=mask,
            position_ids=next_pos[:, None],
            use_cache=True,
            **{cache_kw: past},
        )
        past, logits = _kv_cache(out), out.logits[:, -1]
        next_pos = next_pos + 1
    responses = torch.stack(tokens, 1)
    logprobs = torch.stack(logps, 1)
    if responses.size(1) < length:  # stopped early: pad the rest
        extra = length - responses.size(1)
        responses = torch.cat([responses, torch.full((B, extra), pad_id, dtype=responses.dtype, device=dev)], 1)
        logprobs = torch.cat([logprobs, torch.zeros(B, extra, device=dev)], 1)
    return Samples(responses, logprobs)


def decode_responses(tokenizer, responses: torch.Tensor) -> list[str]:
    """(B, T) responses truncated after EOS → their texts, pads and EOS left out (the text judges and rules read)."""
    pad_id, eos_id = tokenizer.pad_token_id, tokenizer.eos_token_id
    return [
        tokenizer.decode([t for t in row if t not in (pad_id, eos_id)], skip_special_tokens=True)
        for row in responses.tolist()
    ]


def as_tensor(column, dtype=torch.long) -> torch.Tensor:
    return torch.tensor(np.asarray(column), dtype=dtype)


def lr_at(base_lr: float, step: int, total: int, schedule: str) -> float:
    return base_lr * ops.lr_factor(step, total, schedule)


def trim_right(ids: torch.Tensor, pad_id: int) -> torch.Tensor:
    """(B, L) right-padded → (B, L') dropping trailing columns that are pad in every row (cheaper batches)."""
    nonpad = (ids != pad_id).any(0).nonzero()
    width = int(nonpad.max()) + 1 if nonpad.numel() else 1
    return ids[:, :width]
