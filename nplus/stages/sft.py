"""Supervised fine-tuning on (query, reference summary) pairs (DETAILS.md §2, item 12).

1. load the base model, apply details.dropout
2. one optimizer (AdamW, details.adam_eps), learning rate by details.learning_rate, cosine decay to 0
3. next-token loss over details.sft_loss_tokens of query + reference (pads never count)
4. save the policy (safetensors)
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from nplus import ops
from nplus.config import Config
from nplus.models import count_parameters, lm_logits, load_causal_lm, resize_for_tokenizer, set_dropout
from nplus.rundir import fault_point
from nplus.stages.common import (
    MetricsLog,
    as_tensor,
    check_finite,
    dist,
    lr_at,
    make_optimizer,
    minibatches,
    progress,
    seed_everything,
    set_lr,
    trim_right,
)


def sft_step_loss(model, ids: torch.Tensor, query_lengths: torch.Tensor, pad_id: int, loss_tokens: str) -> torch.Tensor:
    """Mean next-token cross-entropy. (B, L) right-padded query+response ids → scalar."""
    logits = lm_logits(model, ids, pad_id)[:, :-1]  # (B, L-1, V) predicts ids[:, 1:]
    targets = ids[:, 1:]
    mask = ops.sft_loss_mask(ids != pad_id, query_lengths, loss_tokens)[:, 1:]  # trained target positions
    nll = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), targets.reshape(-1), reduction="none")
    return ops.masked_mean(nll.view_as(targets), mask)


def train_sft(cfg: Config, base_dir: Path, train_ds, tokenizer, out_dir: Path, log_path: Path) -> dict:
    """Train and save the SFT policy into ``out_dir``; returns training aggregates."""
    d = cfg.details
    D = dist()
    gen = seed_everything(cfg.seed, D.rank)
    pad_id = tokenizer.pad_token_id
    # 1. base model (dropout detail applies from here on; the base pretraining kept the config's dropout)
    model = load_causal_lm(base_dir)
    resize_for_tokenizer(model, len(tokenizer))
    set_dropout(model, d.dropout)
    model.to(D.device).train()
    # 2. optimizer and schedule; the model and optimizer are wrapped together (DDP / DeepSpeed under accelerate)
    ids_all = as_tensor(train_ds["query_reference_response_token"])
    qlen_all = as_tensor(train_ds["query_token_len"])
    steps_per_epoch = ids_all.size(0) // cfg.sft.batch_size
    total = steps_per_epoch * cfg.sft.epochs
    base_lr = cfg.stage_lr("sft", model.config.hidden_size)
    opt = make_optimizer(model.parameters(), base_lr, d.adam_eps)
    accum = cfg.grad_accum("sft")
    model, opt = D.prepare_training(model, opt, cfg.sft.micro_batch, accum)
    log = MetricsLog(log_path, "sft")
    bar = progress(total, "sft", disable=None if D.is_main else True)
    step = 0
    losses = []
    # 3. epochs of shuffled batches; each batch = accum micro-batches
    for _ in range(cfg.sft.epochs):
        for idx in minibatches(ids_all.size(0), cfg.sft.batch_size, gen):
            set_lr(opt, lr_at(base_lr, step, total, "cosine"))
            opt.zero_grad(set_to_none=True)
            batch_loss = 0.0
            micros = D.rank_slice(idx).chunk(accum)
            for i, micro in enumerate(micros):
                ids = trim_right(ids_all[micro], pad_id).to(D.device)
                loss = sft_step_loss(model, ids, qlen_all[micro].to(D.device), pad_id, d.sft_loss_tokens)
                check_finite(loss, "sft", step)
                D.backward(loss, accum, last=i == len(micros) - 1)
                batch_loss += loss.item() / accum
            opt.step()
            step += 1
            batch_loss = D.mean(batch_loss)
            losses.append(batch_loss)
            if D.is_main:
                log.log(step, **{"sft/loss": batch_loss, "sft/lr": opt.param_groups[0]["lr"]})
            bar.update(1)
            bar.set_postfix(loss=f"{batch_loss:.3f}")
    bar.close()
    # 4. save (one writer)
    model = D.unwrap(model)
    if D.is_main:
        model.save_pretrained(out_dir / "model", safe_serialization=True)
        fault_point("checkpoint")  # the kill -9 campaign dies here: weights written, tokenizer and DONE not
        tokenizer.save_pretrained(out_dir / "model")
    D.barrier()
    tail = losses[-max(1, len(losses) // 10) :]
    return {"train_loss": sum(tail) / len(tail), "updates": step, "params": count_parameters(model)}
