"""Comparisons of ``tldr-synth``: two policies' summaries of one post, labelled by a simulated annotator."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from nplus.tasks.posts import Post, pick
from nplus.tasks.summaries import POLICIES, POLICY_WEIGHTS, policy_summary

# Annotators prefer u = gold score + length_bias · ln(words); P(A ≻ B) = σ((u_A − u_B) / τ). τ is set so that
# labels agree with the gold ranking about as often as human labelers agree with each other (≈ 0.75).
TAU = 2.5  # tldr-synth-5: 0.756 at 2.5 (2.0 gave 0.789 once degraded summaries stopped always carrying the question)
LENGTH_BIAS = 1.0
N_WORKERS = 16


@dataclass(frozen=True)
class Worker:
    id: str
    length_bias: float
    tau: float
    weight: float  # share of the labelling work


def make_workers(rng: random.Random) -> list[Worker]:
    """Annotators with their own taste for length and their own noise level."""
    alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
    return [
        Worker(
            id="".join(alphabet[rng.randrange(62)] for _ in range(30)),
            length_bias=LENGTH_BIAS * math.exp(rng.gauss(0.0, 0.3)),
            tau=TAU * math.exp(rng.gauss(0.0, 0.15)),
            weight=rng.uniform(0.5, 2.0),
        )
        for _ in range(N_WORKERS)
    ]


def utility(gold_score: float, text: str, worker: Worker) -> float:
    return gold_score + worker.length_bias * math.log(max(1, len(text.split())))


def label(u_a: float, u_b: float, worker: Worker, rng: random.Random) -> tuple[int, int]:
    """(choice, confidence): choice 0 picks the first summary; confidence 1–9 grows with the margin."""
    margin = (u_a - u_b) / worker.tau
    p_a = 1.0 / (1.0 + math.exp(-margin))
    choice = 0 if rng.random() < p_a else 1
    confidence = round(1 + 8 * (1 - math.exp(-abs(margin))) + rng.gauss(0.0, 0.75))
    return choice, min(9, max(1, confidence))


def make_comparisons(
    posts: list[Post], n: int, split: str, batches: tuple[int, ...], judge, workers: list[Worker], rng: random.Random
) -> list[dict]:
    """n comparison rows on posts drawn with replacement; ``batches`` are spread evenly over the rows."""
    rows = []
    worker_weights = [w.weight for w in workers]
    for i in range(n):
        post = pick(rng, posts)
        first, second = rng.choices(POLICIES, weights=POLICY_WEIGHTS, k=2)
        while second == first == "ref":  # the reference exists once; a ref–ref pair would be identical
            second = rng.choices(POLICIES, weights=POLICY_WEIGHTS)[0]
        texts = [" " + policy_summary(post, p, rng) for p in (first, second)]
        worker = rng.choices(workers, weights=worker_weights)[0]
        gold = [judge.score(post.text, t) for t in texts]
        choice, confidence = label(*(utility(g, t, worker) for g, t in zip(gold, texts)), worker, rng)
        rows.append(
            {
                # site/article are CNN/DM fields of the public schema, null for Reddit posts as there
                "info": {
                    "id": post.id,
                    "post": post.text,
                    "title": post.title,
                    "subreddit": post.subreddit,
                    "site": None,
                    "article": None,
                },
                "summaries": [{"text": t, "policy": p, "note": ""} for t, p in zip(texts, (first, second))],
                "choice": choice,
                "worker": worker.id,
                "batch": f"batch{batches[i * len(batches) // n]}",
                "split": split,
                "extra": {"confidence": confidence},
                "_gold": gold,  # for the card; dropped before saving
            }
        )
    return rows


def label_gold_agreement(rows: list[dict]) -> float:
    """Fraction of labels that pick the summary the gold judge strictly prefers (ties excluded)."""
    decided = [(r["choice"], r["_gold"]) for r in rows if r["_gold"][0] != r["_gold"][1]]
    return sum(c == (0 if g[0] > g[1] else 1) for c, g in decided) / max(1, len(decided))
