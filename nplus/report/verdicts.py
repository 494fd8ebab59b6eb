"""What a verdict may claim: the marks that keep a reader who looks only at the headline from being misled.

The statistics (``nplus.stats.compare``) decide helps / hurts / changes per variant × size × metric. Before a
verdict is shown, this module says when it must not be read as one:

- bookkeeping metrics (sanity offsets, wall time, parameter counts) describe the run, not the detail: no badge;
- a variant evaluated on other prompts (``query_truncation = drop`` removes the longest posts from every split,
  as TRL's and DeepSpeed-Chat's presets do) is "not comparable" with the baseline on every metric; a proxy reward
  scored by another reward model (the variant changes a stage upstream of PPO) is not comparable either;
- a difference of exactly 0 on every seed is "identical on every seed" (for SFT and RM metrics of a PPO-only flip:
  the same artifacts, identical by construction); a variant identical to the baseline on every PPO metric is a
  "no-op here";
- runs whose sanity checks failed (first PPO ratio ≠ 1, initial KL ≠ 0, ...) do not measure what they claim to:
  every cell of their variant carries the mark, and the headline says so.

The interval beside a verdict is the Holm-consistent one (``nplus.stats.holm_levels``): it excludes 0 exactly when
the verdict is helps / hurts / changes. The unadjusted 95 % interval is kept, labelled, in the cell's tooltip.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

from nplus.report.load import Study, as_number
from nplus.stats import AA_VARIANT, ALPHA, holm_levels, interval_at

# Keys that describe a run rather than measure what its details did: never badged.
BOOKKEEPING_PREFIXES = ("sanity.",)
BOOKKEEPING = frozenset({"wall_time_s", "ppo_wall_time_s", "params", "seed"})
# Metrics scored by the run's own reward model: another RM (any change upstream of PPO) gives another scale.
OWN_RM_METRICS = frozenset({"ppo.proxy_reward", "rm.reward_bias"})
UPSTREAM_PREFIXES = ("sft.", "rm.")
SANITY_OK_KEYS = ("sanity.first_ratio_ok", "sanity.initial_kl_ok", "sanity.rm_padding_ok", "sanity.score_position_ok")
SANITY_NAMES = {
    "sanity.first_ratio_ok": "first PPO ratio = 1",
    "sanity.initial_kl_ok": "initial KL = 0",
    "sanity.rm_padding_ok": "RM padding invariance",
    "sanity.score_position_ok": "score after EOS",
}
JUDGED = ("helps", "hurts", "changes")


def is_bookkeeping(metric: str) -> bool:
    return metric in BOOKKEEPING or metric.startswith(BOOKKEEPING_PREFIXES)


# ----------------------------------------------------------------------------------------------- the study


def _preset_details(study: Study) -> dict[str, str]:
    """The details of the study's preset (the paper's values where the preset is unknown)."""
    from dataclasses import asdict

    from nplus.details import REGISTRY

    name = study.spec.get("preset") or next((p for r in study.runs if (p := r.config.get("preset"))), None)
    try:
        from nplus.presets import preset

        return {k: str(v) for k, v in asdict(preset(str(name)).details).items()}
    except Exception:  # noqa: BLE001 — an unknown or renamed preset: fall back to the paper's values
        return {k: d.paper for k, d in REGISTRY.items()}


def variant_details(study: Study, variant: str) -> dict[str, str]:
    """The details a variant ran with: its runs' details.json, else what study.json says it sets (a framework
    preset's values, or the study preset's, under its own flips)."""
    for r in study.runs:
        if r.variant == variant and r.details:
            return {str(k): str(v) for k, v in r.details.items()}
    from nplus.details import REGISTRY
    from nplus.frameworks import FRAMEWORKS, framework_details

    over = study.overrides.get(variant, {})
    base = framework_details(over["framework"]) if over.get("framework") in FRAMEWORKS else _preset_details(study)
    return {**base, **{str(k): str(v) for k, v in over.items() if k in REGISTRY}}


def baseline_text(study: Study) -> str:
    """The baseline as what it is: its preset and where that preset's details depart from the paper's values."""
    from nplus.details import REGISTRY

    details = variant_details(study, study.baseline)
    off = {k: v for k, v in details.items() if k in REGISTRY and v != REGISTRY[k].paper}
    name = study.spec.get("preset") or next((r.config.get("preset") for r in study.runs if r.config.get("preset")), "")
    head = f"preset {name}" if name else "the study's base configuration"
    framework = study.overrides.get(study.baseline, {}).get("framework")
    if framework:
        head += f", framework {framework}"
    if not off:
        return f"{head}: every detail at the paper's value"
    return f"{head}: the paper's details except " + ", ".join(
        f"{k} = {v} (paper: {REGISTRY[k].paper})" for k, v in off.items()
    )


def _changed(study: Study, variant: str) -> dict[str, str]:
    """What the variant sets differently from the baseline (details and other overrides)."""
    mine, base = variant_details(study, variant), variant_details(study, study.baseline)
    out = {k: v for k, v in mine.items() if base.get(k) != v}
    from nplus.details import REGISTRY

    out.update(
        {str(k): str(v) for k, v in study.overrides.get(variant, {}).items() if k not in REGISTRY and k != "framework"}
    )
    return out


def _ppo_only(changed: dict[str, str]) -> bool:
    from nplus.details import REGISTRY

    return bool(changed) and all(
        (REGISTRY[k].stage == "ppo") if k in REGISTRY else k.startswith("ppo.") for k in changed
    )


def _other_prompts(study: Study, variant: str) -> str:
    mine = variant_details(study, variant).get("query_truncation")
    base = variant_details(study, study.baseline).get("query_truncation")
    if mine != base and "drop" in (mine, base):
        who = "this variant" if mine == "drop" else "the baseline"
        return (
            f"evaluated on other prompts: {who} sets query_truncation = drop, which removes the posts too long "
            "for the query from every split, so its scores are on the shorter posts only"
        )
    return ""


def _sanity(study: Study) -> dict[tuple[str, str], dict]:
    out: dict[tuple[str, str], dict] = {}
    for r in study.ok_runs:
        checked = [k for k in SANITY_OK_KEYS if isinstance(r.summary.get(k), bool)]
        failed = [SANITY_NAMES[k] for k in checked if r.summary.get(k) is False]
        entry = out.setdefault((r.variant, r.size), {"runs": 0, "failed": 0, "seeds": [], "checks": set()})
        entry["runs"] += bool(checked)
        if failed:
            entry["failed"] += 1
            entry["seeds"].append(r.seed)
            entry["checks"].update(failed)
    return out


@dataclass
class Judge:
    """Everything a cell needs to know about its variant beyond its stats row."""

    baseline: str
    sanity: dict[tuple[str, str], dict] = field(default_factory=dict)
    other_prompts: dict[str, str] = field(default_factory=dict)
    upstream_changed: dict[str, bool] = field(default_factory=dict)
    ppo_only: dict[str, bool] = field(default_factory=dict)
    noop: set = field(default_factory=set)

    def sanity_note(self, variant: str, size: str) -> str:
        """Why the variant's comparison is not a measurement: its own runs' failed checks, or the baseline's."""
        notes = []
        for who, v in (("", variant), ("the baseline's ", self.baseline if variant != self.baseline else None)):
            s = self.sanity.get((v, size))
            if s and s["failed"]:
                notes.append(
                    f"{who}sanity check failed on {s['failed']} of {s['runs']} seed(s) "
                    f"({', '.join(sorted(s['checks']))})"
                )
        return "; ".join(notes) + (": the runs do not measure what they claim to" if notes else "")

    def not_comparable(self, variant: str, metric: str) -> str:
        if self.other_prompts.get(variant):
            return self.other_prompts[variant]
        if metric in OWN_RM_METRICS and self.upstream_changed.get(variant):
            return "scored by another reward model (the variant changes a stage upstream of PPO)"
        return ""


def make_judge(study: Study, stats: pd.DataFrame) -> Judge:
    judge = Judge(baseline=study.baseline, sanity=_sanity(study))
    for v in study.variants:
        if v in (study.baseline, AA_VARIANT):
            continue
        changed = _changed(study, v)
        judge.other_prompts[v] = _other_prompts(study, v)
        judge.ppo_only[v] = _ppo_only(changed)
        judge.upstream_changed[v] = bool(changed) and not judge.ppo_only[v]
        sel = stats[
            (stats.variant == v)
            & stats.metric.str.startswith("ppo.")
            & ~stats.metric.map(is_bookkeeping)
            & stats["diff"].notna()
        ]
        if len(sel) and all(identical(r) for r in sel.to_dict("records")):
            judge.noop.add(v)
    return judge


# ------------------------------------------------------------------------------------------------ intervals


def identical(row: dict) -> bool:
    """A paired difference of exactly 0 on every seed (zero mean, zero-width interval)."""
    d, lo, hi = (as_number(row.get(k)) for k in ("diff", "diff_ci_low", "diff_ci_high"))
    return d == 0 and lo in (0, None) and hi in (0, None)


def constant_shift(row: dict) -> bool:
    """A non-zero paired difference that is the same on every seed: no variance, so no test (scipy's t-test is
    undefined there and ``nplus.stats`` reads it as certain). With quantized metrics (an EOS rate in steps of
    1/500) this happens by chance at three seeds; it is shown, never badged."""
    d, lo, hi, n = (as_number(row.get(k)) for k in ("diff", "diff_ci_low", "diff_ci_high", "n_pairs"))
    return bool(d) and lo is not None and lo == hi and (n or 0) >= 2


def with_holm_intervals(stats: pd.DataFrame, baseline: str, alpha: float = ALPHA) -> pd.DataFrame:
    """Add ``holm_level``, ``holm_ci_low`` and ``holm_ci_high``: the level Holm decided each paired test at (the
    variants' family per size and metric; the A/A arm on its own, as in ``nplus.stats.compare``) and the
    difference's t interval at that level, consistent with the verdict."""
    out = stats.copy()
    out["holm_level"] = math.nan
    out["holm_ci_low"] = math.nan
    out["holm_ci_high"] = math.nan
    arms = out[(out.variant != baseline) & out["diff"].notna()]
    families = [arms[arms.variant != AA_VARIANT], arms[arms.variant == AA_VARIANT]]
    for family in families:
        for idx in family.groupby(["size", "metric"]).groups.values():
            pvals = [None if pd.isna(p) else float(p) for p in out.loc[idx, "p_ttest"]]
            for i, level in zip(idx, holm_levels(pvals, alpha)):
                out.at[i, "holm_level"] = math.nan if level is None else level
                row = out.loc[i]
                n = as_number(row["n_pairs"])
                lo, hi = as_number(row["diff_ci_low"]), as_number(row["diff_ci_high"])
                if level is not None and n and n >= 2 and lo is not None and hi is not None:
                    out.at[i, "holm_ci_low"], out.at[i, "holm_ci_high"] = interval_at(
                        float(row["diff"]), lo, hi, int(n), level
                    )
    return out
