"""``nplus label``: relabel comparison pairs with a judge (RLAIF) and write a comparisons dataset in the public
schema, the judge recorded in ``worker``; the RM stage trains on it like on human labels
(``--set task.comparisons_source=DIR``).

1. load the comparisons (``tldr-synth`` from the cache, or a local directory / file in the public schema),
2. ask the judge, pair by pair, which summary is better (the existing judge interface: cache, retries,
   unparseable and failed replies counted, never assigned to a side),
3. write DIR (``save_to_disk``: the pairs the judge decided, ``choice`` its pick) and DIR/label.json (counts,
   agreement with the original labels and, on tldr-synth, with the gold judge).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import tyro

from nplus.config import non_negative, positive, ranged
from nplus.data.loader import load_comparisons
from nplus.data.relabel import (
    LENGTH_PREFERENCE,
    POSITION_MARGIN,
    RELABELLED_SPLITS,
    LabelInputError,
    gold_of,
    relabel,
    synth_judge,
)
from nplus.data.sources import default_cache, synth_dir
from nplus.evaluation.evaluate_cmd import JudgeOptions, judge_from_options
from nplus.presets import preset
from nplus.rundir import atomic_write_json, save_dataset


@dataclass(frozen=True)
class LabelConfig:
    """Relabel comparison pairs with a judge (AI feedback) into a comparisons dataset in the public schema."""

    out: Path
    """Output directory (a datasets save_to_disk directory plus label.json); must not exist yet."""
    input: str = "tldr-synth"
    """tldr-synth (the generated corpus, from --cache) or a local comparisons directory / file (public schema)."""
    judge: Literal["gold", "simulated-ai", "hf", "openai"] = "simulated-ai"
    """gold (tldr-synth's gold judge), simulated-ai (the gold score with an AI labeller's biases, tldr-synth
    only), hf (a local causal LM) or openai (an OpenAI-compatible endpoint)."""
    judge_options: Annotated[JudgeOptions, tyro.conf.OmitArgPrefixes] = field(default_factory=JudgeOptions)
    """Judge settings (as for nplus eval)."""
    length_preference: float = ranged(LENGTH_PREFERENCE)
    """simulated-ai: gold points added per word of a summary (the judge's own word cost is 0.02): a labeller
    that likes long summaries, a known bias of LLM judges."""
    position_margin: float = non_negative(POSITION_MARGIN)
    """simulated-ai: when the two scores (with the length preference) differ by less than this, it picks A."""
    cache: Path | None = None
    """Artifact cache holding the generated tldr-synth corpus (default: $NPLUS_CACHE or runs/.cache)."""
    splits: tuple[str, ...] = RELABELLED_SPLITS
    """Splits to relabel; the others are copied with their original labels, so by default the RM is validated
    against held-out human-style labels."""
    limit: int | None = positive(None)
    """Relabel only the first N pairs of each relabelled split (e.g. to bound a paid judge's cost)."""

    def run(self) -> int:
        result = run_label(self)
        print(json.dumps({k: v for k, v in result.items() if not isinstance(v, dict)}, indent=2))
        return 0


def _load(cfg: LabelConfig):
    """(comparisons DatasetDict, tldr-synth data dir or None)."""
    if cfg.input == "tldr-synth":
        data_dir = synth_dir(preset("demo", 1), Path(cfg.cache or default_cache()))
        return load_comparisons("tldr-synth", data_dir), data_dir
    if not Path(cfg.input).exists():
        raise LabelInputError(f"--input {cfg.input!r}: expected tldr-synth or an existing comparisons directory/file")
    return load_comparisons(cfg.input), cfg.judge_options.data_dir


def _judge(cfg: LabelConfig, data_dir: Path | None):
    if cfg.judge in ("gold", "simulated-ai"):
        return synth_judge(cfg.judge, data_dir, cfg.length_preference, cfg.position_margin)
    if cfg.judge == "hf" and (
        cfg.judge_options.judge_model is None or not Path(cfg.judge_options.judge_model).is_dir()
    ):
        raise LabelInputError(
            f"--judge hf needs --judge-model set to a local model directory, got {cfg.judge_options.judge_model!r}"
        )
    return judge_from_options(cfg.judge, cfg.judge_options)


def run_label(cfg: LabelConfig) -> dict:
    out = Path(cfg.out)
    if out.exists():
        raise LabelInputError(f"--out {out} exists: choose a new directory (a labelled dataset is never overwritten)")
    if cfg.limit is not None and cfg.limit < 1:
        raise LabelInputError(f"--limit must be positive, got {cfg.limit}")
    ds, data_dir = _load(cfg)
    judge = _judge(cfg, data_dir)
    unknown = sorted(set(cfg.splits) - set(ds))
    if unknown:
        raise LabelInputError(f"--splits {' '.join(unknown)}: not in the input; its splits: {', '.join(ds)}")
    worker = f"judge:{getattr(judge, 'model', cfg.judge)}"
    result, report = relabel(
        ds,
        judge,
        gold_of(judge, data_dir),
        cfg.splits,
        cfg.limit,
        worker,
        {"judge": cfg.judge, "worker": worker, "input": cfg.input},
    )
    tmp = out.with_name(out.name + ".partial")
    save_dataset(result, tmp)
    atomic_write_json(tmp / "label.json", report)
    tmp.rename(out)  # nothing half written under --out
    return {**report, "out": str(out)}
