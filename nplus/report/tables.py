"""The report's tables and the formatting of their numbers: what was run, the headline effects and findings, the
means table, what PPO adds over SFT, the scaling trends (Spearman ρ), sanity checks and provenance. Each takes a
``Study`` from ``nplus.report.load`` (with its statistics table where effects are shown) and returns rows ready
for the template; ``KEY_METRICS`` and ``SCALING_METRICS`` here also choose what the figures draw.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from nplus.metrics_doc import direction
from nplus.report.load import Run, Study, as_number
from nplus.report.verdicts import Judge, constant_shift, identical, is_bookkeeping
from nplus.stats import AA_SEED_OFFSET, AA_VARIANT

# The five numbers a reader wants first: quality (win rate), the reward model, SFT, and the two "prices"
# (KL from the reference policy and response length), which are descriptive rather than better/worse.
KEY_METRICS: tuple[tuple[str, str], ...] = (
    ("ppo.win_rate", "PPO win rate"),
    ("rm.accuracy", "RM accuracy"),
    ("sft.rouge_l", "SFT ROUGE-L"),
    ("ppo.kl", "KL(π‖π_ref)"),
    ("ppo.mean_length", "response length"),
)
SCALING_METRICS: tuple[tuple[str, str], ...] = (
    ("sft.rouge_l", "SFT ROUGE-L"),
    ("rm.accuracy", "RM accuracy"),
    ("rm.fact_check_accuracy", "RM fact check"),
    ("sft.win_rate", "SFT win rate"),
    ("ppo.win_rate", "PPO win rate"),
    ("ppo.mean_length", "PPO response length"),
)
# (label, value key, pass/fail key): the checks the pipeline writes into summary.json.
SANITY_CHECKS: tuple[tuple[str, str, str], ...] = (
    ("first PPO ratio = 1", "sanity.first_ratio", "sanity.first_ratio_ok"),
    ("initial KL = 0", "sanity.initial_kl", "sanity.initial_kl_ok"),
    ("RM padding invariance", "sanity.rm_padding_max_diff", "sanity.rm_padding_ok"),
    ("score after EOS", "sanity.score_position_offset", "sanity.score_position_ok"),
)
ALPHA = 0.05


# -------------------------------------------------------------------------------------------- formatting


def fmt(value: Any, signed: bool = False) -> str:
    """Numbers at a precision that fits their magnitude (win rates to 3 decimals, lengths to 1)."""
    v = as_number(value)
    if v is None:
        return "—"
    mag = abs(v)
    spec = ".0f" if mag >= 1000 else ".1f" if mag >= 10 else ".2f" if mag >= 1 else ".3f"
    return format(v, ("+" if signed else "") + spec)


def fmt_interval(lo: Any, hi: Any, signed: bool = False) -> str:
    if as_number(lo) is None or as_number(hi) is None:
        return ""
    return f"[{fmt(lo, signed)}, {fmt(hi, signed)}]"


def verdict_class(verdict: str) -> str:
    """CSS class: green helps, red hurts, blue changes, grey no detectable effect, faint when not assessable."""
    if verdict in ("helps", "hurts", "changes"):
        return verdict
    return "none" if verdict == "no detectable effect" else "na"


def fmt_duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def overrides_text(overrides: dict) -> str:
    return ", ".join(f"{k} = {v}" for k, v in overrides.items()) if overrides else "the baseline's configuration"


def fmt_params(params: float | None) -> str:
    if not params:
        return "?"
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if params >= scale:
            return f"{params / scale:.3g} {unit}"
    return f"{params:.0f}"


# ------------------------------------------------------------------------------------------------- headline


def _parse_time(value: Any) -> float | None:
    """Epoch seconds of an ISO timestamp such as DONE's "2025-01-31T12:00:00+0000" (local wall clock)."""
    if not isinstance(value, str) or len(value) < 19:
        return None
    try:
        return time.mktime(time.strptime(value[:19].replace(" ", "T"), "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return None


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def run_dates(r: Run) -> tuple[float | None, float | None]:
    """(start, end) as epoch seconds: env.json's start time or the config's write time; DONE's finish time."""
    start = next((t for k in ("started", "start_time", "date", "time") if (t := _parse_time(r.env.get(k)))), None)
    start = start or _mtime(r.path / "config.json") or _mtime(r.path / "command.txt")
    end = _parse_time(r.done.get("finished")) or _mtime(r.path / "DONE")
    return start, end


def _date_range(study: Study) -> str:
    starts, ends = zip(*(run_dates(r) for r in study.runs))
    first = min((t for t in starts if t), default=None)
    last = max((t for t in ends if t), default=None)
    show = lambda t: time.strftime("%Y-%m-%d %H:%M", time.localtime(t)) if t else "?"
    return f"{show(first)} → {show(last)}" if first or last else "unknown"


def _models(study: Study) -> str:
    """Model names per size, with the parameter counts the runs reported."""
    parts = []
    for size in study.sizes or [""]:
        runs = [r for r in study.runs if r.size == size]
        names = sorted({str(r.summary.get("model") or (r.config.get("model") or {}).get("name") or "?") for r in runs})
        params = [p for r in runs if (p := r.number("params"))]
        text = f"{', '.join(names)} ({fmt_params(float(np.median(params)) if params else None)} params)"
        parts.append(f"{size}: {text}" if size else text)
    return "; ".join(parts)


def what_was_run(study: Study) -> list[tuple[str, str]]:
    wall = [w for r in study.runs if (w := r.number("wall_time_s")) is not None]
    failed = len(study.failed_runs)
    presets = sorted({str(p) for p in [study.spec.get("preset"), *(r.config.get("preset") for r in study.runs)] if p})
    rows = [
        ("study", study.name + (f" (preset {', '.join(presets)})" if presets else "")),
        ("task", study.task),
        ("model", _models(study)),
        ("sizes", ", ".join(study.sizes) if study.sizes else "one size"),
        ("seeds", ", ".join(map(str, study.seeds)) or "?"),
        ("variants", f"{len(study.variants)} (baseline: {study.baseline})"),
        ("runs", f"{len(study.ok_runs)} finished" + (f", {failed} failed or incomplete" if failed else "")),
        ("dates", _date_range(study)),
        (
            "compute",
            f"{fmt_duration(sum(wall))} in total (sum of wall_time_s over {len(wall)} run{'s' * (len(wall) != 1)})"
            if wall
            else "not available (no wall_time_s)",
        ),
    ]
    return rows


def stat_row(stats: pd.DataFrame, variant: str, size: str, metric: str) -> dict | None:
    sel = stats[(stats.variant == variant) & (stats["size"] == size) & (stats.metric == metric)]
    return sel.iloc[0].to_dict() if len(sel) else None


def effect_cell(row: dict | None, metric: str, judge: Judge | None = None) -> dict:
    """One verdict cell: the paired difference, the interval the verdict was decided with (Holm-consistent when the
    statistics carry it), the verdict, and the marks of ``nplus.report.verdicts`` (bookkeeping, not comparable,
    identical on every seed, sanity checks failed)."""
    if row is None or as_number(row.get("diff")) is None:
        return {
            "text": "—",
            "interval": "",
            "verdict": "not available",
            "cls": "na",
            "title": "not available",
            "marks": [],
            "suspect": False,
        }
    verdict = row.get("verdict") or "not assessed"
    p = as_number(row.get("p_holm"))
    raw = fmt_interval(row.get("diff_ci_low"), row.get("diff_ci_high"), True)
    holm = fmt_interval(row.get("holm_ci_low"), row.get("holm_ci_high"), True)
    level = as_number(row.get("holm_level"))
    title = f"{verdict}; Holm-adjusted p = {p:.3g}" if p is not None else verdict
    if holm and level is not None:
        title += f"; Holm-consistent interval ({100 * (1 - level):.4g} %, the level Holm decided at) {holm}"
    if raw:
        title += f"; unadjusted 95 % interval {raw}"
    if boot := fmt_interval(row.get("boot_diff_ci_low"), row.get("boot_diff_ci_high"), True):
        title += f"; prompt-level bootstrap interval {boot}"
    cls, marks = verdict_class(verdict), []
    variant, size = str(row.get("variant", "")), str(row.get("size", "") or "")
    if is_bookkeeping(metric):
        verdict, cls = "bookkeeping (not judged)", "na"
    elif judge is not None and (why := judge.not_comparable(variant, metric)):
        verdict, cls = "not comparable", "nc"
        title = f"not comparable: {why}; {title}"
    elif constant_shift(row):
        verdict, cls = "same shift on every seed (untested)", "na"
        title = f"the difference is {fmt(row['diff'], True)} on every seed: no variance, no test; {title}"
    elif identical(row):
        same = judge is not None and judge.ppo_only.get(variant) and metric.startswith(("sft.", "rm."))
        verdict = "same SFT/RM (by construction)" if same else "identical on every seed"
        cls = "na"
    suspect = bool(judge is not None and (note := judge.sanity_note(variant, size)))
    if suspect:
        marks.append("⚠ sanity failed")
        title = f"⚠ {note}; {title}"
    return {
        "text": fmt(row["diff"], signed=True),
        "interval": holm or raw,
        "raw_interval": raw,
        "verdict": verdict,
        "cls": cls,
        "title": title,
        "marks": marks,
        "suspect": suspect,
    }


def _mean_cell(row: dict | None) -> dict:
    if row is None or as_number(row.get("mean")) is None:
        return {"text": "—", "interval": "", "n": ""}
    n = as_number(row.get("n"))
    return {
        "text": fmt(row["mean"]),
        "interval": fmt_interval(row.get("ci_low"), row.get("ci_high")),
        "n": f"n = {int(n)}" if n else "",
    }


def _n_pairs(stats: pd.DataFrame, variant: str, size: str) -> str:
    sel = stats[(stats.variant == variant) & (stats["size"] == size)]
    n = pd.to_numeric(sel["n_pairs"], errors="coerce").max() if len(sel) else math.nan
    if not math.isfinite(n):
        n = pd.to_numeric(sel["n"], errors="coerce").max() if len(sel) else math.nan
    return str(int(n)) if math.isfinite(n) else "—"


def row_notes(judge: Judge | None, variant: str, size: str) -> list[dict]:
    """The marks a headline row carries before any number is read: sanity failures, other prompts, no-op."""
    if judge is None:
        return []
    notes = []
    if note := judge.sanity_note(variant, size):
        notes.append({"cls": "suspect", "text": "⚠ " + note})
    if why := judge.other_prompts.get(variant):
        notes.append({"cls": "nc", "text": "not comparable: " + why})
    if variant in judge.noop:
        notes.append({"cls": "na", "text": "no-op here: identical to the baseline on every seed and PPO metric"})
    return notes


def headline_table(study: Study, stats: pd.DataFrame, judge: Judge | None = None) -> dict:
    """The answer in one table: each variant's paired effect on the key metrics, baseline values on top."""
    metrics = [{"key": k, "label": lab, "direction": direction(k)} for k, lab in KEY_METRICS]
    sizes = study.sizes or [""]
    baseline = [
        {"size": s, "cells": [_mean_cell(stat_row(stats, study.baseline, s, m["key"])) for m in metrics]} for s in sizes
    ]
    rows = []
    for variant in study.variants:
        if variant in (study.baseline, AA_VARIANT):  # the A/A arm is a check, shown in its own section
            continue
        for size in sizes:
            runs = [r for r in study.runs if r.variant == variant and r.size == size]
            if not runs:
                continue
            failed = sum(not r.ok for r in runs)
            rows.append(
                {
                    "variant": variant,
                    "size": size,
                    "overrides": overrides_text(study.overrides.get(variant, {})),
                    "n": _n_pairs(stats, variant, size),
                    "failed": failed,
                    "all_failed": failed == len(runs),
                    "notes": row_notes(judge, variant, size),
                    "cells": [effect_cell(stat_row(stats, variant, size, m["key"]), m["key"], judge) for m in metrics],
                }
            )
    return {"metrics": metrics, "baseline": baseline, "rows": rows, "has_sizes": bool(study.sizes)}


def rlhf_effect_rows(study: Study) -> list[dict]:
    """What PPO adds over its SFT policy per variant (nplus.stats.rlhf_effect: win-rate difference on the same
    prompts with its seed × prompt bootstrap interval, per-seed figures, gold-score difference), baseline first."""
    from nplus.stats import RunRef, rlhf_effect

    refs = [RunRef(r.variant, r.size, r.seed, r.path) for r in study.ok_runs if r.seed is not None]
    rows = rlhf_effect(refs)
    rows.sort(
        key=lambda e: (
            e["variant"] != study.baseline,
            study.variants.index(e["variant"]) if e["variant"] in study.variants else 0,
        )
    )
    for e in rows:
        ci = e["win_rate_diff_ci"]
        e["label"] = e["variant"] + (f" [{e['size']}]" if e["size"] else "")
        e["interval"] = fmt_interval(ci[0], ci[1], True) if ci else ""
        e["excludes_zero"] = bool(ci) and (ci[0] > 0 or ci[1] < 0)
        e["per_seed"] = ", ".join(f"{fmt(x['sft_win_rate'])} → {fmt(x['ppo_win_rate'])}" for x in e["seeds"])
    return rows


def findings(headline: dict, stats: pd.DataFrame | None = None, judge: Judge | None = None) -> list[dict]:
    """The headline table in sentences: per variant, the key metrics it detectably moved, then any other metric
    of stats.csv judged helps / hurts (so a finding outside the table is not lost). Bookkeeping metrics, metrics
    that are not comparable and differences identical on every seed are never findings; a variant's sanity failure
    and other-prompt caveat come with its line."""
    key_names = {m["key"] for m in headline["metrics"]}
    out, quiet = [], []
    for row in headline["rows"]:
        moved = [
            (m["label"], c)
            for m, c in zip(headline["metrics"], row["cells"])
            if c["cls"] in ("helps", "hurts", "changes")
        ]
        if stats is not None:
            sel = stats[
                (stats.variant == row["variant"]) & (stats["size"] == row["size"]) & ~stats.metric.isin(key_names)
            ]
            moved += [
                (r["metric"], c)
                for r in sel.to_dict("records")
                if (c := effect_cell(r, r["metric"], judge))["cls"] in ("helps", "hurts")
            ]
        name = row["variant"] + (f" [{row['size']}]" if row["size"] else "")
        if moved or row["notes"]:
            parts = [
                {
                    "verdict": c["verdict"],
                    "cls": c["cls"],
                    "metric": label,
                    "value": f"{c['text']} {c['interval']}".strip(),
                }
                for label, c in moved
            ]
            out.append({"variant": name, "overrides": row["overrides"], "parts": parts, "notes": row["notes"]})
        elif not row["all_failed"]:
            quiet.append(name)
    return out + ([{"variant": "", "overrides": "", "parts": [], "notes": [], "quiet": quiet}] if quiet else [])


def means_table(study: Study, stats: pd.DataFrame) -> dict:
    """Every variant's absolute values (mean over seeds and interval): the table for single-variant studies."""
    metrics = [{"key": k, "label": lab, "direction": direction(k)} for k, lab in KEY_METRICS]
    rows = [
        {"variant": v, "size": s, "cells": [_mean_cell(stat_row(stats, v, s, m["key"])) for m in metrics]}
        for v in study.variants
        for s in (study.sizes or [""])
        if any(r.variant == v and r.size == s for r in study.runs)
    ]
    return {"metrics": metrics, "rows": rows, "has_sizes": bool(study.sizes)}


def effects_frame(study: Study, stats: pd.DataFrame, judge: Judge | None = None) -> pd.DataFrame:
    """Non-baseline rows with a paired difference, labelled like the runs (for the forest plot), with the class the
    page shows (``shown``: a verdict class, "nc" not comparable, "na" identical or bookkeeping) and the sanity mark."""
    df = stats[(stats.variant != study.baseline) & stats["diff"].notna()].copy()
    df["label"] = [f"{v} [{s}]" if s else v for v, s in zip(df.variant, df["size"])]
    df["verdict"] = [v or "not assessed" for v in df.verdict]
    cells = [effect_cell(r, r["metric"], judge) for r in df.to_dict("records")]
    df["shown"] = [c["cls"] for c in cells]
    df["suspect"] = [c["suspect"] for c in cells]
    return df


# ------------------------------------------------------------------------------------------------- scaling


def spearman_rows(results: pd.DataFrame) -> list[dict]:
    """Does each metric rise with model size? Per variant and metric: Spearman's ρ of the per-seed values against
    parameter count (descriptive), and the verdict from the least-squares slope of the value on log10(parameters)
    with its Student t interval (n − 2 degrees of freedom). A bootstrap of ρ resampling 3 seeds within each size was
    used before and dropped: resampling 3 values understates their spread, so its intervals were too narrow."""
    from scipy import stats

    rows = []
    sel = results.dropna(subset=["params"])
    for variant, g in sel.groupby("variant", sort=False):
        for metric, label in SCALING_METRICS:
            m = g[g.metric == metric]
            x, y = m["params"].to_numpy(float), m["value"].to_numpy(float)
            if np.unique(x).size < 2:
                continue
            base = {
                "variant": variant,
                "metric": metric,
                "label": label,
                "n": int(x.size),
                "sizes": int(np.unique(x).size),
            }
            if np.ptp(y) == 0:  # say so rather than drop the row: "win rate 0 at every size" is a finding
                rows.append(
                    {
                        **base,
                        "rho": math.nan,
                        "slope": math.nan,
                        "ci_low": math.nan,
                        "ci_high": math.nan,
                        "trend": f"the same at every size ({fmt(y[0])}): no trend to test",
                        "cls": "none",
                    }
                )
                continue
            rho = float(stats.spearmanr(x, y).statistic)
            fit = stats.linregress(np.log10(x), y)
            if x.size > 2:
                half = float(stats.t.ppf(1 - ALPHA / 2, x.size - 2)) * fit.stderr
                lo, hi = fit.slope - half, fit.slope + half
            else:
                lo = hi = math.nan
            trend = "rises with size" if lo > 0 else "falls with size" if hi < 0 else "no clear trend"
            # colour by direction: a longer response is a change, not an improvement
            cls = (
                ("changes" if trend != "no clear trend" else "none")
                if direction(metric) == "none"
                else {"rises with size": "helps", "falls with size": "hurts"}.get(trend, "none")
            )
            rows.append(
                {**base, "rho": rho, "slope": float(fit.slope), "ci_low": lo, "ci_high": hi, "trend": trend, "cls": cls}
            )
    return rows


# ------------------------------------------------------------------------------------ sanity and provenance


def _check_cell(run: Run, value_key: str, ok_key: str) -> dict:
    ok, value = run.summary.get(ok_key), run.summary.get(value_key)
    if not isinstance(ok, bool):
        return {"text": "—", "cls": "na", "value": fmt(value) if as_number(value) is not None else ""}
    v = as_number(value)
    return {
        "text": "pass" if ok else "FAIL",
        "cls": "helps" if ok else "hurts",
        "value": (f"{v:.3g}" if v is not None else ""),
    }


def sanity_table(study: Study) -> dict:
    rows = []
    for r in study.runs:
        cells = [_check_cell(r, vk, ok) for _, vk, ok in SANITY_CHECKS] if r.ok else []
        rows.append(
            {
                "label": r.label,
                "seed": r.seed,
                "status": r.status,
                "error": r.error,
                "cells": cells,
                "all_pass": bool(cells) and all(c["cls"] == "helps" for c in cells),
            }
        )
    checked = [row for row in rows if row["cells"] and any(c["cls"] != "na" for c in row["cells"])]
    return {
        "checks": [c[0] for c in SANITY_CHECKS],
        "rows": rows,
        "n_checked": len(checked),
        "n_pass": sum(row["all_pass"] for row in checked),
    }


def _git(env: dict) -> str:
    g = env.get("git") if isinstance(env.get("git"), dict) else {}
    rev = str(g.get("revision") or env.get("git_revision") or "unknown")
    return rev[:12] + (" (dirty)" if g.get("dirty") else "")


def _cpu(env: dict) -> str:
    """(CPU model, cores, torch threads): bit-identical numbers need the same CPU type and thread count."""
    return f" ({env['cpu']}, {env.get('torch_threads', '?')} threads)" if env.get("cpu") else ""


def provenance(study: Study) -> dict:
    runs = [
        {
            "label": r.label,
            "seed": r.seed,
            "status": r.status,
            "hash": str(r.config.get("hash") or "—"),
            "git": _git(r.env),
            "device": str(r.env.get("device") or "—") + _cpu(r.env),
            "command": r.command or "—",
            "path": r.rel,
        }
        for r in study.runs
    ]
    versions: dict[str, set] = {}
    for r in study.runs:
        for pkg, ver in (r.env.get("packages") or {}).items():
            versions.setdefault(pkg, set()).add(str(ver))
    packages = [
        {"name": k, "version": ", ".join(sorted(v)), "differs": len(v) > 1} for k, v in sorted(versions.items())
    ]
    pythons = sorted({str(r.env.get("python")) for r in study.runs if r.env.get("python")})
    return {
        "runs": runs,
        "packages": packages,
        "python": ", ".join(pythons) or "unknown",
        "platforms": ", ".join(sorted({str(r.env["platform"]) for r in study.runs if r.env.get("platform")}))
        or "unknown",
        "spec": json.dumps(study.spec, indent=2, sort_keys=True, default=str) if study.spec else "",
    }


def variants_table(study: Study) -> list[dict]:
    out = []
    for v in study.variants:
        runs = [r for r in study.runs if r.variant == v]
        overrides = overrides_text(study.overrides.get(v, {}))
        if v == AA_VARIANT:
            overrides = f"A/A check: the baseline's configuration, training seed + {AA_SEED_OFFSET}"
        out.append(
            {
                "variant": v,
                "baseline": v == study.baseline,
                "overrides": overrides,
                "ok": sum(r.ok for r in runs),
                "failed": sum(not r.ok for r in runs),
            }
        )
    return out


def label_agreement(study: Study) -> list[dict]:
    """Per variant trained on relabelled pairs (task.comparisons_source written by ``nplus label``, or
    ``tldr-synth:<judge>``): the labeller and how often its training labels agree with the original labels and
    with the gold judge (the label.json of the labels, copied into the run directory by the pipeline)."""
    out, seen = [], set()
    for r in study.ok_runs:
        source = str((r.config.get("task") or {}).get("comparisons_source", ""))
        path = r.path / "label.json" if (r.path / "label.json").is_file() else Path(source) / "label.json"
        if (r.variant, source) in seen or not path.is_file():
            continue
        seen.add((r.variant, source))
        try:
            meta = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        for split, rec in sorted((meta.get("splits") or {}).items()):
            if rec.get("relabelled", True):
                out.append(
                    {
                        "variant": r.variant,
                        "judge": str(meta.get("worker", meta.get("judge", ""))),
                        "split": split,
                        "labelled": rec.get("labelled"),
                        "unparseable": rec.get("unparseable"),
                        "failed": rec.get("failed"),
                        "original": fmt(rec.get("agreement_with_original")),
                        "gold": fmt(rec.get("agreement_with_gold")),
                    }
                )
    return out


def failures(study: Study) -> list[dict]:
    return [
        {"label": r.label, "seed": r.seed, "status": r.status, "error": r.error, "path": r.rel}
        for r in study.failed_runs
    ]
