"""Rebuild a committed report from what it keeps: its ``tables/`` (CSV) and its own ``index.html``.

The runs behind ``reports/NAME`` are not in the repository (runs/ is git-ignored), so a report cannot be built
again with ``nplus report runs/NAME``. Everything the verdicts, the headline's answer and the figures need is in its
tables: per-run summaries with the sanity checks (runs.csv), the statistics (stats.csv), training curves
(aggregated over seeds), proxy-vs-gold and checkpoint tables, the knob and power tables. What only the runs held —
the post text of the samples, the over-optimization examples, the A/A arm, provenance and labels — is carried
over from the previous page as it rendered it (our own escaped HTML, not re-read as data), and the page says so.

    python -m nplus.report.rebuild reports/NAME [reports/OTHER ...]

Only headline.csv, stats.csv (with the Holm columns) and spearman.csv are rewritten; the other tables stay as
they are, so a rebuild never loses what it cannot recompute.
"""

from __future__ import annotations

import html
import json
import math
import re
import sys
from pathlib import Path

import pandas as pd

from nplus.report.build import Options, write_report
from nplus.report.load import (
    ReportError,
    Run,
    Study,
    choose_baseline,
    normalize_stats,
    order_sizes,
    order_variants,
    spec_overrides,
)

REWRITTEN = ("headline", "stats", "spearman")
IDENTITY = ("path", "variant", "size", "seed", "status", "error")


def _csv(path: Path) -> pd.DataFrame:
    if not path.exists() or path.stat().st_size == 0:
        return pd.DataFrame()
    try:
        df = pd.read_csv(path, dtype={"size": str, "variant": str, "label": str})
    except pd.errors.EmptyDataError:
        return pd.DataFrame()
    if "size" in df.columns:
        df["size"] = df["size"].fillna("").astype(str)
    return df


def _value(v):
    if isinstance(v, str):
        return {"True": True, "False": False}.get(v, v)
    if isinstance(v, float) and math.isnan(v):
        return None
    return v.item() if hasattr(v, "item") else v


def _section(page: str, start: str, end: str) -> str:
    i = page.find(start)
    if i < 0:
        return ""
    j = page.find(end, i)
    return page[i : j + len(end)] if j >= 0 else ""


def _facts(page: str) -> list[tuple[str, str]]:
    block = _section(page, '<dl class="facts">', "</dl>")
    return [
        (html.unescape(k).strip(), html.unescape(re.sub(r"<[^>]+>", "", v)).strip())
        for k, v in re.findall(r"<dt>(.*?)</dt>\s*<dd>(.*?)</dd>", block, flags=re.DOTALL)
    ]


def _spec(page: str) -> dict:
    m = re.search(r"<summary>study\.json</summary>\s*<pre class=\"block\">(.*?)</pre>", page, flags=re.DOTALL)
    return json.loads(html.unescape(m.group(1))) if m else {}


def _rlhf(page: str) -> list[dict]:
    """The "What PPO adds over SFT" rows as the previous page computed them (the samples they need are gone)."""
    table = _section(_section(page, "<h3>What PPO adds over SFT</h3>", "</table>"), "<tbody>", "</tbody>")
    rows = []
    for tr in re.findall(r"<tr>(.*?)</tr>", table, flags=re.DOTALL):
        cells = [
            html.unescape(re.sub(r"<[^>]+>", "", c)).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", tr, re.DOTALL)
        ]
        if len(cells) != 6:
            continue
        label, n, diff, interval, per_seed, gold = cells
        ci = [float(x) for x in re.findall(r"[-+]?\d*\.\d+|[-+]?\d+", interval.split("(")[0])][:2]
        variant, _, size = label.partition(" [")
        rows.append(
            {
                "variant": variant,
                "size": size.rstrip("]"),
                "label": label,
                "n": n,
                "win_rate_diff": float(diff),
                "win_rate_diff_ci": ci if len(ci) == 2 else None,
                "interval": interval.replace(" (excludes 0)", ""),
                "excludes_zero": "(excludes 0)" in interval,
                "per_seed": per_seed,
                "gold_score_diff": None if gold in ("—", "") else float(gold),
            }
        )
    return rows


def _runs(report: Path, runs: pd.DataFrame, task: str) -> list[Run]:
    out = []
    for rec in runs.to_dict("records"):
        summary = {k: v for k, v in ((k, _value(v)) for k, v in rec.items() if k not in IDENTITY) if v is not None}
        seed = _value(rec.get("seed"))
        out.append(
            Run(
                path=report / "runs-not-committed" / str(rec["path"]),
                rel=str(rec["path"]),
                variant=str(rec["variant"]),
                size=str(rec.get("size") or ""),
                seed=int(seed) if seed is not None else None,
                status=str(rec["status"]),
                error=str(_value(rec.get("error")) or ""),
                summary=summary,
                config={"task": {"name": task}, "preset": summary.get("preset")},
            )
        )
    return out


def load_report_study(report: Path) -> tuple[Study, dict, dict[str, str]]:
    """(study, inputs for ``write_report``, carried sections) from a committed report directory."""
    report = Path(report)
    page_path, tables = report / "index.html", report / "tables"
    if not page_path.is_file() or not (tables / "runs.csv").is_file():
        raise ReportError(f"{report}: not a report directory with index.html and tables/runs.csv")
    page = page_path.read_text(encoding="utf-8")
    facts, spec = _facts(page), _spec(page)
    task = dict(facts).get("task", "unknown")
    runs = _runs(report, _csv(tables / "runs.csv"), task)
    overrides = spec_overrides(spec)
    variants = order_variants(runs, list(overrides))
    baseline = choose_baseline(spec, variants, overrides)
    variants = [baseline] + [v for v in variants if v != baseline]
    sizes = order_sizes(runs)
    m = re.search(r"<dt>study directory</dt><dd><code>(.*?)</code></dd>", page)
    root = Path(html.unescape(m.group(1))) if m else report
    study = Study(
        root=root,
        name=str(spec.get("name") or report.name),
        spec=spec,
        runs=runs,
        baseline=baseline,
        single=False,
        variants=variants,
        sizes=sizes,
        overrides=overrides,
    )
    label_of = {r.label: (r.variant, r.size) for r in runs}
    curves = _csv(tables / "training_curves.csv")
    if len(curves):
        curves["variant"] = [label_of.get(lab, (lab, ""))[0] for lab in curves.label]
        curves["size"] = [label_of.get(lab, (lab, ""))[1] for lab in curves.label]
    peaks = _csv(tables / "overoptimization_peaks.csv")
    for col in ("overoptimized", "peak_is_sft"):
        if col in peaks:
            peaks[col] = peaks[col].map(lambda v: _value(v) is True)
    from nplus.report.load import results_frame

    stats = normalize_stats(_csv(tables / "stats.csv"))
    inputs = {
        "results": results_frame(study),
        "stats": stats if stats is not None else pd.DataFrame(),
        "stats_source": "stats.csv written by `nplus stats` (this report's committed tables/stats.csv)",
        "curves": curves if len(curves) else pd.DataFrame(columns=["label", "variant", "size", "metric", "episode"]),
        "pg": _csv(tables / "proxy_vs_gold.csv"),
        "points": _csv(tables / "overoptimization_checkpoints.csv"),
        "peaks": peaks,
        "knob": _csv(tables / "knob.csv"),
        "grid": None,
        "examples": [],
        "examples_reason": "",
        "rlhf": _rlhf(page),
        "aa": {},
        "power": _csv(tables / "power.csv"),
        "prov": {"runs": [], "packages": [], "python": "", "platforms": "", "spec": ""},
        "labels": [],
        "facts": facts,
    }
    overopt = _section(page, '<section id="overoptimization">', "</section>")
    carried = {
        "trust": _section(page, '<section id="trust">', "</section>"),
        "samples": _section(page, '<section id="samples">', "</section>"),
        "provenance": _section(page, '<section id="provenance">', "</section>"),
        "examples": overopt[overopt.find("<h3>Where the reward model and the gold judge") : -len("</section>")]
        if "<h3>Where the reward model and the gold judge" in overopt
        else "",
        "labels": _section(page, "<h3>Labels: who labelled the training pairs</h3>", "</table></div>"),
    }
    return study, inputs, {k: v for k, v in carried.items() if v}


def rebuild(report: Path, options: Options | None = None) -> Path:
    options = options or Options()
    study, inputs, carried = load_report_study(Path(report))
    for old in (Path(report) / "figures").glob("*.*"):  # every figure is drawn again; none left from the old page
        old.unlink()
    title = re.search(r"<title>(.*?)</title>", (Path(report) / "index.html").read_text(encoding="utf-8"), re.DOTALL)
    opts = Options(
        title=html.unescape(title.group(1)) if title else None,
        samples=options.samples,
        examples=options.examples,
        published=options.published,
        formats=options.formats,
    )
    return write_report(study, inputs, Path(report), opts, carried=carried, tables=REWRITTEN)


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: python -m nplus.report.rebuild reports/NAME [reports/OTHER ...]", file=sys.stderr)
        return 2
    for name in argv:
        print(rebuild(Path(name)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
