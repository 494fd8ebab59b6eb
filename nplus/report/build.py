"""Assemble the report of a study (or one run): figures, CSV tables and the self-contained HTML page.

``build_report`` is the entry point. It reads the study with ``nplus.report.load``, computes its sections with
``nplus.report.tables`` and ``nplus.report.samples``, draws the figures with ``nplus.report.figures``, and renders
``templates/report.html.jinja``; the names callers and tests have always imported from here stay importable.
"""

from __future__ import annotations

import csv
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from nplus.report.answer import answer
from nplus.report.glossary import glossary
from nplus.report.knob import knob_points, knob_summary
from nplus.report.ladder import ladder_rows, ladder_view

# Not used here: callers and tests have always imported these from this module.
from nplus.report.load import (  # noqa: F401
    ReportError,
    Study,
    as_number,
    load_published,
    load_study,
    normalize_stats,
    read_stats,
    results_frame,
    study_stats,
)
from nplus.report.overopt import checkpoints, peak_rows, peak_summary
from nplus.report.overopt import peaks as gold_peaks
from nplus.report.power import aa_check, power_rows, power_view
from nplus.report.samples import (
    CURVE_METRICS,
    curves_frame,
    display_text,
    overopt_examples,
    proxy_gold_frame,
    sample_grid,
)
from nplus.report.tables import (
    ALPHA,
    KEY_METRICS,
    SANITY_CHECKS,
    SCALING_METRICS,
    effects_frame,
    failures,
    findings,
    fmt,
    fmt_interval,
    headline_table,
    label_agreement,
    means_table,
    provenance,
    rlhf_effect_rows,
    sanity_table,
    spearman_rows,
    variants_table,
    verdict_class,  # noqa: F401
    what_was_run,
)
from nplus.report.verdicts import Judge, baseline_text, make_judge, with_holm_intervals

# ----------------------------------------------------------------------------------------------- assembly


@dataclass(frozen=True)
class Options:
    title: str | None = None
    samples: int = 6
    examples: int = 8
    published: str = "auto"  # auto: the real task or two or more sizes (in panels of their own); always; never
    formats: tuple[str, ...] = ("png", "pdf")


KL_NOTE = (
    "KL is an estimate from the sampled tokens: ppo.kl is k1, Σ_t [log π(a_t) − log π_ref(a_t)] over a "
    "response, and objective/kl is the run's details.kl_estimator (k1 by default; k2 and k3 are never "
    "negative). k1 is unbiased only for samples drawn from π itself: one response's k1 can be negative, and "
    "a mean below 0 means the responses were not sampled from the π it is computed with (another "
    "temperature, stale log-probabilities, dropout left on) — the initial-KL sanity check catches that."
)
CAPTIONS = {
    "forest": (
        "Paired effects against the baseline",
        "One row per variant, one panel per key metric. The dot is the mean difference from the baseline over "
        "seeds (paired by seed); the thick bar is the Holm-consistent interval the verdict was decided with "
        "(it clears the dashed zero line exactly when the verdict is helps, hurts or changes), the thin bar "
        "the unadjusted 95 % interval, the small grey points the seeds' own differences. Green helps, red "
        "hurts, blue changes a descriptive quantity (KL, length), grey no detectable effect, violet not "
        "comparable (evaluated on other prompts or scored by another reward model); a hollow dot and ⚠: a "
        "sanity check failed on that variant's runs.",
    ),
    "knob": (
        "The effect along the study's knob",
        "The knob's settings in increasing order, left to right. Grey points are single seeds' paired differences "
        "from the baseline; the coloured dot and bar are their mean and interval (green helps, red hurts, grey no "
        "detectable effect). The hypothesis is about the slope: read the trend test below, not one setting.",
    ),
    "scaling": (
        "Scaling with model size",
        "Faint points are single seeds, the line is the mean with its interval, against the policy's parameter "
        "count (log scale), in each variant's colour. Look for lines that rise from left to right, and for "
        "seeds that fall far below the mean: at 1B the paper saw two of four PPO seeds over-optimize.",
    ),
    "training": (
        "Training curves",
        "Mean over seeds (line) and ±1 standard deviation (band) against training episodes, in each "
        "variant's colour (line style per size). Look for proxy reward that keeps rising while the gold "
        "score stalls or falls (over-optimization), KL growing without bound, response length drifting, "
        "and an EOS rate that collapses (a policy that stops finishing its summaries). " + KL_NOTE,
    ),
    "gold_kl": (
        "Gold and proxy against KL, per checkpoint",
        "One line per run through its evaluations (the SFT policy at KL 0 on the gold panel), in the "
        "variant's colour (line style per size); the star is where the run's gold score peaked. As in Gao et "
        "al.'s reward-model over-optimization curves, look for gold lines that turn down while the proxy "
        "lines keep climbing.",
    ),
    "proxy_gold": (
        "Proxy reward against gold score",
        "Each line is one run moving through its evaluations; the large dot is the final one. Up and to the "
        "right is real improvement; a line that moves right (more reward-model score) while turning down "
        "(less gold score) is reward hacking.",
    ),
    "kl_frontier": (
        "KL against win rate",
        "One point per run: KL from the reference policy after training against the win rate over the "
        "reference. Good runs sit top-left; points far right with a low win rate bought their reward with "
        "distance from the SFT policy without getting better (the paper's failed 1B seeds had KL ≈ "
        "50–85). Points left of 0: " + KL_NOTE,
    ),
}
NOT_AVAILABLE = {
    "forest": "no variant has a paired difference against the baseline",
    "knob": "the study declares no knob, or no knob variant has a finished run paired with the baseline",
    "scaling": "the study has fewer than two model sizes with finished runs",
    "training": "no PPO metric was logged at two or more episodes",
    "proxy_gold": "no evaluation with both eval/proxy_reward and eval/gold_score",
    "kl_frontier": "no finished run reported both ppo.kl and ppo.win_rate",
    "gold_kl": "no PPO run with two or more gold evaluations and objective/kl",
}


def _show_published(study: Study, option: str) -> bool:
    """auto: for the real task, and whenever a study climbs the ladder (two sizes or more); the paper's values get
    panels of their own."""
    return option == "always" or (option == "auto" and (study.task == "tldr" or len(study.sizes) >= 2))


def seed_differences(study: Study, results: pd.DataFrame) -> pd.DataFrame:
    """Each seed's own paired difference (variant − baseline, same size and seed): the forest plot's grey points."""
    base = results[results.variant == study.baseline][["size", "seed", "metric", "value"]]
    other = results[results.variant != study.baseline]
    if base.empty or other.empty:
        return pd.DataFrame(columns=["label", "metric", "seed", "diff"])
    joined = other.merge(base, on=["size", "seed", "metric"], suffixes=("", "_b"))
    joined["label"] = [f"{v} [{s}]" if s else v for v, s in zip(joined.variant, joined["size"])]
    joined["diff"] = joined["value"] - joined["value_b"]
    return joined[["label", "metric", "seed", "diff"]]


def ranked_variants(study: Study, effects: pd.DataFrame) -> list[str]:
    """Variants by the strength of their evidence on the key metrics (smallest Holm p, then the largest |t|), for
    the palette's top colours; variants not comparable or identical to the baseline come last."""
    keys = [k for k, _ in KEY_METRICS]
    score: dict[str, tuple] = {}
    for r in effects[effects.metric.isin(keys)].to_dict("records"):
        usable = r.get("shown") not in ("nc", "na")
        p = as_number(r.get("p_holm"))
        lo, hi = as_number(r.get("diff_ci_low")), as_number(r.get("diff_ci_high"))
        t = abs(as_number(r.get("diff")) or 0.0) / ((hi - lo) if lo is not None and hi is not None and hi > lo else 1.0)
        cand = (not usable, 1.0 if p is None else p, -t)
        score[r["variant"]] = min(score.get(r["variant"], cand), cand)
    return sorted((v for v in study.variants if v != study.baseline), key=lambda v: score.get(v, (True, 1.0, 0.0)))


def make_figures(
    study: Study,
    results: pd.DataFrame,
    effects: pd.DataFrame,
    curves: pd.DataFrame,
    pg: pd.DataFrame,
    points: pd.DataFrame,
    peaks: pd.DataFrame,
    knob: pd.DataFrame,
    published: dict | None,
    fig_dir: Path,
    formats: tuple[str, ...],
) -> dict:
    """Every figure, numbered in the order the page shows them, all drawn with one variant → colour map."""
    from nplus.report import figures as F

    colors = F.palette(study.variants, study.baseline, ranked_variants(study, effects))
    seeds = seed_differences(study, results)
    _, left_out = F.curve_metrics(curves, CURVE_METRICS)
    builders = {  # page order
        "forest": lambda: F.forest_plot(effects, KEY_METRICS, seeds),
        "knob": lambda: (
            F.knob_plot(knob, effects, study.spec["knob"], study.baseline) if study.spec.get("knob") else None
        ),
        "scaling": lambda: (
            F.scaling_plot(results, SCALING_METRICS, colors, published) if len(study.sizes) >= 2 else None
        ),
        "training": lambda: F.training_curves(curves, CURVE_METRICS, colors, study.sizes),
        "gold_kl": lambda: F.gold_proxy_vs_kl(points, peaks, colors, study.sizes),
        "proxy_gold": lambda: F.proxy_vs_gold(pg, colors),
        "kl_frontier": lambda: F.kl_frontier(results, colors, study.sizes),
    }
    out, number = {}, 0
    for name, build in builders.items():
        title, caption = CAPTIONS[name]
        fig = build()
        entry = {
            "name": name,
            "title": title,
            "caption": caption,
            "available": fig is not None,
            "reason": NOT_AVAILABLE[name],
            "alt": f"{title}: {caption}",
            "note": "",
            "legend": [],
        }
        if fig is not None:
            number += 1
            entry.update(F.save(fig, fig_dir, name, formats), number=number)
        out[name] = entry
    if left_out:
        them = "it" if len(left_out) == 1 else "them"
        out["training"]["note"] = (
            f"Left out: {', '.join(left_out)} — each run logged {them} at one episode "
            "only, so there is no curve to draw; a study that needs these curves sets "
            "ppo.eval_every to evaluate during training."
        )
    out["_colors"] = colors
    return out


def _example_view(e: dict) -> dict:
    text, placeholder = display_text(e["response"])
    return {
        **e,
        "text": text,
        "placeholder": placeholder,
        "proxy_text": fmt(e["proxy"]),
        "gold_text": fmt(e["gold"]),
        "z_proxy_text": f"z {e['z_proxy']:+.2f}",
        "z_gold_text": f"z {e['z_gold']:+.2f}",
        "gap_text": f"{e['gap']:+.2f}",
    }


def _published_note(study: Study, shown: bool) -> str:
    if not shown:
        return "The paper's published values are not drawn (use --published always to draw them)."
    pub = load_published()
    note = (
        f"Bottom row: the paper's values, {pub.get('source', 'published results')}, on the real TL;DR task with "
        f"Pythia models (judge: {pub.get('judge', '?')}), in panels of their own."
    )
    if study.task != "tldr":
        note += (
            f" This study runs task {study.task!r}: its absolute numbers are not comparable with the paper's; "
            "compare the shapes (does each metric rise with size?), not the values."
        )
    return note


# ----------------------------------------------------------------------------------------------- tables


def _runs_table(study: Study) -> pd.DataFrame:
    rows = []
    for r in study.runs:
        row = {
            "path": r.rel,
            "variant": r.variant,
            "size": r.size,
            "seed": r.seed,
            "status": r.status,
            "error": r.error,
        }
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
            rows.append(
                {
                    "variant": row["variant"],
                    "size": row["size"],
                    "baseline": baseline,
                    "metric": m["key"],
                    "diff": c["text"],
                    "interval": c["interval"],
                    "unadjusted_interval": c.get("raw_interval", ""),
                    "verdict": c["verdict"],
                    "seeds": row["n"],
                    "marks": "; ".join(n["text"] for n in row.get("notes", [])),
                }
            )
    return pd.DataFrame(
        rows,
        columns=[
            "variant",
            "size",
            "baseline",
            "metric",
            "diff",
            "interval",
            "unadjusted_interval",
            "verdict",
            "seeds",
            "marks",
        ],
    )


def _sanity_csv(study: Study) -> pd.DataFrame:
    keys = [k for _, vk, ok in SANITY_CHECKS for k in (vk, ok)]
    return pd.DataFrame(
        [
            {
                "path": r.rel,
                "variant": r.variant,
                "size": r.size,
                "seed": r.seed,
                "status": r.status,
                **{k: r.summary.get(k) for k in keys},
            }
            for r in study.runs
        ]
    )


def _samples_csv(grid: dict | None) -> pd.DataFrame:
    rows = [
        {
            "id": p["id"],
            "source": e["source"],
            "summary": e["raw"],
            "judge": e.get("win", ""),
            "gold": e.get("gold", ""),
            "proxy": e.get("proxy", ""),
            "length": e.get("length", ""),
            "note": e["note"],
        }
        for p in (grid or {}).get("prompts", [])
        for e in p["entries"]
    ]
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
    env = Environment(
        loader=FileSystemLoader(Path(__file__).with_name("templates")),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=False,
        lstrip_blocks=False,
    )
    return env.get_template("report.html.jinja").render(**context)


TOC = (
    ("headline", "Headline"),
    ("glossary", "Glossary"),
    ("effects", "Effects (forest plot)"),
    ("knob", "Along the knob"),
    ("trust", "A/A check and power"),
    ("scaling", "Scaling"),
    ("training", "Training curves"),
    ("overoptimization", "Over-optimization"),
    ("samples", "Samples"),
    ("sanity", "Sanity checks"),
    ("provenance", "Provenance"),
)


def build_report(study_dir: Path, out_dir: Path, options: Options = Options()) -> Path:
    """Write ``out_dir/index.html`` (self-contained), ``figures/`` (PNG + PDF) and ``tables/`` (CSV)."""
    final = Path(out_dir)
    # the whole folder is replaced: only a previous report (or an empty folder) may be
    if final.is_dir() and any(final.iterdir()) and not (final / "index.html").exists():
        raise ReportError(
            f"--out {final} is a non-empty directory that holds no report (index.html); the report "
            "replaces its folder, so choose a new or empty directory"
        )
    # 1. read the study and what the page computes from its runs
    study = load_study(Path(study_dir))
    results = results_frame(study)
    stats, stats_source = study_stats(study, results)
    curves = curves_frame(study)
    points = checkpoints(study)
    examples, examples_reason = overopt_examples(study, options.examples)
    inputs = {
        "results": results,
        "stats": stats,
        "stats_source": stats_source,
        "curves": curves,
        "pg": proxy_gold_frame(study, curves),
        "points": points,
        "peaks": gold_peaks(study, points),
        "knob": knob_points(study, results),
        "grid": sample_grid(study, options.samples),
        "examples": examples,
        "examples_reason": examples_reason,
        "rlhf": rlhf_effect_rows(study),
        "aa": aa_check(study, stats),
        "power": power_rows(study, results),
        "prov": provenance(study),
        "labels": label_agreement(study),
        "facts": what_was_run(study),
    }
    # written into a temporary folder beside it and renamed at the end: a report that fails half-way (or is
    # interrupted) leaves the previous report, or nothing, never figures without an index.html
    out = final.with_name(f".{final.name}.tmp{os.getpid()}")
    shutil.rmtree(out, ignore_errors=True)
    try:
        write_report(study, inputs, out, options)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
    old = final.with_name(f".{final.name}.old{os.getpid()}")
    if final.exists():
        final.rename(old)
    out.rename(final)
    shutil.rmtree(old, ignore_errors=True)
    return final / "index.html"


def write_report(
    study: Study,
    inputs: dict,
    out: Path,
    options: Options,
    carried: dict[str, str] | None = None,
    tables: tuple[str, ...] | None = None,
) -> Path:
    """The page, its figures and its tables from a study and its computed inputs (``build_report``; or, for a
    committed report whose runs are gone, ``nplus.report.rebuild`` from its tables). ``carried``: sections whose
    inputs only the runs held, as the earlier page rendered them (already escaped HTML); ``tables``: the CSV files
    to write (None: all)."""
    from nplus.rundir import atomic_write_text

    results, curves, pg, points, peaks = (inputs[k] for k in ("results", "curves", "pg", "points", "peaks"))
    stats = with_holm_intervals(inputs["stats"], study.baseline)
    judge = make_judge(study, stats)
    knob_pts = inputs["knob"]
    effects = effects_frame(study, stats, judge)
    # 2. figures (PNG + PDF files; PNG embedded)
    shown = _show_published(study, options.published)
    figs = make_figures(
        study,
        results,
        effects,
        curves,
        pg,
        points,
        peaks,
        knob_pts,
        load_published() if shown else None,
        out / "figures",
        options.formats,
    )
    colors = figs.pop("_colors")
    # 3. sections
    headline = headline_table(study, stats, judge)
    spearman, fails, ladder = spearman_rows(results), failures(study), ladder_rows(study)
    # 4. every table as CSV, then the page
    all_tables = _table_makers(study, inputs, stats, headline, spearman, fails, ladder)
    write_tables(out / "tables", {k: make() for k, make in all_tables.items() if tables is None or k in tables})
    context = _page_context(
        study, inputs, options, carried, stats, judge, figs, colors, shown, headline, spearman, fails, ladder
    )
    index = out / "index.html"
    atomic_write_text(index, render(context))
    return index


def _table_makers(
    study: Study,
    inputs: dict,
    stats: pd.DataFrame,
    headline: dict,
    spearman: list[dict],
    fails: list[dict],
    ladder: list[dict],
) -> dict:
    """Each CSV table's builder by name, called only for the tables asked for (a rebuilt report writes a few)."""
    curves, pg, points, peaks, knob_pts = (inputs[k] for k in ("curves", "pg", "points", "peaks", "knob"))
    grid, examples, prov, aa, power = (inputs[k] for k in ("grid", "examples", "prov", "aa", "power"))
    return {
        "headline": lambda: _headline_csv(headline, study.baseline),
        "stats": lambda: stats,
        "runs": lambda: _runs_table(study),
        "spearman": lambda: pd.DataFrame(
            spearman, columns=["variant", "metric", "rho", "slope", "ci_low", "ci_high", "n", "sizes", "trend"]
        ),
        "ladder": lambda: pd.DataFrame(ladder),
        "training_curves": lambda: _curves_table(curves),
        "proxy_vs_gold": lambda: pg,
        "overoptimization_checkpoints": lambda: points,
        "overoptimization_peaks": lambda: peaks,
        "knob": lambda: knob_pts,
        "overoptimization_examples": lambda: pd.DataFrame(examples),
        "samples": lambda: _samples_csv(grid),
        "power": lambda: power,
        "aa_check": lambda: pd.DataFrame(
            aa["rows"], columns=["size", "metric", "label", "diff", "interval", "p", "verdict", "cls"]
        ).drop(columns="cls"),
        "sanity": lambda: _sanity_csv(study),
        "provenance": lambda: pd.DataFrame(prov["runs"]),
        "packages": lambda: pd.DataFrame(prov["packages"]),
        "failures": lambda: pd.DataFrame(fails, columns=["label", "seed", "status", "error", "path"]),
    }


def _page_context(
    study: Study,
    inputs: dict,
    options: Options,
    carried: dict[str, str] | None,
    stats: pd.DataFrame,
    judge: Judge,
    figs: dict,
    colors: dict,
    shown: bool,
    headline: dict,
    spearman: list[dict],
    fails: list[dict],
    ladder: list[dict],
) -> dict:
    """What the page template renders, each section from the study, its inputs and the sections built from them."""
    from nplus.report.figures import DIRECTION_TEXT

    knob_spec, knob_pts, peaks = study.spec.get("knob"), inputs["knob"], inputs["peaks"]
    grid, examples, prov = inputs["grid"], inputs["examples"], inputs["prov"]
    aa, power, rlhf = inputs["aa"], inputs["power"], inputs["rlhf"]
    return {
        "title": options.title or f"{study.name}: RLHF implementation details",
        "kind": "single run"
        if study.single
        else f"study of {len(study.variants)} variant(s) × {len(study.seeds)} seed(s)",
        "generated": time.strftime("%Y-%m-%d %H:%M"),
        "toc": [
            t
            for t in TOC
            if not (study.single and t[0] == "trust")
            and not (t[0] == "knob" and not knob_spec)
            and not (t[0] == "scaling" and len(study.sizes) < 2)
        ],
        "answer": answer(study, stats, judge, spearman, peaks, rlhf),
        "baseline_text": baseline_text(study),
        "colors": [{"variant": v, "color": c} for v, c in colors.items()],
        "glossary": glossary(stats, KEY_METRICS, CURVE_METRICS),
        "facts": inputs["facts"],
        "failures": fails,
        "carried": carried or {},
        "knob": {**knob_spec, "rows": knob_summary(study, knob_pts, stats)} if knob_spec else None,
        "headline": headline,
        "findings": findings(headline, stats, judge),
        "means": means_table(study, stats),
        "rlhf": rlhf,
        "variants": variants_table(study),
        "labels": inputs["labels"],
        "baseline": study.baseline,
        "single": study.single,
        "stats_source": inputs["stats_source"],
        "direction_text": DIRECTION_TEXT,
        "ci_level": round(100 * (1 - ALPHA)),
        "figs": figs,
        "published_note": _published_note(study, shown) if figs["scaling"]["available"] else "",
        "has_scaling": len(study.sizes) >= 2,
        "ladder": ladder_view(ladder),
        "spearman": [
            {**s, "slope_text": fmt(s["slope"], True), "interval": fmt_interval(s["ci_low"], s["ci_high"], True)}
            for s in spearman
        ],
        "examples": [_example_view(e) for e in examples],
        "examples_reason": inputs["examples_reason"],
        "grid": grid,
        "aa": aa,
        "power": power_view(power),
        "peaks": peak_rows(peaks),
        "peak_summary": peak_summary(peaks),
        "sanity": sanity_table(study),
        "prov": prov,
        "study_dir": str(study.root),
    }
