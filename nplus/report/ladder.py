"""The ladder table of a study over model sizes: per rung, the base model's shape and probes beside the seeds'
means of the scaling metrics, so that a reader sees *why* a bigger model does better (or does not).

The base columns come from the rung's committed manifest (nplus/bases/RUNG/manifest.json) and only when it was
built with the runs' own base-stage configuration (the same hash the pipeline checks before loading it); otherwise
they are left empty rather than describe another model.
"""

from __future__ import annotations

import json
import math

import numpy as np

from nplus import bases
from nplus.report.load import Study

# (key in the base manifest, column): what the base model brings before any fine-tuning (docs/tldr-synth.md)
BASE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("validation_loss", "base val. loss"),
    ("reference_nll", "base ref. NLL"),
    ("copy_gain", "copy_gain"),
    ("post_swap_gap", "post_swap_gap"),
)
# (summary key, column): the study's metrics per rung, means over its seeds
RUN_COLUMNS: tuple[tuple[str, str], ...] = (
    ("sft.rouge_l", "SFT ROUGE-L"),
    ("sft.win_rate", "SFT win"),
    ("rm.accuracy", "RM acc."),
    ("rm.fact_check_accuracy", "RM fact check"),
    ("ppo.win_rate", "PPO win"),
)


def _base_of(study: Study, size: str) -> dict:
    """The committed manifest of rung ``size`` if every run of that size was built on it (the base-stage hash each
    run recorded in its config.json), else {}."""
    manifest = bases.read_manifest(size) if size else None
    if not manifest:
        return {}
    used = {(r.config.get("stage_hashes") or {}).get("base") for r in study.ok_runs if r.size == size}
    return manifest if used == {manifest.get("base_hash")} else {}


def _shape(manifest: dict, size: str) -> str:
    """layers × width, read from the committed model's own config.json (no torch needed to draw a report)."""
    path = bases.BASES_DIR / size / "model" / "config.json"
    if not manifest or not path.is_file():
        return ""
    model = json.loads(path.read_text())
    return f"{model['num_hidden_layers']} × {model['hidden_size']}"


def ladder_rows(study: Study) -> list[dict]:
    """One row per size of the baseline variant, in the study's size order (empty for a single-size study)."""
    if len(study.sizes) < 2:
        return []
    rows = []
    for size in study.sizes:
        runs = [r for r in study.ok_runs if r.variant == study.baseline and r.size == size]
        manifest = _base_of(study, size)
        probes = manifest.get("probes") or {}
        row: dict = {
            "size": size,
            "shape": _shape(manifest, size),
            "params": _first([r.number("params") for r in runs]),
            "non_embedding_params": manifest.get("non_embedding_params"),
            "seeds": len(runs),
        }
        for key, _ in BASE_COLUMNS:
            row[key] = manifest.get(key, probes.get(key))
        for key, _ in RUN_COLUMNS:
            values = [v for v in (r.number(key) for r in runs) if v is not None]
            row[key] = float(np.mean(values)) if values else math.nan
        rows.append(row)
    return rows


def _first(values: list) -> float | None:
    return next((v for v in values if v is not None), None)


def _cell(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:,.0f}" if float(value) >= 1000 else f"{value:.{digits}f}"


def ladder_view(rows: list[dict]) -> dict:
    """The page's ladder table: a header and one row of formatted cells per size."""
    columns = [("params", "parameters"), ("non_embedding_params", "non-emb."), *BASE_COLUMNS, *RUN_COLUMNS]
    return {
        "header": ["size", "shape", *(label for _, label in columns), "seeds"],
        "rows": [[r["size"], r["shape"] or "—", *(_cell(r[key]) for key, _ in columns), str(r["seeds"])] for r in rows],
    }
