"""Direct preference optimization (Rafailov et al. 2023): offline, on the training comparisons, from the SFT policy.

1. policy and reference from the SFT model (details.dropout), the reference frozen in the forward passes
2. each batch: query + chosen and query + rejected in one forward of the policy and one of the reference;
   summed response log-probs (temperature 1: nothing is sampled)
3. loss details.dpo_loss on β·(log-ratio margin); the learning rate per details.lr_schedule
4. reference update per details.dpo_reference (frozen, or TR-DPO's soft sync every dpo.ref_sync_steps)
5. implicit-reward accuracy on the validation comparisons: the DPO policy read as a reward model (N+ paper: 0.621
   at 1B against the RM's 0.629)

The reward model is not used for training; the pipeline still scores DPO's samples with it, so the ppo.* summary
fields mean what they mean for the online algorithms.
"""

from __future__ import annotations

from pathlib import Path

import torch

from nplus import objectives
from nplus.config import Config
from nplus.evaluation.metrics import rm_accuracy_report
from nplus.models import count_parameters, load_causal_lm, set_dropout
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
)
from nplus.stages.online import SANITY_TOL, Actor, response_logits, response_logprobs


def pair_inputs(
    query_tokens: torch.Tensor, chosen: torch.Tensor, rejected: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, Lq) padded queries, (B, R) right-padded chosen and rejected responses → (2B, Lq+R) query+response ids
    (chosen rows first) and (2B, R) the responses alone."""
    responses = torch.cat([chosen, rejected], 0)
    return torch.cat([query_tokens.repeat(2, 1), responses], 1), responses


def pair_logprobs(logits: torch.Tensor, responses: torch.Tensor, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(2B, R, V) logits predicting the responses, (2B, R) responses → (B,), (B,) summed log-probs of the chosen
    and rejected responses (pads excluded; temperature 1, nothing is sampled)."""
    token_logprobs = response_logprobs(logits, responses, 1.0, "off")
    seq = objectives.sequence_logprobs(token_logprobs, responses != pad_id)
    half = responses.size(0) // 2
    return seq[:half], seq[half:]


@torch.no_grad()
def update_reference(mode: str, ref, policy, step: int, sync_steps: int, alpha: float) -> bool:
    """details.dpo_reference after optimizer step ``step``: frozen leaves the SFT reference (DPO); synced sets
    ref ← α·π + (1 − α)·ref every ``sync_steps`` steps (TR-DPO; TRL's sync_ref_model). Returns whether it moved."""
    if mode == "frozen":
        return False
    if mode != "synced":
        raise ValueError(f"dpo_reference={mode!r}")
    if step % sync_steps:
        return False
    for r, q in zip(ref.parameters(), policy.parameters()):
        r.mul_(1.0 - alpha).add_(q.detach().to(r.dtype), alpha=alpha)
    return True


@torch.no_grad()
def implicit_reward_accuracy(policy, ref, val, beta: float, pad_id: int, batch_size: int = 64) -> dict:
    """The DPO policy as a reward model on validation comparisons: accuracy of β·log(π/π_ref)(chosen) >
    (rejected), overall and by split (valid1/valid2), as the RM's accuracy is reported."""
    was_training = policy.training
    policy.eval()
    device = next(policy.parameters()).device
    q, c, r = (as_tensor(val[col]) for col in ("query_token", "chosen_token", "rejected_token"))
    chosen_rewards, rejected_rewards = [], []
    for start in range(0, q.size(0), batch_size):
        qr, resp = pair_inputs(*(t[start : start + batch_size].to(device) for t in (q, c, r)))
        pc, pr = pair_logprobs(response_logits(policy, qr, pad_id, resp.size(1)), resp, pad_id)
        rc, rr = pair_logprobs(response_logits(ref, qr, pad_id, resp.size(1)), resp, pad_id)
        chosen_rewards.append((beta * (pc - rc)).cpu())
        rejected_rewards.append((beta * (pr - rr)).cpu())
    if was_training:
        policy.train()
    report = rm_accuracy_report(
        torch.cat(chosen_rewards).numpy(),
        torch.cat(rejected_rewards).numpy(),
        list(val["split"]),
        [e["confidence"] for e in val["extra"]],
    )
    return {
        "implicit_accuracy": report["accuracy"],
        "implicit_accuracy_valid1": report["by_split"].get("valid1"),
        "implicit_accuracy_valid2": report["by_split"].get("valid2"),
    }


def train_dpo(cfg: Config, sft_dir: Path, pref: dict, tokenizer, run_dir: Path) -> dict:
    """The DPO loop; returns what ``train_ppo`` returns (the actor is the policy alone) plus ``summary``: the
    dpo.* summary fields (implicit-reward accuracy)."""
    d, p = cfg.details, cfg.dpo
    D = dist()
    gen = seed_everything(cfg.seed + 2, D.rank)
    pad_id = tokenizer.pad_token_id
    # 1. policy and reference from SFT
    policy = load_causal_lm(sft_dir)
    set_dropout(policy, d.dropout)
    actor = Actor(policy, None, None).to(D.device)
    actor.train()
    ref = load_causal_lm(sft_dir).to(D.device).eval()
    ref.requires_grad_(False)
    train = pref["train"]
    q_all, c_all, r_all = (as_tensor(train[col]) for col in ("query_token", "chosen_token", "rejected_token"))
    total = (q_all.size(0) // p.batch_size) * p.epochs
    base_lr = cfg.stage_lr("dpo", ref.config.hidden_size)
    opt = make_optimizer(actor.parameters(), base_lr, d.adam_eps)
    accum = cfg.grad_accum("dpo")
    ddp_actor, opt = D.prepare_training(actor, opt, p.micro_batch, accum)
    log = MetricsLog(run_dir / "metrics.jsonl", "ppo")  # the policy-optimization stage's namespace
    sanity: dict = {}
    bar = progress(total, "dpo", disable=None if D.is_main else True)
    step = 0
    for _ in range(p.epochs):
        for idx in minibatches(q_all.size(0), p.batch_size, gen):
            set_lr(opt, lr_at(base_lr, step, total, d.lr_schedule))
            opt.zero_grad(set_to_none=True)
            acc: dict[str, float] = {}
            micros = D.rank_slice(idx).chunk(accum)
            for i, micro in enumerate(micros):
                # 2. chosen and rejected in one forward of each model
                qr, resp = pair_inputs(q_all[micro].to(D.device), c_all[micro].to(D.device), r_all[micro].to(D.device))
                R = resp.size(1)
                pc, pr = pair_logprobs(ddp_actor(qr, pad_id, R)[0], resp, pad_id)
                with torch.no_grad():
                    rc, rr = pair_logprobs(response_logits(ref, qr, pad_id, R), resp, pad_id)
                # 3. the DPO / IPO loss
                loss, chosen_rewards, rejected_rewards = objectives.dpo_loss(pc, pr, rc, rr, p.beta, d.dpo_loss)
                check_finite(loss, "dpo", step)
                D.backward(loss, accum, last=i == len(micros) - 1)
                if step == 0 and i == 0:  # policy = reference before the first step: every implicit reward is 0
                    sanity["initial_kl"] = float((pc.detach() - rc).abs().mean() + (pr.detach() - rr).abs().mean())
                for k, v in {
                    "dpo/loss": loss.detach(),
                    "dpo/accuracy": (chosen_rewards > rejected_rewards).float().mean(),
                    "dpo/margin": (chosen_rewards - rejected_rewards).mean(),
                    "dpo/chosen_reward": chosen_rewards.mean(),
                    "dpo/rejected_reward": rejected_rewards.mean(),
                }.items():
                    acc[k] = acc.get(k, 0.0) + float(v) / accum
            opt.step()
            step += 1
            # 4. reference update
            update_reference(d.dpo_reference, ref, actor.lm(), step, p.ref_sync_steps, p.ref_mixup_alpha)
            row = {k: D.mean(v) for k, v in acc.items()}
            if D.is_main:
                log.log(step, episode=step * p.batch_size, lr=opt.param_groups[0]["lr"], **row)
            bar.update(1)
            bar.set_postfix(loss=f"{row['dpo/loss']:.3f}", acc=f"{row['dpo/accuracy']:.2f}")
    bar.close()
    sanity["initial_kl_ok"] = sanity["initial_kl"] < SANITY_TOL
    summary: dict = {}
    sft_ref = None
    if D.is_main:
        # 5. implicit-reward accuracy against the SFT model (the reference DPO's rewards are defined against; a
        #    synced reference has moved away from it), on the validation comparisons the RM is scored on
        val = pref["validation"].select(range(min(cfg.task.max_rm_eval, len(pref["validation"]))))
        sft_ref = load_causal_lm(sft_dir).to(D.device).eval()
        summary = {f"dpo.{k}": v for k, v in implicit_reward_accuracy(actor.lm(), sft_ref, val, p.beta, pad_id).items()}
    return {
        "actor": actor,
        "ref_policy": sft_ref,
        "sanity": sanity,
        "evals": [],
        "params": count_parameters(actor.lm()),
        "final_kl_coef": None,
        "summary": summary,
    }
