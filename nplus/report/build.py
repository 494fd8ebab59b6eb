"""Load a study (or one run) from disk and assemble the report: tables, figures, and the HTML page.

The study layout is the ablation runner's (docs/CONTRACTS.md): ``<study>/<variant>[/size=<s>]/seed=<n>/`` run
directories next to ``study.json`` and, once ``nplus stats`` has run, ``stats.csv`` / ``stats.json``. Everything is
read defensively: a run that failed, a metric that was never logged or a stats file whose columns moved must
leave a section saying "not available", never a traceback, because the report is what people open after a
long sweep went partly wrong.
"""

from __future__ import annotations

import csv
import json
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

from nplus.metrics_doc import direction

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
    ("ppo.win_rate", "PPO win rate"),
)
CURVE_METRICS: tuple[tuple[str, str], ...] = (
    ("objective/scores", "proxy reward (objective/scores)"),
    ("eval/gold_score", "gold score (eval/gold_score)"),
    ("objective/kl", "KL (objective/kl)"),
    ("val/mean_length", "response length (val/mean_length)"),
    ("val/eos_rate", "EOS rate (val/eos_rate)"),
)
# (label, value key, pass/fail key): the checks the pipeline writes into summary.json.
SANITY_CHECKS: tuple[tuple[str, str, str], ...] = (
    ("first PPO ratio = 1", "sanity.first_ratio", "sanity.first_ratio_ok"),
    ("initial KL = 0", "sanity.initial_kl", "sanity.initial_kl_ok"),
    ("RM padding invariance", "sanity.rm_padding_max_diff", "sanity.rm_padding_ok"),
    ("score after EOS", "sanity.score_position_offset", "sanity.score_position_ok"),
)
ALPHA = 0.05
PUBLISHED_PATH = Path(__file__).with_name("published.json")


class ReportError(ValueError):
    """The input cannot be reported on (no such directory, no runs in it)."""


# ----------------------------------------------------------------------------------------------- reading files

def read_json(path: Path) -> Any:
    """JSON file contents, or None when missing or unreadable (a run killed mid-write)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def read_jsonl(path: Path) -> list[dict]:
    """JSONL rows; a torn last line (a run killed while appending) is skipped, not fatal."""
    rows: list[dict] = []
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return rows
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def read_text(path: Path) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def as_number(value: Any) -> float | None:
    """A finite float, or None (bools are checks, not measurements)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


# ------------------------------------------------------------------------------------------------------- runs

@dataclass
class Run:
    path: Path
    rel: str
    variant: str
    size: str  # "" when the study has no size axis
    seed: int | None
    status: str  # "ok" (DONE written), "failed" (error.txt), "incomplete" (neither: killed or still running)
    error: str = ""
    config: dict = field(default_factory=dict)
    details: dict = field(default_factory=dict)
    summary: dict = field(default_factory=dict)
    env: dict = field(default_factory=dict)
    command: str = ""
    done: dict = field(default_factory=dict)
    metrics: list[dict] = field(default_factory=list)
    samples: list[dict] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def label(self) -> str:
        return f"{self.variant} [{self.size}]" if self.size else self.variant

    def number(self, key: str) -> float | None:
        return as_number(self.summary.get(key))

    def stage_samples(self, stage: str) -> list[dict]:
        return [s for s in self.samples if s.get("stage") == stage]


def _parse_rel(parts: Iterable[str]) -> tuple[str, str, int | None]:
    """(variant, size, seed) from the path below the study root: ``<variant>[/size=<s>]/seed=<n>``."""
    variant, size, seed = [], "", None
    for part in parts:
        key, _, value = part.partition("=")
        if key == "seed" and value.lstrip("-").isdigit():
            seed = int(value)
        elif key == "size" and value:
            size = value
        elif key == "variant" and value:
            variant.append(value)
        else:
            variant.append(part)
    return "/".join(variant), size, seed


def _status(path: Path) -> tuple[str, str]:
    """(status, why) of a run directory: DONE is written last, error.txt on a contained failure."""
    if (path / "DONE").exists():
        return "ok", ""
    if (path / "error.txt").exists():
        return "failed", first_line(read_text(path / "error.txt")) or "error.txt is empty"
    if not _is_run_dir(path):
        return "missing", "not started (no run directory, or nothing written to it)"
    return "incomplete", "no DONE marker and no error.txt (killed, or still running)"


def load_run(path: Path, root: Path, default_variant: str, spec: dict | None = None) -> Run:
    """One run directory; ``spec`` (a study.json spec entry) names its variant, size and seed when given."""
    rel = path.relative_to(root).as_posix() if path != root else "."
    variant, size, seed = _parse_rel(path.relative_to(root).parts)
    if spec:
        variant, size = str(spec.get("variant") or variant), str(spec.get("size") or "")
        seed = spec["seed"] if isinstance(spec.get("seed"), int) else seed
    summary = read_json(path / "summary.json") or {}
    config = read_json(path / "config.json") or {}
    status, error = _status(path)
    if seed is None:
        seed = next((int(s) for s in (summary.get("seed"), config.get("seed")) if isinstance(s, int)), None)
    done = read_json(path / "DONE")
    return Run(path=path, rel=rel, variant=variant or default_variant, size=size, seed=seed, status=status,
               error=error,
               config=config if isinstance(config, dict) else {}, details=read_json(path / "details.json") or {},
               summary=summary if isinstance(summary, dict) else {}, env=read_json(path / "env.json") or {},
               command=read_text(path / "command.txt").strip(), done=done if isinstance(done, dict) else {},
               metrics=read_jsonl(path / "metrics.jsonl"), samples=read_jsonl(path / "samples.jsonl"))


# ----------------------------------------------------------------------------------------------------- study

@dataclass
class Study:
    root: Path
    name: str
    spec: dict
    runs: list[Run]
    baseline: str
    single: bool
    variants: list[str]
    sizes: list[str]
    overrides: dict[str, dict]

    @property
    def ok_runs(self) -> list[Run]:
        return [r for r in self.runs if r.ok]

    @property
    def failed_runs(self) -> list[Run]:
        return [r for r in self.runs if not r.ok]

    @property
    def seeds(self) -> list[int]:
        return sorted({r.seed for r in self.runs if r.seed is not None})

    @property
    def task(self) -> str:
        names = sorted({str((r.config.get("task") or {}).get("name")) for r in self.runs if r.config.get("task")})
        return ", ".join(names) or "unknown"

    def run(self, variant: str, size: str, seed: int | None) -> Run | None:
        return next((r for r in self.runs if (r.variant, r.size, r.seed) == (variant, size, seed)), None)


def _is_run_dir(path: Path) -> bool:
    return any((path / name).exists() for name in ("summary.json", "config.json", "error.txt", "DONE"))


def find_run_dirs(root: Path) -> tuple[list[Path], bool]:
    """Run directories below ``root`` (``seed=*``, hidden and wandb folders skipped), or [root] for one run."""
    found = [p for p in root.rglob("seed=*") if p.is_dir()
             and not any(part.startswith(".") or part == "wandb" for part in p.relative_to(root).parts)]
    if found:
        return sorted(found), False
    if _is_run_dir(root):
        return [root], True
    return [], False


def _study_meta(raw: Any) -> tuple[dict, list[dict]]:
    """(study description, spec list) from study.json: the runner writes {"study": {...}, "specs": [...]}."""
    if not isinstance(raw, dict):
        return {}, []
    meta = raw.get("study") if isinstance(raw.get("study"), dict) else raw
    specs = [s for s in raw.get("specs") or [] if isinstance(s, dict)]
    return meta, specs


def _spec_overrides(meta: dict) -> dict[str, dict]:
    """Variant name → what it changes (details, framework preset, hyperparameters), whatever shape it has."""
    variants = meta.get("variants")
    items: list[tuple[Any, Any]] = []
    if isinstance(variants, dict):
        items = list(variants.items())
    elif isinstance(variants, list):
        items = [(v.get("name"), v) if isinstance(v, dict) else (v, {}) for v in variants]
    out: dict[str, dict] = {}
    for name, body in items:
        if not name:
            continue
        body = body if isinstance(body, dict) else {}
        merged: dict = {"framework": body["framework"]} if body.get("framework") else {}
        for key in ("details", "overrides", "hparams"):
            if isinstance(body.get(key), dict):
                merged.update(body[key])
        out[str(name)] = merged
    return out


def _choose_baseline(spec: dict, variants: list[str], overrides: dict[str, dict]) -> str:
    named = spec.get("baseline")
    if isinstance(named, dict):
        named = named.get("name")
    if isinstance(named, str) and named in variants:
        return named
    if "baseline" in variants:
        return "baseline"
    no_flips = [v for v in variants if v in overrides and not overrides[v]]
    return no_flips[0] if no_flips else (variants[0] if variants else "baseline")


def _order_variants(runs: list[Run], spec_order: list[str]) -> list[str]:
    present = {r.variant for r in runs}
    return [v for v in spec_order if v in present] + sorted(present - set(spec_order))


def _order_sizes(runs: list[Run]) -> list[str]:
    """Sizes by parameter count (from summary.json), falling back to a natural sort of the labels."""
    def key(size: str) -> tuple:
        params = [r.number("params") for r in runs if r.size == size and r.number("params")]
        num = re.findall(r"[\d.]+", size)
        return (float(np.median(params)) if params else math.inf, float(num[0]) if num else math.inf, size)
    return sorted({r.size for r in runs if r.size}, key=key)


def _derive_overrides(runs: list[Run], baseline: str) -> dict[str, dict]:
    """Detail flips read from details.json against the baseline's, for variants study.json does not describe."""
    base = next((r.details for r in runs if r.variant == baseline and r.details), {})
    out: dict[str, dict] = {}
    for r in runs:
        if r.variant not in out and r.details and base:
            out[r.variant] = {k: v for k, v in r.details.items() if base.get(k) != v}
    return out


def _run_dirs(root: Path, specs: list[dict]) -> tuple[list[tuple[Path, dict | None]], bool]:
    """Every spec's directory (started or not) plus any ``seed=*`` directory the spec list does not name."""
    listed = [(root / str(s["run_dir"]), s) for s in specs if s.get("run_dir")]
    found, single = find_run_dirs(root)
    known = {p.resolve() for p, _ in listed}
    return listed + [(p, None) for p in found if p.resolve() not in known], single and not listed


def load_study(path: Path) -> Study:
    root = Path(path)
    if not root.is_dir():
        raise ReportError(f"{root}: no such directory")
    meta, specs = _study_meta(read_json(root / "study.json"))
    dirs, single = _run_dirs(root, specs)
    if not dirs:
        raise ReportError(f"{root}: no run directories (expected <variant>/seed=<n>/ folders or a run's summary.json)")
    spec_over = _spec_overrides(meta)
    default_variant = "run" if single else str(meta.get("baseline") or "baseline")
    runs = [load_run(d, root, default_variant, spec) for d, spec in dirs]
    variants = _order_variants(runs, list(spec_over))
    baseline = _choose_baseline(meta, variants, spec_over)
    overrides = {**_derive_overrides(runs, baseline), **spec_over}
    variants = [baseline] + [v for v in variants if v != baseline]
    sizes = _order_sizes(runs)
    # Runs in reading order everywhere (tables, sanity checks, provenance): baseline first, then by size and seed.
    runs.sort(key=lambda r: (variants.index(r.variant), sizes.index(r.size) if r.size in sizes else -1,
                             r.seed if r.seed is not None else math.inf, r.rel))
    resolved = root.resolve()
    # A lone run directory is usually <study>/seed=<n>: "smoke/seed=1" says more than "seed=1".
    name = str(meta.get("name") or (f"{resolved.parent.name}/{resolved.name}" if resolved.name.startswith("seed=")
                                    else resolved.name))
    return Study(root=root, name=name, spec=meta, runs=runs, baseline=baseline, single=single,
                 variants=variants, sizes=sizes, overrides=overrides)


# ---------------------------------------------------------------------------------------------------- results

def results_frame(study: Study) -> pd.DataFrame:
    """Long table of every finite summary number of every finished run: variant, size, seed, metric, value."""
    rows = []
    for r in study.ok_runs:
        params = r.number("params")
        for key, value in r.summary.items():
            v = as_number(value)
            if v is not None and not key.startswith("sanity."):
                rows.append({"variant": r.variant, "size": r.size, "seed": r.seed, "label": r.label,
                             "params": params, "metric": key, "value": v})
    return pd.DataFrame(rows, columns=["variant", "size", "seed", "label", "params", "metric", "value"])


# ---------------------------------------------------------------------------------------------------- stats

# Column names the statistics module may use (the contract is still settling): alias → canonical.
_STAT_ALIASES = {
    "ci_lo": "ci_low", "ci_hi": "ci_high", "lo": "ci_low", "hi": "ci_high", "low": "ci_low", "high": "ci_high",
    "diff_lo": "diff_ci_low", "diff_hi": "diff_ci_high", "diff_ci_lo": "diff_ci_low", "diff_ci_hi": "diff_ci_high",
    "diff_low": "diff_ci_low", "diff_high": "diff_ci_high", "delta": "diff", "effect": "diff", "mean_diff": "diff",
    "delta_ci_low": "diff_ci_low", "delta_ci_high": "diff_ci_high", "p": "p_ttest", "p_t": "p_ttest",
    "p_value": "p_ttest", "p_adj": "p_holm", "p_adjusted": "p_holm", "p_corrected": "p_holm",
    "n_seeds": "n", "count": "n", "sd": "std", "n_pairs": "n_pairs", "model_size": "size",
}
# boot_*: the prompt-level (hierarchical bootstrap) intervals `nplus stats` adds for win rates.
STAT_COLUMNS = ("variant", "size", "metric", "mean", "std", "n", "ci_low", "ci_high", "diff", "diff_ci_low",
                "diff_ci_high", "n_pairs", "p_ttest", "p_wilcoxon", "p_holm", "boot_ci_low", "boot_ci_high",
                "boot_diff_ci_low", "boot_diff_ci_high", "verdict")


def _stat_records(data: Any) -> list[dict] | None:
    if isinstance(data, list):
        return [d for d in data if isinstance(d, dict)]
    if isinstance(data, dict):
        for key in ("rows", "stats", "records", "metrics", "results"):
            if isinstance(data.get(key), list):
                return _stat_records(data[key])
    return None


def normalize_stats(df: pd.DataFrame) -> pd.DataFrame | None:
    """Canonical column names and types; None when the table lacks what every row needs (variant, metric)."""
    df = df.rename(columns=lambda c: re.sub(r"[^a-z0-9]+", "_", str(c).strip().lower()).strip("_"))
    df = df.rename(columns={k: v for k, v in _STAT_ALIASES.items() if k in df.columns and v not in df.columns})
    if not {"variant", "metric"} <= set(df.columns):
        return None
    for col in STAT_COLUMNS:
        if col not in df.columns:
            df[col] = "" if col in ("size", "verdict") else math.nan
    df["variant"] = df["variant"].astype(str)
    df["size"] = df["size"].fillna("").astype(str).replace({"nan": "", "None": ""})
    df["verdict"] = df["verdict"].fillna("").astype(str).str.strip().str.lower().replace({"nan": ""})
    for col in STAT_COLUMNS[3:-1]:
        df[col] = pd.to_numeric(df[col], errors="coerce")
    return df[list(STAT_COLUMNS)]


def read_stats(root: Path) -> pd.DataFrame | None:
    """stats.csv (preferred: flat) or stats.json (a list of records, or one under rows/stats/records)."""
    if (root / "stats.csv").exists():
        try:
            df = pd.read_csv(root / "stats.csv", dtype={"size": str, "variant": str})
        except (OSError, ValueError, pd.errors.ParserError):
            df = None
        if df is not None and (out := normalize_stats(df)) is not None:
            return out
    records = _stat_records(read_json(root / "stats.json"))
    if records:
        return normalize_stats(pd.DataFrame(records))
    return None


def stats_are_current(study: Study) -> bool:
    """Whether results.csv (written with stats.csv) covers exactly the runs finished now; no results.csv: assume so."""
    try:
        done = pd.read_csv(study.root / "results.csv", dtype={"variant": str, "size": str})
    except (OSError, ValueError):
        return True
    if not {"variant", "seed"} <= set(done.columns):
        return True
    sizes = done["size"].fillna("") if "size" in done.columns else [""] * len(done)
    covered = {(v, s, int(n)) for v, s, n in zip(done.variant, sizes, done.seed) if pd.notna(n)}
    return covered == {(r.variant, r.size, r.seed) for r in study.ok_runs}


def study_stats(study: Study, results: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """(stats table, where it came from): the study's stats file when it covers the finished runs, else
    ``nplus.stats.compare`` on them (one verdict procedure for the whole project: paired t-test, Holm, α = 0.05)."""
    empty = pd.DataFrame(columns=list(STAT_COLUMNS))
    stats = read_stats(study.root) if not study.single else None
    current = stats_are_current(study)
    if stats is not None and len(stats) and current:
        return stats, "stats.csv / stats.json written by `nplus stats`"
    if results.empty:
        return empty, "no finished runs"
    why = ("stats.csv is older than the runs, so they were recomputed here; run `nplus stats` to refresh it"
           if stats is not None and not current else "no stats file in the study directory")
    try:
        from nplus.stats import compare

        table = normalize_stats(compare(results, study.baseline, study.name))
    except Exception as e:  # noqa: BLE001 — the report must render even when the statistics cannot be computed
        return empty, f"not available ({type(e).__name__}: {first_line(str(e))})"
    return (table if table is not None else empty), (f"computed by the report with nplus.stats ({why}): paired "
                                                     "t-test by seed, Holm-adjusted, α = 0.05")


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
    return ", ".join(f"{k} = {v}" for k, v in overrides.items()) if overrides else "paper defaults"


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
        ("compute", f"{fmt_duration(sum(wall))} in total (sum of wall_time_s over {len(wall)} "
                    f"run{'s' * (len(wall) != 1)})" if wall else "not available (no wall_time_s)"),
    ]
    return rows


def _stat_row(stats: pd.DataFrame, variant: str, size: str, metric: str) -> dict | None:
    sel = stats[(stats.variant == variant) & (stats["size"] == size) & (stats.metric == metric)]
    return sel.iloc[0].to_dict() if len(sel) else None


def _effect_cell(row: dict | None, metric: str) -> dict:
    if row is None or as_number(row.get("diff")) is None:
        return {"text": "—", "interval": "", "verdict": "not available", "cls": "na", "title": "not available"}
    verdict = row.get("verdict") or "not assessed"
    p = as_number(row.get("p_holm"))
    title = f"{verdict}; Holm-adjusted p = {p:.3g}" if p is not None else verdict
    if boot := fmt_interval(row.get("boot_diff_ci_low"), row.get("boot_diff_ci_high"), True):
        title += f"; prompt-level bootstrap interval {boot}"
    return {"text": fmt(row["diff"], signed=True),
            "interval": fmt_interval(row.get("diff_ci_low"), row.get("diff_ci_high"), True),
            "verdict": verdict, "cls": verdict_class(verdict), "title": title}


def _mean_cell(row: dict | None) -> dict:
    if row is None or as_number(row.get("mean")) is None:
        return {"text": "—", "interval": "", "n": ""}
    n = as_number(row.get("n"))
    return {"text": fmt(row["mean"]), "interval": fmt_interval(row.get("ci_low"), row.get("ci_high")),
            "n": f"n = {int(n)}" if n else ""}


def _n_pairs(stats: pd.DataFrame, variant: str, size: str) -> str:
    sel = stats[(stats.variant == variant) & (stats["size"] == size)]
    n = pd.to_numeric(sel["n_pairs"], errors="coerce").max() if len(sel) else math.nan
    if not math.isfinite(n):
        n = pd.to_numeric(sel["n"], errors="coerce").max() if len(sel) else math.nan
    return str(int(n)) if math.isfinite(n) else "—"


def headline_table(study: Study, stats: pd.DataFrame) -> dict:
    """The answer in one table: each variant's paired effect on the key metrics, baseline values on top."""
    metrics = [{"key": k, "label": lab, "direction": direction(k)} for k, lab in KEY_METRICS]
    sizes = study.sizes or [""]
    baseline = [{"size": s, "cells": [_mean_cell(_stat_row(stats, study.baseline, s, m["key"])) for m in metrics]}
                for s in sizes]
    rows = []
    for variant in study.variants:
        if variant == study.baseline:
            continue
        for size in sizes:
            runs = [r for r in study.runs if r.variant == variant and r.size == size]
            if not runs:
                continue
            failed = sum(not r.ok for r in runs)
            rows.append({"variant": variant, "size": size, "overrides": overrides_text(study.overrides.get(variant, {})),
                         "n": _n_pairs(stats, variant, size), "failed": failed, "all_failed": failed == len(runs),
                         "cells": [_effect_cell(_stat_row(stats, variant, size, m["key"]), m["key"]) for m in metrics]})
    return {"metrics": metrics, "baseline": baseline, "rows": rows, "has_sizes": bool(study.sizes)}


def rlhf_effect_rows(study: Study) -> list[dict]:
    """What PPO adds over its SFT policy per variant (nplus.stats.rlhf_effect: win-rate difference on the same
    prompts with its seed × prompt bootstrap interval, per-seed figures, gold-score difference), baseline first."""
    from nplus.stats import RunRef, rlhf_effect

    refs = [RunRef(r.variant, r.size, r.seed, r.path) for r in study.ok_runs if r.seed is not None]
    rows = rlhf_effect(refs)
    rows.sort(key=lambda e: (e["variant"] != study.baseline, study.variants.index(e["variant"]) if e["variant"] in study.variants else 0))
    for e in rows:
        ci = e["win_rate_diff_ci"]
        e["label"] = e["variant"] + (f" [{e['size']}]" if e["size"] else "")
        e["interval"] = fmt_interval(ci[0], ci[1], True) if ci else ""
        e["excludes_zero"] = bool(ci) and (ci[0] > 0 or ci[1] < 0)
        e["per_seed"] = ", ".join(f"{fmt(x['sft_win_rate'])} → {fmt(x['ppo_win_rate'])}" for x in e["seeds"])
    return rows


def findings(headline: dict, stats: pd.DataFrame | None = None) -> list[dict]:
    """The headline table in sentences: per variant, the key metrics it detectably moved, then any other metric
    of stats.csv judged helps / hurts (so a finding outside the table is not lost)."""
    key_names = {m["key"] for m in headline["metrics"]}
    out, quiet = [], []
    for row in headline["rows"]:
        moved = [(m["label"], c) for m, c in zip(headline["metrics"], row["cells"]) if c["cls"] in ("helps", "hurts", "changes")]
        if stats is not None:
            sel = stats[(stats.variant == row["variant"]) & (stats["size"] == row["size"]) & ~stats.metric.isin(key_names)]
            moved += [(r["metric"], c) for r in sel.to_dict("records")
                      if (c := _effect_cell(r, r["metric"]))["cls"] in ("helps", "hurts")]
        name = row["variant"] + (f" [{row['size']}]" if row["size"] else "")
        if moved:
            parts = [{"verdict": c["verdict"], "cls": c["cls"], "metric": label,
                      "value": f"{c['text']} {c['interval']}".strip()} for label, c in moved]
            out.append({"variant": name, "overrides": row["overrides"], "parts": parts})
        elif not row["all_failed"]:
            quiet.append(name)
    return out + ([{"variant": "", "overrides": "", "parts": [], "quiet": quiet}] if quiet else [])


def means_table(study: Study, stats: pd.DataFrame) -> dict:
    """Every variant's absolute values (mean over seeds and interval): the table for single-variant studies."""
    metrics = [{"key": k, "label": lab, "direction": direction(k)} for k, lab in KEY_METRICS]
    rows = [{"variant": v, "size": s, "cells": [_mean_cell(_stat_row(stats, v, s, m["key"])) for m in metrics]}
            for v in study.variants for s in (study.sizes or [""])
            if any(r.variant == v and r.size == s for r in study.runs)]
    return {"metrics": metrics, "rows": rows, "has_sizes": bool(study.sizes)}


def effects_frame(study: Study, stats: pd.DataFrame) -> pd.DataFrame:
    """Non-baseline rows with a paired difference, labelled like the runs (for the forest plot)."""
    df = stats[(stats.variant != study.baseline) & stats["diff"].notna()].copy()
    df["label"] = [f"{v} [{s}]" if s else v for v, s in zip(df.variant, df["size"])]
    df["verdict"] = [v or "not assessed" for v in df.verdict]
    return df


# ------------------------------------------------------------------------------------------------- scaling

def _bootstrap_spearman(x: np.ndarray, y: np.ndarray, n_boot: int, seed: int) -> tuple[float, float]:
    """Percentile interval of Spearman's ρ, resampling runs within each size (so every size stays present)."""
    from scipy import stats

    rng = np.random.default_rng(seed)
    # (n_boot, n) resampled indices, stratified by size; ρ = Pearson correlation of the (average) ranks.
    idx = np.concatenate([rng.choice(g, size=(n_boot, g.size), replace=True)
                          for g in (np.flatnonzero(x == v) for v in np.unique(x))], axis=1)
    rx, ry = stats.rankdata(x[idx], axis=1), stats.rankdata(y[idx], axis=1)
    rx, ry = rx - rx.mean(1, keepdims=True), ry - ry.mean(1, keepdims=True)
    denom = np.sqrt((rx ** 2).sum(1) * (ry ** 2).sum(1))
    rhos = ((rx * ry).sum(1) / np.where(denom > 0, denom, np.nan))
    rhos = rhos[np.isfinite(rhos)]  # a resample with one distinct y value has no rank correlation
    if rhos.size < 10:
        return math.nan, math.nan
    return float(np.quantile(rhos, ALPHA / 2)), float(np.quantile(rhos, 1 - ALPHA / 2))


def spearman_rows(results: pd.DataFrame, n_boot: int = 1000, seed: int = 0) -> list[dict]:
    """Does each metric rise with model size? Spearman ρ of per-seed values against parameter count."""
    from scipy import stats

    rows = []
    sel = results.dropna(subset=["params"])
    for variant, g in sel.groupby("variant", sort=False):
        for metric, label in SCALING_METRICS:
            m = g[g.metric == metric]
            x, y = m["params"].to_numpy(float), m["value"].to_numpy(float)
            if np.unique(x).size < 2:
                continue
            if np.ptp(y) == 0:  # say so rather than drop the row: "win rate 0 at every size" is a finding
                rows.append({"variant": variant, "metric": metric, "label": label, "rho": math.nan, "ci_low": math.nan,
                             "ci_high": math.nan, "n": int(x.size), "sizes": int(np.unique(x).size),
                             "trend": f"the same at every size ({fmt(y[0])}): no trend to test", "cls": "none"})
                continue
            rho = float(stats.spearmanr(x, y).statistic)
            lo, hi = _bootstrap_spearman(x, y, n_boot, seed)
            trend = "rises with size" if lo > 0 else "falls with size" if hi < 0 else "no clear trend"
            rows.append({"variant": variant, "metric": metric, "label": label, "rho": rho, "ci_low": lo, "ci_high": hi,
                         "n": int(x.size), "sizes": int(np.unique(x).size), "trend": trend,
                         "cls": {"rises with size": "helps", "falls with size": "hurts"}.get(trend, "none")})
    return rows


def load_published() -> dict:
    return read_json(PUBLISHED_PATH) or {}


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
                    rows.append({"label": r.label, "variant": r.variant, "size": r.size, "seed": r.seed, "run": r.rel,
                                 "episode": x, "metric": key, "value": v})
    return pd.DataFrame(rows, columns=["label", "variant", "size", "seed", "run", "episode", "metric", "value"])


def proxy_gold_frame(study: Study, curves: pd.DataFrame) -> pd.DataFrame:
    """Per eval point of every run: proxy reward and gold score, ending with the final evaluation."""
    ev = curves[curves.metric.isin(["eval/proxy_reward", "eval/gold_score"])]
    wide = ev.pivot_table(index=["label", "variant", "size", "seed", "run", "episode"], columns="metric",
                          values="value").reset_index() if len(ev) else pd.DataFrame()
    cols = ["label", "variant", "size", "seed", "run", "episode", "proxy", "gold", "final"]
    rows = []
    if len(wide) and {"eval/proxy_reward", "eval/gold_score"} <= set(wide.columns):
        for rec in wide.dropna(subset=["eval/proxy_reward", "eval/gold_score"]).to_dict("records"):
            rows.append({**{k: rec[k] for k in cols[:6]}, "proxy": rec["eval/proxy_reward"],
                         "gold": rec["eval/gold_score"], "final": False})
    for r in study.ok_runs:
        proxy, gold = r.number("ppo.proxy_reward"), r.number("ppo.gold_score")
        if proxy is not None and gold is not None:
            last = curves[curves.run == r.rel]["episode"].max() if len(curves) else math.nan
            rows.append({"label": r.label, "variant": r.variant, "size": r.size, "seed": r.seed, "run": r.rel,
                         "episode": (last if math.isfinite(last) else 0.0) + 0.5, "proxy": proxy, "gold": gold,
                         "final": True})
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
        rows = [s for s in r.stage_samples("ppo")
                if as_number(s.get("proxy_score")) is not None and as_number(s.get("gold_score")) is not None]
        scored += bool(rows)
        zp, zg = _zscores([s["proxy_score"] for s in rows]), _zscores([s["gold_score"] for s in rows])
        if zp is None or zg is None:
            continue
        for s, a, b in zip(rows, zp, zg):
            found.append({"label": r.label, "seed": r.seed, "id": str(s.get("id", "")), "post": str(s.get("post", "")),
                          "reference": str(s.get("reference", "")), "response": str(s.get("response", "")),
                          "proxy": s["proxy_score"], "gold": s["gold_score"], "z_proxy": float(a), "z_gold": float(b),
                          "gap": float(a - b), "length": s.get("length"), "finished": s.get("finished"), **judge_view(s)})
    reason = ("" if found else "no PPO samples with both a proxy and a gold score" if not scored
              else "the proxy or the gold score is constant within every run (fewer than 3 samples, or a degenerate policy)")
    return sorted(found, key=lambda e: -e["gap"])[:k], reason


# ------------------------------------------------------------------------------------------------- samples

def display_text(text: Any) -> tuple[str, bool]:
    """(text to show, whether it is a placeholder): outer whitespace stripped and blank-line runs collapsed, so a
    degenerate policy's wall of newlines stays one line tall; an all-whitespace response is named as such."""
    raw = "" if text is None else str(text)
    shown = re.sub(r"\n(?:[ \t]*\n)+", "\n\n", raw.strip())
    if shown:
        return shown, False
    return (f"(no visible text: {len(raw)} whitespace character{'s' if len(raw) != 1 else ''})" if raw
            else "(empty response)"), True


def judge_view(s: dict) -> dict:
    """The judge's verdict against the reference (outcome win/loss/tie when written, else win 0/1) and its reason."""
    outcome = s.get("outcome") if isinstance(s.get("outcome"), str) else {1: "win", 0: "loss"}.get(s.get("win"), "—")
    return {"win": outcome, "win_cls": {"win": "helps", "loss": "hurts"}.get(outcome, "none"),
            "judge_raw": str(s.get("judge_raw") or "")}


def _sample_entry(source: str, s: dict | None, note: str = "") -> dict:
    if s is None:
        return {"source": source, "text": "", "raw": "", "note": note or "no sample", "missing": True}
    text, placeholder = display_text(s.get("response"))
    return {"source": source, "text": text, "placeholder": placeholder, "raw": str(s.get("response", "")),
            "missing": False, "note": note, **judge_view(s),
            "gold": fmt(s.get("gold_score")), "proxy": fmt(s.get("proxy_score")), "length": s.get("length", "—"),
            "finished": "yes" if s.get("finished") else "no (truncated)" if s.get("finished") is False else "—"}


def _anchor_run(study: Study) -> Run | None:
    """The baseline run whose prompts are shown: largest size, first seed that finished."""
    size = study.sizes[-1] if study.sizes else ""
    for pool in ([r for r in study.ok_runs if r.variant == study.baseline and r.size == size],
                 [r for r in study.ok_runs if r.variant == study.baseline], study.ok_runs):
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
        entries = [{"source": "reference", "text": ref, "placeholder": False, "raw": str(first.get("reference", "")),
                    "missing": False, "note": "", "win": "—", "win_cls": "none", "judge_raw": "",
                    "gold": fmt(first.get("reference_gold_score")), "proxy": "—", "length": "—", "finished": "—"},
                   _sample_entry("SFT", base_sft.get(i)), _sample_entry(f"PPO {anchor.variant} (baseline)", base_ppo.get(i))]
        for v, run in others:
            note = "" if run and run.ok else ("run failed" if run else "no run at this seed")
            entries.append(_sample_entry(f"PPO {v}", (others_ppo[v] or {}).get(i), note))
        prompts.append({"id": i, "post": str(first.get("post") or first.get("query") or ""), "entries": entries})
    return {"seed": anchor.seed, "size": anchor.size, "prompts": prompts}


# ------------------------------------------------------------------------------------ sanity and provenance

def _check_cell(run: Run, value_key: str, ok_key: str) -> dict:
    ok, value = run.summary.get(ok_key), run.summary.get(value_key)
    if not isinstance(ok, bool):
        return {"text": "—", "cls": "na", "value": fmt(value) if as_number(value) is not None else ""}
    v = as_number(value)
    return {"text": "pass" if ok else "FAIL", "cls": "helps" if ok else "hurts",
            "value": (f"{v:.3g}" if v is not None else "")}


def sanity_table(study: Study) -> dict:
    rows = []
    for r in study.runs:
        cells = [_check_cell(r, vk, ok) for _, vk, ok in SANITY_CHECKS] if r.ok else []
        rows.append({"label": r.label, "seed": r.seed, "status": r.status, "error": r.error, "cells": cells,
                     "all_pass": bool(cells) and all(c["cls"] == "helps" for c in cells)})
    checked = [row for row in rows if row["cells"] and any(c["cls"] != "na" for c in row["cells"])]
    return {"checks": [c[0] for c in SANITY_CHECKS], "rows": rows, "n_checked": len(checked),
            "n_pass": sum(row["all_pass"] for row in checked)}


def _git(env: dict) -> str:
    g = env.get("git") if isinstance(env.get("git"), dict) else {}
    rev = str(g.get("revision") or env.get("git_revision") or "unknown")
    return rev[:12] + (" (dirty)" if g.get("dirty") else "")


def provenance(study: Study) -> dict:
    runs = [{"label": r.label, "seed": r.seed, "status": r.status, "hash": str(r.config.get("hash") or "—"),
             "git": _git(r.env), "device": str(r.env.get("device") or "—"), "command": r.command or "—", "path": r.rel}
            for r in study.runs]
    versions: dict[str, set] = {}
    for r in study.runs:
        for pkg, ver in (r.env.get("packages") or {}).items():
            versions.setdefault(pkg, set()).add(str(ver))
    packages = [{"name": k, "version": ", ".join(sorted(v)), "differs": len(v) > 1} for k, v in sorted(versions.items())]
    pythons = sorted({str(r.env.get("python")) for r in study.runs if r.env.get("python")})
    return {"runs": runs, "packages": packages, "python": ", ".join(pythons) or "unknown",
            "platforms": ", ".join(sorted({str(r.env["platform"]) for r in study.runs if r.env.get("platform")}))
            or "unknown",
            "spec": json.dumps(study.spec, indent=2, sort_keys=True, default=str) if study.spec else ""}


def variants_table(study: Study) -> list[dict]:
    out = []
    for v in study.variants:
        runs = [r for r in study.runs if r.variant == v]
        out.append({"variant": v, "baseline": v == study.baseline, "overrides": overrides_text(study.overrides.get(v, {})),
                    "ok": sum(r.ok for r in runs), "failed": sum(not r.ok for r in runs)})
    return out


def failures(study: Study) -> list[dict]:
    return [{"label": r.label, "seed": r.seed, "status": r.status, "error": r.error, "path": r.rel}
            for r in study.failed_runs]


# ----------------------------------------------------------------------------------------------- assembly

@dataclass(frozen=True)
class Options:
    title: str | None = None
    samples: int = 6
    examples: int = 8
    published: str = "auto"  # auto: only for the real task (task.name = tldr); always; never
    formats: tuple[str, ...] = ("png", "pdf")


CAPTIONS = {
    "forest": ("Paired effects against the baseline",
               "One row per variant, one panel per key metric. The dot is the mean difference from the baseline over "
               "seeds (paired by seed), the bar its interval. Look for bars that stay clear of the dashed zero line: "
               "green helps, red hurts, blue changes a descriptive quantity (KL, length), grey is no detectable effect."),
    "scaling": ("Scaling with model size",
                "Faint points are single seeds, the line is the mean with its interval, against the policy's parameter "
                "count (log scale). Look for lines that rise from left to right, and for seeds that fall far below the "
                "mean: at 1B the paper saw two of four PPO seeds over-optimize."),
    "training": ("Training curves",
                 "Mean over seeds (line) and ±1 standard deviation (band) against training episodes. Look for proxy "
                 "reward that keeps rising while the gold score stalls or falls (over-optimization), KL growing "
                 "without bound, response length drifting, and an EOS rate that collapses (a policy that stops "
                 "finishing its summaries)."),
    "proxy_gold": ("Proxy reward against gold score",
                   "Each line is one run moving through its evaluations; the large dot is the final one. Up and to the "
                   "right is real improvement; a line that moves right (more reward-model score) while turning down "
                   "(less gold score) is reward hacking."),
    "kl_frontier": ("KL against win rate",
                    "One point per run: KL from the reference policy after training against the win rate over the "
                    "reference. Good runs sit top-left; points far right with a low win rate bought their reward with "
                    "distance from the SFT policy without getting better (the paper's failed 1B seeds had KL ≈ 50–85)."),
}
NOT_AVAILABLE = {
    "forest": "no variant has a paired difference against the baseline",
    "scaling": "no finished run reported params with these metrics",
    "training": "no PPO rows with an episode in metrics.jsonl",
    "proxy_gold": "no evaluation with both eval/proxy_reward and eval/gold_score",
    "kl_frontier": "no finished run reported both ppo.kl and ppo.win_rate",
}


def _show_published(study: Study, option: str) -> bool:
    tasks = {(r.config.get("task") or {}).get("name") for r in study.runs}
    return option == "always" or (option == "auto" and "tldr" in tasks)


def make_figures(study: Study, results: pd.DataFrame, effects: pd.DataFrame, curves: pd.DataFrame,
                 pg: pd.DataFrame, published: dict | None, fig_dir: Path, formats: tuple[str, ...]) -> dict:
    from nplus.report import figures as F

    colors = F.palette(study.variants, study.baseline)
    builders = {
        "forest": lambda: F.forest_plot(effects, KEY_METRICS),
        "scaling": lambda: F.scaling_plot(results, SCALING_METRICS, colors, published),
        "training": lambda: F.training_curves(curves, CURVE_METRICS, colors, study.sizes),
        "proxy_gold": lambda: F.proxy_vs_gold(pg, colors),
        "kl_frontier": lambda: F.kl_frontier(results, colors, study.sizes),
    }
    out, number = {}, 0
    for name, build in builders.items():
        title, caption = CAPTIONS[name]
        fig = build()
        entry = {"name": name, "title": title, "caption": caption, "available": fig is not None,
                 "reason": NOT_AVAILABLE[name], "alt": f"{title}: {caption}"}
        if fig is not None:
            number += 1
            entry.update(F.save(fig, fig_dir, name, formats), number=number)
        out[name] = entry
    return out


def _example_view(e: dict) -> dict:
    text, placeholder = display_text(e["response"])
    return {**e, "text": text, "placeholder": placeholder, "proxy_text": fmt(e["proxy"]), "gold_text": fmt(e["gold"]),
            "z_proxy_text": f"z {e['z_proxy']:+.2f}", "z_gold_text": f"z {e['z_gold']:+.2f}", "gap_text": f"{e['gap']:+.2f}"}


def _published_note(study: Study, shown: bool) -> str:
    if shown:
        pub = load_published()
        return f"Paper values: {pub.get('source', 'published results')}. Judge: {pub.get('judge', '?')}."
    return (f"The paper's published values are not drawn: this study runs task {study.task!r}, whose absolute "
            "numbers are not comparable with the real TL;DR task (use --published always to draw them anyway).")


# ----------------------------------------------------------------------------------------------- tables

def _runs_table(study: Study) -> pd.DataFrame:
    rows = []
    for r in study.runs:
        row = {"path": r.rel, "variant": r.variant, "size": r.size, "seed": r.seed, "status": r.status, "error": r.error}
        row.update({k: v for k, v in r.summary.items() if isinstance(v, (int, float, str, bool)) or v is None})
        rows.append(row)
    return pd.DataFrame(rows)


def _curves_table(curves: pd.DataFrame) -> pd.DataFrame:
    if curves.empty:
        return pd.DataFrame(columns=["label", "metric", "episode", "mean", "std", "n"])
    agg = curves.groupby(["label", "metric", "episode"]).value.agg(["mean", "std", "count"]).reset_index()
    return agg.rename(columns={"count": "n"})


def _headline_csv(headline: dict, baseline: str) -> pd.DataFrame:
    rows = []
    for row in headline["rows"]:
        for m, c in zip(headline["metrics"], row["cells"]):
            rows.append({"variant": row["variant"], "size": row["size"], "baseline": baseline, "metric": m["key"],
                         "diff": c["text"], "interval": c["interval"], "verdict": c["verdict"], "seeds": row["n"]})
    return pd.DataFrame(rows, columns=["variant", "size", "baseline", "metric", "diff", "interval", "verdict", "seeds"])


def _sanity_csv(study: Study) -> pd.DataFrame:
    keys = [k for _, vk, ok in SANITY_CHECKS for k in (vk, ok)]
    return pd.DataFrame([{"path": r.rel, "variant": r.variant, "size": r.size, "seed": r.seed, "status": r.status,
                          **{k: r.summary.get(k) for k in keys}} for r in study.runs])


def _samples_csv(grid: dict | None) -> pd.DataFrame:
    rows = [{"id": p["id"], "source": e["source"], "summary": e["raw"], "judge": e.get("win", ""),
             "gold": e.get("gold", ""), "proxy": e.get("proxy", ""), "length": e.get("length", ""), "note": e["note"]}
            for p in (grid or {}).get("prompts", []) for e in p["entries"]]
    return pd.DataFrame(rows, columns=["id", "source", "summary", "judge", "gold", "proxy", "length", "note"])


def write_tables(out: Path, tables: dict[str, pd.DataFrame]) -> list[str]:
    out.mkdir(parents=True, exist_ok=True)
    for name, df in tables.items():
        df.to_csv(out / f"{name}.csv", index=False, quoting=csv.QUOTE_MINIMAL)
    return sorted(f"{n}.csv" for n in tables)


# ----------------------------------------------------------------------------------------------- render

def render(context: dict) -> str:
    from jinja2 import Environment, FileSystemLoader, StrictUndefined

    # autoescape=True for every template (not just *.html): run outputs are untrusted text.
    env = Environment(loader=FileSystemLoader(Path(__file__).with_name("templates")), autoescape=True,
                      undefined=StrictUndefined, trim_blocks=False, lstrip_blocks=False)
    return env.get_template("report.html.jinja").render(**context)


TOC = (("headline", "Headline"), ("effects", "Effects (forest plot)"), ("scaling", "Scaling"),
       ("training", "Training curves"), ("overoptimization", "Over-optimization"), ("samples", "Samples"),
       ("sanity", "Sanity checks"), ("provenance", "Provenance"))


def build_report(study_dir: Path, out_dir: Path, options: Options = Options()) -> Path:
    """Write ``out_dir/index.html`` (self-contained), ``figures/`` (PNG + PDF) and ``tables/`` (CSV)."""
    from nplus.report.figures import DIRECTION_TEXT
    from nplus.rundir import atomic_write_text

    # 1. read the study and its statistics
    study = load_study(Path(study_dir))
    out = Path(out_dir)
    results = results_frame(study)
    stats, stats_source = study_stats(study, results)
    curves = curves_frame(study)
    pg = proxy_gold_frame(study, curves)
    # 2. figures (PNG + PDF files; PNG embedded)
    shown = _show_published(study, options.published)
    figs = make_figures(study, results, effects_frame(study, stats), curves, pg, load_published() if shown else None,
                        out / "figures", options.formats)
    # 3. sections
    headline, grid = headline_table(study, stats), sample_grid(study, options.samples)
    examples, examples_reason = overopt_examples(study, options.examples)
    spearman, prov, fails = spearman_rows(results), provenance(study), failures(study)
    # 4. every table as CSV, then the page
    write_tables(out / "tables", {
        "headline": _headline_csv(headline, study.baseline), "stats": stats, "runs": _runs_table(study),
        "spearman": pd.DataFrame(spearman, columns=["variant", "metric", "rho", "ci_low", "ci_high", "n", "sizes", "trend"]),
        "training_curves": _curves_table(curves), "proxy_vs_gold": pg,
        "overoptimization_examples": pd.DataFrame(examples), "samples": _samples_csv(grid),
        "sanity": _sanity_csv(study), "provenance": pd.DataFrame(prov["runs"]), "packages": pd.DataFrame(prov["packages"]),
        "failures": pd.DataFrame(fails, columns=["label", "seed", "status", "error", "path"]),
    })
    context = {
        "title": options.title or f"{study.name}: RLHF implementation details",
        "kind": "single run" if study.single else f"study of {len(study.variants)} variant(s) × {len(study.seeds)} seed(s)",
        "generated": time.strftime("%Y-%m-%d %H:%M"), "toc": TOC, "facts": what_was_run(study), "failures": fails,
        "headline": headline, "findings": findings(headline, stats), "means": means_table(study, stats),
        "rlhf": rlhf_effect_rows(study),
        "variants": variants_table(study), "baseline": study.baseline, "single": study.single,
        "stats_source": stats_source, "direction_text": DIRECTION_TEXT, "ci_level": round(100 * (1 - ALPHA)),
        "figs": figs, "published_note": _published_note(study, shown) if figs["scaling"]["available"] else "",
        "spearman": [{**s, "interval": fmt_interval(s["ci_low"], s["ci_high"], True)} for s in spearman],
        "examples": [_example_view(e) for e in examples], "examples_reason": examples_reason, "grid": grid,
        "sanity": sanity_table(study), "prov": prov, "study_dir": str(study.root),
    }
    index = out / "index.html"
    atomic_write_text(index, render(context))
    return index
