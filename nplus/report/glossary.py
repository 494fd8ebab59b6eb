"""The glossary of the metrics a report shows, from the metrics contract (``nplus.metrics_doc``), where each name,
its direction and its meaning are declared once: the page never explains a metric in words of its own."""

from __future__ import annotations

import pandas as pd

from nplus.metrics_doc import STEP_METRICS, SUMMARY_METRICS

DIRECTION_WORDS = {"up": "higher is better", "down": "lower is better", "none": "descriptive"}


def glossary(stats: pd.DataFrame, *metric_lists: tuple[tuple[str, str], ...]) -> list[dict]:
    """One row per documented metric on the page: those the tables and figures name, then the others of the
    statistics table (they appear in the findings and in tables/stats.csv), in the contract's order."""
    named = {k for metrics in metric_lists for k, _ in metrics}
    present = named | set(stats.metric) if len(stats) else named
    rows = []
    for table in (SUMMARY_METRICS, STEP_METRICS):
        for name, (direction, doc) in table.items():
            if name in present:
                rows.append(
                    {
                        "name": name,
                        "direction": DIRECTION_WORDS[direction],
                        "doc": doc,
                        "bookkeeping": name in ("wall_time_s", "ppo_wall_time_s"),
                    }
                )
    return rows
