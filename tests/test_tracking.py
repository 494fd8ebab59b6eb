"""The wandb mirror, in offline mode only: it must write its files inside the run directory and touch no network."""

from __future__ import annotations

import json
import sys

import pytest

from nplus import tracking


class FakeRun:
    """Records what the mirror would send, to check the step bookkeeping without wandb."""

    def __init__(self):
        self.defined: dict[str, str | None] = {}
        self.logged: list[dict] = []

    def define_metric(self, name, step_metric=None):
        self.defined[name] = step_metric

    def log(self, row):
        self.logged.append(row)


def test_each_stage_has_its_own_x_axis():
    run = FakeRun()
    rows = [
        {"stage": "sft", "step": 1, "sft/loss": 2.0},
        {"stage": "sft", "step": 2, "sft/loss": 1.5},
        {"stage": "rm", "step": 1, "rm/loss": 0.7},
        {"stage": "ppo", "step": 1, "episode": 64, "objective/kl": 0.1, "time_s": 3.0},
        {"stage": "ppo", "step": 4, "episode": 256, "eval/gold_score": 0.3, "bad": float("nan")},
    ]
    assert tracking.log_metrics(run, rows) == 5
    assert run.defined["sft/loss"] == "sft/step" and run.defined["rm/loss"] == "rm/step"
    assert run.defined["objective/kl"] == "ppo/episode" and run.defined["eval/gold_score"] == "ppo/episode"
    assert run.logged[3] == {"ppo/episode": 64.0, "objective/kl": 0.1}  # time_s is bookkeeping
    assert "bad" not in run.logged[4]


def test_missing_wandb_names_the_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb → ImportError
    with pytest.raises(tracking.WandbMissingError, match="pip install wandb"):
        tracking.mirror_to_wandb("unused", {})


def _run_dir(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(
        json.dumps({"preset": "smoke", "seed": 1, "hash": "abc", "task": {"name": "tldr-synth"}})
    )
    rows = [{"stage": "sft", "step": s, "sft/loss": 1.0 / s} for s in range(1, 4)]
    rows += [
        {"stage": "ppo", "step": u, "episode": 64 * u, "objective/kl": 0.2 * u, "objective/scores": 0.1 * u}
        for u in range(1, 4)
    ]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"torn": ')
    samples = [
        {
            "stage": "ppo",
            "id": "v1",
            "query": "q",
            "reference": "r",
            "response": "<b>x</b>",
            "finished": True,
            "length": 3,
            "proxy_score": 0.5,
            "gold_score": 0.2,
            "reference_gold_score": 0.4,
            "win": 1,
        }
    ]
    (run / "samples.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples))
    (run / "summary.json").write_text(json.dumps({"ppo.win_rate": 0.6, "sanity.first_ratio_ok": True, "artifacts": {}}))
    return run


def test_offline_mirror_writes_inside_run_dir(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DISABLE_CODE", "true")
    monkeypatch.setenv("WANDB_DISABLE_GIT", "true")
    monkeypatch.setenv("WANDB_CONSOLE", "off")
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))  # never the user's ~/.config/wandb
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb-cache"))
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "wandb-data"))
    # Belt and braces: should anything try the network anyway, it hits a closed local port instead of a host.
    for var in ("WANDB_BASE_URL", "HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    run = _run_dir(tmp_path)
    tracking.mirror_to_wandb(run, None)
    offline = list((run / "wandb").glob("offline-run-*"))
    assert len(offline) == 1, list((run / "wandb").iterdir())
    logs = list(offline[0].glob("run-*.wandb"))
    assert logs and logs[0].stat().st_size > 1000, list(offline[0].iterdir())
    # The replayed rows and the samples table are in the offline log (it is a protobuf stream; the keys are plain).
    data = logs[0].read_bytes()
    assert b"objective/kl" in data and b"ppo/episode" in data and b"samples" in data
    assert not list(tmp_path.glob("wandb")), "wandb wrote outside the run directory"
