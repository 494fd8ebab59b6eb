"""Generation-based evaluation of a policy on validation prompts (used after SFT and during/after PPO).

1. sample near-greedy (details.eval_temperature) responses for the first ``max_eval`` validation queries,
2. truncate after the first EOS,
3. judge each response against the reference with the task's judge (gold for tldr-synth),
4. score with the proxy reward (reward.source) when one is given, and compute ROUGE against the reference,
5. with the gold judge, the share of post-body facts in the query that the summaries restate (fact_accuracy).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from nplus import ops
from nplus.evaluation.judges import judge_against_reference
from nplus.evaluation.metrics import text_diversity, win_rate_summary
from nplus.evaluation.probes import fact_accuracy
from nplus.evaluation.rouge import rouge_scores
from nplus.stages.common import as_tensor, decode_responses, sample


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
def evaluate_policy(
    policy,
    es: EvalSet,
    tokenizer,
    pad_id: int,
    eos_id: int,
    length: int,
    temperature: float,
    judge,
    reward_fn=None,
    batch_size: int = 64,
    generator: torch.Generator | None = None,
    response_sampling: str = "fixed_length_then_truncate",
    judge_seed: int = 0,
) -> tuple[dict, list[dict]]:
    """Returns (aggregates, per-sample rows). ``reward_fn(query_tokens, responses, posts) -> (B,)``: the score of
    reward.source (nplus.rewards.ScoreFn), reported as ``proxy_reward``."""
    was_training = policy.training
    policy.eval()
    texts, finished, lengths, scores = [], [], [], []
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    for start in range(0, len(es.ids), batch_size):
        q = es.query_tokens[start : start + batch_size].to(next(policy.parameters()).device)
        out = sample(policy, q, pad_id, eos_id, length, temperature, response_sampling, gen)
        responses = ops.truncate_after_eos(out.responses, eos_id, pad_id)
        has_eos = (responses == eos_id).any(1)
        finished += has_eos.tolist()
        lengths += ops.response_lengths(responses, eos_id).tolist()
        texts += decode_responses(tokenizer, responses)
        if reward_fn is not None:
            scores += reward_fn(q, responses, es.posts[start : start + batch_size]).float().cpu().tolist()
    # The judge sees the policy summary and the reference in a seeded random A/B order; an unparseable or
    # failed verdict is an outcome of its own, never a side (see nplus/evaluation/judges.py).
    refs = [" " + r.lstrip() for r in es.references]
    records = judge_against_reference(judge, es.posts, texts, refs, finished, seed=judge_seed)
    gold = getattr(judge, "gold", None)
    rows: list[dict] = []
    for k, rec in enumerate(records):
        rows.append(
            {
                "id": es.ids[k],
                "post": es.posts[k],
                "query": es.queries[k],
                "reference": es.references[k],
                "response": texts[k],
                "finished": bool(finished[k]),
                "length": int(lengths[k]),
                "proxy_score": float(scores[k]) if scores else None,
                "gold_score": float(gold.score(es.posts[k], texts[k], finished[k])) if gold is not None else None,
                "reference_gold_score": float(gold.score(es.posts[k], refs[k], True)) if gold is not None else None,
                "outcome": rec["outcome"],
                "win": {"win": 1, "loss": 0}.get(rec["outcome"]),
                "judge_order": rec["order"],
                "judge_raw": rec["raw"],
            }
        )
    if was_training:
        policy.train()
    wr = win_rate_summary([r["outcome"] for r in rows], seed=0)
    rouge = rouge_scores([r["response"] for r in rows], [r["reference"] for r in rows])
    agg = {
        "win_rate": wr["win_rate"],
        "win_rate_ci": wr["win_rate_ci_bootstrap"],
        "win_rate_ci_wilson": wr["win_rate_ci_wilson"],
        "rouge1": rouge["rouge1"],
        "rouge2": rouge["rouge2"],
        "rouge_l": rouge["rougeL"],
        "mean_length": sum(r["length"] for r in rows) / len(rows),
        "eos_rate": sum(r["finished"] for r in rows) / len(rows),
        "gold_score": sum(r["gold_score"] for r in rows) / len(rows) if gold is not None else None,
        "n_unparseable": wr["n_unparseable"],
        "n_failed": wr["n_failed"],
        **text_diversity(texts),
    }
    if gold is not None:
        agg.update(fact_accuracy(gold, es.posts, es.queries, texts))
    if reward_fn is not None:
        agg["proxy_reward"] = sum(r["proxy_score"] for r in rows) / len(rows)
    return agg, rows
