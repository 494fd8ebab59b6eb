"""The A/A arm and the power table: study expansion, statistics and the report section."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from nplus import stats
from nplus.ablate.study import StudyError, expand, load_study
from nplus.report import build_report
from tests import test_report
from tests.test_study import BASE, write_study

# ---- power ------------------------------------------------------------------------------------------------------


def test_detectable_effect_matches_statsmodels_where_it_converges():
    from statsmodels.stats.power import TTestPower

    for n in (4, 5, 8):
        want = TTestPower().solve_power(nobs=n, alpha=0.05, power=0.8, alternative="two-sided")
        assert stats.detectable_effect(1.0, n) == pytest.approx(want, rel=1e-4)
    # scaled by the SD of the differences; Holm's first step among m tests is α / m
    assert stats.detectable_effect(0.03, 5) == pytest.approx(0.03 * stats.detectable_effect(1.0, 5))
    assert stats.detectable_effect(1.0, 5, tests=10) == pytest.approx(stats.detectable_effect(1.0, 5, alpha=0.005))


def test_detectable_effect_at_three_seeds_and_many_tests():
    """Hand check at 3 pairs: the effect found has power 0.8 (where statsmodels' solver gives up), more tests and
    fewer seeds need larger effects, and an unusable SD gives nan."""
    d = stats.detectable_effect(1.0, 3, tests=37)
    assert stats.paired_power(d, 3, 0.05 / 37) == pytest.approx(0.8, abs=1e-4)
    assert stats.detectable_effect(1.0, 3) == pytest.approx(3.264, abs=1e-3)
    assert d > stats.detectable_effect(1.0, 3, tests=5) > stats.detectable_effect(1.0, 5, tests=5)
    assert math.isnan(stats.detectable_effect(0.0, 3)) and math.isnan(stats.detectable_effect(1.0, 1))


def _results(values: dict[str, list[float]], metric: str = "ppo.win_rate") -> pd.DataFrame:
    return pd.DataFrame(
        [(v, "", s + 1, metric, x) for v, xs in values.items() for s, x in enumerate(xs)],
        columns=["variant", "size", "seed", "metric", "value"],
    )


def test_power_table_uses_the_baseline_seed_sd_and_shows_the_aa_sd():
    results = _results({"baseline": [0.40, 0.44, 0.42], "aa": [0.43, 0.41, 0.45], "flip": [0.1, 0.1, 0.1]})
    table = stats.power_table(results, "baseline", ["ppo.win_rate"], tests=1)
    row = table.iloc[0]
    assert row.seed_sd == pytest.approx(0.02) and row.diff_sd == pytest.approx(0.02 * math.sqrt(2))
    assert row.aa_diff_sd == pytest.approx(np.std([0.03, -0.03, 0.03], ddof=1))
    assert row.mde_3_seeds == pytest.approx(stats.detectable_effect(0.02 * math.sqrt(2), 3))
    assert row.mde_5_seeds < row.mde_3_seeds


def test_aa_arm_is_its_own_holm_family():
    """The A/A arm neither dilutes the variants' Holm adjustment nor is diluted by it."""
    results = _results(
        {"baseline": [0.40, 0.44, 0.42], "a": [0.30, 0.35, 0.31], "b": [0.41, 0.46, 0.40], "aa": [0.43, 0.42, 0.47]}
    )
    table = stats.compare(results, "baseline").set_index("variant")
    assert table.loc["aa", "p_holm"] == pytest.approx(table.loc["aa", "p_t"])
    p_a, p_b = table.loc["a", "p_t"], table.loc["b", "p_t"]
    assert table.loc["a", "p_holm"] == pytest.approx(min(1, 2 * min(p_a, p_b)) if p_a < p_b else max(2 * p_b, p_a))


def test_simulated_fp_rate_is_holm_bounded_and_fast():
    rate = stats.aa_false_positive_rate(1000, n_seeds=3, n_variants=37)
    assert 0.02 <= rate <= 0.08, rate


# ---- study files -----------------------------------------------------------------------------------------------


def test_aa_key_adds_the_baseline_on_fresh_seeds(tmp_path):
    study = load_study(
        write_study(tmp_path, BASE + 'aa = true\n[[variants]]\nname = "k3"\ndetails = { kl_estimator = "k3" }\n')
    )
    assert [v.name for v in study.variants] == ["baseline", "k3", "aa"]
    specs = {(s.variant, s.seed): s for s in expand(study, tmp_path / "out")}
    aa, base = specs[("aa", 1)], specs[("baseline", 1)]
    assert aa.config.seed == 1 + stats.AA_SEED_OFFSET and aa.run_dir == tmp_path / "out" / "aa" / "seed=1"
    assert aa.config.details == base.config.details and aa.config.hash != base.config.hash
    assert {st: aa.config.stage_hash(st) == base.config.stage_hash(st) for st in ("base", "sft", "rm", "ppo")} == {
        "base": True,
        "sft": False,
        "rm": False,
        "ppo": False,
    }


@pytest.mark.parametrize(
    "body, key",
    [
        ('aa = "yes"\n', "aa: expected true or false"),
        ('[[variants]]\nname = "aa"\n', r"variants\[0\]\.name: 'aa' is the A/A arm's name"),
    ],
)
def test_aa_key_errors(tmp_path, body, key):
    with pytest.raises(StudyError, match=key):
        load_study(write_study(tmp_path, BASE + body))


# ---- the report ------------------------------------------------------------------------------------------------


def test_report_shows_aa_and_power_outside_the_headline(tmp_path, monkeypatch):
    monkeypatch.setitem(test_report.VARIANTS, "aa", ({}, 0.0, 0.0, 0.0, 0.0))
    root = test_report.make_study(tmp_path / "study", variants=("baseline", "no_eos_penalty", "aa"), failed=None)
    html = build_report(root, tmp_path / "out").read_text()
    trust = html.split('id="trust"')[1].split("</section>")[0]
    assert 'id="aa-table"' in trust and 'id="power-table"' in trust and "detectable at 5 seeds" in trust
    headline = pd.read_csv(tmp_path / "out" / "tables" / "headline.csv")  # the verdict table: flips only
    assert set(headline.variant) == {"no_eos_penalty"} and "<strong>aa</strong>" not in html
    power = pd.read_csv(tmp_path / "out" / "tables" / "power.csv")
    assert set(power.metric) >= {"ppo.win_rate", "ppo.kl"} and (power.tests == 1).all()
    assert power.aa_diff_sd.notna().all()
    aa = pd.read_csv(tmp_path / "out" / "tables" / "aa_check.csv")
    assert "ppo.win_rate" in set(aa.metric)


def test_report_without_aa_arm_says_how_to_add_one(tmp_path):
    root = test_report.make_study(tmp_path / "study", variants=("baseline", "no_eos_penalty"), failed=None)
    html = build_report(root, tmp_path / "out").read_text()
    assert "No A/A arm was run" in html and 'id="power-table"' in html


# ---- over-optimization against KL --------------------------------------------------------------------------------


def _points(run: str, gold: list[float], proxy: list[float]) -> list[dict]:
    rows = [
        {
            "label": run,
            "variant": "baseline",
            "size": "tiny",
            "seed": 1,
            "run": run,
            "step": 0,
            "kl": 0.0,
            "proxy": math.nan,
            "gold": gold[0],
            "source": "sft",
        }
    ]
    for i, (g, p) in enumerate(zip(gold[1:], proxy), 1):
        rows.append(
            {
                **rows[0],
                "step": i,
                "kl": 2.0 * i,
                "proxy": p,
                "gold": g,
                "source": "final" if i == len(proxy) else "eval",
            }
        )
    return rows


def test_peaks_call_a_decline_only_beyond_noise_and_with_the_proxy_holding():
    from types import SimpleNamespace

    from nplus.report.overopt import peak_rows, peaks

    samples = [{"gold_score": g} for g in np.linspace(5.0, 7.0, 100)]  # SE = 0.0583 over 100 prompts
    runs = {name: SimpleNamespace(rel=name, stage_samples=lambda stage: samples) for name in "abcd"}
    study = SimpleNamespace(ok_runs=list(runs.values()))
    points = pd.DataFrame(
        _points("a", [6.0, 6.5, 7.0, 6.5], [0.1, 0.2, 0.3])  # peak at KL 4, falls 0.5, proxy up
        + _points("b", [6.0, 6.5, 7.0, 6.95], [0.1, 0.2, 0.3])  # falls 0.05 < 2 SE: noise
        + _points("c", [6.0, 6.5, 7.0, 6.5], [0.1, 0.3, 0.2])  # proxy fell too: not over-optimization
        + _points("d", [6.0, 5.5, 5.0, 4.0], [0.1, 0.2, 0.3])
    )  # never above the SFT policy
    table = peaks(study, points).set_index("run")
    assert table.overoptimized.to_dict() == {"a": True, "b": False, "c": False, "d": False}
    assert table.loc["a", "kl_at_peak"] == 4.0 and table.loc["a", "gold_decline"] == pytest.approx(0.5)
    assert table.loc["d", "peak_is_sft"] and table.loc["d", "kl_at_peak"] == 0.0
    answers = {r["run"]: r["answer"] for r in peak_rows(table.reset_index())}
    assert answers["a"].startswith("gold peaked") and answers["d"] == "gold never rose above the SFT policy"
    assert answers["b"] == answers["c"] == "no decline beyond noise"
