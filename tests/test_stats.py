"""Statistics: known effects get the right verdict, Holm matches statsmodels, the A/A rate is nominal."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nplus import stats
from nplus.rundir import mark_done


def synthetic(effects: dict[str, dict[str, float]], seeds=(1, 2, 3, 4, 5), noise=0.01, seed=0) -> pd.DataFrame:
    """Tidy results: each variant = baseline + effect per metric, plus per-seed noise shared by the pair
    (seed effects are what pairing removes) and independent noise."""
    rng = np.random.default_rng(seed)
    seed_effect = {s: rng.normal(0, 0.05) for s in seeds}
    rows = []
    for variant, eff in effects.items():
        for metric in ("ppo.win_rate", "ppo.kl", "rm.accuracy"):
            for s in seeds:
                value = 0.5 + seed_effect[s] + eff.get(metric, 0.0) + rng.normal(0, noise)
                rows.append(("syn", variant, s, "", metric, value))
    return pd.DataFrame(rows, columns=["study", "variant", "seed", "size", "metric", "value"])


def row(table, variant, metric):
    return table[(table.variant == variant) & (table.metric == metric)].iloc[0]


def test_known_effects_get_the_right_verdicts():
    results = synthetic(
        {
            "baseline": {},
            "better": {"ppo.win_rate": 0.2},
            "worse": {"ppo.win_rate": -0.2},
            "same": {},
            "longer_kl": {"ppo.kl": 0.3},
        }
    )
    table = stats.compare(results, "baseline", "syn")
    assert row(table, "better", "ppo.win_rate").verdict == "helps"
    assert row(table, "worse", "ppo.win_rate").verdict == "hurts"
    assert row(table, "same", "ppo.win_rate").verdict == "no detectable effect"
    assert row(table, "longer_kl", "ppo.kl").verdict == "changes"  # KL: neither direction is better
    assert row(table, "longer_kl", "ppo.win_rate").verdict == "no detectable effect"
    r = row(table, "better", "ppo.win_rate")
    assert r["diff"] == pytest.approx(0.2, abs=0.03) and r.diff_ci_low < 0.2 < r.diff_ci_high and r.n_pairs == 5
    assert r.p_t < 0.001 and r.p_wilcoxon == pytest.approx(0.0625)  # 5 seeds: Wilcoxon's floor 2/2^5
    base = row(table, "baseline", "ppo.win_rate")
    assert pd.isna(base.verdict) and base.n == 5 and base.ci_low < base["mean"] < base.ci_high


def test_pairing_by_seed_beats_seed_noise():
    # A 0.03 effect under 0.05 seed-to-seed noise: visible only because differences are paired by seed.
    results = synthetic({"baseline": {}, "v": {"ppo.win_rate": 0.03}}, noise=0.002)
    r = row(stats.compare(results, "baseline"), "v", "ppo.win_rate")
    assert r.verdict == "helps"
    # the paired interval is far narrower than the interval of the variant's mean alone
    assert r.diff_ci_high - r.diff_ci_low < (r.ci_high - r.ci_low) / 5


def test_holm_matches_statsmodels():
    from statsmodels.stats.multitest import multipletests

    rng = np.random.default_rng(3)
    for _ in range(5):
        p = list(rng.uniform(0, 0.2, size=rng.integers(1, 8)))
        assert stats.holm(p) == pytest.approx(list(multipletests(p, method="holm")[1]))
    assert stats.holm([0.01, None, 0.04]) == pytest.approx([0.02, None, 0.04])


def test_holm_is_applied_across_variants_of_a_metric():
    results = synthetic({"baseline": {}, **{f"v{i}": {"ppo.win_rate": 0.004 * i} for i in range(4)}}, noise=0.01)
    table = stats.compare(results, "baseline")
    sub = table[(table.metric == "ppo.win_rate") & (table.variant != "baseline")]
    assert list(sub.p_holm) == pytest.approx(stats.holm(list(sub.p_t)))


def test_degenerate_cases():
    assert stats.paired_test(np.array([0.5]), np.array([0.4])).p_t is None  # one seed: no test
    same = stats.paired_test(np.array([0.5, 0.6]), np.array([0.5, 0.6]))
    assert same.p_t == 1.0 and same.p_wilcoxon is None
    assert stats.verdict(None, 0.1, "higher") == "insufficient data"
    assert stats.verdict(0.001, 0.1, None) == "not assessed"
    assert stats.verdict(0.001, -0.1, "lower") == "helps"


def test_hierarchical_bootstrap():
    rng = np.random.default_rng(0)
    groups = [rng.binomial(1, p, 200) for p in (0.55, 0.6, 0.65)]
    lo, hi = stats.hierarchical_bootstrap(groups)
    assert lo < np.mean([g.mean() for g in groups]) < hi
    # seed-level spread widens the interval compared with pooling every prompt of one seed
    one_lo, one_hi = stats.hierarchical_bootstrap([np.concatenate(groups)])
    assert hi - lo > one_hi - one_lo
    assert stats.hierarchical_bootstrap([]) is None


def test_aa_false_positive_rate_is_nominal():
    """A/A: baseline against itself on disjoint seeds. Measured rates (seed 0): 0.051 over 2000 simulations
    with normal per-seed values at 3 seeds; family-wise 0.055 over 1000 simulations with 5 A/A variants under
    Holm; 0.026 over 2000 for a bimodal "some seeds over-optimize" distribution at 4 seeds (conservative: heavy
    tails inflate the t-test's variance estimate, so it rejects less often, and loses power there too)."""
    normal = stats.aa_false_positive_rate(2000, n_seeds=3)
    assert 0.03 <= normal <= 0.08, normal
    family = stats.aa_false_positive_rate(1000, n_seeds=3, n_variants=5)
    assert 0.02 <= family <= 0.08, family

    def bimodal(rng, n):  # like the paper's 1B seeds: a quarter collapse to ~0.2 win rate
        return np.where(rng.uniform(size=n) < 0.25, rng.normal(0.2, 0.02, n), rng.normal(0.6, 0.05, n))

    mixed = stats.aa_false_positive_rate(2000, n_seeds=4, sampler=bimodal)
    assert 0.015 <= mixed <= 0.08, mixed


def _fake_run(root: Path, variant: str, seed: int, win: float, wins: list[int], error: str | None = None) -> None:
    d = root / variant / f"seed={seed}"
    d.mkdir(parents=True)
    if error:
        (d / "error.txt").write_text(f"{error}\n\nTraceback ...\n")
        return
    summary = {
        "ppo.win_rate": win,
        "ppo.win_rate_ci": [0, 1],
        "ppo.kl": 1.0,
        "seed": seed,
        "model": "nano",
        "sanity.first_ratio_ok": True,
        "artifacts": {"sft": "x"},
        "wall_time_s": 3.0,
    }
    (d / "summary.json").write_text(json.dumps(summary))
    with open(d / "samples.jsonl", "w") as f:
        for i, w in enumerate(wins):
            f.write(json.dumps({"stage": "ppo", "id": str(i), "win": w}) + "\n")
        f.write(json.dumps({"stage": "sft", "id": "0", "win": 0}) + "\n")
    mark_done(d)


def test_write_stats_from_run_directories(tmp_path):
    out = tmp_path / "study"
    for seed in (1, 2, 3):
        _fake_run(out, "baseline", seed, 0.5, [1] * 10 + [0] * 10)
        _fake_run(out, "flip", seed, 0.75, [1] * 15 + [0] * 5)
    _fake_run(out, "broken", 1, 0, [], error="NonFiniteLoss: ppo: loss became nan at step 3")
    result = stats.write_stats(out, n_boot=500)
    results = pd.read_csv(out / "results.csv")
    assert list(results.columns) == ["study", "variant", "seed", "size", "metric", "value"]
    # numeric keys only: no seed, model, bool sanity flags, lists or dicts
    assert set(results.metric) == {"ppo.win_rate", "ppo.kl", "wall_time_s"}
    failures = pd.read_csv(out / "failures.csv")
    assert list(failures.variant) == ["broken"] and failures.error[0].startswith("NonFiniteLoss")
    table = pd.read_csv(out / "stats.csv")
    flip = table[(table.variant == "flip") & (table.metric == "ppo.win_rate")].iloc[0]
    assert flip["diff"] == pytest.approx(0.25) and flip.verdict == "helps"
    assert flip.boot_ci_low <= 0.75 <= flip.boot_ci_high
    assert flip.boot_diff_ci_low <= 0.25 <= flip.boot_diff_ci_high and flip.boot_diff_ci_low > 0
    assert result["baseline"] == "baseline" and result["metric_directions"]["ppo.kl"] == "neither"
    json.dumps(result)  # plain JSON, no NaN objects
    assert (out / "stats.json").exists()


def test_rlhf_effect_pairs_ppo_and_sft_by_prompt_within_each_seed(tmp_path):
    out = tmp_path / "study"
    for seed, extra in ((1, 0), (2, 2), (3, 4)):
        d = out / "baseline" / f"seed={seed}"
        d.mkdir(parents=True)
        sft = [1] * 5 + [0] * 15  # 0.25
        ppo = [1] * (10 + extra) + [0] * (10 - extra)  # 0.5, 0.6, 0.7
        (d / "summary.json").write_text(
            json.dumps(
                {
                    "sft.win_rate": 0.25,
                    "ppo.win_rate": sum(ppo) / 20,
                    "sft.gold_score": 1.0,
                    "ppo.gold_score": 2.5,
                    "seed": seed,
                }
            )
        )
        with open(d / "samples.jsonl", "w") as f:
            for stage, wins in (("sft", sft), ("ppo", ppo)):
                for i, w in enumerate(wins):
                    f.write(json.dumps({"stage": stage, "id": str(i), "win": w}) + "\n")
        mark_done(d)
    (effect,) = stats.write_stats(out, n_boot=500)["rlhf_effect"]
    assert effect["variant"] == "baseline" and effect["n"] == 3
    assert effect["win_rate_diff"] == pytest.approx(0.35)  # mean of 0.25, 0.35, 0.45
    assert [s["win_rate_diff"] for s in effect["seeds"]] == pytest.approx([0.25, 0.35, 0.45])
    assert effect["min_seed_win_rate_diff"] == pytest.approx(0.25) and effect["gold_score_diff"] == pytest.approx(1.5)
    lo, hi = effect["win_rate_diff_ci"]
    assert 0 < lo < 0.35 < hi


def test_holm_levels_decide_exactly_as_holm():
    """The level each test was decided at: p < level ⟺ Holm rejects; after the first failed step every later test
    is decided at that step's level (p = 0.03, 0.04: Holm rejects neither, though 0.04 < 0.05 / 1)."""
    import random

    from nplus.stats import holm, holm_levels

    assert holm_levels([0.03, 0.04]) == [0.025, 0.025]
    assert holm_levels([0.001, None, 0.02, 0.04]) == [0.05 / 3, None, 0.025, 0.05]
    rng = random.Random(0)
    for _ in range(500):
        p = [rng.random() ** 3 for _ in range(rng.randint(1, 8))]
        assert [pi < lv for pi, lv in zip(p, holm_levels(p))] == [a < 0.05 for a in holm(p)]
