"""Over-optimization against KL, per checkpoint (Gao et al., "Scaling laws for reward model overoptimization"):
the gold score and the proxy (the reward the policy was trained on) at every evaluation of every PPO run, against
the KL from the SFT policy at that point, and per run where gold peaked and whether it fell after the peak while the
proxy kept rising.

A checkpoint's KL is the training rollouts' ``objective/kl`` at the update the evaluation followed (the mean
summed log-ratio of the policy's own samples to the reference's): the evaluation itself samples at T 0.01 and
has no KL of its own. The SFT policy is the point at KL 0 for the gold score (``sft.gold_score``); the final
checkpoint is the run's summary (``ppo.*``) at the last update's KL.

"Declined after its peak" needs the final gold score below the peak by more than twice the final evaluation's
standard error (the SD of the per-prompt gold scores over √prompts, from samples.jsonl), with the proxy at the end
at least where it was at the peak: gold falls while the trained-on reward does not.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from nplus.report.load import Run, Study, as_number
from nplus.report.tables import fmt

COLUMNS = ["label", "variant", "size", "seed", "run", "step", "kl", "proxy", "gold", "source"]
SE_MARGIN = 2.0


def _kl_by_episode(r: Run) -> dict[float, float]:
    out = {}
    for row in r.metrics:
        if row.get("stage", "ppo") == "ppo" and (kl := as_number(row.get("objective/kl"))) is not None:
            if (ep := as_number(row.get("episode"))) is not None:
                out[ep] = kl
    return out


def checkpoints(study: Study) -> pd.DataFrame:
    """One row per evaluation of every finished PPO run: KL, proxy and gold (plus the SFT point, gold only)."""
    rows = []
    for r in study.ok_runs:
        kl = _kl_by_episode(r)
        if not kl:
            continue
        base = {"label": r.label, "variant": r.variant, "size": r.size, "seed": r.seed, "run": r.rel}
        if (g := r.number("sft.gold_score")) is not None:
            rows.append({**base, "step": 0, "kl": 0.0, "proxy": math.nan, "gold": g, "source": "sft"})
        for row in r.metrics:
            ep = as_number(row.get("episode"))
            gold, proxy = as_number(row.get("eval/gold_score")), as_number(row.get("eval/proxy_reward"))
            if row.get("stage", "ppo") == "ppo" and gold is not None and ep in kl:
                rows.append(
                    {
                        **base,
                        "step": as_number(row.get("step")) or ep,
                        "kl": kl[ep],
                        "proxy": math.nan if proxy is None else proxy,
                        "gold": gold,
                        "source": "eval",
                    }
                )
        gold, proxy = r.number("ppo.gold_score"), r.number("ppo.proxy_reward")
        if gold is not None:
            last = max(kl)
            steps = [x["step"] for x in rows if x["run"] == r.rel]
            rows.append(
                {
                    **base,
                    "step": max(steps, default=0) + 1,
                    "kl": kl[last],
                    "proxy": math.nan if proxy is None else proxy,
                    "gold": gold,
                    "source": "final",
                }
            )
    return pd.DataFrame(rows, columns=COLUMNS)


def _final_se(r: Run) -> float:
    gold = [g for s in r.stage_samples("ppo") if (g := as_number(s.get("gold_score"))) is not None]
    return float(np.std(gold, ddof=1) / math.sqrt(len(gold))) if len(gold) >= 2 else math.nan


def peaks(study: Study, points: pd.DataFrame) -> pd.DataFrame:
    """Per run: gold's peak (value, KL, whether it is the SFT policy), the final gold and proxy, the decline with
    its standard error, and whether the run over-optimized (gold fell after its peak while the proxy held)."""
    runs = {r.rel: r for r in study.ok_runs}
    rows = []
    for run, g in points.groupby("run", sort=False):
        g = g.reset_index(drop=True)
        i = int(g.gold.idxmax())
        peak, final = g.loc[i], g.iloc[-1]
        se = _final_se(runs[run]) if run in runs else math.nan
        decline = float(peak.gold - final.gold)
        evals = g[g.source != "sft"].proxy.dropna()
        proxy_at_peak = peak.proxy if not math.isnan(peak.proxy) else (evals.iloc[0] if len(evals) else math.nan)
        proxy_held = not math.isnan(final.proxy) and not math.isnan(proxy_at_peak) and final.proxy >= proxy_at_peak
        # a peak at the SFT policy is not a peak PPO reached (its decline is a policy that only lost gold)
        over = bool(
            0 < i < len(g) - 1
            and peak.source != "sft"
            and not math.isnan(se)
            and decline > SE_MARGIN * se
            and proxy_held
        )
        rows.append(
            {
                "label": peak.label,
                "variant": peak.variant,
                "size": peak["size"],
                "seed": peak.seed,
                "run": run,
                "checkpoints": int((g.source != "sft").sum()),
                "peak_gold": float(peak.gold),
                "kl_at_peak": float(peak.kl),
                "peak_is_sft": peak.source == "sft",
                "final_gold": float(final.gold),
                "final_kl": float(final.kl),
                "proxy_at_peak": float(proxy_at_peak),
                "final_proxy": float(final.proxy),
                "gold_decline": decline,
                "final_se": se,
                "overoptimized": over,
            }
        )
    return pd.DataFrame(rows)


def peak_rows(table: pd.DataFrame) -> list[dict]:
    """The report's table: one row per run, with the verdict in words."""
    out = []
    for r in table.to_dict("records"):
        if r["overoptimized"]:
            answer, cls = "gold peaked, then fell while the proxy held", "hurts"
        elif r["peak_is_sft"]:
            answer, cls = "gold never rose above the SFT policy", "na"
        elif r["gold_decline"] > 0:
            answer, cls = "no decline beyond noise", "none"
        else:
            answer, cls = "gold still at its peak at the end", "none"
        out.append(
            {
                **r,
                "peak_text": fmt(r["peak_gold"]),
                "kl_text": fmt(r["kl_at_peak"]),
                "final_text": fmt(r["final_gold"]),
                "final_kl_text": fmt(r["final_kl"]),
                "decline_text": f"{fmt(r['gold_decline'], True)} ± {fmt(r['final_se'])}",
                "proxy_text": f"{fmt(r['proxy_at_peak'])} → {fmt(r['final_proxy'])}",
                "answer": answer,
                "cls": cls,
            }
        )
    return out


def peak_summary(table: pd.DataFrame) -> list[dict]:
    """Per variant and size: seeds, the median KL at gold's peak and how many seeds over-optimized."""
    if table.empty:
        return []
    out = []
    for (variant, size), g in table.groupby(["variant", "size"], sort=False):
        out.append(
            {
                "variant": variant,
                "size": size,
                "n": len(g),
                "kl_median": fmt(float(g.kl_at_peak.median())),
                "kl_range": f"{fmt(float(g.kl_at_peak.min()))}–{fmt(float(g.kl_at_peak.max()))}",
                "overoptimized": int(g.overoptimized.sum()),
            }
        )
    return out
