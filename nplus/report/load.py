"""Reading a study (or one run) from disk: run directories, study.json, summary numbers and the statistics table.

The study layout is the ablation runner's (docs/CONTRACTS.md): ``<study>/<variant>[/size=<s>]/seed=<n>/`` run
directories next to ``study.json`` and, once ``nplus stats`` has run, ``stats.csv`` / ``stats.json``. Everything is
read defensively: a run that failed, a metric that was never logged or a stats file whose columns moved must
leave a section saying "not available", never a traceback, because the report is what people open after a
long sweep went partly wrong. This is the lowest of the report's modules: it imports none of the others.
"""

from __future__ import annotations

import json
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

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
    status: str  # "ok" (DONE written and its files match), "failed" (error.txt, or a damaged DONE), "incomplete"
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
    """(status, why) of a run directory: DONE is written last, error.txt on a contained failure. A DONE whose
    files no longer match it (truncated, edited, corrupted) is the check ``stats`` and the runner apply
    (rundir.done_problem): such a run is reported as failed with the reason, and none of its outputs are read."""
    from nplus.rundir import done_problem

    if (path / "DONE").exists():
        problem = done_problem(path)
        if problem is None:
            return "ok", ""
        print(f"warning: skipping {path}: its DONE check failed ({problem})", file=sys.stderr)
        return "failed", f"damaged: {problem}"
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
    status, error = _status(path)
    damaged = error.startswith("damaged: ")  # outputs its DONE no longer vouches for are not read
    summary = {} if damaged else read_json(path / "summary.json") or {}
    config = read_json(path / "config.json") or {}
    if seed is None:
        seed = next((int(s) for s in (summary.get("seed"), config.get("seed")) if isinstance(s, int)), None)
    done = read_json(path / "DONE")
    return Run(
        path=path,
        rel=rel,
        variant=variant or default_variant,
        size=size,
        seed=seed,
        status=status,
        error=error,
        config=config if isinstance(config, dict) else {},
        details=read_json(path / "details.json") or {},
        summary=summary if isinstance(summary, dict) else {},
        env=read_json(path / "env.json") or {},
        command=read_text(path / "command.txt").strip(),
        done=done if isinstance(done, dict) else {},
        metrics=[] if damaged else read_jsonl(path / "metrics.jsonl"),
        samples=[] if damaged else read_jsonl(path / "samples.jsonl"),
    )


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
    found = [
        p
        for p in root.rglob("seed=*")
        if p.is_dir() and not any(part.startswith(".") or part == "wandb" for part in p.relative_to(root).parts)
    ]
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


def spec_overrides(meta: dict) -> dict[str, dict]:
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


def choose_baseline(spec: dict, variants: list[str], overrides: dict[str, dict]) -> str:
    named = spec.get("baseline")
    if isinstance(named, dict):
        named = named.get("name")
    if isinstance(named, str) and named in variants:
        return named
    if "baseline" in variants:
        return "baseline"
    no_flips = [v for v in variants if v in overrides and not overrides[v]]
    return no_flips[0] if no_flips else (variants[0] if variants else "baseline")


def order_variants(runs: list[Run], spec_order: list[str]) -> list[str]:
    present = {r.variant for r in runs}
    return [v for v in spec_order if v in present] + sorted(present - set(spec_order))


def order_sizes(runs: list[Run]) -> list[str]:
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
    spec_over = spec_overrides(meta)
    default_variant = "run" if single else str(meta.get("baseline") or "baseline")
    runs = [load_run(d, root, default_variant, spec) for d, spec in dirs]
    variants = order_variants(runs, list(spec_over))
    baseline = choose_baseline(meta, variants, spec_over)
    overrides = {**_derive_overrides(runs, baseline), **spec_over}
    variants = [baseline] + [v for v in variants if v != baseline]
    sizes = order_sizes(runs)
    # Runs in reading order everywhere (tables, sanity checks, provenance): baseline first, then by size and seed.
    runs.sort(
        key=lambda r: (
            variants.index(r.variant),
            sizes.index(r.size) if r.size in sizes else -1,
            r.seed if r.seed is not None else math.inf,
            r.rel,
        )
    )
    resolved = root.resolve()
    # A lone run directory is usually <study>/seed=<n>: "smoke/seed=1" says more than "seed=1".
    name = str(
        meta.get("name")
        or (f"{resolved.parent.name}/{resolved.name}" if resolved.name.startswith("seed=") else resolved.name)
    )
    return Study(
        root=root,
        name=name,
        spec=meta,
        runs=runs,
        baseline=baseline,
        single=single,
        variants=variants,
        sizes=sizes,
        overrides=overrides,
    )


# ---------------------------------------------------------------------------------------------------- results


def results_frame(study: Study) -> pd.DataFrame:
    """Long table of every finite summary number of every finished run: variant, size, seed, metric, value."""
    rows = []
    for r in study.ok_runs:
        params = r.number("params")
        for key, value in r.summary.items():
            v = as_number(value)
            if v is not None and not key.startswith("sanity."):
                rows.append(
                    {
                        "variant": r.variant,
                        "size": r.size,
                        "seed": r.seed,
                        "label": r.label,
                        "params": params,
                        "metric": key,
                        "value": v,
                    }
                )
    return pd.DataFrame(rows, columns=["variant", "size", "seed", "label", "params", "metric", "value"])


# ---------------------------------------------------------------------------------------------------- stats

# Column names the statistics module may use (the contract is still settling): alias → canonical.
_STAT_ALIASES = {
    "ci_lo": "ci_low",
    "ci_hi": "ci_high",
    "lo": "ci_low",
    "hi": "ci_high",
    "low": "ci_low",
    "high": "ci_high",
    "diff_lo": "diff_ci_low",
    "diff_hi": "diff_ci_high",
    "diff_ci_lo": "diff_ci_low",
    "diff_ci_hi": "diff_ci_high",
    "diff_low": "diff_ci_low",
    "diff_high": "diff_ci_high",
    "delta": "diff",
    "effect": "diff",
    "mean_diff": "diff",
    "delta_ci_low": "diff_ci_low",
    "delta_ci_high": "diff_ci_high",
    "p": "p_ttest",
    "p_t": "p_ttest",
    "p_value": "p_ttest",
    "p_adj": "p_holm",
    "p_adjusted": "p_holm",
    "p_corrected": "p_holm",
    "n_seeds": "n",
    "count": "n",
    "sd": "std",
    "n_pairs": "n_pairs",
    "model_size": "size",
}
# boot_*: the prompt-level (hierarchical bootstrap) intervals `nplus stats` adds for win rates.
STAT_COLUMNS = (
    "variant",
    "size",
    "metric",
    "mean",
    "std",
    "n",
    "ci_low",
    "ci_high",
    "diff",
    "diff_ci_low",
    "diff_ci_high",
    "n_pairs",
    "p_ttest",
    "p_wilcoxon",
    "p_holm",
    "boot_ci_low",
    "boot_ci_high",
    "boot_diff_ci_low",
    "boot_diff_ci_high",
    "verdict",
)


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
    why = (
        "stats.csv is older than the runs, so they were recomputed here; run `nplus stats` to refresh it"
        if stats is not None and not current
        else "no stats file in the study directory"
    )
    try:
        from nplus.stats import compare

        table = normalize_stats(compare(results, study.baseline, study.name))
    except Exception as e:  # noqa: BLE001 — the report must render even when the statistics cannot be computed
        return empty, f"not available ({type(e).__name__}: {first_line(str(e))})"
    return (table if table is not None else empty), (
        f"computed by the report with nplus.stats ({why}): paired t-test by seed, Holm-adjusted, α = 0.05"
    )


# ------------------------------------------------------------------------------------------------ published


def load_published() -> dict:
    return read_json(PUBLISHED_PATH) or {}
