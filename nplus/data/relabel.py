"""Relabelled comparisons (RLAIF): the pairs of a comparisons dataset relabelled by a judge, and tldr-synth's
training pairs relabelled once per corpus and judge for ``task.comparisons_source = "tldr-synth:<judge>"``.

The library behind ``nplus label`` (nplus/data/label_cmd.py, the command) and the pipeline.
"""

from __future__ import annotations

from pathlib import Path

from nplus.config import SYNTH_COMPARISONS
from nplus.evaluation.judge_factory import make_judge
from nplus.evaluation.judges import Comparison, SimulatedAIJudge
from nplus.rundir import artifact, atomic_write_json, save_dataset
from nplus.tasks.gold import GoldJudge

SYNTH_JUDGES = tuple(s.split(":", 1)[1] for s in SYNTH_COMPARISONS if ":" in s)
"""``task.comparisons_source = "tldr-synth:<judge>"``: the embedded corpus's training pairs relabelled in the
pipeline by one of these judges (nplus label's defaults), so a study needs no labelling step of its own."""
LENGTH_PREFERENCE = 0.15
"""simulated-ai: gold points added per word of a summary (the judge's own word cost is 0.02)."""
POSITION_MARGIN = 0.5
"""simulated-ai: when the two scores (with the length preference) differ by less than this, it picks A."""
RELABELLED_SPLITS = ("train",)
"""The splits relabelled by default; the others keep their labels, so the RM is validated on the original ones."""


class LabelInputError(ValueError):
    """The input or the judge settings are unusable; raised before any judging."""


def synth_judge(
    name: str,
    data_dir: Path | None,
    length_preference: float = LENGTH_PREFERENCE,
    position_margin: float = POSITION_MARGIN,
):
    """tldr-synth's gold judge, or (``simulated-ai``) the gold score with an AI labeller's biases."""
    if data_dir is None or not (Path(data_dir) / "facts.jsonl").is_file():
        raise LabelInputError(
            f"--judge {name} needs the tldr-synth corpus (--input tldr-synth, or "
            "--data-dir pointing at a tldr-synth data directory with facts.jsonl)"
        )
    gold = make_judge("gold", data_dir=Path(data_dir))
    if name == "gold":
        return gold
    return SimulatedAIJudge(gold.gold, length_preference, position_margin)


def relabel(ds, judge, gold, splits: tuple[str, ...], limit: int | None, worker: str, report: dict):
    """Relabel the pairs of ``splits`` with ``judge`` (the others kept as labelled); returns (DatasetDict, report
    with per-split counts and agreement with the original labels and, where ``gold`` is given, with gold)."""
    from datasets import DatasetDict  # here: datasets takes seconds to import

    from nplus.data.loader import validate_comparisons  # here: the loader imports datasets

    out, report = {}, {**report, "splits": {}}
    for name, split in ds.items():
        if name not in splits:
            out[name] = split  # kept as labelled
            report["splits"][name] = {"pairs": len(split), "relabelled": False}
            continue
        if limit is not None:
            split = split.select(range(min(limit, len(split))))
        rows = split.to_list()
        items = [
            Comparison(r["info"]["post"] or "", r["summaries"][0]["text"], r["summaries"][1]["text"]) for r in rows
        ]
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
            "pairs": len(rows),
            "labelled": len(kept),
            "unparseable": statuses.count("unparseable"),
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
        gold = GoldJudge.from_dir(data_dir)
    return gold


def synth_relabelled(data_dir: Path, judge_name: str, cache: Path) -> Path:
    """The tldr-synth comparisons in ``data_dir`` with the training split relabelled by ``judge_name`` (cached
    once per corpus and judge): a comparisons directory with its label.json, as ``nplus label`` writes it."""
    if judge_name not in SYNTH_JUDGES:
        raise LabelInputError(f"tldr-synth:{judge_name}: valid judges are {', '.join(SYNTH_JUDGES)}")
    with artifact(cache, "labels", f"{data_dir.name}-{judge_name}-v1") as (path, built):
        if not built:
            from nplus.data.loader import load_comparisons  # here: the loader imports datasets (seconds)

            judge = synth_judge(judge_name, data_dir)  # the defaults of `nplus label --judge judge_name`
            worker = f"judge:{getattr(judge, 'model', judge_name)}"
            result, report = relabel(
                load_comparisons("tldr-synth", data_dir),
                judge,
                gold_of(judge, data_dir),
                RELABELLED_SPLITS,
                None,
                worker,
                {"judge": judge_name, "worker": worker, "input": "tldr-synth"},
            )
            save_dataset(result, path / "comparisons")
            atomic_write_json(path / "label.json", report)
    return path
