"""Reward model: a scalar head on the SFT trunk trained with the Bradley–Terry loss (DETAILS.md §2, 13–17).

1. SFT trunk + head (details.reward_head_init), details.dropout
2. chosen and rejected in one forward; reward read per details.reward_token; loss −log σ(r_c − r_r)
3. validation accuracy overall, by split (valid1/valid2) and by confidence
4. normalization per details.reward_normalization (paper: bias = mean score of SFT-train references)
5. sanity: scores of reference summaries left-padded vs right-padded must agree (rotary + mask invariance)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from nplus import ops
from nplus.config import Config
from nplus.evaluation.metrics import rm_accuracy_report, rm_calibration
from nplus.evaluation.probes import fact_check_accuracy, likelihood_fact_check
from nplus.models import RewardNormalization, ScalarModel, init_reward_head, load_causal_lm, load_trunk, set_dropout
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


def pair_rewards(
    rm: ScalarModel, chosen: torch.Tensor, rejected: torch.Tensor, pad_id: int, reward_token: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, L) chosen and rejected ids → (B,), (B,) rewards from one forward over the concatenated batch."""
    ids = trim_right(torch.cat([chosen, rejected], 0), pad_id)
    r = ops.pool_reward(rm(ids, pad_id), ids, pad_id, reward_token)
    return r[: chosen.size(0)], r[chosen.size(0) :]


@torch.no_grad()
def score_sequences(
    rm: ScalarModel, ids: torch.Tensor, pad_id: int, reward_token: str, batch_size: int = 128
) -> torch.Tensor:
    """(N, L) ids (any padding) → (N,) raw rewards."""
    rm.eval()
    device = next(rm.parameters()).device
    out = [
        ops.pool_reward(rm(b.to(device), pad_id), b.to(device), pad_id, reward_token).float().cpu()
        for b in ids.split(batch_size)
    ]
    return torch.cat(out) if out else torch.zeros(0)


def left_pad(ids: torch.Tensor, pad_id: int) -> torch.Tensor:
    """(N, L) right-padded → (N, L) the same tokens moved to the right end (left padding)."""
    n_real = (ids != pad_id).sum(1)
    out = torch.full_like(ids, pad_id)
    for i in range(ids.size(0)):
        k = int(n_real[i])
        out[i, ids.size(1) - k :] = ids[i, :k]
    return out


def validation_accuracy(rm, validation, max_rm_eval: int, pad_id: int, reward_token: str, gold=None):
    """Scores of the first ``max_rm_eval`` validation pairs → (chosen scores, rejected scores, accuracy report,
    accuracy against the gold judge or None): does the RM order each pair as gold does (whatever the label says)?"""
    val = validation.select(range(min(max_rm_eval, len(validation))))
    sc = score_sequences(rm, as_tensor(val["query_chosen_token"]), pad_id, reward_token)
    sr = score_sequences(rm, as_tensor(val["query_rejected_token"]), pad_id, reward_token)
    acc = rm_accuracy_report(sc.numpy(), sr.numpy(), list(val["split"]), [e["confidence"] for e in val["extra"]])
    accuracy_gold = None
    if gold is not None:
        posts = [i["post"] for i in val["info"]]
        gold_chosen = [gold.compare(p, c, r).choice == "A" for p, c, r in zip(posts, val["chosen"], val["rejected"])]
        accuracy_gold = float(np.mean([(a > b) == g for a, b, g in zip(sc.tolist(), sr.tolist(), gold_chosen)]))
    return sc, sr, acc, accuracy_gold


def fact_checks(rm, sft_dir: Path, device: torch.device, fact_check, pad_id: int, reward_token: str) -> dict:
    """The share of tldr-synth's minimal pairs (right (N, L), wrong (N, L) ids, N slots) the RM ranks right, and the
    same pairs by the SFT model's likelihood: what the RM's initial weights know, to read the former against."""
    right, wrong, slots = fact_check
    checks = fact_check_accuracy(
        score_sequences(rm, right, pad_id, reward_token).tolist(),
        score_sequences(rm, wrong, pad_id, reward_token).tolist(),
        slots,
    )
    checks["fact_check_sft_likelihood"] = likelihood_fact_check(
        load_causal_lm(sft_dir).to(device), right.to(device), wrong.to(device), pad_id
    )
    return checks


def _untrained_rm(sft_dir: Path, dropout: str, head_init: str, gen: torch.Generator) -> ScalarModel:
    """The untrained RM: the SFT trunk (dropout per the detail) and a fresh scalar head drawn from gen."""
    backbone = load_trunk(sft_dir)
    set_dropout(backbone, dropout)
    return ScalarModel(backbone, init_reward_head(backbone.config.hidden_size, head_init, gen))


def _accumulate_pairs(
    rm, D, idx: torch.Tensor, chosen_all, rejected_all, accum: int, pad_id: int, reward_token: str, step: int
) -> tuple[float, float]:
    """Backpropagate one update's Bradley–Terry loss over this process's micro-batches; → (loss, accuracy) means."""
    loss_sum, acc_sum = 0.0, 0.0
    micros = D.rank_slice(idx).chunk(accum)
    for i, micro in enumerate(micros):
        rc, rr = pair_rewards(
            rm, chosen_all[micro].to(D.device), rejected_all[micro].to(D.device), pad_id, reward_token
        )
        loss, acc = ops.bradley_terry_loss(rc, rr)
        check_finite(loss, "rm", step)
        D.backward(loss, accum, last=i == len(micros) - 1)
        loss_sum += loss.item() / accum
        acc_sum += acc.mean().item() / accum
    return loss_sum, acc_sum


def _evaluate_and_save(
    cfg: Config,
    rm,
    pref: dict,
    sft_train,
    sft_dir: Path,
    tokenizer,
    out_dir: Path,
    pad_id: int,
    step: int,
    policy_sample_fn,
    gold,
    fact_check,
) -> dict:
    """The trained RM's evaluation, normalization and saving, done once on the main process; → train_rm's result."""
    d = cfg.details
    D = dist()
    # 3. validation accuracy (and against the gold judge, the fact checks)
    sc, sr, acc, accuracy_gold = validation_accuracy(
        rm, pref["validation"], cfg.task.max_rm_eval, pad_id, d.reward_token, gold
    )
    checks = {}
    if fact_check is not None:
        checks = fact_checks(rm, sft_dir, D.device, fact_check, pad_id, d.reward_token)
    # 4. normalization from SFT reference summaries (and, for lmhp's variant, SFT policy samples)
    refs = as_tensor(sft_train.select(range(min(len(sft_train), 2000)))["query_reference_response_token"])
    ref_scores = score_sequences(rm, refs, pad_id, d.reward_token)
    policy_scores = policy_sample_fn(rm) if d.reward_normalization == "policy_gain_bias" else None
    bias, gain = ops.reward_normalization_params(d.reward_normalization, ref_scores, policy_scores)
    norm = RewardNormalization(bias=bias, gain=gain)
    # 5. padding invariance on reference summaries
    sample = refs[:64]
    diff = (
        score_sequences(rm, sample, pad_id, d.reward_token)
        - score_sequences(rm, left_pad(sample, pad_id), pad_id, d.reward_token)
    ).abs()
    rm.save(out_dir / "model")
    tokenizer.save_pretrained(out_dir / "model")
    D.barrier()
    return {
        "accuracy": acc["accuracy"],
        "accuracy_gold": accuracy_gold,
        "accuracy_valid1": acc["by_split"].get("valid1"),
        "accuracy_valid2": acc["by_split"].get("valid2"),
        "accuracy_report": acc,
        "calibration": rm_calibration(sc.numpy(), sr.numpy()),
        "reward_bias": bias,
        "reward_gain": gain,
        "reference_score_mean": float(ref_scores.mean()),
        "reference_score_mean_normalized": float(norm.apply(ref_scores).mean()),
        "padding_invariance_max_diff": float(diff.max()),
        "updates": step,
        **checks,
    }


def train_rm(
    cfg: Config,
    sft_dir: Path,
    pref: dict,
    sft_train,
    tokenizer,
    out_dir: Path,
    log_path: Path,
    policy_sample_fn=None,
    gold=None,
    fact_check=None,
) -> dict:
    """Train, evaluate, normalize and save the reward model. ``pref`` maps split name → built dataset; ``gold``
    (tldr-synth's gold judge) adds the accuracy against its verdicts on the validation pairs; ``fact_check``
    (tldr-synth: right (N, L), wrong (N, L) ids and N slots of nplus.evaluation.probes.fact_check_sequences) adds
    the share of minimal pairs it ranks right, i.e. whether it checks a summary's facts against the post."""
    d = cfg.details
    D = dist()
    gen = seed_everything(cfg.seed + 1, D.rank)
    pad_id = tokenizer.pad_token_id
    # 1. trunk + head
    rm = _untrained_rm(sft_dir, d.dropout, d.reward_head_init, gen)
    rm.to(D.device).train()
    train = pref["train"]
    chosen_all, rejected_all = as_tensor(train["query_chosen_token"]), as_tensor(train["query_rejected_token"])
    total = (chosen_all.size(0) // cfg.rm.batch_size) * cfg.rm.epochs
    base_lr = cfg.stage_lr("rm", rm.backbone.config.hidden_size)
    opt = make_optimizer(rm.parameters(), base_lr, d.adam_eps)
    accum = cfg.grad_accum("rm")
    rm, opt = D.prepare_training(rm, opt, cfg.rm.micro_batch, accum)
    log = MetricsLog(log_path, "rm")
    bar = progress(total, "rm", disable=None if D.is_main else True)
    step = 0
    # 2. Bradley–Terry training
    for _ in range(cfg.rm.epochs):
        for idx in minibatches(chosen_all.size(0), cfg.rm.batch_size, gen):
            set_lr(opt, lr_at(base_lr, step, total, "cosine"))
            opt.zero_grad(set_to_none=True)
            loss_sum, acc_sum = _accumulate_pairs(
                rm, D, idx, chosen_all, rejected_all, accum, pad_id, d.reward_token, step
            )
            opt.step()
            step += 1
            loss_sum, acc_sum = D.mean(loss_sum), D.mean(acc_sum)
            if D.is_main:
                log.log(step, **{"rm/loss": loss_sum, "rm/accuracy": acc_sum, "rm/lr": opt.param_groups[0]["lr"]})
            bar.update(1)
            bar.set_postfix(loss=f"{loss_sum:.3f}", acc=f"{acc_sum:.2f}")
    bar.close()
    rm = D.unwrap(rm)
    if not D.is_main:  # evaluation, normalization and saving happen once, on the main process
        D.barrier()
        return {}
    return _evaluate_and_save(
        cfg, rm, pref, sft_train, sft_dir, tokenizer, out_dir, pad_id, step, policy_sample_fn, gold, fact_check
    )
