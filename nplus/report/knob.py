"""A study's knob: variants that are settings of one knob (the study file's ``[knob]`` table, in increasing order),
the paired effect of each against the baseline, and whether that effect rises or falls along the knob.

The trend test is paired by seed, like every verdict in nplus: for each seed, the least-squares slope of its paired
differences (variant − baseline at the same size and seed) against the knob position (0, 1, 2, …), then the
Student t interval of the mean slope over seeds. The hypothesis holds when the interval lies on its side of 0; an
interval across 0 is "not shown" (not evidence against it), one on the other side contradicts it. (A bootstrap of
Spearman's ρ that resamples 3 seeds within each setting was tried first and rejected: resampling 3 values
understates their spread, and it called a trend whose per-seed slopes do not clear a t test.)
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from nplus.report.load import Study
from nplus.report.tables import effect_cell, fmt, fmt_interval, stat_row
from nplus.stats import t_interval

COLUMNS = ["size", "variant", "position", "seed", "diff"]


def knob_points(study: Study, results: pd.DataFrame) -> pd.DataFrame:
    """One row per knob variant × size × seed with a finished baseline partner: the paired difference."""
    knob = study.spec.get("knob") or {}
    if not knob or results.empty:
        return pd.DataFrame(columns=COLUMNS)
    m = results[results.metric == knob["metric"]]
    base = {(r.size, r.seed): r.value for r in m[m.variant == study.baseline].itertuples()}
    rows = [
        {"size": r.size, "variant": v, "position": pos, "seed": r.seed, "diff": r.value - base[(r.size, r.seed)]}
        for pos, v in enumerate(knob["variants"])
        for r in m[m.variant == v].itertuples()
        if (r.size, r.seed) in base
    ]
    return pd.DataFrame(rows, columns=COLUMNS)


def seed_slopes(points: pd.DataFrame) -> np.ndarray:
    """Per seed with two or more settings: the least-squares slope of its paired differences on the knob position."""
    return np.array(
        [
            np.polyfit(g.position.to_numpy(float), g["diff"].to_numpy(float), 1)[0]
            for _, g in points.groupby("seed")
            if g.position.nunique() >= 2
        ]
    )


def knob_summary(study: Study, points: pd.DataFrame, stats: pd.DataFrame) -> list[dict]:
    """Per size: each setting's paired effect (from the statistics) and the trend along the knob, with a verdict on
    the study's hypothesis."""
    knob = study.spec.get("knob") or {}
    out = []
    for size, g in points.groupby("size", sort=False):
        arms = [
            {
                "variant": v,
                "n": int((g.variant == v).sum()),
                **effect_cell(stat_row(stats, v, size, knob["metric"]), knob["metric"]),
            }
            for v in knob["variants"]
        ]
        slopes = seed_slopes(g)
        slope, _, lo, hi = t_interval(slopes)
        if lo is None:
            trend = "not testable (fewer than two seeds with two or more settings)"
        else:
            trend = "rises" if lo > 0 else "falls" if hi < 0 else "no detectable trend"
        holds = trend == knob["hypothesis"]
        against = trend in ("rises", "falls") and not holds
        out.append(
            {
                "size": size,
                "arms": arms,
                "slope": fmt(slope, True),
                "interval": fmt_interval(lo, hi, True),
                "trend": trend,
                "n": int(slopes.size),
                "verdict": "holds" if holds else "is contradicted" if against else "is not shown",
                "cls": "helps" if holds else "hurts" if against else "none",
            }
        )
    return out
