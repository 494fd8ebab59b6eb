"""Mirror a run directory to Weights & Biases (optional: `pip install wandb`).

The local files stay the source of truth: statistics and reports read metrics.jsonl / samples.jsonl /
summary.json, never the tracking service, so a run is complete and comparable whether or not it was mirrored.
The mirror is a replay of those files after the fact, which is why it can also be run on old runs.

Without WANDB_API_KEY the run is written in offline mode (nothing leaves the machine; `wandb sync` uploads it
later). Either way the wandb files live inside the run directory (``<run_dir>/wandb/``), next to the data they copy.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Any

# Row keys that are bookkeeping, not metrics.
_NOT_METRICS = {"stage", "step", "episode", "time_s"}
SAMPLE_COLUMNS = (
    "stage",
    "id",
    "query",
    "reference",
    "response",
    "finished",
    "length",
    "proxy_score",
    "gold_score",
    "reference_gold_score",
    "win",
)


class WandbMissingError(ImportError):
    """Tracking was asked for but wandb is not installed."""


def require_wandb():
    """The wandb module, or a clear error; call it before a long run so a missing package fails fast."""
    try:
        import wandb
    except ImportError as e:
        raise WandbMissingError(
            "--track needs wandb, which is not installed: pip install wandb "
            "(or pip install 'nplus[track]'). Local metrics are written either way."
        ) from e
    return wandb


def _read_jsonl(path: Path) -> list[dict]:
    rows = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except ValueError:
                continue  # a torn last line from a killed run
    return rows


def _config_dict(cfg: Any, run_dir: Path) -> dict:
    """The resolved config as a plain dict (a Config, a dataclass, a dict, or config.json when cfg is None)."""
    if cfg is None:
        path = run_dir / "config.json"
        return json.loads(path.read_text()) if path.exists() else {}
    if hasattr(cfg, "to_dict"):
        out = dict(cfg.to_dict())
        if getattr(cfg, "hash", None) is not None:
            out.setdefault("hash", cfg.hash)
        return out
    if dataclasses.is_dataclass(cfg):
        return dataclasses.asdict(cfg)
    return dict(cfg)


def _number(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v) if math.isfinite(v) else None


def x_axis(row: dict) -> tuple[str, float]:
    """(name, value) of the row's x axis: PPO rows by episode, the other stages by optimizer step.

    Each stage gets its own step metric because SFT, RM and PPO each count from 1: logged against one shared
    step, wandb would drop every row whose step went backwards.
    """
    stage = str(row.get("stage", "run"))
    if row.get("episode") is not None:
        return f"{stage}/episode", float(row["episode"])
    return f"{stage}/step", float(row.get("step") or 0)


def log_metrics(run, rows: list[dict]) -> int:
    """Replay metrics.jsonl rows; returns how many were logged."""
    defined: set[str] = set()
    n = 0
    for row in rows:
        axis, x = x_axis(row)
        metrics = {k: v for k, raw in row.items() if k not in _NOT_METRICS and (v := _number(raw)) is not None}
        if not metrics:
            continue
        if axis not in defined:
            run.define_metric(axis)
            defined.add(axis)
        for key in metrics.keys() - defined:
            run.define_metric(key, step_metric=axis)
            defined.add(key)
        run.log({axis: x, **metrics})
        n += 1
    return n


def samples_table(wandb, rows: list[dict]):
    return wandb.Table(columns=list(SAMPLE_COLUMNS), data=[[row.get(c) for c in SAMPLE_COLUMNS] for row in rows])


def mirror_to_wandb(run_dir: Path, cfg: Any = None) -> None:
    """Log a run directory's metrics.jsonl (x axis = episode or step), its samples as a table and summary.json."""
    wandb = require_wandb()
    run_dir = Path(run_dir)
    config = _config_dict(cfg, run_dir)
    mode = None if os.environ.get("WANDB_API_KEY") else "offline"  # None: wandb decides (WANDB_MODE or online)
    run = wandb.init(
        project=os.environ.get("WANDB_PROJECT", "nplus"),
        name="/".join(run_dir.resolve().parts[-2:]),
        config=config,
        dir=str(run_dir),
        mode=mode,
        job_type="pipeline",
        tags=[t for t in (config.get("preset"), (config.get("task") or {}).get("name")) if t],
    )
    try:
        log_metrics(run, _read_jsonl(run_dir / "metrics.jsonl"))
        samples = _read_jsonl(run_dir / "samples.jsonl")
        if samples:
            run.log({"samples": samples_table(wandb, samples)})
        summary_path = run_dir / "summary.json"
        if summary_path.exists():
            summary = json.loads(summary_path.read_text())
            run.summary.update({k: v for k, v in summary.items() if isinstance(v, (int, float, str, bool))})
    finally:
        run.finish()
        # finish() can return before wandb's writer has flushed the run to disk (seen with wandb 0.31), and
        # the atexit hook that would wait does not run in multiprocessing workers; teardown waits for it.
        wandb.teardown()
