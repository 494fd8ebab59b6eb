"""ROUGE-1/2/L of summaries against references with Google's ``rouge-score`` (Porter stemmer on by default).

Scores are mean F-measures on the 0-1 scale (not ×100) with a percentile bootstrap interval over examples.
sfd computes ROUGE through the hub's ``evaluate`` module with its defaults (no stemmer, bootstrap median of
per-batch means), so its numbers can differ slightly; pass ``use_stemmer=False`` to compare with them.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from rouge_score import rouge_scorer

from nplus.evaluation.metrics import bootstrap_mean_interval

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


def rouge_per_example(
    predictions: Sequence[str],
    references: Sequence[str],
    use_stemmer: bool = True,
    rouge_types: Sequence[str] = ROUGE_TYPES,
) -> dict[str, np.ndarray]:
    """F-measure of each prediction against its reference, per ROUGE type: {type: array of shape (n,)}."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    scorer = rouge_scorer.RougeScorer(list(rouge_types), use_stemmer=use_stemmer)
    # rouge-score's signature is score(target, prediction)
    scores = [scorer.score(ref, pred) for pred, ref in zip(predictions, references)]
    return {t: np.array([s[t].fmeasure for s in scores], dtype=float) for t in rouge_types}


def rouge_scores(
    predictions: Sequence[str],
    references: Sequence[str],
    use_stemmer: bool = True,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> dict[str, Any]:
    """Mean ROUGE-1/2/L F-measures with bootstrap intervals: {"rouge1": m, "rouge1_ci": [lo, hi], ...}."""
    result: dict[str, Any] = {}
    for name, values in rouge_per_example(predictions, references, use_stemmer).items():
        result[name] = float(values.mean()) if values.size else None
        result[f"{name}_ci"] = bootstrap_mean_interval(values, n_boot, seed, alpha)
    return result
