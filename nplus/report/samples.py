"""What the runs produced over time and in words: training curves and proxy-against-gold points from metrics.jsonl,
the PPO samples the reward model overrates (over-optimization examples), and the side-by-side sample grid from
samples.jsonl, with the display helpers that keep a degenerate policy's text readable.
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np
import pandas as pd

from nplus.report.load import Run, Study, as_number
from nplus.report.tables import fmt

CURVE_METRICS: tuple[tuple[str, str], ...] = (
    ("objective/scores", "proxy reward (objective/scores)"),
    ("eval/gold_score", "gold score (eval/gold_score)"),
    ("objective/kl", "KL (objective/kl, the run's estimator)"),
    ("val/mean_length", "response length (val/mean_length)"),
    ("val/eos_rate", "EOS rate (val/eos_rate)"),
    ("eval/repetition_rate", "repetition rate (eval/repetition_rate)"),
    ("eval/distinct_2", "distinct-2 (eval/distinct_2)"),
)


# ----------------------------------------------------------------------------------------- training curves


def curves_frame(study: Study) -> pd.DataFrame:
    """PPO metrics.jsonl rows in long form: label, variant, size, seed, run, episode, metric, value."""
    wanted = {k for k, _ in CURVE_METRICS} | {"eval/proxy_reward", "eval/gold_score"}
    rows = []
    for r in study.ok_runs:
        for row in r.metrics:
            if row.get("stage", "ppo") != "ppo":
                continue
            x = as_number(row.get("episode", row.get("step")))
            if x is None:
                continue
            for key in wanted & row.keys():
                if (v := as_number(row[key])) is not None:
                    rows.append(
                        {
                            "label": r.label,
                            "variant": r.variant,
                            "size": r.size,
                            "seed": r.seed,
                            "run": r.rel,
                            "episode": x,
                            "metric": key,
                            "value": v,
                        }
                    )
    return pd.DataFrame(rows, columns=["label", "variant", "size", "seed", "run", "episode", "metric", "value"])


def proxy_gold_frame(study: Study, curves: pd.DataFrame) -> pd.DataFrame:
    """Per eval point of every run: proxy reward and gold score, ending with the final evaluation."""
    ev = curves[curves.metric.isin(["eval/proxy_reward", "eval/gold_score"])]
    wide = (
        ev.pivot_table(
            index=["label", "variant", "size", "seed", "run", "episode"], columns="metric", values="value"
        ).reset_index()
        if len(ev)
        else pd.DataFrame()
    )
    cols = ["label", "variant", "size", "seed", "run", "episode", "proxy", "gold", "final"]
    rows = []
    if len(wide) and {"eval/proxy_reward", "eval/gold_score"} <= set(wide.columns):
        for rec in wide.dropna(subset=["eval/proxy_reward", "eval/gold_score"]).to_dict("records"):
            rows.append(
                {
                    **{k: rec[k] for k in cols[:6]},
                    "proxy": rec["eval/proxy_reward"],
                    "gold": rec["eval/gold_score"],
                    "final": False,
                }
            )
    for r in study.ok_runs:
        proxy, gold = r.number("ppo.proxy_reward"), r.number("ppo.gold_score")
        if proxy is not None and gold is not None:
            last = curves[curves.run == r.rel]["episode"].max() if len(curves) else math.nan
            rows.append(
                {
                    "label": r.label,
                    "variant": r.variant,
                    "size": r.size,
                    "seed": r.seed,
                    "run": r.rel,
                    "episode": (last if math.isfinite(last) else 0.0) + 0.5,
                    "proxy": proxy,
                    "gold": gold,
                    "final": True,
                }
            )
    return pd.DataFrame(rows, columns=cols).sort_values(["run", "episode"]) if rows else pd.DataFrame(columns=cols)


# --------------------------------------------------------------------------------------- over-optimization


def _zscores(values: list[float]) -> np.ndarray | None:
    a = np.asarray(values, dtype=float)
    return (a - a.mean()) / a.std() if a.size >= 3 and a.std() > 0 else None


def overopt_examples(study: Study, k: int) -> tuple[list[dict], str]:
    """PPO samples the reward model likes far more than the gold judge does (standardized within run), and
    why there are none when there are none."""
    found, scored = [], 0
    for r in study.ok_runs:
        rows = [
            s
            for s in r.stage_samples("ppo")
            if as_number(s.get("proxy_score")) is not None and as_number(s.get("gold_score")) is not None
        ]
        scored += bool(rows)
        zp, zg = _zscores([s["proxy_score"] for s in rows]), _zscores([s["gold_score"] for s in rows])
        if zp is None or zg is None:
            continue
        sft = {str(s.get("id", "")): s for s in r.stage_samples("sft")}  # the SFT policy's summary of the same post
        for s, a, b in zip(rows, zp, zg):
            before = sft.get(str(s.get("id", "")), {})
            found.append(
                {
                    "label": r.label,
                    "seed": r.seed,
                    "id": str(s.get("id", "")),
                    "post": str(s.get("post", "")),
                    "reference": str(s.get("reference", "")),
                    "response": str(s.get("response", "")),
                    "sft_response": str(before.get("response", "")),
                    "sft_gold": as_number(before.get("gold_score")),
                    "proxy": s["proxy_score"],
                    "gold": s["gold_score"],
                    "z_proxy": float(a),
                    "z_gold": float(b),
                    "gap": float(a - b),
                    "length": s.get("length"),
                    "finished": s.get("finished"),
                    **judge_view(s),
                }
            )
    reason = (
        ""
        if found
        else "no PPO samples with both a proxy and a gold score"
        if not scored
        else "the proxy or the gold score is constant within every run (fewer than 3 samples, or a degenerate policy)"
    )
    return sorted(found, key=lambda e: -e["gap"])[:k], reason


# ------------------------------------------------------------------------------------------------- samples


def display_text(text: Any) -> tuple[str, bool]:
    """(text to show, whether it is a placeholder): outer whitespace stripped and blank-line runs collapsed, so a
    degenerate policy's wall of newlines stays one line tall; an all-whitespace response is named as such."""
    raw = "" if text is None else str(text)
    shown = re.sub(r"\n(?:[ \t]*\n)+", "\n\n", raw.strip())
    if shown:
        return shown, False
    return (
        f"(no visible text: {len(raw)} whitespace character{'s' if len(raw) != 1 else ''})"
        if raw
        else "(empty response)"
    ), True


def judge_view(s: dict) -> dict:
    """The judge's verdict against the reference (outcome win/loss/tie when written, else win 0/1) and its reason."""
    outcome = s.get("outcome") if isinstance(s.get("outcome"), str) else {1: "win", 0: "loss"}.get(s.get("win"), "—")
    return {
        "win": outcome,
        "win_cls": {"win": "helps", "loss": "hurts"}.get(outcome, "none"),
        "judge_raw": str(s.get("judge_raw") or ""),
    }


def _sample_entry(source: str, s: dict | None, note: str = "") -> dict:
    if s is None:
        return {"source": source, "text": "", "raw": "", "note": note or "no sample", "missing": True}
    text, placeholder = display_text(s.get("response"))
    return {
        "source": source,
        "text": text,
        "placeholder": placeholder,
        "raw": str(s.get("response", "")),
        "missing": False,
        "note": note,
        **judge_view(s),
        "gold": fmt(s.get("gold_score")),
        "proxy": fmt(s.get("proxy_score")),
        "length": s.get("length", "—"),
        "finished": "yes" if s.get("finished") else "no (truncated)" if s.get("finished") is False else "—",
    }


def _anchor_run(study: Study) -> Run | None:
    """The baseline run whose prompts are shown: largest size, first seed that finished."""
    size = study.sizes[-1] if study.sizes else ""
    for pool in (
        [r for r in study.ok_runs if r.variant == study.baseline and r.size == size],
        [r for r in study.ok_runs if r.variant == study.baseline],
        study.ok_runs,
    ):
        if pool:
            return min(pool, key=lambda r: (r.seed is None, r.seed or 0))
    return None


def sample_grid(study: Study, n: int) -> dict | None:
    """The same validation prompts (by id) under reference, SFT, baseline PPO and every variant, one seed."""
    anchor = _anchor_run(study)
    if anchor is None or n <= 0:
        return None
    by_id = lambda run, stage: {str(s.get("id")): s for s in run.stage_samples(stage)} if run else {}
    base_ppo, base_sft = by_id(anchor, "ppo"), by_id(anchor, "sft")
    ids = list(base_ppo or base_sft)[:n]
    if not ids:
        return None
    others = [(v, study.run(v, anchor.size, anchor.seed)) for v in study.variants if v != anchor.variant]
    others_ppo = {v: by_id(run, "ppo") if run and run.ok else None for v, run in others}
    prompts = []
    for i in ids:
        first = base_ppo.get(i) or base_sft.get(i) or {}
        ref, _ = display_text(first.get("reference"))
        entries = [
            {
                "source": "reference",
                "text": ref,
                "placeholder": False,
                "raw": str(first.get("reference", "")),
                "missing": False,
                "note": "",
                "win": "—",
                "win_cls": "none",
                "judge_raw": "",
                "gold": fmt(first.get("reference_gold_score")),
                "proxy": "—",
                "length": "—",
                "finished": "—",
            },
            _sample_entry("SFT", base_sft.get(i)),
            _sample_entry(f"PPO {anchor.variant} (baseline)", base_ppo.get(i)),
        ]
        for v, run in others:
            note = "" if run and run.ok else ("run failed" if run else "no run at this seed")
            entries.append(_sample_entry(f"PPO {v}", (others_ppo[v] or {}).get(i), note))
        prompts.append({"id": i, "post": str(first.get("post") or first.get("query") or ""), "entries": entries})
    return {"seed": anchor.seed, "size": anchor.size, "prompts": prompts}
