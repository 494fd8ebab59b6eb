"""The details registry, its CLI and its one-place declarations."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from nplus.cli import main
from nplus.details import ALGORITHMS, REGISTRY, STAGES, DetailError, Details, table_markdown, with_overrides

ROOT = Path(__file__).resolve().parent.parent

# The canonical names and paper values of DESIGN.md's table.
DESIGN_TABLE = {
    "query_truncation": "newline",
    "query_padding_side": "left",
    "pad_token": "distinct",
    "reference_leading_space": "on",
    "reference_eos": "on",
    "preference_eos": "on",
    "dropout": "disabled",
    "learning_rate": "single",
    "adam_eps": "1e-5",
    "sft_loss_tokens": "all",
    "reward_head_init": "scaled_normal",
    "reward_token": "eos",
    "reward_normalization": "reference_bias",
    "value_init": "reward_model",
    "value_network": "separate",
    "response_sampling": "fixed_length_then_truncate",
    "missing_eos_penalty": "replace",
    "temperature_in_training": "on",
    "rollout_logprobs": "from_generation",
    "kl_estimator": "k1",
    "kl_placement": "reward",
    "kl_controller": "fixed",
    "reward_clipping": "off",
    "reward_whitening": "off",
    "advantage_whitening": "on",
    "value_clipping": "on",
    "score_position": "eos_plus_one",
    "lr_schedule": "linear",
    "eval_temperature": "near_greedy",
}

# The details of the algorithms that replace PPO: stage and the value of each algorithm's own paper.
ALGORITHM_DETAILS = {
    "dpo_loss": ("dpo", "sigmoid"),
    "dpo_reference": ("dpo", "frozen"),
    "pg_update": ("rloo", "vanilla"),
    "reinforce_baseline": ("reinforce", "moving_average"),
    "grpo_std_normalization": ("grpo", "on"),
    "grpo_kl_estimator": ("grpo", "k3"),
    "grpo_kl_placement": ("grpo", "loss"),
    "grpo_loss_averaging": ("grpo", "per_sequence"),
}


def test_registry_matches_design_table():
    assert {n: d.paper for n, d in REGISTRY.items() if n in DESIGN_TABLE} == DESIGN_TABLE
    assert {n: (d.stage, d.paper) for n, d in REGISTRY.items() if n not in DESIGN_TABLE} == ALGORITHM_DETAILS
    for d in REGISTRY.values():
        assert d.alternatives and d.doc and d.source and d.stage in STAGES
        assert d.paper not in d.alternatives
        assert d.algorithms and set(d.algorithms) <= set(ALGORITHMS)


def test_each_detail_applies_where_it_means_something():
    assert REGISTRY["value_init"].algorithms == ("ppo",) and REGISTRY["dpo_loss"].algorithms == ("dpo",)
    assert REGISTRY["pg_update"].algorithms == ("rloo", "reinforce")
    assert (
        "dpo" not in REGISTRY["missing_eos_penalty"].algorithms and "grpo" in REGISTRY["missing_eos_penalty"].algorithms
    )
    assert "grpo" not in REGISTRY["kl_estimator"].algorithms  # GRPO's own: grpo_kl_estimator (k3)
    assert REGISTRY["dropout"].algorithms == ALGORITHMS and REGISTRY["lr_schedule"].algorithms == ALGORITHMS


def test_a_detail_that_means_nothing_under_the_algorithm_is_rejected_before_compute():
    from nplus.config import ConfigError, apply_overrides
    from nplus.presets import preset

    with pytest.raises(
        ConfigError, match=r"details.value_init='sft' means nothing under algorithm=grpo \(it applies to: ppo\)"
    ):
        apply_overrides(preset("smoke"), hparams={"algorithm": "grpo"}, details={"value_init": "sft"})
    with pytest.raises(ConfigError, match="details.dpo_loss='ipo' means nothing under algorithm=ppo"):
        apply_overrides(preset("smoke"), details={"dpo_loss": "ipo"})
    with pytest.raises(
        ConfigError, match="algorithm='sac': unknown algorithm; valid choices: ppo, dpo, rloo, reinforce, grpo"
    ):
        apply_overrides(preset("smoke"), hparams={"algorithm": "sac"})
    with pytest.raises(ConfigError, match="ppo.group_size=3 must be at least 2 and divide"):
        apply_overrides(preset("smoke"), hparams={"algorithm": "rloo", "ppo.group_size": "3"})
    cfg = apply_overrides(
        preset("smoke"), hparams={"algorithm": "dpo"}, details={"dpo_loss": "ipo", "dropout": "model_default"}
    )
    assert cfg.details.dpo_loss == "ipo"


def test_the_algorithm_leaves_upstream_hashes_and_ppo_run_hashes_alone():
    from nplus.config import apply_overrides
    from nplus.presets import preset

    base = preset("smoke")
    for algorithm in ALGORITHMS[1:]:
        cfg = apply_overrides(base, hparams={"algorithm": algorithm})
        assert all(cfg.stage_hash(s) == base.stage_hash(s) for s in ("base", "sft", "rm")) and cfg.hash != base.hash
    # a PPO run's identity does not depend on other algorithms' hyperparameters
    assert apply_overrides(base, hparams={"dpo.beta": "0.5", "ppo.group_size": "8"}).hash == base.hash
    dpo = apply_overrides(base, hparams={"algorithm": "dpo"})
    assert apply_overrides(dpo, hparams={"dpo.beta": "0.5"}).hash != dpo.hash


def test_details_json_cli(capsys):
    assert main(["details", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 37
    assert all(set(r) == {"name", "stage", "paper", "alternatives", "doc", "source", "algorithms"} for r in rows)
    assert {r["name"]: r["paper"] for r in rows if r["name"] in DESIGN_TABLE} == DESIGN_TABLE
    assert {r["name"]: (r["stage"], r["paper"]) for r in rows if r["name"] not in DESIGN_TABLE} == ALGORITHM_DETAILS


def test_unknown_detail_value_rejected_with_choices():
    with pytest.raises(DetailError, match="valid choices: k1, k2, k3"):
        with_overrides(Details(), {"kl_estimator": "k9"})
    with pytest.raises(DetailError, match="unknown detail 'kl_estimater'"):
        with_overrides(Details(), {"kl_estimater": "k1"})


def test_stage_command_rejects_bad_detail_before_compute(tmp_path):
    out = tmp_path / "run"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "nplus.cli",
            "pipeline",
            "--preset",
            "smoke",
            "--out",
            str(out),
            "--details.kl-estimator",
            "k9",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert r.returncode != 0
    assert "k1" in r.stderr and "k3" in r.stderr  # the valid choices are listed
    assert not out.exists()  # nothing half written


def test_pipeline_rejects_a_bad_algorithm_before_compute(tmp_path):
    out = tmp_path / "run"
    r = subprocess.run(
        [sys.executable, "-m", "nplus.cli", "pipeline", "--preset", "smoke", "--out", str(out), "--algorithm", "sac"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert r.returncode == 2
    assert "algorithm='sac'" in r.stderr and "ppo, dpo, rloo, reinforce, grpo" in r.stderr
    assert not out.exists()


def test_readme_details_table_is_generated_from_registry():
    readme = (ROOT / "README.md").read_text()
    assert table_markdown() in readme, "README details table is stale: regenerate it with `nplus details --markdown`"


def test_dry_run_paper_preset_prints_published_values(capsys):
    assert main(["pipeline", "--preset", "paper-1b", "--dry-run"]) == 0
    cfg = json.loads(capsys.readouterr().out)
    assert cfg["lr"] == 3e-6 and cfg["ppo"]["kl_coef"] == 0.05 and cfg["ppo"]["batch_size"] == 512
    assert cfg["model"]["name"] == "EleutherAI/pythia-1b-deduped"
