"""The study's answer in a few sentences, generated from the numbers: failed sanity checks first (they qualify
everything after them), then the largest detectable effect on quality, the trends with size, the over-optimized
seeds by name, and what PPO added over its SFT policy. Each sentence is built from a table the page also shows,
so the headline cannot say more than the sections below it.
"""

from __future__ import annotations

import pandas as pd

from nplus.report.load import Study, as_number
from nplus.report.tables import effect_cell, fmt, fmt_interval
from nplus.report.verdicts import Judge

QUALITY = (("ppo.gold_score", "gold score"), ("ppo.win_rate", "PPO win rate"))


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def sanity_sentence(study: Study, judge: Judge) -> str:
    bad = [(v, s, e) for (v, s), e in judge.sanity.items() if e["failed"]]
    if not bad:
        return ""
    n_bad, n_runs = sum(e["failed"] for *_, e in bad), sum(e["runs"] for e in judge.sanity.values())
    named = [
        f"{v}{f' [{s}]' if s else ''} (seed{'s' * (len(e['seeds']) > 1)} {', '.join(map(str, e['seeds']))})"
        for v, s, e in bad
    ]
    return (
        f"⚠ {n_bad} of {n_runs} runs failed a sanity check — {_join(named)}: they do not measure what they "
        "claim to, and their verdicts are marked ⚠ below."
    )


def effect_sentence(study: Study, stats: pd.DataFrame, judge: Judge) -> str:
    """The quality metric's verdicts among the variants whose numbers are comparable, and the largest effect."""
    for metric, label in QUALITY:
        sel = stats[
            (stats.metric == metric)
            & (stats.variant != study.baseline)
            & (stats.variant != "aa")
            & stats["diff"].notna()
        ]
        if len(sel):
            break
    else:
        return ""
    cells = [(r, effect_cell(r, metric, judge)) for r in sel.to_dict("records")]
    usable = [(r, c) for r, c in cells if c["cls"] not in ("nc", "na")]
    caveat = len(cells) - len(usable)
    tail = f"; {caveat} more set aside: not comparable or identical to the baseline" if caveat else ""
    if not usable:
        return f"No variant's {label} is comparable with the baseline's{tail}."
    name = lambda r: r["variant"] + (f" [{r['size']}]" if r.get("size") else "")
    judged = [(r, c) for r, c in usable if c["cls"] in ("helps", "hurts")]
    clean = [(r, c) for r, c in judged if not c["suspect"]]
    pick = max(clean or judged or usable, key=lambda rc: abs(as_number(rc[0]["diff"]) or 0.0))
    r, c = pick
    value = f"{c['text']} {c['interval']}".strip()
    flag = " ⚠ (sanity check failed)" if c["suspect"] else ""
    if judged:
        helps = [name(r) for r, c in judged if c["cls"] == "helps"]
        hurts = [name(r) for r, c in judged if c["cls"] == "hurts"]
        counts = [
            f"{len(hurts)} hurt{'s' * (len(hurts) == 1)}" if hurts else "",
            f"{len(helps)} help{'s' * (len(helps) == 1)}" if helps else "",
        ]
        what = "variant × size pairs" if any(r.get("size") for r, _ in usable) else "variants"
        moved = " and ".join(x for x in counts if x)
        return (
            f"On {label}, of {len(usable)} comparable {what} {moved} ({', '.join(helps + hurts)}{tail}); "
            f"the largest effect is {name(r)}: {value} ({c['verdict']}){flag}."
        )
    return (
        f"No variant detectably changes {label} ({len(usable)} compared{tail}); the largest difference, "
        f"{name(r)} {value}, is within what the seeds cannot tell apart."
    )


def scaling_sentence(spearman: list[dict], baseline: str) -> str:
    rows = [s for s in spearman if s["variant"] == baseline] or spearman
    if not rows:
        return ""
    rises = [s["label"] for s in rows if s["trend"] == "rises with size"]
    falls = [s["label"] for s in rows if s["trend"] == "falls with size"]
    flat = [s["label"] for s in rows if s["trend"] not in ("rises with size", "falls with size")]
    several = rows[0]["variant"] != baseline or len({s["variant"] for s in spearman}) > 1
    who = f"{rows[0]['variant']}, " if several else ""
    parts = [f"{_join(rises)} rise{'s' * (len(rises) == 1)} with size"] if rises else ["no metric rises with size"]
    parts += [f"{_join(falls)} fall{'s' * (len(falls) == 1)}"] if falls else []
    parts += [f"no clear trend in {_join(flat)}"] if flat and rises else []
    return f"Scaling ({who}{rows[0]['sizes']} sizes): " + "; ".join(parts) + "."


def overopt_sentence(peaks: pd.DataFrame) -> str:
    if peaks is None or peaks.empty:
        return ""
    over = peaks[peaks.overoptimized.astype(bool)]
    if over.empty:
        return (
            f"No run over-optimized: in none of {len(peaks)} runs did gold fall after its peak by more than twice "
            "its standard error while the proxy held."
        )
    named = [
        f"{r['label']} seed {r['seed']} (gold {fmt(r['peak_gold'])} at KL {fmt(r['kl_at_peak'])} → "
        f"{fmt(r['final_gold'])})"
        for r in over.to_dict("records")
    ]
    return f"Over-optimized: {len(over)} of {len(peaks)} runs — {_join(named)}."


def rlhf_sentence(rlhf: list[dict], baseline: str) -> str:
    """What PPO added over its SFT policy for the baseline (its largest size), and every variant whose PPO ended
    below its own SFT policy on gold (reward hacking reads there first)."""
    base = [e for e in rlhf if e["variant"] == baseline]
    if not base:
        return ""
    b = base[-1]
    ci = b.get("win_rate_diff_ci")
    text = (
        f"PPO over its SFT policy ({b['label']}): win rate {b['win_rate_diff']:+.3f} "
        f"{fmt_interval(ci[0], ci[1], True) if ci else ''}".rstrip()
    )
    text += f", gold score {b['gold_score_diff']:+.2f}." if b.get("gold_score_diff") is not None else "."
    fell = [e for e in rlhf if e["variant"] != baseline and (e.get("gold_score_diff") or 0.0) < 0]
    if fell:
        text += (
            " PPO ended below its own SFT policy on gold in "
            + _join([f"{e['label']} ({e['gold_score_diff']:+.2f}; win rate per seed {e['per_seed']})" for e in fell])
            + "."
        )
    return text


def answer(
    study: Study, stats: pd.DataFrame, judge: Judge, spearman: list[dict], peaks: pd.DataFrame, rlhf: list[dict]
) -> list[str]:
    """The headline's sentences, most important first; empty ones dropped."""
    sentences = [sanity_sentence(study, judge)]
    if not study.single and len(study.variants) > 1:
        sentences.append(effect_sentence(study, stats, judge))
    sentences += [
        scaling_sentence(spearman, study.baseline) if len(study.sizes) >= 2 else "",
        overopt_sentence(peaks),
        rlhf_sentence(rlhf, study.baseline),
    ]
    return [s for s in sentences if s]
