"""The details registry, its CLI and its one-place declarations."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from nplus.cli import main
from nplus.details import REGISTRY, DetailError, Details, table_markdown, with_overrides

ROOT = Path(__file__).resolve().parent.parent

# The canonical names and paper values of DESIGN.md's table.
DESIGN_TABLE = {
    "query_truncation": "newline", "query_padding_side": "left", "pad_token": "distinct",
    "reference_leading_space": "on", "reference_eos": "on", "preference_eos": "on", "dropout": "disabled",
    "learning_rate": "single", "adam_eps": "1e-5", "sft_loss_tokens": "all", "reward_head_init": "scaled_normal",
    "reward_token": "eos", "reward_normalization": "reference_bias", "value_init": "reward_model",
    "value_network": "separate", "response_sampling": "fixed_length_then_truncate", "missing_eos_penalty": "replace",
    "temperature_in_training": "on", "rollout_logprobs": "from_generation", "kl_estimator": "k1",
    "kl_placement": "reward", "kl_controller": "fixed", "reward_clipping": "off", "reward_whitening": "off",
    "advantage_whitening": "on", "value_clipping": "on", "score_position": "eos_plus_one", "lr_schedule": "linear",
    "eval_temperature": "near_greedy",
}


def test_registry_matches_design_table():
    assert {n: d.paper for n, d in REGISTRY.items()} == DESIGN_TABLE
    for d in REGISTRY.values():
        assert d.alternatives and d.doc and d.source and d.stage in ("data", "all", "sft", "rm", "ppo", "eval")
        assert d.paper not in d.alternatives


def test_details_json_cli(capsys):
    assert main(["details", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 29
    assert all(set(r) == {"name", "stage", "paper", "alternatives", "doc", "source"} for r in rows)
    assert {r["name"]: r["paper"] for r in rows} == DESIGN_TABLE


def test_unknown_detail_value_rejected_with_choices():
    with pytest.raises(DetailError, match="valid choices: k1, k2, k3"):
        with_overrides(Details(), {"kl_estimator": "k9"})
    with pytest.raises(DetailError, match="unknown detail 'kl_estimater'"):
        with_overrides(Details(), {"kl_estimater": "k1"})


def test_stage_command_rejects_bad_detail_before_compute(tmp_path):
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "nplus.cli", "pipeline", "--preset", "smoke", "--out", str(out),
                        "--details.kl-estimator", "k9"], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode != 0
    assert "k1" in r.stderr and "k3" in r.stderr  # the valid choices are listed
    assert not out.exists()  # nothing half written


def test_readme_details_table_is_generated_from_registry():
    readme = (ROOT / "README.md").read_text()
    assert table_markdown() in readme, "README details table is stale: regenerate it with `nplus details --markdown`"


def test_dry_run_paper_preset_prints_published_values(capsys):
    assert main(["pipeline", "--preset", "paper-1b", "--dry-run"]) == 0
    cfg = json.loads(capsys.readouterr().out)
    assert cfg["lr"] == 3e-6 and cfg["ppo"]["kl_coef"] == 0.05 and cfg["ppo"]["batch_size"] == 512
    assert cfg["model"]["name"] == "EleutherAI/pythia-1b-deduped"
