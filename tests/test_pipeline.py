"""End to end: the smoke pipeline, its run directory, sanity checks, liveness of every detail, reproducibility."""

import pytest

from nplus.config import apply_overrides
from nplus.details import ALGORITHMS, REGISTRY
from nplus.presets import preset
from nplus.rundir import read_json, read_jsonl
from nplus.tooling.testing import run_isolated

# make test-fast leaves it out: the smoke pipeline and each algorithm, trained in fresh processes
pytestmark = pytest.mark.slow

SUMMARY_KEYS = [
    "sft.rouge_l",
    "sft.win_rate",
    "rm.accuracy",
    "ppo.win_rate",
    "ppo.kl",
    "ppo.mean_length",
    "ppo.eos_rate",
    "ppo.win_rate_ci",
]


def test_smoke_summary_and_run_directory(smoke):
    run = smoke["root"] / "run"
    summary = read_json(run / "summary.json")
    for key in SUMMARY_KEYS:
        assert key in summary, key
    lo, hi = summary["ppo.win_rate_ci"]
    assert 0.0 <= lo <= summary["ppo.win_rate"] <= hi <= 1.0
    for name in (
        "config.json",
        "details.json",
        "env.json",
        "command.txt",
        "metrics.jsonl",
        "samples.jsonl",
        "eval.json",
        "DONE",
    ):
        assert (run / name).exists(), name
    cfg = read_json(run / "config.json")
    assert cfg["hash"] == preset("smoke", 1).hash
    assert read_json(run / "env.json")["packages"]["torch"].startswith("2.13")
    names = set().union(*(r.keys() for r in read_jsonl(run / "metrics.jsonl") if r["stage"] == "ppo"))
    for metric in (
        "objective/kl",
        "objective/scores",
        "objective/rlhf_reward",
        "policy/approxkl",
        "policy/clipfrac",
        "val/ratio",
        "val/num_eos",
    ):
        assert metric in names, metric
    stages = {r["stage"] for r in read_jsonl(run / "samples.jsonl")}
    assert stages == {"sft", "ppo"}
    # weights are safetensors, never pickles
    cache = smoke["root"] / "cache"
    assert list(cache.glob("sft/*/model/model.safetensors")) and list(cache.glob("rm/*/model/head.safetensors"))
    assert not list(cache.rglob("*.bin")) and not list(cache.rglob("*.pt"))


def test_sanity_checks_pass_with_paper_details(smoke):
    s = smoke["summary"]
    assert s["sanity.first_ratio_ok"] and s["sanity.initial_kl_ok"] and s["sanity.rm_padding_ok"]
    assert s["sanity.score_position_ok"] and s["sanity.score_position_offset"] == 1.0


@pytest.fixture(scope="module")
def algorithms(smoke):
    """One smoke run of each algorithm other than PPO, on the SFT and RM artifacts of the PPO smoke run."""
    out = {}
    for algorithm in ALGORITHMS[1:]:
        cfg = apply_overrides(preset("smoke", 1), hparams={"algorithm": algorithm})
        summary, read = run_isolated(cfg, smoke["root"] / f"algorithm-{algorithm}", smoke["root"] / "cache", spy=True)
        out[algorithm] = {"summary": summary, "read": set(read), "run": smoke["root"] / f"algorithm-{algorithm}"}
    return out


def test_every_detail_is_read_by_the_smoke_pipeline(smoke, algorithms):
    runs = {"ppo": smoke["read"], **{a: r["read"] for a, r in algorithms.items()}}
    assert set(REGISTRY) - set().union(*runs.values()) == set()
    # each algorithm reads every detail of its own stage that applies to it (the other algorithms reuse the PPO
    # run's cached data, SFT and RM, so only that run reads the upstream details)
    for algorithm, read in runs.items():
        own = {n for n, d in REGISTRY.items() if d.applies_to(algorithm) and d.stage not in ("data", "sft", "rm")}
        assert own - read == set(), algorithm


def test_every_algorithm_writes_the_same_run_layout_and_summary_fields(smoke, algorithms):
    for algorithm, r in algorithms.items():
        s = read_json(r["run"] / "summary.json")
        assert s["algorithm"] == algorithm and set(SUMMARY_KEYS) <= set(s), algorithm
        assert s["artifacts"] == smoke["summary"]["artifacts"], "SFT and RM are shared across algorithms"
        assert s["sanity.initial_kl_ok"], algorithm
        assert all(k.startswith(("sft.", "rm.", "ppo.", "dpo.", "sanity.")) or k in smoke["summary"] for k in s), (
            algorithm
        )
        for name in ("config.json", "details.json", "env.json", "metrics.jsonl", "samples.jsonl", "eval.json", "DONE"):
            assert (r["run"] / name).exists(), (algorithm, name)
        assert {row["stage"] for row in read_jsonl(r["run"] / "samples.jsonl")} == {"sft", "ppo"}
        names = set().union(*(row.keys() for row in read_jsonl(r["run"] / "metrics.jsonl") if row["stage"] == "ppo"))
        if algorithm == "dpo":
            assert {"dpo/loss", "dpo/accuracy", "dpo/margin"} <= names
            assert 0.0 <= s["dpo.implicit_accuracy"] <= 1.0
        else:  # the online algorithms log PPO's rollout metrics, under the same names
            assert {
                "objective/kl",
                "objective/scores",
                "objective/rlhf_reward",
                "policy/approxkl",
                "val/ratio",
            } <= names
            assert s["sanity.first_ratio_ok"], algorithm


@pytest.mark.parametrize("algorithm", ["dpo", "grpo"])
def test_same_seed_same_metrics_for_another_algorithm(algorithms, algorithm, tmp_path, smoke):
    cfg = apply_overrides(preset("smoke", 1), hparams={"algorithm": algorithm})
    again, _ = run_isolated(cfg, tmp_path / "run", smoke["root"] / "cache")
    strip = lambda s: {k: v for k, v in s.items() if "wall_time" not in k}
    assert strip(algorithms[algorithm]["summary"]) == strip(again)


def test_same_seed_same_metrics(smoke, tmp_path):
    again, _ = run_isolated(preset("smoke", 1), tmp_path / "run", tmp_path / "cache")
    a = {k: v for k, v in smoke["summary"].items() if "wall_time" not in k and k != "artifacts"}
    b = {k: v for k, v in again.items() if "wall_time" not in k and k != "artifacts"}
    assert a == b
    # wall-clock fields (time_s, time/*) are the only ones allowed to differ
    strip = lambda rows: [{k: v for k, v in r.items() if not k.startswith("time")} for r in rows]
    assert strip(read_jsonl(smoke["root"] / "run" / "metrics.jsonl")) == strip(
        read_jsonl(tmp_path / "run" / "metrics.jsonl")
    )


@pytest.mark.parametrize("flip", [{"dropout": "model_default"}, {"temperature_in_training": "off"}])
def test_sanity_first_ratio_fails_visibly_when_flipped(smoke, flip):
    cfg = apply_overrides(preset("smoke", 1), details=flip)
    s, _ = run_isolated(cfg, smoke["root"] / f"flip-{next(iter(flip))}", smoke["root"] / "cache")
    assert s["sanity.first_ratio_ok"] is False
    assert abs(s["sanity.first_ratio"] - 1.0) > 1e-4


def test_ppo_only_flip_reuses_sft_and_rm(smoke):
    cfg = apply_overrides(preset("smoke", 1), details={"missing_eos_penalty": "off"})
    base = preset("smoke", 1)
    assert cfg.stage_hash("sft") == base.stage_hash("sft") and cfg.stage_hash("rm") == base.stage_hash("rm")
    assert cfg.stage_hash("ppo") != base.stage_hash("ppo")
    data_flip = apply_overrides(base, details={"pad_token": "eos"})
    assert data_flip.stage_hash("sft") != base.stage_hash("sft")


def test_base_model_keeps_the_ladder_dropout_in_its_config_and_records_the_copy_probe(smoke):
    """Pretraining runs without dropout, but the saved config keeps 0.1: the `model_default` that the dropout
    detail re-enables (test_sanity_first_ratio_fails_visibly_when_flipped depends on it)."""
    (base,) = (smoke["root"] / "cache" / "base").glob("*/")
    config = read_json(base / "model" / "config.json")
    assert config["hidden_dropout"] == config["attention_dropout"] == 0.1
    manifest = read_json(base / "manifest.json")
    assert {"copy_nll_first", "copy_nll_repeat", "copy_gain", "post_swap_gap"} <= set(manifest["probes"])
    assert manifest["base_hash"] == base.name and len(manifest["weights_sha256"]) == 64


def test_base_recipe_version_enters_every_cached_artifact_and_run_hash(monkeypatch):
    """A change to how base models are pretrained must not reuse base, SFT, RM or finished runs built before it."""
    import nplus.config as config

    cfg = preset("smoke", 1)
    before = {s: cfg.stage_hash(s) for s in ("base", "sft", "rm", "ppo")} | {"run": cfg.hash}
    monkeypatch.setattr(config, "BASE_RECIPE", config.BASE_RECIPE + 1)
    after = {s: cfg.stage_hash(s) for s in ("base", "sft", "rm", "ppo")} | {"run": cfg.hash}
    assert all(before[k] != after[k] for k in before)
