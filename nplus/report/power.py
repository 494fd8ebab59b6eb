"""How far to trust a study's verdicts: the A/A check and the power table.

The A/A check is the study's ``aa`` arm (``aa = true`` in the study file): the baseline's configuration run again
with fresh training seeds (SFT, RM and PPO all retrained), paired with the baseline by seed and tested on its own,
outside the variants' Holm family. Any verdict other than "no detectable effect" on it is a false positive that
happened. Next to it, the rate the verdict procedure gives by construction (``nplus.stats.aa_false_positive_rate``:
simulated A/A studies with this study's seeds and number of variants, normal per-seed values).

The power table says what the study could have seen: per key metric the baseline's seed-to-seed SD and the smallest
paired effect 3 and 5 seeds detect with 80 % probability at α = 0.05 after Holm over the study's variants
(``nplus.stats.power_table``). A flip whose effect is below that figure reads "no detectable effect" most of the time
even when it is real.
"""

from __future__ import annotations

import math

import pandas as pd

from nplus.report.load import Study
from nplus.report.tables import ALPHA, fmt, fmt_interval, verdict_class
from nplus.stats import AA_SEED_OFFSET, AA_VARIANT, POWER, aa_false_positive_rate, power_table

# What a reader decides seed counts by: quality (win rate, gold), the reward model, SFT, and the two prices.
POWER_METRICS: tuple[tuple[str, str], ...] = (
    ("ppo.win_rate", "PPO win rate"),
    ("ppo.gold_score", "PPO gold score"),
    ("rm.accuracy", "RM accuracy"),
    ("sft.rouge_l", "SFT ROUGE-L"),
    ("ppo.kl", "KL(π‖π_ref)"),
    ("ppo.mean_length", "response length"),
)
SEED_COUNTS = (3, 5)
FP_SIMULATIONS = 1000


def family_size(study: Study) -> int:
    """Comparisons in the Holm family of each metric: the variants other than the baseline and the A/A arm."""
    return max(1, len([v for v in study.variants if v not in (study.baseline, AA_VARIANT)]))


def aa_check(study: Study, stats: pd.DataFrame) -> dict:
    """The A/A arm's paired effects on the power table's metrics, and the simulated false-positive rate."""
    labels = dict(POWER_METRICS)
    ran = AA_VARIANT in study.variants
    rows = []
    if ran and len(stats):
        sel = stats[(stats.variant == AA_VARIANT) & stats.metric.isin(list(labels))]
        for r in sorted(sel.to_dict("records"), key=lambda r: (r["size"], list(labels).index(r["metric"]))):
            verdict = r.get("verdict") or "not assessed"
            p = r.get("p_holm")
            rows.append(
                {
                    "size": r["size"],
                    "metric": r["metric"],
                    "label": labels[r["metric"]],
                    "diff": fmt(r.get("diff"), signed=True),
                    "interval": fmt_interval(r.get("diff_ci_low"), r.get("diff_ci_high"), True),
                    "p": "—" if p is None or pd.isna(p) else f"{float(p):.3g}",
                    "verdict": verdict,
                    "cls": verdict_class(verdict),
                }
            )
    n_seeds, tests = len(study.seeds), family_size(study)
    simulated = (
        aa_false_positive_rate(n_sims=FP_SIMULATIONS, n_seeds=n_seeds, n_variants=tests) if n_seeds >= 2 else math.nan
    )
    false_positives = [r for r in rows if r["cls"] in ("helps", "hurts", "changes")]
    return {
        "ran": ran,
        "rows": rows,
        "false_positives": len(false_positives),
        "seed_offset": AA_SEED_OFFSET,
        "simulated_rate": simulated,
        "simulated_text": "—" if math.isnan(simulated) else f"{simulated:.3f}",
        "simulations": FP_SIMULATIONS,
        "n_seeds": n_seeds,
        "tests": tests,
        "alpha": ALPHA,
    }


def power_rows(study: Study, results: pd.DataFrame) -> pd.DataFrame:
    """``nplus.stats.power_table`` over the study's finished runs (empty without 2 baseline seeds)."""
    return power_table(results, study.baseline, [m for m, _ in POWER_METRICS], family_size(study), SEED_COUNTS)


def power_view(table: pd.DataFrame) -> dict:
    labels = dict(POWER_METRICS)
    rows = [
        {
            "size": r["size"],
            "label": labels.get(r["metric"], r["metric"]),
            "mean": fmt(r["baseline_mean"]),
            "sd": fmt(r["seed_sd"]),
            "aa_sd": fmt(r["aa_diff_sd"]),
            "n": int(r["n_baseline"]),
            **{f"mde_{n}": fmt(r[f"mde_{n}_seeds"]) for n in SEED_COUNTS},
        }
        for r in table.to_dict("records")
    ]
    tests = int(table["tests"].iloc[0]) if len(table) else 1
    return {
        "rows": rows,
        "seed_counts": SEED_COUNTS,
        "tests": tests,
        "power": round(100 * POWER),
        "alpha": ALPHA,
        "alpha_first": ALPHA / tests,
        "has_sizes": any(r["size"] for r in rows),
    }
