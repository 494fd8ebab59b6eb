"""The report's figures (matplotlib, Agg): each saved as PNG and PDF and embedded in the page as a PNG data URI.

Every function takes plain tables prepared by ``build`` and returns a Figure, or None when the study has nothing
to draw (the page then says "not available"). Colours are fixed per variant across all figures, so a reader
can follow one variant from the forest plot to its training curves.
"""

from __future__ import annotations

import base64
import io
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display, no GUI toolkit, same output on a laptop and a cluster node

import matplotlib.collections  # noqa: E402
import matplotlib.lines  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from nplus.metrics_doc import direction  # noqa: E402
from nplus.report.tables import verdict_class  # noqa: E402

# The page's verdict colours (na: insufficient data or not assessed).
VERDICT_COLORS = {"helps": "#1a9850", "hurts": "#d73027", "changes": "#4575b4", "none": "#8c8c8c", "na": "#c8c8c8"}
BASELINE_COLOR = "#222222"
SIZE_STYLES = ("-", "--", ":", "-.")
SIZE_MARKERS = ("o", "s", "^", "D", "v", "P")
DIRECTION_TEXT = {"up": "higher is better", "down": "lower is better", "none": "descriptive"}
# Figures carry no software URL in their metadata: the page must not name any other host, even in base64.
METADATA = {"png": {"Software": "nplus report"}, "pdf": {"Creator": "nplus report", "Producer": "nplus report"}}

STYLE = {
    "font.family": "sans-serif",
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": "#e5e5e5",
    "grid.linewidth": 0.6,
    "legend.frameon": False,
    "legend.fontsize": 8,
    "figure.dpi": 100,
}


OTHER_COLOR = "#c4c4c4"
OTHER_LABEL = "other variants"
TOP_K = 9


def palette(variants: list[str], baseline: str, ranked: list[str] | None = None, k: int = TOP_K) -> dict[str, str]:
    """The report's one variant → colour map, built once and used by every figure: the baseline in near-black,
    the others from tab10 without its grey (grey means "no effect" here). With more than ``k`` other variants only
    the first ``k`` of ``ranked`` (the largest effects) get a colour, the rest a light grey: a palette that repeats
    is unreadable, and a reader follows the variants that matter."""
    cycle = [matplotlib.colors.to_hex(c) for i, c in enumerate(plt.get_cmap("tab10").colors) if i != 7]
    others = [v for v in variants if v != baseline]
    coloured = set(others) if len(others) <= k else set([v for v in (ranked or others) if v in others][:k])
    colors, i = {}, 0
    for v in variants:
        if v == baseline:
            colors[v] = BASELINE_COLOR
        elif v in coloured:
            colors[v] = cycle[i % len(cycle)]
            i += 1
        else:
            colors[v] = OTHER_COLOR
    return colors


def legend_name(variant: str, colors: dict[str, str]) -> str:
    """The legend label of a variant: grey variants share one entry."""
    return OTHER_LABEL if colors.get(variant) == OTHER_COLOR else variant


def legend_colors(fig: plt.Figure) -> dict[str, str]:
    """label → colour of every legend entry actually drawn (figure and axes legends): what the page lists under
    each figure, so that a reader (and the browser test) can check that a variant has one colour everywhere."""
    legends = list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    out: dict[str, str] = {}
    for leg in legends:
        for text, handle in zip(leg.get_texts(), leg.legend_handles):
            if isinstance(handle, matplotlib.lines.Line2D):
                color = handle.get_color()
            elif isinstance(handle, matplotlib.collections.PathCollection) and len(handle.get_facecolor()):
                color = handle.get_facecolor()[0]
            elif isinstance(handle, matplotlib.collections.Collection) and len(handle.get_edgecolor()):
                color = handle.get_edgecolor()[0]
            else:
                continue
            out[text.get_text()] = matplotlib.colors.to_hex(color)
    return out


def save(fig: plt.Figure, out_dir: Path, name: str, formats: tuple[str, ...]) -> dict:
    """Write name.{png,pdf} and return the PNG as a data URI for the page."""
    out_dir.mkdir(parents=True, exist_ok=True)
    # The tight bounding box (legends sit below the axes) is computed once, not once per file format.
    bbox = fig.get_tightbbox(fig.canvas.get_renderer()).padded(0.08)
    legend = legend_colors(fig)
    files = []
    for ext in formats:
        fig.savefig(out_dir / f"{name}.{ext}", dpi=150, bbox_inches=bbox, metadata=METADATA.get(ext))
        files.append(f"{name}.{ext}")
    if "png" in formats:
        png = (out_dir / f"{name}.png").read_bytes()
    else:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=150, bbox_inches=bbox, metadata=METADATA["png"])
        png = buf.getvalue()
    plt.close(fig)
    return {
        "uri": "data:image/png;base64," + base64.b64encode(png).decode("ascii"),
        "files": files,
        "legend": [{"label": k, "color": v} for k, v in legend.items()],
    }


def _in_order(names, colors: dict[str, str], variant_of=None) -> list:
    """Names in the study's variant order (the palette's key order: baseline first), then by name."""
    rank = {v: i for i, v in enumerate(colors)}
    key = lambda n: (rank.get(variant_of[n] if variant_of is not None else n, len(rank)), str(n))
    return sorted(names, key=key)


def _panel_title(label: str, key: str) -> str:
    return f"{label}\n({DIRECTION_TEXT[direction(key)]})"


def _finite(*values: float) -> bool:
    return all(v is not None and math.isfinite(v) for v in values)


# ------------------------------------------------------------------------------------------------- forest

SHOWN_COLORS = {**VERDICT_COLORS, "nc": "#b39ddb"}


def forest_plot(
    effects: pd.DataFrame, metrics: tuple[tuple[str, str], ...], seed_diffs: pd.DataFrame | None = None
) -> plt.Figure | None:
    """One row per variant, one panel per metric: the paired difference from the baseline, the Holm-consistent
    interval the verdict was decided with (thick) and the unadjusted 95 % interval (thin), and each seed's own
    paired difference (small grey points). Colour = what the page shows (verdict; violet: not comparable); a
    hollow dot and ⚠ in the label: a sanity check failed on that variant's runs."""
    present = [(k, lab) for k, lab in metrics if (effects.metric == k).any()] if len(effects) else []
    if not present:
        return None
    labels = list(dict.fromkeys(effects.label))
    suspect = set(effects[effects.suspect.astype(bool)].label) if "suspect" in effects else set()
    y = {lab: len(labels) - 1 - i for i, lab in enumerate(labels)}
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(
            1, len(present), figsize=(2.2 * len(present) + 1.8, 0.34 * len(labels) + 1.6), sharey=True, squeeze=False
        )
        for ax, (key, title) in zip(axes[0], present):
            if seed_diffs is not None and len(seed_diffs):
                pts = seed_diffs[(seed_diffs.metric == key) & seed_diffs.label.isin(y)]
                ax.scatter(
                    pts["diff"], [y[lab] + 0.18 for lab in pts.label], s=7, color="#7a7a7a", alpha=0.7, lw=0, zorder=2
                )
            for row in effects[effects.metric == key].itertuples():
                shown = getattr(row, "shown", verdict_class(row.verdict))
                color = SHOWN_COLORS.get(shown, VERDICT_COLORS["na"])
                if _finite(row.diff_ci_low, row.diff_ci_high):
                    ax.plot([row.diff_ci_low, row.diff_ci_high], [y[row.label]] * 2, color=color, lw=0.9)
                lo, hi = getattr(row, "holm_ci_low", math.nan), getattr(row, "holm_ci_high", math.nan)
                if _finite(lo, hi):
                    ax.plot([lo, hi], [y[row.label]] * 2, color=color, lw=3.0, solid_capstyle="round")
                hollow = row.label in suspect
                ax.plot(
                    row.diff,
                    y[row.label],
                    "o",
                    color=color,
                    ms=5.5,
                    mfc="white" if hollow else color,
                    mec=color if hollow else "white",
                    mew=1.2 if hollow else 0.6,
                    zorder=3,
                )
            ax.axvline(0.0, color="#555555", lw=0.8, ls="--", zorder=1)
            ax.set_title(_panel_title(title, key))
            ax.grid(axis="y", visible=False)
        axes[0][0].set_yticks(list(y.values()), [f"⚠ {lab}" if lab in suspect else lab for lab in y])
        axes[0][0].set_ylim(-0.7, len(labels) - 0.3)
        fig.supxlabel(
            "variant − baseline (paired by seed). Thick bar: Holm-consistent interval (the verdict's); "
            "thin: unadjusted 95 %; grey points: seeds.\nGreen helps, red hurts, blue changes, grey no "
            "detectable effect, violet not comparable; hollow dot and ⚠: a sanity check failed",
            fontsize=8.5,
        )
        fig.tight_layout()
    return fig


def knob_plot(points: pd.DataFrame, effects: pd.DataFrame, knob: dict, baseline: str) -> plt.Figure | None:
    """The paired difference (variant − baseline) at each setting of the study's knob, in order: seeds as faint
    points, the mean and its interval from the statistics; one panel per size."""
    if points.empty:
        return None
    sizes = list(dict.fromkeys(points["size"]))
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, len(sizes), figsize=(3.4 * len(sizes) + 1.2, 3.3), squeeze=False, sharey=True)
        for ax, size in zip(axes[0], sizes):
            g = points[points["size"] == size]
            ax.plot(g.position, g["diff"], "o", color="#8c8c8c", alpha=0.55, ms=4, mew=0)
            for pos, v in enumerate(knob["variants"]):
                e = effects[(effects.variant == v) & (effects.metric == knob["metric"]) & (effects["size"] == size)]
                if not len(e):
                    continue
                row = e.iloc[0]
                color = VERDICT_COLORS[verdict_class(row.verdict)]
                if _finite(row.diff_ci_low, row.diff_ci_high):
                    ax.plot(
                        [pos + 0.12] * 2,
                        [row.diff_ci_low, row.diff_ci_high],
                        color=color,
                        lw=2.2,
                        solid_capstyle="round",
                    )
                ax.plot(pos + 0.12, row["diff"], "o", color=color, ms=6, mec="white", mew=0.6, zorder=3)
            ax.axhline(0.0, color="#555555", lw=0.8, ls="--", zorder=1)
            ax.set_xticks(range(len(knob["variants"])), knob["variants"], rotation=20, ha="right")
            ax.set_xlim(-0.5, len(knob["variants"]) - 0.5)
            ax.set_xlabel(knob["name"] + " →")
            if size:
                ax.set_title(f"size {size}")
        axes[0][0].set_ylabel(f"{knob['metric']}: variant − {baseline}")
        fig.tight_layout()
    return fig


# ------------------------------------------------------------------------------------------------ scaling


def _t_band(values: np.ndarray) -> tuple[float, float]:
    """The same 95 % t interval over seeds as the statistics (a single seed: no band)."""
    from nplus.stats import t_interval

    mean, _, lo, hi = t_interval(values)
    return (lo, hi) if lo is not None and hi is not None else (mean, mean)


def _published_overlay(ax: plt.Axes, published: dict, key: str) -> None:
    """The paper's values at the Pythia parameter counts: per-seed points and the line through their means."""
    entry = (published.get("metrics") or {}).get(key)
    sizes = published.get("sizes") or {}
    if entry:
        xs, means = [], []
        for size, values in entry["values"].items():
            x = (sizes.get(size) or {}).get("params")
            if x:
                ax.scatter([x] * len(values), values, marker="x", color="#7a0177", s=26, zorder=4)
                xs.append(x)
                means.append(float(np.mean(values)))
        ax.plot(xs, means, ls="--", color="#7a0177", lw=1.2, label="paper (Huang et al. 2024)")
    for ref in published.get("references") or []:
        if ref.get("metric") == key:
            ax.scatter([ref["params"]], [ref["value"]], marker="*", s=90, color="#e7298a", zorder=4, label=ref["label"])


def scaling_plot(
    results: pd.DataFrame, metrics: tuple[tuple[str, str], ...], colors: dict[str, str], published: dict | None
) -> plt.Figure | None:
    """Metric against parameter count (log x): per-seed points, the mean and its interval per variant."""
    data = results[results.metric.isin([k for k, _ in metrics])].dropna(subset=["params"])
    if data.empty or data.params.nunique() < 2:
        return None
    metrics = tuple((k, lab) for k, lab in metrics if (data.metric == k).any())  # no empty panel
    rows = 2 if published else 1
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(rows, len(metrics), figsize=(3.6 * len(metrics), 3.4 * rows), squeeze=False)
        for ax, (key, title) in zip(axes[0], metrics):
            sub = data[data.metric == key]
            variants = _in_order(sub.variant.unique(), colors)
            for i, variant in enumerate(variants):
                g = sub[sub.variant == variant]
                # Variants are dodged sideways (a few percent in log space) so that equal sizes do not overlap.
                dodge = 10 ** (0.025 * (i - (len(variants) - 1) / 2))
                ax.scatter(g.params * dodge, g.value, s=16, alpha=0.45, color=colors.get(variant), lw=0)
                stats = [
                    (x * dodge, float(v.mean()), *_t_band(v.to_numpy(float))) for x, v in g.groupby("params").value
                ]
                x, m, lo, hi = map(np.array, zip(*stats))
                ax.errorbar(
                    x,
                    m,
                    yerr=[m - lo, hi - m],
                    fmt="-o",
                    ms=4,
                    capsize=3,
                    lw=1.4,
                    color=colors.get(variant),
                    label=legend_name(variant, colors),
                )
            _size_ticks(ax, sorted(set(sub.params)))
            ax.set_xlabel("policy parameters")
            ax.set_title(_panel_title(title, key))
        # The paper's values get panels of their own: another task, another judge, other models.
        for ax, (key, title) in zip(axes[1] if published else [], metrics):
            _published_overlay(ax, published, key)
            if key not in (published.get("metrics") or {}):
                ax.text(0.5, 0.5, "no published value", ha="center", va="center", transform=ax.transAxes, color="#888")
            _size_ticks(ax, sorted(_published_params(published, key)))
            ax.set_xlabel("Pythia parameters")
            ax.set_title(f"paper, real TL;DR: {title}")
        _figure_legend(fig, axes.ravel())
        fig.tight_layout()
    return fig


def _published_params(published: dict | None, key: str) -> set[float]:
    if not published or key not in (published.get("metrics") or {}):
        return set()
    return {float(v["params"]) for v in (published.get("sizes") or {}).values() if v.get("params")}


def _fmt_params(x: float) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if x >= scale:
            v = x / scale
            return f"{v:.0f}{unit}" if v >= 10 else f"{v:.2g}{unit}"
    return f"{x:.0f}"


def _size_ticks(ax: plt.Axes, params: list[float]) -> None:
    """Log x axis ticked at the model sizes actually run (and the paper's), labelled 1.25M, 2.78B, ..."""
    ax.set_xscale("log")
    if not params:
        return
    ax.set_xticks(
        params,
        [_fmt_params(p) for p in params],
        rotation=35 if len(params) > 4 else 0,
        ha="right" if len(params) > 4 else "center",
    )
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    lo, hi = min(params), max(params)
    ax.set_xlim(lo / 1.6, hi * 1.6)


def _dedupe_legend(ax: plt.Axes) -> None:
    """An axes legend with each label once (the grey "other variants" would repeat)."""
    seen: dict[str, object] = {}
    for handle, label in zip(*ax.get_legend_handles_labels()):
        seen.setdefault(label, handle)
    if seen:
        ax.legend(list(seen.values()), list(seen.keys()), loc="best", ncol=1 if len(seen) <= 10 else 2)


def _figure_legend(fig: plt.Figure, axes) -> None:
    """One legend below the panels, with each label once."""
    seen: dict[str, object] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(label, handle)
    if seen:
        fig.legend(
            list(seen.values()),
            list(seen.keys()),
            loc="upper center",
            bbox_to_anchor=(0.5, 0.0),
            ncol=min(5, len(seen)),
        )


# ---------------------------------------------------------------------------------------- training curves


def curve_metrics(
    curves: pd.DataFrame, metrics: tuple[tuple[str, str], ...]
) -> tuple[tuple[tuple[str, str], ...], list[str]]:
    """(metrics with a curve to draw, labels of those left out): a metric whose runs each logged it at one
    episode only (an evaluation at the end) has no curve, and an empty panel says nothing."""
    drawn, left_out = [], []
    for key, label in metrics:
        sub = curves[curves.metric == key] if len(curves) else curves
        if not len(sub):
            continue
        if sub.groupby("label").episode.nunique().max() >= 2:
            drawn.append((key, label))
        else:
            left_out.append(label)
    return tuple(drawn), left_out


def training_curves(
    curves: pd.DataFrame, metrics: tuple[tuple[str, str], ...], colors: dict[str, str], sizes: list[str]
) -> plt.Figure | None:
    """Mean over seeds against episode, with a ±1 standard deviation band, one line per variant (and size; line
    style per size). Variants outside the palette's top ones are thin grey lines under the coloured ones."""
    present, _ = curve_metrics(curves, metrics)
    if not present:
        return None
    ncols = min(3, len(present))
    nrows = math.ceil(len(present) / ncols)
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(nrows, ncols, figsize=(3.7 * ncols, 2.9 * nrows), squeeze=False)
        flat = list(axes.flat)
        for ax, (key, title) in zip(flat, present):
            sub = curves[curves.metric == key]
            for label in _in_order(sub.label.unique(), colors, sub.drop_duplicates("label").set_index("label").variant):
                g = sub[sub.label == label]
                variant, size = g.variant.iloc[0], g["size"].iloc[0]
                if {"mean", "std", "n"} <= set(g.columns):  # already aggregated (tables/training_curves.csv)
                    agg = g.groupby("episode")[["mean", "std", "n"]].first().rename(columns={"n": "count"}).sort_index()
                else:
                    agg = g.groupby("episode").value.agg(["mean", "std", "count"]).sort_index()
                color = colors.get(variant)
                grey = color == OTHER_COLOR
                ls = SIZE_STYLES[sizes.index(size) % len(SIZE_STYLES)] if size in sizes else "-"
                name = OTHER_LABEL if grey else label
                ax.plot(
                    agg.index,
                    agg["mean"],
                    color=color,
                    ls=ls,
                    lw=0.8 if grey else 1.4,
                    label=name,
                    zorder=1 if grey else 2,
                )
                if agg["count"].max() > 1 and not grey:
                    sd = agg["std"].fillna(0.0)
                    ax.fill_between(agg.index, agg["mean"] - sd, agg["mean"] + sd, color=color, alpha=0.14, lw=0)
            ax.set_title(title)
            ax.set_xlabel("episode")
        for ax in flat[len(present) :]:
            ax.set_visible(False)
        _figure_legend(fig, flat[: len(present)])
        fig.tight_layout()
    return fig


# ------------------------------------------------------------------------------------- over-optimization


def proxy_vs_gold(pg: pd.DataFrame, colors: dict[str, str]) -> plt.Figure | None:
    """Each run's path through (proxy reward, gold score) over its evaluations; the big dot is the final one."""
    if pg.empty:
        return None
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(5.4, 4.1))
        labelled = set()
        runs = pg.drop_duplicates("run").set_index("run").variant
        for run in _in_order(runs.index, colors, runs):
            g = pg[pg.run == run]
            g = g.sort_values("episode")
            variant = g.variant.iloc[0]
            color = colors.get(variant)
            name = legend_name(variant, colors)
            ax.plot(g.proxy, g.gold, "-", color=color, alpha=0.55, lw=1.1, label=None if name in labelled else name)
            labelled.add(name)
            ax.scatter(g.proxy.iloc[:-1], g.gold.iloc[:-1], s=10, color=color, alpha=0.55, lw=0)
            ax.scatter(g.proxy.iloc[-1:], g.gold.iloc[-1:], s=38, color=color, edgecolor="white", lw=0.8, zorder=3)
        ax.set_xlabel("proxy reward (the run's reward.source; the RM's normalized score by default)")
        ax.set_ylabel("gold score (gold judge)")
        ax.set_title("proxy vs gold through training")
        _dedupe_legend(ax)
        fig.tight_layout()
    return fig


def gold_proxy_vs_kl(
    points: pd.DataFrame, peaks: pd.DataFrame, colors: dict[str, str], sizes: list[str]
) -> plt.Figure | None:
    """Gold (left) and proxy (right) against KL at every checkpoint, one line per run, in the variant's colour
    (line style per size), a star at gold's peak. Over-optimization is a gold line that turns down while its
    proxy climbs."""
    if points.empty or points.groupby("run").size().max() < 2:
        return None
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, 2, figsize=(9.6, 3.8))
        labelled = set()
        for run, g in points.groupby("run", sort=False):
            variant, size = g.variant.iloc[0], g["size"].iloc[0]
            color = colors.get(variant, OTHER_COLOR)
            ls = SIZE_STYLES[sizes.index(size) % len(SIZE_STYLES)] if size in sizes else "-"
            name = legend_name(variant, colors) + (f" [{size}]" if size and color != OTHER_COLOR else "")
            label = None if name in labelled else name
            labelled.add(name)
            axes[0].plot(g.kl, g.gold, marker="o", ls=ls, ms=2.5, lw=1.0, alpha=0.75, color=color, label=label)
            p = g.dropna(subset=["proxy"])
            axes[1].plot(p.kl, p.proxy, marker="o", ls=ls, ms=2.5, lw=1.0, alpha=0.75, color=color)
            peak = peaks[peaks.run == run]
            if len(peak):
                axes[0].scatter(
                    peak.kl_at_peak, peak.peak_gold, marker="*", s=80, color=color, edgecolor="white", lw=0.5, zorder=4
                )
        for ax, (title, ylabel) in zip(
            axes,
            (
                ("gold score against KL (star: the run's peak)", "gold score (gold judge)"),
                ("proxy against KL", "proxy reward (what PPO maximized)"),
            ),
        ):
            ax.set_xlabel("KL(π‖π_SFT) of the training rollouts (objective/kl, the run's estimator)")
            ax.set_ylabel(ylabel)
            ax.set_title(title)
        _figure_legend(fig, axes)
        fig.tight_layout()
    return fig


def kl_frontier(results: pd.DataFrame, colors: dict[str, str], sizes: list[str]) -> plt.Figure | None:
    """Final KL from the reference policy against win rate, one point per run."""
    sel = results[results.metric.isin(["ppo.kl", "ppo.win_rate"])]
    if sel.empty:
        return None
    wide = sel.pivot_table(index=["variant", "size", "seed"], columns="metric", values="value").reset_index()
    if not {"ppo.kl", "ppo.win_rate"} <= set(wide.columns):
        return None
    wide = wide.dropna(subset=["ppo.kl", "ppo.win_rate"])
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(5.4, 4.1))
        rank = {v: i for i, v in enumerate(colors)}
        groups = sorted(
            wide.groupby(["variant", "size"], sort=False),
            key=lambda kv: (
                rank.get(kv[0][0], len(rank)),
                kv[0][0],
                sizes.index(kv[0][1]) if kv[0][1] in sizes else -1,
            ),
        )
        for (variant, size), g in groups:
            marker = SIZE_MARKERS[sizes.index(size) % len(SIZE_MARKERS)] if size in sizes else "o"
            name = legend_name(variant, colors)
            name += f" [{size}]" if size and name != OTHER_LABEL else ""
            ax.scatter(
                g["ppo.kl"],
                g["ppo.win_rate"],
                s=34,
                marker=marker,
                color=colors.get(variant),
                edgecolor="white",
                lw=0.6,
                label=name,
                zorder=3,
            )
        ax.axhline(0.5, color="#999999", lw=0.8, ls=":")
        ax.set_xlabel("KL(π‖π_ref) after training (ppo.kl: k1 estimate, summed per sample)")
        ax.set_ylabel("win rate vs reference (ppo.win_rate)")
        ax.set_title("KL–win-rate frontier (one point per run)")
        _dedupe_legend(ax)
        fig.tight_layout()
    return fig
