"""Evaluation metrics with intervals: win rates, length-controlled win rate, reward-model accuracy and
calibration, judge quality.

Every metric has a stable name, a direction and a one-line doc in ``METRICS``; its interval is reported under
``<name>_ci`` (or ``<name>_ci_<method>``) as ``[lo, hi]`` at 95 % unless told otherwise. Functions take plain
arrays and return JSON-ready dicts (floats, ints, None; never NaN or inf).
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Literal, Sequence

import numpy as np
from statsmodels.stats.proportion import proportion_confint

Direction = Literal["higher", "lower", "neither"]

METRICS: dict[str, tuple[Direction, str]] = {
    "win_rate": (
        "higher",
        "fraction of decided examples where the judge prefers the policy summary over the "
        "reference; ties, unparseable and failed judgments are excluded from the denominator",
    ),
    "lc_win_rate": (
        "higher",
        "length-controlled win rate: a logistic fit of win on log(len(summary)/len(reference)) "
        "evaluated at equal length (x = 0)",
    ),
    "lc_slope": (
        "neither",
        "slope of that fit: how much the judge's preference moves with relative length "
        "(> 0 means longer summaries win more)",
    ),
    "rouge1": ("higher", "mean ROUGE-1 F-measure against the reference (0-1, Porter stemmer)"),
    "rouge2": ("higher", "mean ROUGE-2 F-measure against the reference (0-1, Porter stemmer)"),
    "rougeL": ("higher", "mean ROUGE-L F-measure against the reference (0-1, Porter stemmer)"),
    "mean_length": ("neither", "mean policy summary length in the unit given by length_unit"),
    "position_bias": ("neither", "fraction of parseable judgments picking the first slot (A); 0.5 is unbiased"),
    "position_consistency": (
        "higher",
        "with both orders judged: fraction of examples whose verdict survives swapping A and B",
    ),
    "n_unparseable": ("lower", "judge replies that named no side (counted, never assigned)"),
    "n_failed": ("lower", "examples for which no reply was obtained after all retries"),
    "n_ties": ("neither", "examples whose two orders disagreed (both_orders only)"),
    "rm_accuracy": (
        "higher",
        "fraction of comparisons where the reward model scores the chosen summary above "
        "the rejected one (equal scores count as wrong)",
    ),
    "rm_ece": (
        "lower",
        "expected calibration error of the reward model: count-weighted mean over |margin| bins "
        "of |accuracy - mean sigmoid(|margin|)|",
    ),
    "rm_judge_agreement": (
        "higher",
        "fraction of policy-vs-reference pairs where sign(RM(policy) - RM(reference)) matches the judge's pick",
    ),
    "judge_agreement": ("higher", "fraction of labelled comparisons where the judge picks the labelled summary"),
    "repetition_rate": (
        "lower",
        "fraction of summaries with a word trigram that occurs twice in it (degenerate "
        "repetition, the classic reward hack)",
    ),
    "distinct_1": ("higher", "distinct word unigrams over all unigrams of all summaries (Li et al. 2016)"),
    "distinct_2": ("higher", "distinct word bigrams over all bigrams of all summaries"),
}

# Bins of x = log(len(summary) / len(reference)) for the win-rate-by-length table (the paper plots win rate
# against this ratio; ±0.25 ≈ ±28 % length).
LENGTH_BIN_EDGES: tuple[float, ...] = (-math.inf, -1.0, -0.5, -0.25, 0.0, 0.25, 0.5, 1.0, math.inf)

# Bins of |chosen - rejected| reward margin for the calibration table.
MARGIN_BIN_EDGES: tuple[float, ...] = (0.0, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, math.inf)


def _finite(value: float) -> float | None:
    """JSON has no inf or NaN: map them to None."""
    return float(value) if math.isfinite(value) else None


def wilson_interval(successes: int, n: int, alpha: float = 0.05) -> list[float] | None:
    """Wilson score interval for a proportion; None when n = 0."""
    if n == 0:
        return None
    lo, hi = proportion_confint(successes, n, alpha=alpha, method="wilson")
    return [float(lo), float(hi)]


def bootstrap_mean_interval(
    values: Sequence[float], n_boot: int = 1000, seed: int = 0, alpha: float = 0.05
) -> list[float] | None:
    """Percentile bootstrap interval of the mean, resampling items (prompts) with replacement; None if empty."""
    values = np.asarray(values, dtype=float)
    if values.size == 0:
        return None
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, values.size, size=(n_boot, values.size))].mean(axis=1)
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return [float(lo), float(hi)]


def win_rate_summary(
    outcomes: Sequence[str | int], n_boot: int = 1000, seed: int = 0, alpha: float = 0.05
) -> dict[str, Any]:
    """Win rate of the policy over the reference from per-example outcomes, with Wilson and bootstrap intervals.

    An outcome is "win", "loss", "tie", "unparseable" or "failed"; 1 and 0 are accepted for "win" and "loss"
    (a judge that always decides, like the gold judge). Only wins and losses enter the denominator ``n``.
    """
    named = [{1: "win", 0: "loss"}.get(o, o) if not isinstance(o, str) else o for o in outcomes]
    known = {"win", "loss", "tie", "unparseable", "failed"}
    unknown = sorted({repr(o) for o in named if o not in known})
    if unknown:
        raise ValueError(f"unknown outcomes {unknown}; expected 0, 1 or one of {sorted(known)}")
    decided = np.array([o == "win" for o in named if o in ("win", "loss")], dtype=float)
    n_wins = int(decided.sum())
    return {
        "win_rate": float(decided.mean()) if decided.size else None,
        "win_rate_ci_wilson": wilson_interval(n_wins, decided.size, alpha),
        "win_rate_ci_bootstrap": bootstrap_mean_interval(decided, n_boot, seed, alpha),
        "n": int(decided.size),
        "n_wins": n_wins,
        "n_ties": named.count("tie"),
        "n_unparseable": named.count("unparseable"),
        "n_failed": named.count("failed"),
        "n_total": len(named),
    }


def log_length_ratio(summary_lengths: Sequence[int], reference_lengths: Sequence[int]) -> np.ndarray:
    """x = log(len(summary) / len(reference)); an empty text counts as length 1 so that x stays finite."""
    s = np.maximum(np.asarray(summary_lengths, dtype=float), 1.0)
    r = np.maximum(np.asarray(reference_lengths, dtype=float), 1.0)
    return np.log(s / r)


def _separation_reason(wins: np.ndarray, x: np.ndarray) -> str | None:
    """Why a logistic fit of wins on x has no finite maximum-likelihood estimate, or None if it has one.

    With one covariate, the MLE is infinite exactly when a threshold on x splits wins from losses (complete or
    quasi-complete separation), which includes the all-wins and all-losses cases.
    """
    if wins.size < 3:
        return f"only {wins.size} decided examples"
    if wins.min() == wins.max():
        return "all decided examples are " + ("wins" if wins[0] == 1 else "losses")
    if x.min() == x.max():
        return "all summaries have the same relative length"
    x_win, x_loss = x[wins == 1], x[wins == 0]
    if x_loss.max() <= x_win.min() or x_win.max() <= x_loss.min():
        return "wins and losses are perfectly separated by length"
    return None


def length_controlled_win_rate(wins: Sequence[int], x: Sequence[float], alpha: float = 0.05) -> dict[str, Any]:
    """Logistic regression win ~ 1 + x over decided examples (x = log length ratio).

    ``lc_win_rate`` = σ(intercept), the fitted win rate at equal length, with a Wald interval on the logit scale
    mapped through σ (delta method); ``lc_slope`` with its Wald interval. When no finite fit exists (perfect
    separation, one class, constant x) the raw win rate and its Wilson interval are reported instead, the slope
    is None, and ``lc_method`` says why.
    """
    import statsmodels.api as sm
    from statsmodels.tools.sm_exceptions import ConvergenceWarning, PerfectSeparationWarning

    y = np.asarray(wins, dtype=float)
    x = np.asarray(x, dtype=float)
    reason = _separation_reason(y, x)
    if reason is None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", ConvergenceWarning)
                warnings.simplefilter("error", PerfectSeparationWarning)
                fit = sm.Logit(y, sm.add_constant(x, has_constant="add")).fit(disp=0)
            (b0_lo, b0_hi), (b1_lo, b1_hi) = fit.conf_int(alpha=alpha)
            b0, b1 = fit.params
            return {
                "lc_win_rate": _sigmoid(b0),
                "lc_win_rate_ci": [_sigmoid(b0_lo), _sigmoid(b0_hi)],
                "lc_slope": float(b1),
                "lc_slope_ci": [float(b1_lo), float(b1_hi)],
                "lc_method": "logit",
            }
        except (np.linalg.LinAlgError, ConvergenceWarning, PerfectSeparationWarning, ValueError) as exc:
            reason = f"logistic fit failed ({type(exc).__name__}: {exc})"
    n_wins = int(y.sum())
    return {
        "lc_win_rate": float(y.mean()) if y.size else None,
        "lc_win_rate_ci": wilson_interval(n_wins, y.size, alpha),
        "lc_slope": None,
        "lc_slope_ci": None,
        "lc_method": f"fallback to raw win rate: {reason}",
    }


def _sigmoid(z: float) -> float:
    return float(1.0 / (1.0 + math.exp(-z)))


def length_bins(
    wins: Sequence[int], x: Sequence[float], edges: Sequence[float] = LENGTH_BIN_EDGES, alpha: float = 0.05
) -> list[dict[str, Any]]:
    """Win rate per bin [lo, hi) of x with counts and Wilson intervals (open ends written as None)."""
    y = np.asarray(wins, dtype=float)
    x = np.asarray(x, dtype=float)
    rows = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = (x >= lo) & (x < hi)
        n, k = int(inside.sum()), int(y[inside].sum())
        rows.append(
            {
                "lo": _finite(lo),
                "hi": _finite(hi),
                "n": n,
                "n_wins": k,
                "win_rate": k / n if n else None,
                "win_rate_ci": wilson_interval(k, n, alpha),
            }
        )
    return rows


def position_bias(choices: Sequence[str | None], alpha: float = 0.05) -> dict[str, Any]:
    """Fraction of parseable choices naming the first slot ("A"), with a Wilson interval."""
    valid = [c for c in choices if c is not None]
    k = sum(c == "A" for c in valid)
    return {
        "position_bias": k / len(valid) if valid else None,
        "position_bias_ci": wilson_interval(k, len(valid), alpha),
        "n": len(valid),
    }


def position_consistency(
    first: Sequence[str | None], second: Sequence[str | None], alpha: float = 0.05
) -> dict[str, Any]:
    """Agreement of the winners (policy / reference) picked in the two A/B orders of the same examples;
    examples where either order has no winner are left out."""
    pairs = [(a, b) for a, b in zip(first, second, strict=True) if a is not None and b is not None]
    k = sum(a == b for a, b in pairs)
    return {
        "position_consistency": k / len(pairs) if pairs else None,
        "position_consistency_ci": wilson_interval(k, len(pairs), alpha),
        "n": len(pairs),
    }


def rm_accuracy_report(
    chosen: Sequence[float],
    rejected: Sequence[float],
    split: Sequence[str] | None = None,
    confidence: Sequence[int] | None = None,
    alpha: float = 0.05,
) -> dict[str, Any]:
    """Reward-model accuracy overall and, when given, by split (valid1 / valid2 / ...) and by labeller
    confidence. A tie in score counts as wrong, as in sfd's ``chosen > rejected``.

    Groups are flat maps keyed by the group's string form: ``by_split`` {split: accuracy}, ``by_split_ci``
    {split: [lo, hi]}, ``by_split_n`` {split: count}, and the same three for ``by_confidence``.
    """
    correct = np.asarray(chosen, dtype=float) > np.asarray(rejected, dtype=float)
    k, n = int(correct.sum()), int(correct.size)
    result: dict[str, Any] = {"accuracy": k / n if n else None, "accuracy_ci": wilson_interval(k, n, alpha), "n": n}
    for name, groups in (("by_split", split), ("by_confidence", confidence)):
        if groups is None:
            continue
        groups = np.asarray(groups)
        if groups.shape != correct.shape:
            raise ValueError(f"{name}: {groups.shape[0]} labels for {n} comparisons")
        result[name], result[f"{name}_ci"], result[f"{name}_n"] = {}, {}, {}
        for g in sorted(set(groups.tolist())):
            inside = correct[groups == g]
            key, k_g = str(g), int(inside.sum())
            result[name][key] = k_g / inside.size
            result[f"{name}_ci"][key] = wilson_interval(k_g, inside.size, alpha)
            result[f"{name}_n"][key] = int(inside.size)
    return result


def rm_calibration(
    chosen: Sequence[float], rejected: Sequence[float], edges: Sequence[float] = MARGIN_BIN_EDGES, alpha: float = 0.05
) -> dict[str, Any]:
    """Accuracy per |margin| bin next to the Bradley–Terry ideal mean σ(|margin|), and the expected
    calibration error (bins weighted by their counts). A perfectly calibrated RM is right with probability
    σ(|margin|) on a pair it scores ``margin`` apart."""
    margin = np.asarray(chosen, dtype=float) - np.asarray(rejected, dtype=float)
    size = np.abs(margin)
    bins, ece = [], 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = (size >= lo) & (size < hi)
        n = int(inside.sum())
        if n == 0:
            bins.append(
                {"lo": _finite(lo), "hi": _finite(hi), "n": 0, "accuracy": None, "accuracy_ci": None, "ideal": None}
            )
            continue
        k = int((margin[inside] > 0).sum())
        ideal = float(np.mean(1.0 / (1.0 + np.exp(-size[inside]))))
        ece += n / margin.size * abs(k / n - ideal)
        bins.append(
            {
                "lo": _finite(lo),
                "hi": _finite(hi),
                "n": n,
                "accuracy": k / n,
                "accuracy_ci": wilson_interval(k, n, alpha),
                "ideal": ideal,
            }
        )
    return {"bins": bins, "rm_ece": ece if margin.size else None, "n": int(margin.size)}


def rm_judge_agreement(
    rm_policy: Sequence[float], rm_reference: Sequence[float], judge_winners: Sequence[str | None], alpha: float = 0.05
) -> dict[str, Any]:
    """Agreement of sign(RM(policy) − RM(reference)) with the judge's winner ("policy" / "reference") on the
    same pairs. Pairs with equal RM scores or no judge winner are left out and counted in ``n_excluded``."""
    diff = np.asarray(rm_policy, dtype=float) - np.asarray(rm_reference, dtype=float)
    if diff.size != len(judge_winners):
        raise ValueError(f"{diff.size} RM score pairs for {len(judge_winners)} judge verdicts")
    agree = [(d > 0) == (w == "policy") for d, w in zip(diff, judge_winners) if d != 0 and w is not None]
    k = int(sum(agree))
    return {
        "rm_judge_agreement": k / len(agree) if agree else None,
        "rm_judge_agreement_ci": wilson_interval(k, len(agree), alpha),
        "n": len(agree),
        "n_excluded": int(diff.size - len(agree)),
    }


def judge_agreement(choices: Sequence[str | None], labels: Sequence[str], alpha: float = 0.05) -> dict[str, Any]:
    """Agreement of a judge's choices ("A" / "B" / None) with comparison labels ("A" / "B", e.g. human
    choice 0 → "A"), and the judge's position bias on the same questions. Unparseable choices are counted."""
    if len(choices) != len(labels):
        raise ValueError(f"{len(choices)} choices for {len(labels)} labels")
    pairs = [(c, lab) for c, lab in zip(choices, labels) if c is not None]
    k = sum(c == lab for c, lab in pairs)
    return {
        "judge_agreement": k / len(pairs) if pairs else None,
        "judge_agreement_ci": wilson_interval(k, len(pairs), alpha),
        "n": len(pairs),
        "n_unparseable": len(choices) - len(pairs),
        **{k_: v for k_, v in position_bias(choices, alpha).items() if k_ != "n"},
    }


def text_diversity(texts: Sequence[str]) -> dict[str, float | None]:
    """Signs of degenerate generation (reward hacking): ``repetition_rate``, the share of texts with a word
    trigram that occurs twice in it; ``distinct_1`` / ``distinct_2``, distinct word uni-/bigrams over all uni-/bigrams
    of all texts (Li et al. 2016). Words: lower-cased whitespace split. None where there is nothing to count."""
    repeated, unigrams, bigrams = 0, [], []
    for text in texts:
        w = text.lower().split()
        tri = list(zip(w, w[1:], w[2:]))
        repeated += len(tri) != len(set(tri))
        unigrams += w
        bigrams += list(zip(w, w[1:]))
    return {
        "repetition_rate": repeated / len(texts) if texts else None,
        "distinct_1": len(set(unigrams)) / len(unigrams) if unigrams else None,
        "distinct_2": len(set(bigrams)) / len(bigrams) if bigrams else None,
    }
