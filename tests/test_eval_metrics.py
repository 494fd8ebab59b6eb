"""Metrics: win rates and their intervals, length control, ROUGE (and its offline evaluate module),
reward-model accuracy and calibration, judge quality."""

import json
import math
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from nplus.evaluation import metrics
from nplus.evaluation.rouge import rouge_per_example, rouge_scores

ROUGE_MODULE = Path(__file__).resolve().parent.parent / "nplus" / "evaluation" / "rouge_module"


def strict_json(obj):
    """Round-trip through JSON that rejects NaN and inf, as eval.json readers may."""
    return json.loads(json.dumps(obj, allow_nan=False))


def test_metrics_table_is_documented():
    assert {
        "win_rate",
        "lc_win_rate",
        "lc_slope",
        "rouge1",
        "rouge2",
        "rougeL",
        "position_bias",
        "rm_accuracy",
        "rm_ece",
        "rm_judge_agreement",
        "judge_agreement",
        "n_unparseable",
        "n_failed",
    } <= set(metrics.METRICS)
    for name, (direction, doc) in metrics.METRICS.items():
        assert direction in ("higher", "lower", "neither"), name
        assert len(doc) > 20, name


def test_wilson_interval_known_value():
    lo, hi = metrics.wilson_interval(5, 10)
    assert (round(lo, 4), round(hi, 4)) == (0.2366, 0.7634)
    assert metrics.wilson_interval(0, 0) is None


def test_win_rate_excludes_ties_unparseable_and_failed():
    outcomes = ["win"] * 6 + ["loss"] * 4 + ["tie"] * 2 + ["unparseable"] * 3 + ["failed"]
    s = metrics.win_rate_summary(outcomes, n_boot=500, seed=1)
    assert s["win_rate"] == 0.6 and s["n"] == 10 and s["n_wins"] == 6
    assert (s["n_ties"], s["n_unparseable"], s["n_failed"], s["n_total"]) == (2, 3, 1, 16)
    for key in ("win_rate_ci_wilson", "win_rate_ci_bootstrap"):
        lo, hi = s[key]
        assert 0 <= lo < 0.6 < hi <= 1
    assert metrics.win_rate_summary(outcomes, n_boot=500, seed=1) == s  # seeded bootstrap is reproducible
    strict_json(s)


def test_win_rate_accepts_binary_wins_and_rejects_unknown_outcomes():
    assert metrics.win_rate_summary([1, 0, 1, 1])["win_rate"] == 0.75
    with pytest.raises(ValueError, match="unknown outcomes"):
        metrics.win_rate_summary(["win", "draw"])
    empty = metrics.win_rate_summary(["unparseable"])
    assert empty["win_rate"] is None and empty["win_rate_ci_wilson"] is None and empty["n_unparseable"] == 1


def test_bootstrap_interval_matches_normal_approximation():
    values = np.random.default_rng(0).random(2000) < 0.3
    lo, hi = metrics.bootstrap_mean_interval(values.astype(float), n_boot=2000, seed=0)
    half = 1.96 * math.sqrt(values.mean() * (1 - values.mean()) / values.size)
    assert abs((hi - lo) / 2 - half) < 0.15 * half


def test_length_controlled_win_rate_recovers_the_generating_model():
    rng = np.random.default_rng(0)
    x = rng.normal(0.2, 0.5, size=4000)
    wins = (rng.random(4000) < 1 / (1 + np.exp(-(0.3 + 1.5 * x)))).astype(int)
    lc = metrics.length_controlled_win_rate(wins, x)
    assert lc["lc_method"] == "logit"
    lo, hi = lc["lc_win_rate_ci"]
    assert lo < 1 / (1 + math.exp(-0.3)) < hi and lo < lc["lc_win_rate"] < hi
    slo, shi = lc["lc_slope_ci"]
    assert slo < 1.5 < shi
    # the raw win rate is inflated by the longer summaries; the length-controlled one is not
    assert wins.mean() > hi


@pytest.mark.parametrize(
    "wins, x, reason",
    [
        ([1, 1, 1, 1], [0.1, -0.2, 0.3, 0.0], "all decided examples are wins"),
        ([0, 0, 0], [0.1, 0.2, 0.3], "all decided examples are losses"),
        ([0, 0, 1, 1], [-0.5, -0.1, 0.2, 0.4], "perfectly separated"),
        ([0, 1, 1, 0], [0.2, 0.2, 0.2, 0.2], "same relative length"),
        ([1, 0], [0.1, 0.2], "only 2"),
    ],
)
def test_length_controlled_win_rate_falls_back_without_crashing(wins, x, reason):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lc = metrics.length_controlled_win_rate(wins, x)
    assert lc["lc_method"].startswith("fallback") and reason in lc["lc_method"]
    assert lc["lc_win_rate"] == pytest.approx(np.mean(wins))
    assert lc["lc_slope"] is None and lc["lc_slope_ci"] is None
    strict_json(lc)


def test_length_bins_count_every_example_once():
    x = metrics.log_length_ratio([10, 20, 5, 40, 12], [10, 10, 10, 10, 0])
    assert x[0] == 0 and math.isfinite(x[4])  # an empty reference counts as length 1
    bins = metrics.length_bins([1, 1, 0, 1, 0], x)
    assert sum(b["n"] for b in bins) == 5 and sum(b["n_wins"] for b in bins) == 3
    assert bins[0]["lo"] is None and bins[-1]["hi"] is None
    zero_bin = next(b for b in bins if b["lo"] == 0.0)
    assert zero_bin["n"] == 1 and zero_bin["win_rate"] == 1.0
    strict_json(bins)


def test_position_bias_and_consistency():
    bias = metrics.position_bias(["A", "A", "A", "B", None])
    assert bias["position_bias"] == 0.75 and bias["n"] == 4
    cons = metrics.position_consistency(
        ["policy", "policy", "reference", None], ["policy", "reference", "reference", "policy"]
    )
    assert cons["position_consistency"] == pytest.approx(2 / 3) and cons["n"] == 3


def test_judge_agreement_counts_unparseable():
    result = metrics.judge_agreement(["A", "B", None, "A"], ["A", "A", "B", "A"])
    assert result["judge_agreement"] == pytest.approx(2 / 3)
    assert result["n"] == 3 and result["n_unparseable"] == 1
    assert result["position_bias"] == pytest.approx(2 / 3)


def test_rm_accuracy_by_split_and_confidence():
    chosen = [1.0, 2.0, 0.5, 0.0, 3.0, 1.0]
    rejected = [0.0, 3.0, 0.1, 0.0, 1.0, 2.0]
    report = metrics.rm_accuracy_report(
        chosen,
        rejected,
        split=["valid1", "valid1", "valid2", "valid2", "valid2", "valid1"],
        confidence=[9, 1, 9, 1, 9, 1],
    )
    assert report["accuracy"] == 0.5 and report["n"] == 6  # the tie (0.0 vs 0.0) counts as wrong
    assert report["by_split"] == {"valid1": pytest.approx(1 / 3), "valid2": pytest.approx(2 / 3)}
    assert report["by_split_n"] == {"valid1": 3, "valid2": 3}
    assert report["by_confidence"] == {"1": 0.0, "9": 1.0}
    assert len(report["by_confidence_ci"]["9"]) == 2
    strict_json(report)


def test_rm_calibration_detects_overconfidence():
    rng = np.random.default_rng(0)
    margin = np.abs(rng.normal(0, 1.5, size=20000))
    # Bradley–Terry ideal: the pair is ordered correctly with probability sigmoid(|margin|)
    correct = rng.random(margin.size) < 1 / (1 + np.exp(-margin))
    signed = np.where(correct, margin, -margin)
    calibrated = metrics.rm_calibration(signed, np.zeros_like(signed))
    assert calibrated["rm_ece"] < 0.02
    overconfident = metrics.rm_calibration(4 * signed, np.zeros_like(signed))
    assert overconfident["rm_ece"] > 0.1
    assert sum(b["n"] for b in calibrated["bins"]) == margin.size
    strict_json(overconfident)


def test_rm_judge_agreement():
    result = metrics.rm_judge_agreement(
        [1.0, 0.0, 2.0, 1.0, 5.0], [0.0, 1.0, 1.0, 1.0, 0.0], ["policy", "policy", "reference", "policy", None]
    )
    assert result["rm_judge_agreement"] == pytest.approx(1 / 3)
    assert result["n"] == 3 and result["n_excluded"] == 2


PREDICTIONS = ["the cats were sitting on the mats", "my girlfriend left me", "", "he asked for a loan again"]
REFERENCES = ["the cat sat on the mat", "my gf broke up with me after two years", "something", "he asked for a loan"]


def test_rouge_hand_checked_value():
    # "a b c" vs "a b d": unigram P = R = 2/3; bigram 1 of 2 both ways; LCS 2
    scores = rouge_per_example(["a b c"], ["a b d"])
    assert scores["rouge1"][0] == pytest.approx(2 / 3)
    assert scores["rouge2"][0] == pytest.approx(1 / 2)
    assert scores["rougeL"][0] == pytest.approx(2 / 3)
    summary = rouge_scores(PREDICTIONS, REFERENCES, n_boot=200)
    for name in ("rouge1", "rouge2", "rougeL"):
        assert 0 <= summary[f"{name}_ci"][0] <= summary[name] <= summary[f"{name}_ci"][1] <= 1
    # the stemmer matches cats/cat and mats/mat
    stemmed = rouge_scores(PREDICTIONS[:1], REFERENCES[:1])["rouge1"]
    assert stemmed > rouge_scores(PREDICTIONS[:1], REFERENCES[:1], use_stemmer=False)["rouge1"]


def test_evaluate_load_offline_matches_rouge_py(tmp_path):
    script = (
        "import evaluate, json, sys\n"
        f"m = evaluate.load({str(ROUGE_MODULE)!r})\n"
        f"p, r = {PREDICTIONS!r}, {REFERENCES!r}\n"
        "out = {'mean': m.compute(predictions=p, references=r, use_stemmer=True),\n"
        "       'each': m.compute(predictions=p, references=r, use_stemmer=True, use_aggregator=False),\n"
        "       'multi': m.compute(predictions=['hello there'], references=[['hello', 'hello there']])}\n"
        "print(json.dumps(out))\n"
    )
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HF_HOME": str(tmp_path / "hf"),
        "HF_MODULES_CACHE": str(tmp_path / "modules"),
    }
    proc = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(out["mean"]) == {"rouge1", "rouge2", "rougeL", "rougeLsum"}
    ours = rouge_scores(PREDICTIONS, REFERENCES, n_boot=10)
    each = rouge_per_example(PREDICTIONS, REFERENCES)
    for name in ("rouge1", "rouge2", "rougeL"):
        assert out["mean"][name] == pytest.approx(ours[name])
        assert out["each"][name] == pytest.approx(each[name].tolist())
    assert out["multi"]["rouge1"] == pytest.approx(1.0)  # the best of several references counts


def test_every_metric_is_named_in_the_docs():
    docs = (Path(__file__).resolve().parent.parent / "docs" / "evaluation.md").read_text()
    for name in metrics.METRICS:
        assert name in docs, name


def test_text_diversity_by_hand():
    out = metrics.text_diversity(["a b c a b c", "x y", "z"])
    # only the first text repeats a trigram ("a b c"); 9 unigram tokens, 6 distinct (a, b, c, x, y, z)
    assert out["repetition_rate"] == pytest.approx(1 / 3)
    assert out["distinct_1"] == pytest.approx(6 / 9)
    # bigrams: ab bc ca ab bc | xy → 6 in all, 4 distinct
    assert out["distinct_2"] == pytest.approx(4 / 6)
    assert metrics.text_diversity([]) == {"repetition_rate": None, "distinct_1": None, "distinct_2": None}
