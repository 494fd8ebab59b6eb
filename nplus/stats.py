"""Statistics over a study's runs: results.csv, stats.csv / stats.json, paired tests, Holm, verdicts, A/A.

Inputs are run directories (``summary.json``, ``samples.jsonl``, ``error.txt``) listed by ``study.json``; outputs:

- ``results.csv`` (tidy): study, variant, seed, size, metric, value — one row per numeric summary.json key of
  every completed run; ``failures.csv``: study, variant, seed, size, run_dir, error (first line of error.txt).
- ``stats.csv`` / ``stats.json``: per variant × size × metric the mean, std, n and 95 % t interval over seeds;
  per non-baseline variant the paired difference against the baseline (same seeds, same size), its t interval,
  the paired t-test and Wilcoxon signed-rank p-values, the Holm-adjusted p-value across the variants of that
  metric (and size), and a verdict. Win rates also get a hierarchical bootstrap interval (seeds, then prompts).

Verdicts come from the Holm-adjusted paired t-test: ``helps`` / ``hurts`` when p_holm < 0.05, signed by the
metric's direction; ``changes`` for metrics where neither direction is better; ``no detectable effect``
otherwise; ``insufficient data`` with fewer than 2 paired seeds; ``not assessed`` for metrics outside the table.
The Wilcoxon p-value is reported alongside, not used: with n seeds its smallest two-sided p is 2/2^n (0.25 at 3
seeds), so at the seed counts RLHF studies afford it can never reject.

Metric directions (``METRIC_DIRECTIONS``, derived from ``nplus.metrics_doc.SUMMARY_METRICS``):

| metric | direction | meaning |
|---|---|---|
| sft.rouge1 / sft.rouge2 / sft.rouge_l | higher | ROUGE F1 of SFT samples (T 0.01) against the reference |
| sft.win_rate, ppo.win_rate | higher | fraction of prompts where the judge prefers the sample over the reference |
| sft.gold_score, ppo.gold_score | higher | mean gold-judge score of the samples (tldr-synth) |
| sft.eos_rate, ppo.eos_rate | higher | fraction of samples that end with EOS within the response length |
| ppo.rouge_l | higher | ROUGE-L of PPO samples against the reference |
| rm.accuracy, rm.accuracy_valid1, rm.accuracy_valid2 | higher | RM agreement with the validation preference labels |
| ppo.kl | neither | KL(policy ‖ reference) per sequence: a cost, not a goal; report the change |
| sft.mean_length, ppo.mean_length | neither | mean response length in tokens (longer is not better) |
| ppo.proxy_reward | neither | mean normalized RM score: rises under over-optimization too |
| rm.reward_bias | neither | the normalization bias subtracted from RM scores |
| ppo_wall_time_s | lower | seconds of compute of the PPO stage |
| wall_time_s | neither | seconds of the whole run, upstream stages it built included |
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from nplus.metrics_doc import SUMMARY_METRICS
from nplus.rundir import atomic_write_json, atomic_write_text, done_problem, fault_point

ALPHA = 0.05
CONFIDENCE = 0.95
N_BOOT = 2000

# Derived from the metrics contract (nplus/metrics_doc.py), where each metric and its direction is declared once.
METRIC_DIRECTIONS: dict[str, str] = {
    name: {"up": "higher", "down": "lower", "none": "neither"}[d] for name, (d, _doc) in SUMMARY_METRICS.items()
}
VERDICTS = ("helps", "hurts", "changes", "no detectable effect", "insufficient data", "not assessed")
# Win-rate metrics whose prompt-level outcomes are in samples.jsonl (rows of that stage, "win" 0/1).
BOOTSTRAP_STAGES = {"ppo.win_rate": "ppo", "sft.win_rate": "sft"}
NOT_METRICS = ("seed",)  # numeric summary keys that identify a run rather than measure it
# The A/A arm of a study (``aa = true``): the baseline's configuration with fresh training seeds (label seed s runs
# with seed s + AA_SEED_OFFSET), paired with the baseline by label seed. Kept out of the variants' Holm family (a
# check must not dilute the verdicts it checks) and tested on its own; any verdict but "no detectable effect" on it
# is a false positive the reader sees next to the real ones.
AA_VARIANT = "aa"
AA_SEED_OFFSET = 10_000
POWER = 0.8


# ---- pure statistics ------------------------------------------------------------------------------------------


def t_interval(x: np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float, float | None, float | None]:
    """(mean, std, lo, hi): Student t interval for the mean; no interval with fewer than 2 values."""
    from scipy import stats

    x = np.asarray(x, dtype=float)
    mean = float(x.mean()) if len(x) else math.nan
    if len(x) < 2:
        return mean, math.nan, None, None
    std = float(x.std(ddof=1))
    half = float(stats.t.ppf((1 + confidence) / 2, len(x) - 1)) * std / math.sqrt(len(x))
    return mean, std, mean - half, mean + half


@dataclass(frozen=True)
class Paired:
    """A variant against the baseline on the seeds both have."""

    n: int
    diff: float
    ci_low: float | None
    ci_high: float | None
    p_t: float | None
    p_wilcoxon: float | None


def paired_test(v: np.ndarray, b: np.ndarray, wilcoxon: bool = True) -> Paired:
    """Paired difference v − b (aligned by seed): t interval, ``ttest_rel`` and (optionally) ``wilcoxon`` p-values."""
    from scipy import stats

    v, b = np.asarray(v, dtype=float), np.asarray(b, dtype=float)
    d = v - b
    mean, _, lo, hi = t_interval(d)
    if len(d) < 2:
        p_t = None
    elif np.all(d == d[0]):  # zero variance: scipy gives nan; the difference is then exactly 0 or certain
        p_t = 1.0 if d[0] == 0 else 0.0
    else:
        p_t = float(stats.ttest_rel(v, b).pvalue)
    p_w = None if not wilcoxon or len(d) < 2 or np.all(d == 0) else float(stats.wilcoxon(v, b).pvalue)
    return Paired(len(d), mean, lo, hi, p_t, p_w)


def holm(pvalues: list[float | None]) -> list[float | None]:
    """Holm step-down adjustment over the defined p-values (None stays None).

    Same values as ``statsmodels.stats.multitest.multipletests(p, method="holm")[1]`` (tests/test_stats.py
    checks it), computed directly because that call costs tens of milliseconds, too slow for the A/A simulation:
    sort ascending, multiply the i-th smallest (0-based) by m − i, take the running maximum, cap at 1."""
    idx = [i for i, p in enumerate(pvalues) if p is not None and not math.isnan(p)]
    out: list[float | None] = [None] * len(pvalues)
    order = sorted(idx, key=lambda i: pvalues[i])
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * float(pvalues[i])))
        out[i] = running
    return out


def holm_levels(pvalues: list[float | None], alpha: float = ALPHA) -> list[float | None]:
    """The significance level at which Holm's step-down procedure decided each test (None stays None).

    Step k (0-based, p-values sorted ascending) tests at α / (m − k); the procedure stops at the first step that
    fails, and every later test is decided at that step's level. A (1 − level) interval around each difference is
    then consistent with the verdict: it excludes 0 exactly when Holm rejects (p_holm < α), which the unadjusted 95 %
    interval does not promise. These are the intervals the report shows beside its verdicts."""
    idx = [i for i, p in enumerate(pvalues) if p is not None and not math.isnan(p)]
    order = sorted(idx, key=lambda i: pvalues[i])
    out: list[float | None] = [None] * len(pvalues)
    m, stopped = len(order), None
    for rank, i in enumerate(order):
        level = alpha / (m - rank)
        if stopped is None and float(pvalues[i]) >= level:
            stopped = level
        out[i] = stopped if stopped is not None else level
    return out


def interval_at(
    diff: float, lo: float, hi: float, n: int, level: float, confidence: float = CONFIDENCE
) -> tuple[float, float]:
    """A paired t interval recomputed at another level: the half-width of the ``confidence`` interval [lo, hi] over
    ``n`` paired seeds, rescaled from t(1 − (1 − confidence)/2) to t(1 − level/2), n − 1 degrees of freedom."""
    from scipy import stats

    t_old = float(stats.t.ppf((1 + confidence) / 2, n - 1))
    half = (hi - lo) / 2 / t_old * float(stats.t.ppf(1 - level / 2, n - 1))
    return diff - half, diff + half


def verdict(p_adjusted: float | None, diff: float, direction: str | None, alpha: float = ALPHA) -> str:
    """helps / hurts / changes / no detectable effect / insufficient data / not assessed."""
    if direction is None:
        return "not assessed"
    if p_adjusted is None:
        return "insufficient data"
    if p_adjusted >= alpha or diff == 0:
        return "no detectable effect"
    if direction == "neither":
        return "changes"
    better = diff > 0 if direction == "higher" else diff < 0
    return "helps" if better else "hurts"


def _resampled_means(values: np.ndarray, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Means of bootstrap resamples (with replacement, same size) of ``values``, for every cell of ``shape``.

    Outcomes are discrete (wins 0/1, paired differences -1/0/1), so a resample is a multinomial draw over the
    distinct values: exact, and O(distinct values) instead of O(prompts) per resample."""
    uniq, counts = np.unique(np.asarray(values, dtype=float), return_counts=True)
    n = counts.sum()
    draws = rng.multinomial(n, counts / n, size=shape)  # shape + (len(uniq),)
    return draws @ uniq / n


def hierarchical_bootstrap(
    groups: list[np.ndarray],
    n_boot: int = N_BOOT,
    confidence: float = CONFIDENCE,
    rng: np.random.Generator | None = None,
) -> tuple[float, float] | None:
    """Percentile interval of the mean over seeds of per-seed prompt means: resample seeds, then prompts within
    each drawn seed (a seed drawn twice gets two independent prompt resamples)."""
    groups = [np.asarray(g, dtype=float) for g in groups if len(g)]
    if not groups:
        return None
    rng = rng or np.random.default_rng(0)
    k = len(groups)
    seed_draw = rng.integers(0, k, size=(n_boot, k))
    # prompt_means[g, b, j]: prompt-resampled mean of group g for slot j of bootstrap b.
    prompt_means = np.stack([_resampled_means(g, (n_boot, k), rng) for g in groups])
    boot = prompt_means[seed_draw, np.arange(n_boot)[:, None], np.arange(k)[None, :]].mean(axis=1)
    tail = (1 - confidence) / 2 * 100
    lo, hi = np.percentile(boot, [tail, 100 - tail])
    return float(lo), float(hi)


def aa_false_positive_rate(
    n_sims: int = 2000,
    n_seeds: int = 3,
    n_variants: int = 1,
    sampler: Callable[[np.random.Generator, int], np.ndarray] | None = None,
    alpha: float = ALPHA,
    direction: str = "higher",
    seed: int = 0,
) -> float:
    """Fraction of simulated A/A studies in which the verdict procedure claims any effect.

    Each simulation draws a baseline and ``n_variants`` copies of it on disjoint seeds (``sampler(rng, n)`` gives
    n per-seed values of one arm: default normal), pairs them by seed index, and applies exactly the procedure
    used on real studies: paired t-test per variant, Holm across variants, verdict. The nominal rate is ``alpha``
    (Holm controls the family-wise rate across variants). The tests are the same arithmetic as ``paired_test`` and
    ``holm``, done on all simulations at once (a report simulates 37 variants × 1000 studies in well under a second)."""
    from scipy import stats

    if direction is None or n_seeds < 2:
        return 0.0
    rng = np.random.default_rng(seed)
    sampler = sampler or (lambda r, n: r.normal(0.5, 0.05, n))
    b = np.empty((n_sims, n_seeds))
    v = np.empty((n_sims, n_variants, n_seeds))
    for i in range(n_sims):  # draws in the order a study would make them: the baseline, then each copy
        b[i] = sampler(rng, n_seeds)
        for j in range(n_variants):
            v[i, j] = sampler(rng, n_seeds)
    d = v - b[:, None, :]
    mean, sd = d.mean(axis=2), d.std(axis=2, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = mean / (sd / math.sqrt(n_seeds))
    p = 2 * stats.t.sf(np.abs(t), n_seeds - 1)
    p = np.where(sd == 0, np.where(mean == 0, 1.0, 0.0), p)  # as paired_test: zero variance is certain
    # Holm per simulation: sort, scale the i-th smallest by m − i, running maximum, cap at 1
    order = np.argsort(p, axis=1)
    scaled = np.take_along_axis(p, order, axis=1) * (n_variants - np.arange(n_variants))
    adjusted = np.minimum(1.0, np.maximum.accumulate(scaled, axis=1))
    claimed = (adjusted < alpha) & (np.take_along_axis(mean, order, axis=1) != 0)
    return float(claimed.any(axis=1).mean())


def paired_power(effect: float, n: int, alpha: float = ALPHA) -> float:
    """Power of the two-sided paired t-test with ``n`` pairs at standardized effect ``effect`` (mean difference
    over the SD of the differences): the noncentral t's mass beyond the critical values. scipy's noncentral t is
    used directly because statsmodels' ``TTestPower.solve_power`` fails to converge at 3 pairs and Holm-sized α."""
    from scipy import stats

    if n < 2:
        return math.nan
    df, nc = n - 1, effect * math.sqrt(n)
    crit = float(stats.t.ppf(1 - alpha / 2, df))
    upper = float(stats.nct.sf(crit, df, nc))
    if math.isnan(upper):  # the series diverges far in the tail, where the answer is plain
        upper = 1.0 if nc > crit else 0.0
    lower = float(np.nan_to_num(stats.nct.cdf(-crit, df, nc)))
    return min(1.0, upper + lower)


def detectable_effect(sd_diff: float, n: int, tests: int = 1, alpha: float = ALPHA, power: float = POWER) -> float:
    """Smallest mean paired difference that ``n`` seeds detect with probability ``power`` when it must clear
    Holm's first step among ``tests`` comparisons (α / tests: the bar a lone real effect meets in a family of
    nulls). ``sd_diff`` is the SD of the per-seed differences; nan when it or n is unusable."""
    from scipy.optimize import brentq

    if n < 2 or not sd_diff or math.isnan(sd_diff):
        return math.nan
    a = alpha / max(1, tests)
    hi = 1.0
    while paired_power(hi, n, a) < power:
        hi *= 2
    return float(brentq(lambda d: paired_power(d, n, a) - power, 1e-9, hi, xtol=1e-6)) * sd_diff


# ---- collecting run directories -------------------------------------------------------------------------------


@dataclass
class RunRef:
    variant: str
    size: str  # "" when the study has no sizes
    seed: int
    run_dir: Path


def find_runs(out: Path) -> tuple[str, str, list[RunRef]]:
    """(study name, baseline, runs) from ``study.json``; without one, from the ``<variant>/[size=]/seed=`` tree."""
    out = Path(out)
    if (out / "study.json").is_file():
        meta = json.loads((out / "study.json").read_text())
        runs = [RunRef(s["variant"], s.get("size") or "", int(s["seed"]), out / s["run_dir"]) for s in meta["specs"]]
        return meta["study"]["name"], meta["study"]["baseline"], runs
    runs = []
    for seed_dir in sorted(out.glob("**/seed=*")):
        rel = seed_dir.relative_to(out).parts
        size = rel[-2][5:] if len(rel) >= 3 and rel[-2].startswith("size=") else ""
        variant = "/".join(rel[: -2 if size else -1])
        runs.append(RunRef(variant, size, int(rel[-1][5:]), seed_dir))
    return out.name, "baseline", runs


def numeric_items(summary: dict) -> list[tuple[str, float]]:
    """The summary.json keys that are numbers (bools, lists, strings and the seed excluded)."""
    return [
        (k, float(v))
        for k, v in summary.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in NOT_METRICS and math.isfinite(v)
    ]


def collect(out: Path) -> tuple[Any, Any, str, str]:
    """(results, failures, study, baseline) as DataFrames; a run counts when its DONE marker exists and the
    files it lists (summary.json among them) still match it, so a truncated or altered summary is never read."""
    import pandas as pd

    study, baseline, runs = find_runs(out)
    rows, fails = [], []
    for r in runs:
        if done_problem(r.run_dir) is None and (r.run_dir / "summary.json").exists():
            summary = json.loads((r.run_dir / "summary.json").read_text())
            rows += [(study, r.variant, r.seed, r.size, k, v) for k, v in numeric_items(summary)]
        elif (r.run_dir / "error.txt").exists():
            first = (r.run_dir / "error.txt").read_text().strip().splitlines()
            fails.append((study, r.variant, r.seed, r.size, str(r.run_dir), first[0] if first else ""))
    results = pd.DataFrame(rows, columns=["study", "variant", "seed", "size", "metric", "value"])
    failures = pd.DataFrame(fails, columns=["study", "variant", "seed", "size", "run_dir", "error"])
    return results, failures, study, baseline


def prompt_outcomes(run_dir: Path, stage: str) -> dict[str, float]:
    """``{prompt id: win}`` from samples.jsonl rows of one stage (rows without a judged win skipped)."""
    path = Path(run_dir) / "samples.jsonl"
    out: dict[str, float] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                if row.get("stage") == stage and row.get("win") is not None:
                    out[str(row["id"])] = float(row["win"])
    return out


# ---- the tables -----------------------------------------------------------------------------------------------


def compare(results: Any, baseline: str, study: str = "", alpha: float = ALPHA) -> Any:
    """One row per variant × size × metric: summary over seeds, and for non-baseline variants the paired test
    against the baseline, Holm-adjusted across the variants of each (size, metric) (the A/A arm on its own)."""
    import pandas as pd

    rows = []
    for (variant, size, metric), g in results.groupby(["variant", "size", "metric"], sort=False):
        mean, std, lo, hi = t_interval(g["value"].to_numpy())
        row = {
            "study": study,
            "variant": variant,
            "size": size,
            "metric": metric,
            "direction": METRIC_DIRECTIONS.get(metric),
            "n": len(g),
            "mean": mean,
            "std": std,
            "ci_low": lo,
            "ci_high": hi,
            "baseline": baseline,
        }
        base = results[(results.variant == baseline) & (results["size"] == size) & (results.metric == metric)]
        if variant != baseline and len(base):
            joined = g.merge(base, on="seed", suffixes=("", "_b"))
            p = paired_test(joined["value"].to_numpy(), joined["value_b"].to_numpy())
            row.update(
                n_pairs=p.n,
                diff=p.diff,
                diff_ci_low=p.ci_low,
                diff_ci_high=p.ci_high,
                p_t=p.p_t,
                p_wilcoxon=p.p_wilcoxon,
            )
        rows.append(row)
    table = pd.DataFrame(rows)
    for col in ("n_pairs", "diff", "diff_ci_low", "diff_ci_high", "p_t", "p_wilcoxon"):
        if col not in table:
            table[col] = None
    table["p_holm"] = None
    table["verdict"] = None
    # the variants' family (per size and metric); the A/A arm is a family of its own (its p_holm is its p_t)
    for arms in (
        table[(table.variant != baseline) & (table.variant != AA_VARIANT)],
        table[table.variant == AA_VARIANT],
    ):
        for _, idx in arms.groupby(["size", "metric"]).groups.items():
            pvals = [None if pd.isna(p) else float(p) for p in table.loc[idx, "p_t"]]
            table.loc[idx, "p_holm"] = pd.Series(holm(pvals), index=idx, dtype=object)
    for i, row in table[table.variant != baseline].iterrows():
        p = None if pd.isna(row["p_holm"]) else float(row["p_holm"])
        diff = 0.0 if pd.isna(row["diff"]) else float(row["diff"])
        table.at[i, "verdict"] = (
            verdict(p, diff, row["direction"], alpha) if not pd.isna(row["n_pairs"]) else "insufficient data"
        )
    return table


def power_table(
    results: Any,
    baseline: str,
    metrics: list[str],
    tests: int,
    seeds: tuple[int, ...] = (3, 5),
    alpha: float = ALPHA,
    power: float = POWER,
) -> Any:
    """Per size × metric: the baseline's seed-to-seed SD and the smallest paired effect ``seeds`` seeds detect
    (``detectable_effect`` with ``tests`` comparisons). The SD of a paired difference is taken as √2 × the seed SD:
    exact for arms that share nothing (the A/A arm, flips that retrain SFT), conservative for flips that share the
    baseline's SFT and RM (pairing then removes their part). The A/A arm's observed SD of differences, where one
    ran, is shown beside it as a check of that assumption."""
    import pandas as pd

    rows = []
    for (size, metric), g in results[results.metric.isin(metrics)].groupby(["size", "metric"], sort=False):
        base = g[g.variant == baseline].set_index("seed")["value"]
        if len(base) < 2:
            continue
        sd = float(base.std(ddof=1))
        row = {
            "size": size,
            "metric": metric,
            "n_baseline": len(base),
            "baseline_mean": float(base.mean()),
            "seed_sd": sd,
            "diff_sd": math.sqrt(2) * sd,
            "tests": tests,
        }
        aa = g[g.variant == AA_VARIANT].set_index("seed")["value"]
        d = (aa - base).dropna()
        row["aa_diff_sd"] = float(d.std(ddof=1)) if len(d) >= 2 else math.nan
        for n in seeds:
            row[f"mde_{n}_seeds"] = detectable_effect(row["diff_sd"], n, tests, alpha, power)
        rows.append(row)
    cols = ["size", "metric", "n_baseline", "baseline_mean", "seed_sd", "diff_sd", "aa_diff_sd", "tests"] + [
        f"mde_{n}_seeds" for n in seeds
    ]
    order = {m: i for i, m in enumerate(metrics)}
    table = pd.DataFrame(rows, columns=cols)
    return table.sort_values(
        ["size", "metric"], key=lambda c: c.map(order) if c.name == "metric" else c, kind="stable"
    ).reset_index(drop=True)


def bootstrap_win_rates(table: Any, runs: list[RunRef], baseline: str, n_boot: int = N_BOOT) -> Any:
    """Add hierarchical-bootstrap intervals (seeds, then prompts) for the win-rate rows: of the variant mean
    (boot_ci_*) and of the paired difference against the baseline (boot_diff_ci_*, prompts paired by id)."""
    for col in ("boot_ci_low", "boot_ci_high", "boot_diff_ci_low", "boot_diff_ci_high"):
        table[col] = None
    done = {(r.variant, r.size, r.seed): r for r in runs if (r.run_dir / "DONE").exists()}
    for i, row in table[table.metric.isin(list(BOOTSTRAP_STAGES))].iterrows():
        stage = BOOTSTRAP_STAGES[row.metric]
        seeds = sorted(s for (v, z, s) in done if v == row.variant and z == row["size"])
        outcomes = {s: prompt_outcomes(done[(row.variant, row["size"], s)].run_dir, stage) for s in seeds}
        ci = hierarchical_bootstrap([np.array(list(o.values())) for o in outcomes.values()], n_boot)
        if ci:
            table.at[i, "boot_ci_low"], table.at[i, "boot_ci_high"] = ci
        if row.variant == baseline:
            continue
        diffs = []
        for s in seeds:
            if (baseline, row["size"], s) in done:
                b = prompt_outcomes(done[(baseline, row["size"], s)].run_dir, stage)
                shared = sorted(set(outcomes[s]) & set(b))
                diffs.append(np.array([outcomes[s][k] - b[k] for k in shared]))
        ci = hierarchical_bootstrap(diffs, n_boot)
        if ci:
            table.at[i, "boot_diff_ci_low"], table.at[i, "boot_diff_ci_high"] = ci
    return table


def rlhf_effect(runs: list[RunRef], n_boot: int = N_BOOT) -> list[dict]:
    """What PPO adds over its own SFT policy, per variant and size: the win-rate difference PPO − SFT on the same
    validation prompts (paired by prompt id) per seed, its hierarchical seed × prompt bootstrap interval, and the
    per-seed differences of the gold score and of the win rate from summary.json."""
    done = [r for r in runs if (r.run_dir / "DONE").exists() and (r.run_dir / "summary.json").exists()]
    out = []
    for key in dict.fromkeys((r.variant, r.size) for r in done):
        group = sorted((r for r in done if (r.variant, r.size) == key), key=lambda r: r.seed)
        diffs, seeds = [], []
        for r in group:
            sft, ppo = prompt_outcomes(r.run_dir, "sft"), prompt_outcomes(r.run_dir, "ppo")
            shared = sorted(set(sft) & set(ppo))
            if shared:
                diffs.append(np.array([ppo[k] - sft[k] for k in shared]))
                s = json.loads((r.run_dir / "summary.json").read_text())
                seeds.append(
                    {
                        "seed": r.seed,
                        "sft_win_rate": s.get("sft.win_rate"),
                        "ppo_win_rate": s.get("ppo.win_rate"),
                        "win_rate_diff": float(diffs[-1].mean()),
                        "sft_gold_score": s.get("sft.gold_score"),
                        "ppo_gold_score": s.get("ppo.gold_score"),
                        "prompts": len(shared),
                    }
                )
        if not diffs:
            continue
        ci = hierarchical_bootstrap(diffs, n_boot)
        gold = [
            x["ppo_gold_score"] - x["sft_gold_score"]
            for x in seeds
            if x["ppo_gold_score"] is not None and x["sft_gold_score"] is not None
        ]
        out.append(
            {
                "variant": key[0],
                "size": key[1],
                "n": len(seeds),
                "win_rate_diff": float(np.mean([d.mean() for d in diffs])),
                "win_rate_diff_ci": list(ci) if ci else None,
                "gold_score_diff": float(np.mean(gold)) if gold else None,
                "min_seed_win_rate_diff": min(x["win_rate_diff"] for x in seeds),
                "seeds": seeds,
            }
        )
    return out


def _clean(v: Any) -> Any:
    if isinstance(v, (np.floating, np.integer)):
        v = v.item()
    if isinstance(v, float) and math.isnan(v):
        return None
    return v


def write_stats(out: Path, n_boot: int = N_BOOT) -> dict[str, Any]:
    """Write results.csv, failures.csv, stats.csv and stats.json into ``out``; returns the stats.json object."""
    out = Path(out)
    results, failures, study, baseline = collect(out)
    atomic_write_text(out / "results.csv", results.to_csv(index=False))
    atomic_write_text(out / "failures.csv", failures.to_csv(index=False))
    fault_point("stats")  # killed here: results.csv is new, stats.csv still the previous one (or absent)
    table = compare(results, baseline, study) if len(results) else None
    if table is not None:
        table = bootstrap_win_rates(table, find_runs(out)[2], baseline, n_boot)
        atomic_write_text(out / "stats.csv", table.to_csv(index=False))
    else:
        atomic_write_text(out / "stats.csv", "")
    records = [] if table is None else [{k: _clean(v) for k, v in r.items()} for r in table.to_dict("records")]
    obj = {
        "study": study,
        "baseline": baseline,
        "alpha": ALPHA,
        "confidence": CONFIDENCE,
        "metric_directions": METRIC_DIRECTIONS,
        "rows": records,
        "rlhf_effect": [{k: _clean(v) for k, v in e.items()} for e in rlhf_effect(find_runs(out)[2], n_boot)],
        "failures": [{k: _clean(v) for k, v in r.items()} for r in failures.to_dict("records")],
    }
    atomic_write_json(out / "stats.json", obj)
    return obj


def verdict_lines(
    stats: dict[str, Any], metrics: tuple[str, ...] = ("ppo.win_rate", "ppo.gold_score", "ppo.kl", "ppo.mean_length")
) -> list[str]:
    """A short console table: the verdict of every variant on the headline metrics."""
    lines = []
    for r in stats["rows"]:
        if r["metric"] in metrics and r["variant"] != stats["baseline"] and r.get("diff") is not None:
            size = f" size={r['size']}" if r["size"] else ""
            p = "—" if r["p_holm"] is None else f"{r['p_holm']:.3f}"
            lines.append(
                f"  {r['variant'] + size:<40} {r['metric']:<16} Δ={r['diff']:+.4f}  p_holm={p:<6} {r['verdict']}"
            )
    return lines
