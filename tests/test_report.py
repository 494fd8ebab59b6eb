"""The HTML report, from a fake study written in the ablation runner's exact on-disk format.

``make_study`` is the fixture generator (also used by tests/test_report_browser.py): variants with known
effects, 2–3 seeds, optional model sizes, realistic metrics.jsonl / samples.jsonl rows, stats files, and one
failed run. Nothing here trains a model, so the whole file runs in seconds.
"""

from __future__ import annotations

import csv
import json
import math
import random
import re
from pathlib import Path

import pandas as pd
import pytest

from nplus.report import Options, ReportError, build_report, load_study
from nplus.report.build import normalize_stats
from nplus.rundir import RUN_OUTPUTS, mark_done

XSS_SCRIPT = "<script>alert(1)</script>"
XSS_IMG = "<img src=x onerror=alert(2)>"

# variant → (detail overrides, effect on win rate, effect on KL, effect on length, gold drift per eval)
VARIANTS = {
    "baseline": ({}, 0.0, 0.0, 0.0, 0.0),
    "no_eos_penalty": ({"missing_eos_penalty": "off"}, -0.12, 6.0, 9.0, -0.04),
    "reward_whitening_on": ({"reward_whitening": "on"}, 0.01, -0.5, 0.5, 0.0),
    "advantage_whitening_off": ({"advantage_whitening": "off"}, 0.08, 2.0, 3.0, 0.01),
}
# Variants used by single tests only (make_study(variants=...)): a flip judged on other prompts (TRL's and
# DeepSpeed-Chat's query_truncation = drop) and a flip that changes nothing here (the same numbers as the baseline).
EXTRA_VARIANTS = {
    "query_truncation=drop": ({"query_truncation": "drop"}, 0.15, 0.0, -2.0, 0.0),
    "reward_clipping=10": ({"reward_clipping": "10"}, 0.0, 0.0, 0.0, 0.0),
}
NO_OPS = {"reward_clipping=10"}
# The one run whose sanity check fails (score position): its variant's cells and the headline must say so.
SANITY_FAIL = ("advantage_whitening_off", 2)
SIZE_PARAMS = {"nano": 310_000, "tiny": 1_250_000, "xs": 4_900_000}
IDS = [f"val-{i:03d}" for i in range(10)]


def _write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))


def _metrics_rows(rng: random.Random, effect: tuple, updates: int = 12, batch: int = 64) -> list[dict]:
    _, dwin, dkl, dlen, drift = effect
    rows = [
        {"stage": "sft", "step": s, "time_s": 0.1 * s, "sft/loss": 3.0 / s + rng.random() * 0.05, "sft/lr": 3e-4}
        for s in range(1, 11)
    ]
    rows += [
        {
            "stage": "rm",
            "step": s,
            "time_s": 0.1 * s,
            "rm/loss": 0.69 - 0.01 * s,
            "rm/accuracy": 0.5 + 0.02 * s,
            "rm/lr": 3e-4,
        }
        for s in range(1, 11)
    ]
    for u in range(1, updates + 1):
        rows.append(
            {
                "stage": "ppo",
                "step": u,
                "episode": u * batch,
                "time_s": 0.5 * u,
                "objective/kl": (0.4 + dkl / updates) * u + rng.gauss(0, 0.2),
                "objective/scores": 0.05 * u + (0.02 * u if drift < 0 else 0.0) + rng.gauss(0, 0.03),
                "objective/entropy": 20.0 - 0.3 * u,
                "val/mean_length": 24 + (1 + dlen / updates) * u * 0.5 + rng.gauss(0, 0.4),
                "val/eos_rate": max(0.0, 0.95 - (0.04 * u if drift < 0 else 0.005 * u)),
                "val/ratio": 1.0,
                "policy/clipfrac": 0.05,
                "lr": 3e-6 * (1 - u / updates),
            }
        )
        if u % 4 == 0 and u != updates:
            rows.append(
                {
                    "stage": "ppo",
                    "step": u,
                    "episode": u * batch,
                    "time_s": 0.5 * u,
                    "eval/win_rate": 0.4 + 0.01 * u + dwin / 3,
                    "eval/gold_score": 0.2 + drift * u + 0.005 * u,
                    "eval/proxy_reward": 0.1 * u / 4 + rng.gauss(0, 0.02),
                }
            )
    return rows


def _sample_rows(rng: random.Random, variant: str, seed: int, inject: bool) -> list[dict]:
    rows = []
    for stage in ("sft", "ppo"):
        for k, i in enumerate(IDS):
            post = (
                f"SUBREDDIT: r/relationships\nTITLE: Question {k}\n"
                f"POST: I (24F) and my roommate (25F) disagree about chores & bills.\nIt has gone on for {k + 2} "
                f"months."
            )
            who = "My roommate and I" if stage == "ppo" else "Roommate"
            resp = f"{who} disagree about chores ({variant}, seed {seed}, #{k})"
            if inject and stage == "ppo" and k == 0:
                resp = f'{XSS_SCRIPT} {XSS_IMG} "quoted" & done'
            proxy = None if stage == "sft" else rng.gauss(0.5, 0.5) + (3.0 if inject and k == 0 else 0.0)
            rows.append(
                {
                    "stage": stage,
                    "id": i,
                    "post": post,
                    "query": post + "\nTL;DR:",
                    "reference": f" Roommate fight over chores, {k + 2} months.",
                    "response": resp,
                    "finished": rng.random() > 0.1,
                    "length": rng.randint(12, 40),
                    "proxy_score": proxy,
                    "gold_score": -0.5 if inject and stage == "ppo" and k == 0 else rng.gauss(0.3, 0.2),
                    "reference_gold_score": 0.55,
                    "win": int(rng.random() < (0.35 if stage == "sft" else 0.55)),
                }
            )
    return rows


def _summary(rng: random.Random, effect: tuple, seed: int, size: str, variant: str = "") -> dict:
    _, dwin, dkl, dlen, _ = effect
    scale = math.log10(SIZE_PARAMS.get(size, 1e6))
    # SFT and RM depend on the size and seed only: the fixture's flips are PPO details, so, as in a real study, the
    # variants reuse the baseline's SFT and RM and their numbers are identical by construction.
    up = random.Random(f"upstream/{size}/{seed}")
    return {
        "sft.rouge1": 0.30,
        "sft.rouge2": 0.10,
        "sft.rouge_l": 0.20 + 0.02 * scale + up.gauss(0, 0.004),
        "sft.win_rate": 0.3,
        "sft.win_rate_ci": [0.2, 0.4],
        "sft.mean_length": 24.0,
        "sft.eos_rate": 0.95,
        "sft.gold_score": 0.3,
        "rm.accuracy": 0.55 + 0.03 * scale + up.gauss(0, 0.005),
        "rm.accuracy_valid1": 0.6,
        "rm.accuracy_valid2": 0.6,
        "rm.reward_bias": -0.3,
        "ppo.win_rate": 0.45 + 0.03 * scale + dwin + rng.gauss(0, 0.006),
        "ppo.win_rate_ci": [0.3, 0.7],
        "ppo.kl": 5.0 + dkl + rng.gauss(0, 0.3),
        "ppo.mean_length": 30.0 + dlen + rng.gauss(0, 0.5),
        "ppo.eos_rate": 0.9,
        "ppo.proxy_reward": 0.6 + rng.gauss(0, 0.05),
        "ppo.gold_score": 0.35 + dwin + rng.gauss(0, 0.02),
        "ppo.rouge_l": 0.18,
        "sanity.first_ratio": 1.0,
        "sanity.first_ratio_ok": True,
        "sanity.initial_kl": 0.0,
        "sanity.initial_kl_ok": True,
        "sanity.rm_padding_max_diff": 2e-7,
        "sanity.rm_padding_ok": True,
        "sanity.score_position_ok": (variant, seed) != SANITY_FAIL,
        "sanity.score_position_offset": 1.0,
        "sanity.score_position_expected_offset": 1.0,
        "params": SIZE_PARAMS.get(size, 1_250_000),
        "model": size or "tiny",
        "seed": seed,
        "preset": "smoke",
        "wall_time_s": 61.5 + seed + dkl,
        "ppo_wall_time_s": 30.0 + dkl,
        "artifacts": {"sft": "/cache/sft/abc", "rm": "/cache/rm/def"},
    }


def _write_run(
    run: Path, study: str, variant: str, size: str, seed: int, inject: bool, failed: bool, task: str = "tldr-synth"
) -> None:
    effect = {**VARIANTS, **EXTRA_VARIANTS}[variant]
    rng = random.Random(f"{'baseline' if variant in NO_OPS else variant}/{size}/{seed}")
    details = {"missing_eos_penalty": "replace", "reward_whitening": "off", "advantage_whitening": "on", **effect[0]}
    cfg_hash = f"{abs(hash((variant, size, seed))) % 16**12:012x}"
    _write_json(
        run / "config.json",
        {
            "hash": cfg_hash,
            "seed": seed,
            "preset": "smoke",
            "details": details,
            "task": {"name": task, "max_eval": 10},
            "model": {"name": size or "tiny"},
            "stage_hashes": {"base": f"base-of-{size or 'tiny'}"},
        },
    )
    _write_json(run / "details.json", details)
    _write_json(
        run / "env.json",
        {
            "git": {"revision": "0123456789abcdef0123", "dirty": False},
            "python": "3.11.7",
            "platform": "Linux-x86_64",
            "device": "cpu",
            "packages": {"torch": "2.13.0+cpu", "nplus": "0.1.0", "numpy": "2.4.6"},
        },
    )
    cmd = f"nplus pipeline --preset smoke --seed {seed} --out runs/{study}/{run.parent.name}/seed={seed}"
    flips = " ".join(f"--details.{k.replace('_', '-')} {v}" for k, v in effect[0].items())
    (run / "command.txt").write_text(f"{cmd} {flips}".strip() + "\n")
    if failed:
        (run / "error.txt").write_text(
            f"RuntimeError: loss is NaN at ppo update 3 {XSS_SCRIPT}\n\nTraceback (most recent call last):\n  ...\n"
        )
        _write_jsonl(run / "metrics.jsonl", _metrics_rows(rng, effect)[:25])
        return
    _write_jsonl(run / "metrics.jsonl", _metrics_rows(rng, effect))
    _write_jsonl(run / "samples.jsonl", _sample_rows(rng, variant, seed, inject))
    _write_json(run / "eval.json", {"ppo": {"win_rate": 0.5}})
    _write_json(run / "summary.json", _summary(rng, effect, seed, size, variant))
    mark_done(run, {"hash": cfg_hash}, RUN_OUTPUTS)


def make_study(
    root: Path,
    seeds=(1, 2, 3),
    sizes: tuple[str, ...] = (),
    variants=tuple(VARIANTS),
    inject: bool = False,
    failed: tuple[str, int] | None = ("reward_whitening_on", 3),
    stats: bool = True,
    task: str = "tldr-synth",
) -> Path:
    """Write a fake study directory in the runner's format (study.json with its spec list, one directory per
    spec) and, with ``stats``, results.csv / stats.csv / stats.json / failures.csv from `nplus.stats`."""
    name = root.name
    specs = []
    for v in variants:
        for s in sizes or ("",):
            for n in seeds:
                run = root / v / (f"size={s}" if s else "") / f"seed={n}"
                _write_run(
                    run,
                    name,
                    v,
                    s,
                    n,
                    inject and v == "baseline" and n == seeds[0],
                    failed is not None and (v, n) == failed,
                    task,
                )
                specs.append(
                    {
                        "variant": v,
                        "size": s or None,
                        "seed": n,
                        "run_dir": str(run.relative_to(root)),
                        "hash": json.loads((run / "config.json").read_text())["hash"],
                        "stage_hashes": {},
                        "details": {**VARIANTS, **EXTRA_VARIANTS}[v][0],
                    }
                )
    _write_json(
        root / "study.json",
        {
            "study": {
                "path": "ablations/fixture.toml",
                "name": name,
                "description": "report fixture",
                "preset": "smoke",
                "seeds_name": "fixture",
                "seeds": list(seeds),
                "sizes": list(sizes),
                "baseline": "baseline",
                "hparams": {},
                "variants": [
                    {"name": v, "details": {**VARIANTS, **EXTRA_VARIANTS}[v][0], "framework": None, "hparams": {}}
                    for v in variants
                ],
            },
            "specs": specs,
        },
    )
    if stats:
        from nplus.stats import write_stats

        write_stats(root, n_boot=200)
    return root


# ------------------------------------------------------------------------------------------------- helpers


def _figures_in(html: str) -> list[str]:
    return re.findall(r'<img src="(data:image/png;base64,[^"]+)"', html)


def _external_refs(html: str) -> list[str]:
    """Anything in src/href/url()/srcset/@import that points at a host, or at a scheme other than data/file/#."""
    attrs = re.findall(r'(?:src|href|srcset|action|poster|data)\s*=\s*["\']?([^"\'\s>]+)', html, flags=re.I)
    attrs += re.findall(r'url\(\s*["\']?([^"\')]+)', html, flags=re.I)
    attrs += re.findall(r'@import\s+["\']([^"\']+)', html, flags=re.I)
    return [
        a for a in attrs if re.match(r"^(?:[a-z][a-z0-9+.-]*:|//)", a, flags=re.I) and not a.startswith("data:image/")
    ]


@pytest.fixture(scope="module")
def study_report(tmp_path_factory) -> tuple[Path, Path, str]:
    root = make_study(tmp_path_factory.mktemp("s") / "fixture", inject=True)
    index = build_report(root, root.parent / "report")
    return root, index, index.read_text()


# --------------------------------------------------------------------------------------------------- tests


def test_report_files(study_report):
    _, index, html = study_report
    out = index.parent
    assert index.name == "index.html"
    pngs = sorted(p.stem for p in (out / "figures").glob("*.png"))
    pdfs = sorted(p.stem for p in (out / "figures").glob("*.pdf"))
    assert pngs == pdfs and len(pngs) >= 4, pngs
    for p in (out / "figures").iterdir():
        assert p.stat().st_size > 2000, p
    tables = {p.name for p in (out / "tables").glob("*.csv")}
    assert {
        "headline.csv",
        "stats.csv",
        "runs.csv",
        "sanity.csv",
        "provenance.csv",
        "failures.csv",
        "samples.csv",
    } <= tables
    runs = list(csv.DictReader(open(out / "tables" / "runs.csv")))
    assert len(runs) == 12 and sum(r["status"] == "failed" for r in runs) == 1


def test_verdict_table_and_colours(study_report):
    _, _, html = study_report
    assert 'id="verdict-table"' in html
    table = html[html.index('id="verdict-table"') : html.index("</table>", html.index('id="verdict-table"'))]
    for variant in ("no_eos_penalty", "reward_whitening_on", "advantage_whitening_off"):
        assert variant in table
    # The fixture's no_eos_penalty variant loses 0.12 win rate on every seed: a red "hurts" cell.
    row = table[table.index("no_eos_penalty") :]
    row = row[: row.index("</tr>")]
    assert 'class="num cell hurts"' in row and "missing_eos_penalty = off" in row
    assert 'class="num cell helps' in table


def test_at_least_four_figures_and_sections(study_report):
    _, _, html = study_report
    assert len(_figures_in(html)) >= 4
    for section in (
        "headline",
        "glossary",
        "effects",
        "training",
        "overoptimization",
        "samples",
        "sanity",
        "provenance",
    ):
        assert f'<section id="{section}">' in html and f'href="#{section}"' in html
    assert "<script" not in html.replace("&lt;script", "")


def test_self_contained(study_report):
    _, _, html = study_report
    assert _external_refs(html) == []
    # No URL of any host anywhere, even in text: the fixture has none, so the page must have none.
    assert "http://" not in html and "https://" not in html
    assert "<link" not in html


def test_text_is_escaped(study_report):
    _, _, html = study_report
    assert XSS_SCRIPT not in html and XSS_IMG not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;img src=x onerror=alert(2)&gt;" in html


def test_failed_run_shown(study_report):
    _, _, html = study_report
    assert "reward_whitening_on/seed=3" in html and "failed" in html
    assert "RuntimeError: loss is NaN at ppo update 3" in html


def test_samples_side_by_side(study_report):
    _, _, html = study_report
    first = html[html.index('id="prompt-1"') : html.index("</article>", html.index('id="prompt-1"'))]
    for source in ("reference", "SFT", "PPO baseline (baseline)", "PPO no_eos_penalty", "PPO advantage_whitening_off"):
        assert f"<strong>{source}</strong>" in first


def test_overoptimization_examples_rank_the_gap(study_report):
    root, index, html = study_report
    rows = list(csv.DictReader(open(index.parent / "tables" / "overoptimization_examples.csv")))
    gaps = [float(r["gap"]) for r in rows]
    assert gaps == sorted(gaps, reverse=True) and len(rows) == 8
    # The injected sample got +3 on its proxy score: the reward model "likes" it far more than the gold judge.
    assert rows[0]["id"] == "val-000" and rows[0]["label"] == "baseline"


def test_stats_fallback_matches_without_stats_file(tmp_path):
    root = make_study(tmp_path / "nostats", seeds=(1, 2, 3), stats=False, failed=None)
    index = build_report(root, tmp_path / "out", Options(formats=("png",)))
    html = index.read_text()
    assert "computed by the report with nplus.stats" in html and 'id="verdict-table"' in html
    assert 'class="num cell hurts"' in html
    assert not list((tmp_path / "out" / "figures").glob("*.pdf"))


def test_stats_columns_read_defensively(tmp_path):
    root = make_study(tmp_path / "renamed", seeds=(1, 2), failed=None)
    text = (root / "stats.csv").read_text().splitlines()
    header = text[0].replace("diff_ci_low", "diff_lo").replace("diff_ci_high", "diff_hi").replace("ci_low", "CI low")
    (root / "stats.csv").write_text("\n".join([header, *text[1:]]) + "\n")
    study = load_study(root)
    from nplus.report.build import read_stats

    stats = read_stats(study.root)
    assert stats is not None and stats["diff_ci_low"].notna().any() and stats["ci_low"].notna().any()


def test_single_run_dir(tmp_path):
    root = make_study(tmp_path / "one", seeds=(1,), variants=("baseline",), failed=None, stats=False)
    run = root / "baseline" / "seed=1"
    index = build_report(run, tmp_path / "out")
    html = index.read_text()
    assert "single run" in html and 'id="means-table"' in html
    assert "not available" in html  # no effects to compare
    assert len(_figures_in(html)) >= 3


def test_missing_metrics_say_not_available(tmp_path):
    run = tmp_path / "sftonly" / "seed=1"
    _write_json(run / "config.json", {"hash": "h", "seed": 1, "task": {"name": "tldr-synth"}})
    _write_json(run / "summary.json", {"sft.rouge_l": 0.2, "artifacts": {}})
    mark_done(run, {"hash": "h"}, RUN_OUTPUTS)
    index = build_report(run.parent, tmp_path / "out")
    html = index.read_text()
    for name in ("forest", "training", "proxy_gold", "kl_frontier"):
        assert f'<p class="na" id="fig-{name}">' in html


def test_all_runs_failed(tmp_path):
    run = tmp_path / "broken" / "baseline" / "seed=1"
    _write_json(run / "config.json", {"hash": "h", "seed": 1})
    (run / "error.txt").write_text("ValueError: bad config\ntrace\n")
    html = build_report(run.parent.parent, tmp_path / "out").read_text()
    assert "ValueError: bad config" in html and "Not available" in html


def test_sizes_scaling_and_spearman(tmp_path):
    root = make_study(
        tmp_path / "ladder",
        seeds=(1, 2),
        sizes=("nano", "tiny", "xs"),
        variants=("baseline", "no_eos_penalty"),
        failed=None,
    )
    out = tmp_path / "out"
    html = build_report(root, out, Options(formats=("png",))).read_text()
    assert 'id="spearman-table"' in html and "rises with size" in html
    rows = list(csv.DictReader(open(out / "tables" / "spearman.csv")))
    rouge = next(r for r in rows if r["variant"] == "baseline" and r["metric"] == "sft.rouge_l")
    assert float(rouge["rho"]) > 0.8 and float(rouge["ci_low"]) > 0  # ROUGE-L = 0.20 + 0.02 · log10(params) + noise
    assert float(rouge["ci_low"]) < 0.02 < float(rouge["ci_high"])
    # the paper's values in panels of their own, labelled as the real task's
    assert "Bottom row: the paper&#39;s values" in html and "not comparable with the paper&#39;s" in html


def test_missing_study_raises(tmp_path):
    with pytest.raises(ReportError):
        build_report(tmp_path / "nope", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ReportError):
        build_report(tmp_path / "empty", tmp_path / "out")


def test_normalize_stats_requires_variant_and_metric():
    import pandas as pd

    assert normalize_stats(pd.DataFrame({"x": [1]})) is None


def test_published_values_package_data():
    from nplus.report.build import load_published

    pub = load_published()
    assert pub["metrics"]["ppo.win_rate"]["values"]["1b"] == [0.62, 0.54, 0.22, 0.20]
    assert pub["sizes"]["6.9b"]["params"] == 6_857_302_016


def test_cli(tmp_path, capsys):
    from nplus.report.cli import ReportCmd

    root = make_study(tmp_path / "clistudy", seeds=(1, 2), variants=("baseline", "reward_whitening_on"), failed=None)
    assert ReportCmd(study=root, out=tmp_path / "rep", formats=("png",)).run() == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "rep" / "index.html")


def test_spec_never_started_is_listed(tmp_path):
    root = make_study(
        tmp_path / "partial", seeds=(1, 2), variants=("baseline", "no_eos_penalty"), failed=None, stats=False
    )
    meta = json.loads((root / "study.json").read_text())
    meta["specs"].append({"variant": "no_eos_penalty", "size": None, "seed": 3, "run_dir": "no_eos_penalty/seed=3"})
    _write_json(root / "study.json", meta)
    study = load_study(root)
    missing = [r for r in study.runs if r.status == "missing"]
    assert [(r.variant, r.seed) for r in missing] == [("no_eos_penalty", 3)]
    html = build_report(root, tmp_path / "out", Options(formats=("png",))).read_text()
    assert "no_eos_penalty/seed=3" in html and "not started" in html


def test_display_text_collapses_whitespace():
    from nplus.report.build import display_text

    assert display_text("\n\n\n\n") == ("(no visible text: 4 whitespace characters)", True)
    assert display_text(None) == ("(empty response)", True)
    assert display_text("  a\n\n\n\n b \n") == ("a\n\n b", False)


def test_stale_stats_are_recomputed(tmp_path):
    root = make_study(tmp_path / "stale", seeds=(1, 2, 3), variants=("baseline", "no_eos_penalty"), failed=None)
    (root / "no_eos_penalty" / "seed=3" / "DONE").unlink()  # a run that "finished" after stats now has not
    html = build_report(root, tmp_path / "out", Options(formats=("png",))).read_text()
    assert "stats.csv is older than the runs" in html


def test_real_task_draws_published_values(tmp_path):
    root = make_study(
        tmp_path / "tldr",
        seeds=(1, 2),
        sizes=("nano", "tiny"),
        variants=("baseline",),
        failed=None,
        stats=False,
        task="tldr",
    )
    html = build_report(root, tmp_path / "out", Options(formats=("png",))).read_text()
    assert (
        "Bottom row: the paper&#39;s values, Huang et al. (2024)" in html
        and "published values are not drawn" not in html
    )
    assert "not comparable with the paper&#39;s" not in html


def test_the_ladder_table_shows_a_rungs_base_probes_only_when_its_runs_used_that_base(tmp_path, monkeypatch):
    from nplus import bases
    from nplus.report.ladder import ladder_rows

    root = make_study(tmp_path / "ladder", seeds=(1, 2), sizes=("nano", "tiny", "xs"), variants=("baseline",))
    study = load_study(root)
    for size, layers, width in (("nano", 1, 32), ("tiny", 2, 64), ("xs", 3, 128)):
        (tmp_path / "bases" / size / "model").mkdir(parents=True)
        manifest = {
            "base_hash": f"base-of-{size}" if size != "xs" else "another-base",  # xs: a base the runs did not use
            "validation_loss": {"nano": 0.6, "tiny": 0.5, "xs": 0.4}[size],
            "non_embedding_params": 1000 * width,
            "probes": {"copy_gain": 4.0, "post_swap_gap": 1.5, "reference_nll": 0.45},
        }
        (tmp_path / "bases" / size / "manifest.json").write_text(json.dumps(manifest))
        (tmp_path / "bases" / size / "model" / "config.json").write_text(
            json.dumps({"num_hidden_layers": layers, "hidden_size": width})
        )
    monkeypatch.setattr(bases, "BASES_DIR", tmp_path / "bases")
    monkeypatch.setattr(
        bases, "read_manifest", lambda rung: json.loads((tmp_path / "bases" / rung / "manifest.json").read_text())
    )
    rows = {r["size"]: r for r in ladder_rows(study)}
    assert list(rows) == ["nano", "tiny", "xs"]
    assert rows["tiny"]["shape"] == "2 × 64" and rows["tiny"]["validation_loss"] == 0.5
    assert rows["tiny"]["copy_gain"] == 4.0 and rows["tiny"]["non_embedding_params"] == 64_000
    assert rows["xs"]["shape"] == "" and rows["xs"]["validation_loss"] is None  # never another model's probes
    assert rows["tiny"]["seeds"] == 2 and rows["tiny"]["params"] == SIZE_PARAMS["tiny"]
    runs = [r for r in study.ok_runs if r.size == "tiny"]
    assert rows["tiny"]["rm.accuracy"] == pytest.approx(sum(r.number("rm.accuracy") for r in runs) / len(runs))
    html = build_report(root, tmp_path / "out", Options(formats=("png",))).read_text()
    assert 'id="ladder-table"' in html and "RM fact check" in html
    assert list(csv.DictReader(open(tmp_path / "out" / "tables" / "ladder.csv")))[1]["size"] == "tiny"


def test_single_size_study_has_no_scaling_section(tmp_path):
    root = make_study(tmp_path / "one", seeds=(1, 2), variants=("baseline", "no_eos_penalty"), failed=None)
    html = build_report(root, tmp_path / "out", Options(formats=("png",))).read_text()
    assert 'id="scaling"' not in html and 'href="#scaling"' not in html


def test_spearman_reports_a_metric_that_is_the_same_at_every_size():
    import pandas as pd

    from nplus.report.build import spearman_rows

    rows = [
        {"variant": "baseline", "metric": m, "params": p, "value": v}
        for p, rouge in ((1e5, 0.3), (3e5, 0.5), (1e6, 0.55))
        for seed in (1, 2)
        for m, v in (("sft.rouge_l", rouge + 0.001 * seed), ("ppo.win_rate", 0.0))
    ]
    got = {r["metric"]: r for r in spearman_rows(pd.DataFrame(rows))}
    assert got["sft.rouge_l"]["trend"] == "rises with size"
    # the slope's t interval, by hand: a line through (5, .301/.302), (5.477, .501/.502), (6, .551/.552)
    import numpy as np
    from scipy import stats as sps

    x = np.log10([1e5, 1e5, 3e5, 3e5, 1e6, 1e6])
    fit = sps.linregress(x, [0.301, 0.302, 0.501, 0.502, 0.551, 0.552])
    half = sps.t.ppf(0.975, 4) * fit.stderr
    assert got["sft.rouge_l"]["ci_low"] == pytest.approx(fit.slope - half)
    assert got["sft.rouge_l"]["ci_high"] == pytest.approx(fit.slope + half)
    assert got["ppo.win_rate"]["trend"].startswith("the same at every size") and math.isnan(got["ppo.win_rate"]["rho"])


def test_relabelled_variants_show_their_labellers_agreement(tmp_path):
    root = make_study(
        tmp_path / "labels", seeds=(1, 2), variants=("baseline", "reward_whitening_on"), failed=None, stats=False
    )
    labels = tmp_path / "labels-dir"
    _write_json(
        labels / "label.json",
        {
            "judge": "simulated-ai",
            "worker": "judge:simulated-ai(length=0.15)",
            "splits": {
                "train": {
                    "pairs": 10,
                    "labelled": 9,
                    "unparseable": 1,
                    "failed": 0,
                    "agreement_with_original": 0.7,
                    "agreement_with_gold": 0.85,
                },
                "validation": {"pairs": 5, "relabelled": False},
            },
        },
    )
    for seed in (1, 2):
        cfg_path = root / "reward_whitening_on" / f"seed={seed}" / "config.json"
        cfg = json.loads(cfg_path.read_text())
        cfg["task"]["comparisons_source"] = str(labels)
        _write_json(cfg_path, cfg)
        mark_done(cfg_path.parent, {"hash": cfg["hash"]}, RUN_OUTPUTS)  # as the pipeline would have written it
    html = build_report(root, tmp_path / "out").read_text()
    table = html[html.index('id="labels-table"') :]
    table = table[: table.index("</table>")]
    assert "judge:simulated-ai(length=0.15)" in table and "0.850" in table and "0.700" in table
    assert table.count("<tr>") == 2  # the header and one relabelled split of one variant (validation kept)


@pytest.mark.parametrize(
    "hypothesis, verdict",
    [("rises", "rises: the hypothesis holds"), ("falls", "rises: the hypothesis is contradicted")],
)
def test_knob_section_tests_the_trend_along_the_knob(tmp_path, hypothesis, verdict):
    """Win-rate effects −0.12, +0.01, +0.08 in the knob's order: the paired difference rises along it."""
    order = ["no_eos_penalty", "reward_whitening_on", "advantage_whitening_off"]
    root = make_study(tmp_path / "knob", failed=None)
    meta = json.loads((root / "study.json").read_text())
    meta["study"]["knob"] = {
        "name": "a made-up knob",
        "variants": order,
        "metric": "ppo.win_rate",
        "hypothesis": hypothesis,
    }
    _write_json(root / "study.json", meta)
    html = build_report(root, tmp_path / "out").read_text()
    section = html[html.index('<section id="knob">') :]
    section = section[: section.index("</section>")]
    assert "Along the knob: a made-up knob" in section and verdict in section
    assert section.index(order[0]) < section.index(order[1]) < section.index(order[2])
    table = pd.read_csv(tmp_path / "out" / "tables" / "knob.csv")
    assert len(table) == 9 and table.groupby("variant")["diff"].mean()[order].is_monotonic_increasing


def test_studies_without_a_knob_have_no_knob_section(tmp_path):
    html = build_report(make_study(tmp_path / "plain", failed=None), tmp_path / "out").read_text()
    assert '<section id="knob">' not in html and 'href="#knob"' not in html


def test_knob_slopes_are_per_seed_least_squares_slopes():
    """Hand-computed: over positions 0, 1, 2 the least-squares slope is (last − first) / 2."""
    from nplus.report.knob import seed_slopes

    diffs = {1: (-0.030, 0.018, 0.014), 2: (0.004, -0.024, 0.050), 3: (-0.014, -0.038, 0.084)}
    points = pd.DataFrame([{"seed": s, "position": p, "diff": d} for s, ds in diffs.items() for p, d in enumerate(ds)])
    assert seed_slopes(points) == pytest.approx([0.022, 0.023, 0.049])
    # one setting only: no slope
    assert seed_slopes(points[points.position == 0]).size == 0


def test_damaged_runs_are_skipped_with_a_warning_and_no_half_report_is_left(tmp_path, capsys, monkeypatch):
    """Issue #35: a truncated samples.jsonl / metrics.jsonl or a corrupt summary.json under a DONE is the same
    failed integrity check that stats and the runner apply: the run is skipped (one warning line each) and
    listed as failed, never read; a report that fails half-way leaves the previous one, not figures alone."""
    root = make_study(tmp_path / "dmg", failed=None)
    for rel, name, cut in (
        ("baseline/seed=1", "samples.jsonl", 40),
        ("baseline/seed=2", "summary.json", 10),
        ("reward_whitening_on/seed=1", "metrics.jsonl", 100),
    ):
        f = root / rel / name
        f.write_bytes(f.read_bytes()[:cut])
    out = tmp_path / "report"
    html = build_report(root, out, Options(formats=("png",))).read_text()
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning: skipping")]
    assert len(warnings) == 3 and all("its DONE check failed" in w for w in warnings), warnings
    study = load_study(root)
    assert sorted(r.rel for r in study.failed_runs) == [
        "baseline/seed=1",
        "baseline/seed=2",
        "reward_whitening_on/seed=1",
    ]
    assert all(
        r.error.startswith("damaged: ") and not r.samples and not r.metrics and not r.summary for r in study.failed_runs
    )
    assert "damaged: " in html
    # a failure half-way: the previous report stays whole and no temporary folder is left beside it
    before = (out / "index.html").read_text()
    monkeypatch.setattr("nplus.report.build.render", lambda context: (_ for _ in ()).throw(RuntimeError("boom")))
    with pytest.raises(RuntimeError, match="boom"):
        build_report(root, out, Options(formats=("png",)))
    assert (out / "index.html").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dmg", "report"]
    with pytest.raises(RuntimeError, match="boom"):
        build_report(root, tmp_path / "new", Options(formats=("png",)))
    assert not (tmp_path / "new").exists()


def test_report_refuses_to_replace_a_folder_that_is_not_a_report(tmp_path):
    root = make_study(tmp_path / "s", seeds=(1, 2), stats=False)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(ReportError, match="holds no report"):
        build_report(root, tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


# ------------------------------------------------------------------------------- verdicts a reader can trust


def _row(html: str, variant: str) -> str:
    table = html[html.index('id="verdict-table"') : html.index("</table>", html.index('id="verdict-table"'))]
    row = table[table.index(f"<strong>{variant}</strong>") :]
    return row[: row.index("</tr>")]


def _cells(row: str) -> list[str]:
    return re.findall(r'<td class="num cell[^"]*"[^>]*>.*?</td>', row, flags=re.S)


@pytest.fixture(scope="module")
def caveat_report(tmp_path_factory) -> str:
    """A study with every caveat: a sanity failure (SANITY_FAIL), a flip judged on other prompts, a no-op flip."""
    root = make_study(
        tmp_path_factory.mktemp("c") / "caveats",
        failed=None,
        variants=(
            "baseline",
            "no_eos_penalty",
            "advantage_whitening_off",
            "query_truncation=drop",
            "reward_clipping=10",
        ),
    )
    return build_report(root, root.parent / "report", Options(formats=("png",))).read_text()


def test_failed_sanity_check_is_marked_in_headline_and_cells(caveat_report):
    html = caveat_report
    answer = html[html.index('id="answer"') : html.index("</div>", html.index('id="answer"'))]
    variant, seed = SANITY_FAIL
    assert "failed a sanity check" in answer and f"{variant} (seed {seed})" in answer
    cells = _cells(_row(html, variant))
    assert len(cells) == 5 and all("suspect" in c and "⚠ sanity failed" in c for c in cells)
    assert "sanity check failed on 1 of 3 seed(s) (score after EOS)" in _row(html, variant)
    # the clean variant carries no mark
    assert not any("suspect" in c or "⚠" in c for c in _cells(_row(html, "no_eos_penalty")))


def test_other_prompts_are_not_comparable_and_no_ops_say_so(caveat_report):
    drop = _row(caveat_report, "query_truncation=drop")
    assert "evaluated on other prompts" in drop
    # +0.15 win rate on every seed, but on the shorter posts only: no green cell
    assert all("cell nc" in c and "not comparable" in c for c in _cells(drop))
    noop = _row(caveat_report, "reward_clipping=10")
    assert "no-op here" in noop and not any(re.search(r"cell (helps|hurts|changes|none)", c) for c in _cells(noop))


def test_identical_by_construction_and_bookkeeping_get_no_badge(caveat_report):
    row = _row(caveat_report, "no_eos_penalty")
    cells = _cells(row)
    # RM accuracy and SFT ROUGE-L of a PPO-only flip: the baseline's SFT and RM, not "no detectable effect"
    assert all("same SFT/RM (by construction)" in c for c in cells[1:3])
    findings = caveat_report[caveat_report.index('<ul class="findings">') :]
    findings = findings[: findings.index("</ul>")]
    # ppo_wall_time_s is 6 s longer on every seed (a certain "hurts" in stats.csv): bookkeeping, not a finding
    assert "wall_time" not in findings and "sanity." not in findings and "ppo.gold_score" in findings


def test_interval_beside_a_verdict_is_the_one_it_was_decided_with(tmp_path):
    """Holm-consistent intervals exclude 0 exactly when the verdict is helps / hurts / changes; the unadjusted 95 %
    interval does not (a variant with a small p before adjustment has one that excludes 0 but reads "no
    detectable effect")."""
    from nplus.report.verdicts import with_holm_intervals
    from nplus.stats import compare

    rng = random.Random(3)
    rows = []
    for v, effect in [("baseline", 0.0)] + [(f"v{i}", 0.004 * i) for i in range(12)]:
        for seed in (1, 2, 3):
            for metric in ("ppo.win_rate", "ppo.kl"):
                rows.append(
                    {
                        "variant": v,
                        "size": "",
                        "seed": seed,
                        "metric": metric,
                        "value": 0.5 + effect + rng.gauss(0, 0.004),
                    }
                )
    stats = with_holm_intervals(normalize_stats(compare(pd.DataFrame(rows), "baseline")), "baseline")
    judged = stats[stats.variant != "baseline"]
    raw_disagrees = 0
    for r in judged.to_dict("records"):
        decided = r["verdict"] in ("helps", "hurts", "changes")
        assert (r["holm_ci_low"] > 0 or r["holm_ci_high"] < 0) == decided, r
        raw_disagrees += (r["diff_ci_low"] > 0 or r["diff_ci_high"] < 0) != decided
    assert raw_disagrees > 0  # the case the issue saw: the unadjusted interval contradicts the verdict


def test_headline_states_the_answer(tmp_path):
    root = make_study(
        tmp_path / "sized",
        seeds=(1, 2, 3),
        sizes=("nano", "tiny", "xs"),
        failed=None,
        variants=("baseline", "no_eos_penalty"),
    )
    html = build_report(root, tmp_path / "out", Options(formats=("png",))).read_text()
    answer = html[html.index('id="answer"') : html.index("</div>", html.index('id="answer"'))]
    # trend verdicts for scaling, the largest gold effect, over-optimization named or ruled out
    assert re.search(r"Scaling \(baseline, 3 sizes\): [^<]*PPO win rate rise with size", answer)
    assert "the largest effect is no_eos_penalty" in answer
    assert "over-optimized" in answer.lower()
    assert "failed a sanity check" not in answer  # SANITY_FAIL is another variant: nothing to mark here


def test_baseline_is_described_as_its_preset():
    from nplus.report.load import Study
    from nplus.report.verdicts import baseline_text

    study = Study(
        root=Path("."),
        name="x",
        spec={"preset": "demo"},
        runs=[],
        baseline="baseline",
        single=False,
        variants=["baseline"],
        sizes=[],
        overrides={"baseline": {}},
    )
    text = baseline_text(study)
    assert text.startswith("preset demo") and "learning_rate = per_stage (paper: single)" in text


def test_glossary_lists_the_metrics_on_the_page(caveat_report):
    from nplus.metrics_doc import SUMMARY_METRICS

    glossary = caveat_report[caveat_report.index('id="glossary-table"') :]
    glossary = glossary[: glossary.index("</table>")]
    for name in ("ppo.win_rate", "rm.accuracy", "ppo.kl", "objective/kl"):
        assert f">{name}<" in glossary
    assert SUMMARY_METRICS["ppo.kl"][1].replace("‖", "‖") in glossary


# ------------------------------------------------------------------------------------------------ figures


def test_figures_numbered_in_page_order_with_one_colour_per_variant(caveat_report):
    numbers = [int(n) for n in re.findall(r"<strong>Figure (\d+)\.", caveat_report)]
    assert numbers == list(range(1, len(numbers) + 1)) and len(numbers) >= 4
    colours: dict[str, set] = {}
    for label, colour in re.findall(r'data-label="([^"]+)" data-color="([^"]+)"', caveat_report):
        colours.setdefault(label.split(" [")[0], set()).add(colour)
    assert {"baseline", "no_eos_penalty", "query_truncation=drop"} <= set(colours)
    assert all(len(c) == 1 for c in colours.values()), colours
    assert len({next(iter(c)) for c in colours.values()}) == len(colours)  # and no two variants share one


def test_palette_colours_the_top_variants_and_greys_the_rest():
    from nplus.report.figures import BASELINE_COLOR, OTHER_COLOR, palette

    variants = ["baseline"] + [f"v{i}" for i in range(20)]
    ranked = [f"v{i}" for i in range(19, -1, -1)]
    colors = palette(variants, "baseline", ranked)
    assert colors["baseline"] == BASELINE_COLOR
    coloured = [v for v in variants[1:] if colors[v] != OTHER_COLOR]
    assert sorted(coloured) == sorted(ranked[:9]) and len({colors[v] for v in coloured}) == 9
    few = palette(variants[:6], "baseline")  # five others: every one coloured, none twice
    assert OTHER_COLOR not in few.values() and len(set(few.values())) == 6


def test_learning_curves_with_one_evaluation_are_left_out_with_a_reason(tmp_path):
    root = make_study(tmp_path / "one_eval", seeds=(1, 2), variants=("baseline", "no_eos_penalty"), failed=None)
    for metrics in root.glob("*/seed=*/metrics.jsonl"):  # keep the final evaluation only, as the demo preset does
        rows = [json.loads(line) for line in metrics.read_text().splitlines()]
        last = max(r["episode"] for r in rows if "eval/gold_score" in r)
        _write_jsonl(metrics, [r for r in rows if "eval/gold_score" not in r or r["episode"] == last])
        config = json.loads((metrics.parent / "config.json").read_text())
        mark_done(metrics.parent, {"hash": config["hash"]}, RUN_OUTPUTS)  # as the pipeline would have written it
    html = build_report(root, tmp_path / "out", Options(formats=("png",))).read_text()
    assert "Left out: gold score (eval/gold_score)" in html and "at one episode only" in html
    from nplus.report.figures import curve_metrics
    from nplus.report.samples import CURVE_METRICS, curves_frame

    drawn, left_out = curve_metrics(curves_frame(load_study(root)), CURVE_METRICS)
    assert "eval/gold_score" not in [k for k, _ in drawn] and left_out == ["gold score (eval/gold_score)"]


def test_same_shift_on_every_seed_is_shown_not_badged():
    """reports/reward_hacking: ppo.eos_rate −0.006 on each of 3 seeds (1/500 steps) read "hurts" (p = 0 from a
    zero-variance t-test); a difference without variance is not tested, so it gets no badge."""
    from nplus.report.tables import effect_cell

    row = {
        "variant": "rule",
        "size": "",
        "metric": "ppo.eos_rate",
        "diff": -0.006,
        "diff_ci_low": -0.006,
        "diff_ci_high": -0.006,
        "n_pairs": 3,
        "p_holm": 0.0,
        "verdict": "hurts",
    }
    cell = effect_cell(row, "ppo.eos_rate")
    assert cell["cls"] == "na" and cell["verdict"] == "same shift on every seed (untested)"
    assert effect_cell({**row, "diff_ci_low": -0.01, "diff_ci_high": -0.002}, "ppo.eos_rate")["cls"] == "hurts"


def test_committed_report_rebuilds_from_its_tables(tmp_path):
    """A report whose runs are gone (reports/NAME in the repository) is rebuilt from its tables and its page:
    verdicts, marks and figures computed again, the run-only sections carried over and said to be."""
    from nplus.report.rebuild import rebuild

    root = make_study(
        tmp_path / "gone",
        seeds=(1, 2, 3),
        failed=None,
        variants=("baseline", "no_eos_penalty", "advantage_whitening_off", "query_truncation=drop"),
    )
    report = tmp_path / "report"
    first = build_report(root, report, Options(formats=("png",))).read_text()
    import shutil

    shutil.rmtree(root)  # the runs are gone
    html = rebuild(report, Options(formats=("png",))).read_text()
    assert "Rebuilt from this report's committed tables" in html
    assert _row(html, "no_eos_penalty") == _row(first, "no_eos_penalty")  # the same verdicts and intervals
    assert "⚠ sanity failed" in _row(html, SANITY_FAIL[0]) and "not comparable" in _row(html, "query_truncation=drop")
    answer = lambda page: page[page.index('id="answer"') : page.index("</div>", page.index('id="answer"'))]
    assert answer(html) == answer(first)
    for section in ('<section id="samples">', '<section id="provenance">', '<section id="trust">'):
        assert section in html
    assert [int(n) for n in re.findall(r"<strong>Figure (\d+)\.", html)] == [
        int(n) for n in re.findall(r"<strong>Figure (\d+)\.", first)
    ]
    assert {"holm_level", "holm_ci_low", "holm_ci_high"} <= set(pd.read_csv(report / "tables" / "stats.csv").columns)
