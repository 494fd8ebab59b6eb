"""Generation-based evaluation of a policy on validation prompts (used after SFT and during/after PPO).

1. sample near-greedy (details.eval_temperature) responses for the first ``max_eval`` validation queries,
2. truncate after the first EOS,
3. judge each response against the reference with the task's judge (gold for tldr-synth),
4. score with the proxy reward model when one is given, and compute ROUGE against the reference.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from nplus import ops
from nplus.evaluation.metrics import win_rate_summary
from nplus.evaluation.rouge import rouge_scores
from nplus.stages.common import as_tensor, sample


@dataclass(frozen=True)
class EvalSet:
    """Validation prompts in pre-tokenized form plus the texts the judge needs."""

    ids: list[str]
    posts: list[str]
    queries: list[str]
    references: list[str]  # reference summaries as in the dataset (no leading space)
    query_tokens: torch.Tensor  # (N, Lq) padded on details.query_padding_side


def eval_set_from(ds, n: int) -> EvalSet:
    d = ds.select(range(min(n, len(ds))))
    return EvalSet(list(d["id"]), list(d["post"]), list(d["query"]), list(d["summary"]), as_tensor(d["query_token"]))


@torch.no_grad()
def evaluate_policy(policy, es: EvalSet, tokenizer, pad_id: int, eos_id: int, length: int, temperature: float,
                    judge, reward_fn=None, batch_size: int = 64, generator: torch.Generator | None = None,
                    response_sampling: str = "fixed_length_then_truncate") -> tuple[dict, list[dict]]:
    """Returns (aggregates, per-sample rows). ``reward_fn(query_tokens, responses) -> (B,) normalized score``."""
    was_training = policy.training
    policy.eval()
    rows: list[dict] = []
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    for start in range(0, len(es.ids), batch_size):
        q = es.query_tokens[start:start + batch_size]
        out = sample(policy, q, pad_id, eos_id, length, temperature, response_sampling, gen)
        responses = ops.truncate_after_eos(out.responses, eos_id, pad_id)
        has_eos = (responses == eos_id).any(1)
        lengths = ops.response_lengths(responses, eos_id) if eos_id != pad_id else (responses != pad_id).sum(1) + has_eos.long()
        scores = reward_fn(q, responses) if reward_fn is not None else None
        for i in range(q.size(0)):
            k = start + i
            toks = [t for t in responses[i].tolist() if t not in (pad_id, eos_id)]
            text = tokenizer.decode(toks, skip_special_tokens=True)
            finished = bool(has_eos[i])
            j = judge.compare(es.posts[k], text, " " + es.references[k].lstrip(), a_finished=finished, b_finished=True)
            rows.append({
                "id": es.ids[k], "post": es.posts[k], "query": es.queries[k], "reference": es.references[k],
                "response": text, "finished": finished, "length": int(lengths[i]),
                "proxy_score": None if scores is None else float(scores[i]),
                "gold_score": float(j.score_a), "reference_gold_score": float(j.score_b),
                "win": int(j.choice == "A"),
            })
    if was_training:
        policy.train()
    wins = [r["win"] for r in rows]
    wr = win_rate_summary(wins, seed=0)
    rouge = rouge_scores([r["response"] for r in rows], [r["reference"] for r in rows])
    agg = {
        "win_rate": wr["win_rate"], "win_rate_ci": wr["win_rate_ci_bootstrap"], "win_rate_ci_wilson": wr["win_rate_ci_wilson"],
        "rouge1": rouge["rouge1"], "rouge2": rouge["rouge2"], "rouge_l": rouge["rougeL"],
        "mean_length": sum(r["length"] for r in rows) / len(rows),
        "eos_rate": sum(r["finished"] for r in rows) / len(rows),
        "gold_score": sum(r["gold_score"] for r in rows) / len(rows),
    }
    if reward_fn is not None:
        agg["proxy_reward"] = sum(r["proxy_score"] for r in rows) / len(rows)
    return agg, rows
