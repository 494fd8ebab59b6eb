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

from nplus.config import SYNTH_COMPARISONS, non_negative, positive, ranged
from nplus.evaluation.evaluate_cmd import JudgeOptions, judge_from_options
from nplus.evaluation.judges import Comparison, SimulatedAIJudge


class LabelInputError(ValueError):
    """The input or the judge settings are unusable; raised before any judging."""


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
    length_preference: float = ranged(0.15)
    """simulated-ai: gold points added per word of a summary (the judge's own word cost is 0.02): a labeller
    that likes long summaries, a known bias of LLM judges."""
    position_margin: float = non_negative(0.5)
    """simulated-ai: when the two scores (with the length preference) differ by less than this, it picks A."""
    cache: Path | None = None
    """Artifact cache holding the generated tldr-synth corpus (default: $NPLUS_CACHE or runs/.cache)."""
    splits: tuple[str, ...] = ("train",)
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
    from nplus.presets import preset
    from nplus.data.loader import load_comparisons
    from nplus.pipeline import default_cache, synth_dir

    if cfg.input == "tldr-synth":
        data_dir = synth_dir(preset("demo", 1), Path(cfg.cache or default_cache()))
        return load_comparisons("tldr-synth", data_dir), data_dir
    if not Path(cfg.input).exists():
        raise LabelInputError(f"--input {cfg.input!r}: expected tldr-synth or an existing comparisons directory/file")
    return load_comparisons(cfg.input), cfg.judge_options.data_dir


def _judge(cfg: LabelConfig, data_dir: Path | None):
    from dataclasses import replace

    if cfg.judge in ("gold", "simulated-ai"):
        if data_dir is None or not (Path(data_dir) / "facts.jsonl").is_file():
            raise LabelInputError(f"--judge {cfg.judge} needs the tldr-synth corpus (--input tldr-synth, or "
                                  "--data-dir pointing at a tldr-synth data directory with facts.jsonl)")
        gold = judge_from_options("gold", replace(cfg.judge_options, data_dir=Path(data_dir)))
        if cfg.judge == "gold":
            return gold
        return SimulatedAIJudge(gold.gold, cfg.length_preference, cfg.position_margin)
    if cfg.judge == "hf" and (cfg.judge_options.judge_model is None or not Path(cfg.judge_options.judge_model).is_dir()):
        raise LabelInputError(f"--judge hf needs --judge-model set to a local model directory, got {cfg.judge_options.judge_model!r}")
    return judge_from_options(cfg.judge, cfg.judge_options)


def relabel(ds, judge, gold, splits: tuple[str, ...], limit: int | None, worker: str, report: dict):
    """Relabel the pairs of ``splits`` with ``judge`` (the others kept as labelled); returns (DatasetDict, report
    with per-split counts and agreement with the original labels and, where ``gold`` is given, with gold)."""
    from datasets import DatasetDict

    from nplus.data.loader import validate_comparisons

    out, report = {}, {**report, "splits": {}}
    for name, split in ds.items():
        if name not in splits:
            out[name] = split  # kept as labelled
            report["splits"][name] = {"pairs": len(split), "relabelled": False}
            continue
        if limit is not None:
            split = split.select(range(min(limit, len(split))))
        rows = split.to_list()
        items = [Comparison(r["info"]["post"] or "", r["summaries"][0]["text"], r["summaries"][1]["text"]) for r in rows]
        verdicts = judge.compare_many(items)
        kept, agree, gold_agree = [], 0, 0
        for r, item, v in zip(rows, items, verdicts):
            if v.choice is None:  # unparseable or failed: counted, never assigned to a side
                continue
            choice = 0 if v.choice == "A" else 1
            agree += choice == r["choice"]
            if gold is not None:
                gold_agree += choice == (0 if gold.compare(item.post, item.a, item.b).choice == "A" else 1)
            kept.append({**r, "choice": choice, "worker": worker})
        statuses = [v.status for v in verdicts]
        report["splits"][name] = {
            "pairs": len(rows), "labelled": len(kept), "unparseable": statuses.count("unparseable"),
            "failed": statuses.count("failed"),
            "agreement_with_original": agree / len(kept) if kept else None,
            "agreement_with_gold": gold_agree / len(kept) if kept and gold is not None else None,
        }
        out[name] = split.from_list(kept, features=split.features)
    result = DatasetDict(out)
    validate_comparisons(result)
    report["judge_stats"] = judge.stats()
    return result, report


def gold_of(judge, data_dir: Path | None):
    """On tldr-synth the gold judge scores every labeller's agreement, whatever the labeller is."""
    gold = getattr(judge, "gold", None)
    if gold is None and data_dir is not None and (Path(data_dir) / "facts.jsonl").is_file():
        from nplus.tasks.gold import GoldJudge

        gold = GoldJudge.from_dir(data_dir)
    return gold


def run_label(cfg: LabelConfig) -> dict:
    from nplus.rundir import atomic_write_json, save_dataset

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
    result, report = relabel(ds, judge, gold_of(judge, data_dir), cfg.splits, cfg.limit, worker,
                             {"judge": cfg.judge, "worker": worker, "input": cfg.input})
    tmp = out.with_name(out.name + ".partial")
    save_dataset(result, tmp)
    atomic_write_json(tmp / "label.json", report)
    tmp.rename(out)  # nothing half written under --out
    return {**report, "out": str(out)}


SYNTH_JUDGES = tuple(s.split(":", 1)[1] for s in SYNTH_COMPARISONS if ":" in s)
"""``task.comparisons_source = "tldr-synth:<judge>"``: the embedded corpus's training pairs relabelled in the
pipeline by one of these judges (nplus label's defaults), so a study needs no labelling step of its own."""


def synth_relabelled(data_dir: Path, judge_name: str, cache: Path) -> Path:
    """The tldr-synth comparisons in ``data_dir`` with the training split relabelled by ``judge_name`` (cached
    once per corpus and judge): a comparisons directory with its label.json, as ``nplus label`` writes it."""
    from nplus.rundir import artifact, atomic_write_json, save_dataset

    if judge_name not in SYNTH_JUDGES:
        raise LabelInputError(f"tldr-synth:{judge_name}: valid judges are {', '.join(SYNTH_JUDGES)}")
    cfg = LabelConfig(out=Path("-"), judge=judge_name)  # the defaults of `nplus label --judge judge_name`
    with artifact(cache, "labels", f"{data_dir.name}-{judge_name}-v1") as (path, built):
        if not built:
            from nplus.data.loader import load_comparisons

            judge = _judge(cfg, data_dir)
            worker = f"judge:{getattr(judge, 'model', judge_name)}"
            result, report = relabel(load_comparisons("tldr-synth", data_dir), judge, gold_of(judge, data_dir),
                                     cfg.splits, None, worker,
                                     {"judge": judge_name, "worker": worker, "input": "tldr-synth"})
            save_dataset(result, path / "comparisons")
            atomic_write_json(path / "label.json", report)
    return path
