"""Faults (issue #16): the kill -9 campaign in short, corrupted and truncated artifacts, a full disk.

The campaign here runs `nplus ablate` for real (processes, SIGKILL, resumes) on a fake pipeline, ``fake_pipeline``
below, injected through NPLUS_ABLATE_RUN_FN: real training would not fit the time of a unit test.
`make faults` runs the long version on the real pipeline (ablations/faults.toml); docs/ablations.md has its figures.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from nplus.ablate import faults
from nplus.rundir import (
    RUN_OUTPUTS,
    DiskFullError,
    artifact,
    atomic_write_json,
    atomic_write_text,
    done_problem,
    fault_point,
    mark_done,
)

ROOT = Path(__file__).resolve().parent.parent
FAKE = "tests.test_faults:fake_pipeline"


def fake_pipeline(cfg, out_dir, cache, command=None):
    """run_pipeline's contract in miniature, with light imports (each worker imports this module): an SFT artifact
    shared by the variants of a seed (weights, the checkpoint fault point, then eval.json), FAKE_SLEEP seconds of
    "PPO", summary.json and samples.jsonl, DONE last. kl_estimator=k3 fails as a NaN loss would."""
    with artifact(Path(cache), "sft", cfg.stage_hash("sft")) as (path, built):
        if not built:
            save_file({"w": np.full(32768, cfg.seed, np.float32)}, str(path / "model.safetensors"))  # 128 KB
            fault_point("checkpoint")
            atomic_write_json(path / "eval.json", {"seed": cfg.seed})
    time.sleep(float(os.environ.get("FAKE_SLEEP", "0")))
    if cfg.details.kl_estimator == "k3":
        raise FloatingPointError("ppo: loss became nan at step 1")
    weights = load_file(str(path / "model.safetensors"))["w"]
    effect = 0.2 if cfg.details.missing_eos_penalty == "off" else 0.0
    with open(Path(out_dir) / "samples.jsonl", "w") as f:
        for i in range(10):
            f.write(json.dumps({"stage": "ppo", "id": str(i), "win": int(i < 4 + 3 * (effect > 0))}) + "\n")
    summary = {"ppo.win_rate": 0.4 + effect + 0.01 * float(weights[0]), "seed": cfg.seed, "wall_time_s": time.time()}
    atomic_write_json(Path(out_dir) / "summary.json", summary)
    mark_done(out_dir, {"hash": cfg.hash}, RUN_OUTPUTS)
    return summary


def make_study(tmp_path: Path) -> Path:
    (tmp_path / "seeds").mkdir()
    (tmp_path / "seeds" / "t.txt").write_text("1\n2\n")
    (tmp_path / "ablations").mkdir()
    study = tmp_path / "ablations" / "t.toml"
    study.write_text(
        'name = "t"\npreset = "smoke"\nseeds = "t"\n'
        '[[variants]]\nname = "noeos"\ndetails = { missing_eos_penalty = "off" }\n'
        '[[variants]]\nname = "nan"\ndetails = { kl_estimator = "k3" }\n'
    )
    return study


@pytest.fixture
def fake_env(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # runner and worker processes import tests.test_faults
    monkeypatch.setenv("FAKE_SLEEP", "0.5")
    monkeypatch.chdir(ROOT)


# ---- the campaign, short ---------------------------------------------------------------------------------------


def test_kill_9_campaign_short(tmp_path, fake_env, capsys):
    """4 kills (timer, mid-write, mid-checkpoint, mid-stats), each resumed; then two runners at once."""
    code = faults.main(
        [
            "--kills",
            "4",
            "--out",
            str(tmp_path / "campaign"),
            "--study",
            str(make_study(tmp_path)),
            "--workers",
            "1",
            "--run-fn",
            FAKE,
            "--seed",
            "3",
        ]
    )
    text = capsys.readouterr().out
    assert code == 0, text
    killed = int(text.split("points killed: ")[1].split()[0])
    assert killed >= 4 and f"resumes: {killed}" in text
    for line in (
        "runs lost: 0",
        "duplicated: 0",
        "half-written read as finished: 0",
        "markers not matching their files: 0",
        "stats identical: yes",
    ):
        assert line in text
    assert "reference sweep (uninterrupted): 6 runs (4 complete, 2 failed)" in text  # the NaN variant fails alone
    assert (
        "two runners at once: 4 runs completed, trained twice: 0 (both started before any run was complete: yes)"
        in text
    )


def test_campaign_checks_catch_what_they_look_for(tmp_path):
    """The checks can fail: a run whose DONE lists no summary.json, an artifact whose weights are not a
    safetensors file (its DONE matching them), a marker rewritten after completion, a truncated file."""
    run = tmp_path / "runs" / "v" / "seed=1"
    run.mkdir(parents=True)
    mark_done(run, {"hash": "h"}, RUN_OUTPUTS)  # DONE written before summary.json: the bug the campaign hunts
    sft = tmp_path / "cache" / "sft" / "k"
    sft.mkdir(parents=True)
    (sft / "model.safetensors").write_bytes(b"not a safetensors file")
    mark_done(sft)
    seen: dict[Path, bytes] = {}
    half, redone, stale = faults.inspect([tmp_path / "runs", tmp_path / "cache"], seen)
    assert half[0].endswith("DONE without summary.json") and "model.safetensors" in half[1] and len(half) == 2
    assert redone == stale == [] and len(seen) == 2
    mark_done(run, {"hash": "h2"}, RUN_OUTPUTS)
    (sft / "model.safetensors").write_bytes(b"short")
    half, redone, stale = faults.inspect([tmp_path / "runs", tmp_path / "cache"], seen)
    assert [r.split(":")[0] for r in redone] == [str(run)] and "rewritten" in redone[0]
    assert stale == [f"{sft}: model.safetensors has 5 bytes, DONE says 22"]


def test_fault_point_kills_its_process_group_at_the_nth_hit(tmp_path):
    counter = tmp_path / "hits"
    code = (
        "from nplus.rundir import atomic_write_text\n"
        f"for i in range(5): atomic_write_text({str(tmp_path / 'f')!r}, 'abcdef' * (i + 1))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NPLUS_FAULT": "write:3", "NPLUS_FAULT_COUNTER": str(counter)}
    r = subprocess.run([sys.executable, "-c", code], env=env, start_new_session=True, timeout=60)
    assert r.returncode == -signal.SIGKILL and counter.read_text() == "3"
    assert (tmp_path / "f").read_text() == "abcdef" * 2  # the third write never replaced the second
    assert [p.read_text() for p in tmp_path.glob(".f.tmp*")] == ["abcdefabc"]  # half of the third


# ---- corrupted and truncated artifacts ---------------------------------------------------------------------------


def _build(cache: Path, log: list[str]) -> Path:
    with artifact(cache, "sft", "k") as (path, built):
        log.append("reused" if built else "built")
        if not built:
            save_file({"w": np.arange(1000, dtype=np.float32)}, str(path / "model.safetensors"))
            atomic_write_json(path / "eval.json", {"rouge": 0.25})
    return path


@pytest.mark.parametrize(
    "damage, reason",
    [
        (
            lambda p: p.joinpath("model.safetensors").write_bytes(p.joinpath("model.safetensors").read_bytes()[:100]),
            "model.safetensors has 100 bytes, DONE says",
        ),
        (
            lambda p: p.joinpath("eval.json").write_text(p.joinpath("eval.json").read_text().replace("0.25", "0.95")),
            "eval.json changed since DONE was written",
        ),
        (lambda p: p.joinpath("model.safetensors").unlink(), "model.safetensors is missing"),
        (lambda p: p.joinpath("DONE").write_text('{"finished": "2026-01-01"}'), "DONE lists no files"),
        (lambda p: p.joinpath("DONE").write_text('{"files": {"eval.j'), "DONE is unreadable"),
    ],
)
def test_a_damaged_artifact_is_rebuilt_not_loaded(tmp_path, capsys, damage, reason):
    log: list[str] = []
    path = _build(tmp_path, log)
    assert _build(tmp_path, log) == path and log == ["built", "reused"]
    damage(path)
    assert reason in done_problem(path)
    _build(tmp_path, log)
    assert log == ["built", "reused", "built"]
    assert capsys.readouterr().err.startswith(f"rebuilding {path}: {reason}")
    assert done_problem(path) is None and load_file(str(path / "model.safetensors"))["w"][999] == 999
    assert json.loads((path / "eval.json").read_text()) == {"rouge": 0.25}


def test_a_run_with_a_damaged_summary_is_redone_and_not_counted(tmp_path, fake_env, monkeypatch, capsys):
    from nplus.cli import main
    from nplus.stats import collect

    monkeypatch.setenv("NPLUS_ABLATE_RUN_FN", FAKE)
    monkeypatch.setenv("FAKE_SLEEP", "0")
    study, out = make_study(tmp_path), tmp_path / "runs"
    argv = ["ablate", str(study), "--out", str(out), "--cache", str(tmp_path / "cache")]
    assert main(argv) == 1  # the NaN variant fails
    summary = out / "noeos" / "seed=2" / "summary.json"
    summary.write_text(summary.read_text()[:-10])  # truncated after DONE was written
    assert len(collect(out)[0].query("variant == 'noeos' and seed == 2")) == 0
    capsys.readouterr()
    assert main(argv) == 1
    assert "t: 3 complete, 3 to run" in capsys.readouterr().out  # noeos seed=2 again, and the NaN variant's two
    assert done_problem(summary.parent) is None and json.loads(summary.read_text())["seed"] == 2


# ---- a full disk ---------------------------------------------------------------------------------------------------


def _file_size_limit(limit: int):
    # RLIMIT_FSIZE, inherited by the runner's workers: a write past `limit` bytes fails with EFBIG ("File too
    # large"), as a full disk fails with ENOSPC; Python ignores the SIGXFSZ that would otherwise kill the process.
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def test_full_disk_is_one_line_naming_the_path_and_leaves_nothing_complete(tmp_path, fake_env):
    study, out, cache = make_study(tmp_path), tmp_path / "runs", tmp_path / "cache"
    cmd = [sys.executable, "-m", "nplus.cli", "ablate", str(study), "--out", str(out), "--cache", str(cache)]
    env = {**os.environ, "NPLUS_ABLATE_RUN_FN": FAKE, "FAKE_SLEEP": "0"}
    # no room even for study.json: the command itself fails, in one line
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, preexec_fn=_file_size_limit(100))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.startswith(f"error: no space to write {out / 'study.json'} (File too large)")
    assert len(r.stderr.strip().splitlines()) == 1 and not list(out.glob(".study.json.tmp*"))
    # room for the JSON files and logs, not for the 128 KB weights: every run fails naming its artifact
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, preexec_fn=_file_size_limit(65536))
    assert r.returncode == 1, r.stderr
    assert f"DiskFullError: no space to write {cache / 'sft'}/" in r.stdout + r.stderr
    assert (out / "baseline" / "seed=1" / "error.txt").read_text().startswith("DiskFullError: no space to write")
    assert not list(cache.rglob("DONE")) and not list(out.rglob("DONE"))
    assert not [p for p in (cache / "sft").iterdir() if p.is_dir()]  # the partial artifacts were wiped
    # space again: the same command completes everything
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "2 of 6 runs failed" in r.stderr  # the NaN variant's, as always
    assert all(done_problem(p.parent) is None for p in [*cache.rglob("DONE"), *out.rglob("DONE")])


def test_atomic_write_on_a_full_disk_names_the_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    target = tmp_path / "summary.json"
    atomic_write_text(target, "old\n")

    def full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(DiskFullError, match=f"no space to write {target} \\(No space left on device\\)"):
        atomic_write_text(target, "new\n")
    assert target.read_text() == "old\n" and not list(tmp_path.glob(".summary.json.tmp*"))
