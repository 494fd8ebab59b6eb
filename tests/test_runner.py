"""The ablation runner: resumable, idempotent, failures contained, kill -9 safe; the SLURM executor; dry runs.

Everything except one end-to-end test uses a fake run function injected through NPLUS_ABLATE_RUN_FN
("tests.test_runner:fake_run"), which follows run_pipeline's contract: summary.json, then DONE (with the
config hash) written last. Its behaviour is chosen by the spec's details so one study can mix outcomes.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nplus.ablate.cli import AblateCmd, StatsCmd
from nplus.ablate.runner import RUN_FN_ENV, blocked_by, execute_spec, is_complete, is_ready, leaders
from nplus.ablate.slurm import SlurmOptions, sbatch_scripts, stage_tasks, submit
from nplus.ablate.study import expand, load_study
from nplus.cli import main
from nplus.rundir import RUN_OUTPUTS, atomic_write_json, file_lock, mark_done

ROOT = Path(__file__).resolve().parent.parent
FAKE = "tests.test_runner:fake_run"


# ---- the fake run function (imported by worker processes) ---------------------------------------------------


def fake_run(cfg, out_dir, cache, command=None, stop_after="ppo"):
    """Mimics run_pipeline: k2 raises, k3 hits a NaN loss, anything else succeeds after FAKE_SLEEP seconds."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if stop_after != "ppo":  # a SLURM stage task: build the artifact the way the pipeline's cache would
        mark_done(Path(cache) / stop_after / cfg.stage_hash(stop_after))
        return {}
    deadline = time.time() + float(os.environ.get("FAKE_SLEEP", "0"))
    while time.time() < deadline:
        time.sleep(0.05)
    if cfg.details.kl_estimator == "k2":
        raise RuntimeError("fake failure: the reward model exploded")
    if cfg.details.kl_estimator == "k3":
        from nplus.stages.common import NonFiniteLoss

        raise NonFiniteLoss("ppo: loss became nan at step 3")
    effect = 0.2 if cfg.details.missing_eos_penalty == "off" else 0.0
    summary = {
        "ppo.win_rate": 0.4 + effect + 0.01 * cfg.seed,
        "ppo.kl": 1.0 + 0.1 * cfg.seed,
        "seed": cfg.seed,
        "model": cfg.model.name,
        "sanity.ok": True,
        "ppo.win_rate_ci": [0.1, 0.9],
    }
    with open(out_dir / "samples.jsonl", "w") as f:
        for i in range(20):
            f.write(json.dumps({"stage": "ppo", "id": str(i), "win": int(i < 10 + 5 * (effect > 0))}) + "\n")
    atomic_write_json(out_dir / "summary.json", summary)
    print("fake run finished", flush=True)
    if os.environ.get("FAKE_LOG"):  # a library logger created on first use, as transformers' is
        lg = logging.getLogger("fake-library")
        if not lg.handlers:
            lg.addHandler(logging.StreamHandler())
        lg.warning("library warning for seed %d", cfg.seed)
    mark_done(out_dir, {"hash": cfg.hash}, RUN_OUTPUTS)
    if os.environ.get("FAKE_COUNTER"):
        with open(os.environ["FAKE_COUNTER"], "a") as f:
            f.write(f"{out_dir}\n")
    return summary


# ---- helpers --------------------------------------------------------------------------------------------------


def make_study(tmp_path: Path, variants: str, seeds: str = "1\n2\n") -> Path:
    (tmp_path / "seeds").mkdir(exist_ok=True)
    (tmp_path / "seeds" / "t.txt").write_text(seeds)
    (tmp_path / "ablations").mkdir(exist_ok=True)
    path = tmp_path / "ablations" / "t.toml"
    path.write_text('name = "t"\npreset = "smoke"\nseeds = "t"\n' + variants)
    return path


FLIP = '[[variants]]\nname = "noeos"\ndetails = { missing_eos_penalty = "off" }\n'
BOOM = '[[variants]]\nname = "boom"\ndetails = { kl_estimator = "k2" }\n'
NAN = '[[variants]]\nname = "nan"\ndetails = { kl_estimator = "k3" }\n'


@pytest.fixture
def fake(monkeypatch, tmp_path):
    monkeypatch.setenv(RUN_FN_ENV, FAKE)
    monkeypatch.setenv("FAKE_COUNTER", str(tmp_path / "counter.txt"))
    monkeypatch.setenv("FAKE_SLEEP", "0")
    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # worker and submitit subprocesses import tests.test_runner
    return tmp_path / "counter.txt"


def counts(counter: Path) -> dict[str, int]:
    lines = counter.read_text().splitlines() if counter.exists() else []
    return {line: lines.count(line) for line in lines}


# ---- local runner with the fake -------------------------------------------------------------------------------


def test_sweep_completes_then_reruns_nothing(tmp_path, fake, capsys):
    study = make_study(tmp_path, FLIP)
    out = tmp_path / "runs"
    assert AblateCmd(study, out=out, workers=2, cache=tmp_path / "cache").run() == 0
    text = capsys.readouterr().out
    assert "0 complete, 4 to run" in text
    assert sorted(counts(fake).values()) == [1, 1, 1, 1]
    for d in out.glob("*/seed=*"):
        assert (d / "DONE").exists() and "fake run finished" in (d / "log.txt").read_text()
    meta = json.loads((out / "study.json").read_text())
    assert meta["study"]["name"] == "t" and len(meta["specs"]) == 4
    header = (out / "results.csv").read_text().splitlines()[0]
    assert header == "study,variant,seed,size,metric,value"
    stats_header = (out / "stats.csv").read_text().splitlines()[0].split(",")
    for col in (
        "variant",
        "size",
        "metric",
        "mean",
        "std",
        "n",
        "ci_low",
        "ci_high",
        "diff",
        "diff_ci_low",
        "p_t",
        "p_wilcoxon",
        "p_holm",
        "verdict",
        "boot_ci_low",
        "boot_diff_ci_low",
    ):
        assert col in stats_header

    assert AblateCmd(study, out=out, workers=2, cache=tmp_path / "cache").run() == 0
    assert "4 complete, 0 to run" in capsys.readouterr().out
    assert sorted(counts(fake).values()) == [1, 1, 1, 1]


def test_failures_are_contained(tmp_path, fake, capsys):
    study = make_study(tmp_path, FLIP + BOOM + NAN, seeds="1\n")
    out = tmp_path / "runs"
    code = AblateCmd(study, out=out, workers=2, cache=tmp_path / "cache").run()
    captured = capsys.readouterr()
    assert code == 1
    assert "2 of 4 runs failed" in captured.err and "NonFiniteLoss: ppo: loss became nan" in captured.err
    for variant, message in (("boom", "RuntimeError: fake failure"), ("nan", "NonFiniteLoss: ppo: loss became nan")):
        d = out / variant / "seed=1"
        err = (d / "error.txt").read_text()
        assert err.startswith(message) and "Traceback" in err
        assert not (d / "DONE").exists()
    assert all((out / variant / "seed=1" / "DONE").exists() for variant in ("baseline", "noeos"))
    failures = (out / "failures.csv").read_text()
    assert "fake failure" in failures and "NonFiniteLoss" in failures
    assert "boom" not in (out / "results.csv").read_text()


def test_rerun_retries_only_failed_runs(tmp_path, fake, capsys):
    study = make_study(tmp_path, FLIP + BOOM)
    out = tmp_path / "runs"
    assert AblateCmd(study, out=out, workers=2, cache=tmp_path / "cache").run() == 1
    assert AblateCmd(study, out=out, workers=2, cache=tmp_path / "cache").run() == 1
    assert "4 complete, 2 to run" in capsys.readouterr().out
    assert sorted(counts(fake).values()) == [1, 1, 1, 1]
    assert (out / "boom" / "seed=1" / "log.txt").read_text().count("==== ") == 2  # log appended per attempt


def test_locked_and_stale_specs(tmp_path, fake, capsys):
    study = load_study(make_study(tmp_path, FLIP, seeds="1\n"))
    out = tmp_path / "runs"
    specs = expand(study, out)
    held, stale = specs
    # a DONE written for another config is stale: redone
    stale.run_dir.mkdir(parents=True)
    mark_done(stale.run_dir, {"hash": "someotherhash"})
    assert not is_complete(stale)
    with file_lock(held.run_dir / ".lock", blocking=False) as taken:  # another runner is on this spec
        assert taken
        code = AblateCmd(study.path, out=out, workers=1, cache=tmp_path / "cache").run()
    captured = capsys.readouterr()
    assert code == 3 and "locked by another runner" in captured.err
    assert not (held.run_dir / "DONE").exists()
    assert is_complete(stale)
    assert AblateCmd(study.path, out=out, workers=1, cache=tmp_path / "cache").run() == 0


def test_execute_spec_writes_log_and_error(tmp_path, fake):
    spec = expand(load_study(make_study(tmp_path, BOOM, seeds="5\n")), tmp_path / "runs")[1]
    outcome = execute_spec(spec, tmp_path / "cache", FAKE, "cmd")
    assert outcome.status == "failed" and outcome.error.startswith("RuntimeError: fake failure")
    assert "Traceback" in (spec.run_dir / "log.txt").read_text()


def test_a_logger_created_in_one_spec_writes_to_the_next_specs_log(tmp_path, fake, monkeypatch):
    """Two specs in one worker process: the handler made during the first must not hold its closed log."""
    monkeypatch.setenv("FAKE_LOG", "1")
    specs = expand(load_study(make_study(tmp_path, "")), tmp_path / "runs")
    for spec in specs:
        assert execute_spec(spec, tmp_path / "cache", FAKE, "cmd").status == "ok"
    second = (specs[1].run_dir / "log.txt").read_text()
    assert f"library warning for seed {specs[1].seed}" in second and "Logging error" not in second


def test_a_committed_base_model_blocks_no_run(tmp_path):
    """demo's base (nplus/bases/tiny) is an input: every seed's baseline may start at once; flips of a seed still
    wait for that seed's SFT and RM."""
    specs = expand(load_study(ROOT / "ablations" / "demo.toml"), tmp_path)
    lead = leaders(specs)
    seeds = {s.seed for s in specs}
    firsts = [i for i, s in enumerate(specs) if s.variant == "baseline"]
    assert len(firsts) == len(seeds) and all(blocked_by(specs, i, lead) == [] for i in firsts)
    flip = next(i for i, s in enumerate(specs) if s.variant != "baseline")
    assert [d[0] for d in blocked_by(specs, flip, lead)] == ["sft", "rm"]


def test_scheduling_builds_each_artifact_once_first(tmp_path):
    specs = expand(load_study(ROOT / "ablations" / "smoke.toml"), tmp_path)
    # order: baseline seed 1, baseline seed 2, flip seed 1, flip seed 2
    lead = leaders(specs)
    assert set(lead.values()) == {0, 1}  # the baselines build everything; base is shared across seeds
    assert blocked_by(specs, 0, lead) == []
    assert [d[0] for d in blocked_by(specs, 1, lead)] == ["base"]
    assert [(d[0], d[2]) for d in blocked_by(specs, 2, lead)] == [("base", 0), ("sft", 0), ("rm", 0)]
    cache = tmp_path / "cache"
    assert not is_ready(blocked_by(specs, 1, lead), set(), cache)
    mark_done(cache / "base" / specs[0].config.stage_hash("base"))  # the base model is built: seed 2 may start
    assert is_ready(blocked_by(specs, 1, lead), set(), cache)
    assert not is_ready(blocked_by(specs, 2, lead), set(), cache)
    assert is_ready(blocked_by(specs, 2, lead), {0}, cache)  # its leader finished (even if it failed)


def test_kill_9_then_resume(tmp_path, fake, monkeypatch, capsys):
    """Kill the runner mid-sweep (SIGKILL, no cleanup), resume: every run present exactly once."""
    study = make_study(tmp_path, FLIP + '[[variants]]\nname = "b"\ndetails = { adam_eps = "1e-8" }\n')
    out = tmp_path / "runs"
    cmd = [
        sys.executable,
        "-m",
        "nplus.cli",
        "ablate",
        str(study),
        "--out",
        str(out),
        "--workers",
        "2",
        "--cache",
        str(tmp_path / "cache"),
    ]
    env = {**os.environ, "FAKE_SLEEP": "1.0"}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while not list(out.glob("*/seed=*/DONE")) and time.time() < deadline:
        time.sleep(0.1)
    time.sleep(0.3)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    run_dirs = sorted(out.glob("*/seed=*"))
    # orphaned workers notice the dead runner and exit, releasing their run-dir locks
    deadline = time.time() + 10
    while time.time() < deadline:
        free = 0
        for d in run_dirs:
            with file_lock(d / ".lock", blocking=False) as taken:
                free += taken
        if free == len(run_dirs):
            break
        time.sleep(0.2)
    done_before = len(list(out.glob("*/seed=*/DONE")))
    assert 1 <= done_before < 6, "the kill should land mid-sweep"
    monkeypatch.chdir(ROOT)
    assert main(cmd[3:]) == 0  # the same command, resumed (in-process: no second interpreter start-up)
    assert f"{done_before} complete, {6 - done_before} to run" in capsys.readouterr().out
    dirs = sorted(out.glob("*/seed=*"))
    assert len(dirs) == 6
    for d in dirs:
        assert (d / "DONE").exists() and json.loads((d / "summary.json").read_text())["seed"] in (1, 2)
        assert not (d / "error.txt").exists()
    assert counts(fake) == {str(d): 1 for d in dirs}, "no spec completed twice"


# ---- dry runs and SLURM ---------------------------------------------------------------------------------------


def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path, fake, capsys):
    # a PPO-only flip (shares SFT and RM) and an all-stage flip (needs its own), 3 seeds
    study = tmp_path / "plan_test.toml"
    study.write_text(
        'name = "plan_test"\npreset = "demo"\nseeds = "default"\n'
        '[[variants]]\nname = "missing_eos_penalty=off"\ndetails = { missing_eos_penalty = "off" }\n'
        '[[variants]]\nname = "dropout=model_default"\ndetails = { dropout = "model_default" }\n'
    )
    out, cache = tmp_path / "runs" / "demo", tmp_path / "cache"
    specs = expand(load_study(study), out)
    # one measured SFT artifact: the estimate uses it
    sft = cache / "sft" / specs[0].config.stage_hash("sft")
    atomic_write_json(sft / "config.json", specs[0].config.stage_dict("sft"))
    atomic_write_json(sft / "eval.json", {"wall_time_s": 42.0})
    mark_done(sft)
    before = sorted(tmp_path.rglob("*"))
    assert AblateCmd(study, out=out, workers=2, cache=cache, dry_run=True).run() == 0
    text = capsys.readouterr().out
    assert "PPO-level runs: 9 (0 complete, 9 to run)" in text
    assert "sft 6 (1 in cache), rm 6 (0 in cache)" in text
    assert "missing_eos_penalty=off" in text and "shares base, SFT and RM" in text
    assert "dropout=model_default" in text and "new SFT and RM" in text
    assert "sft: measured (1 past runs)" in text and "ppo: estimate (demo default" in text
    assert sorted(tmp_path.rglob("*")) == before and not out.exists()


def test_slurm_dry_run_prints_sbatch_arrays(tmp_path, fake, capsys):
    study = ROOT / "ablations" / "smoke.toml"
    out = tmp_path / "runs"
    cmd = AblateCmd(
        study,
        out=out,
        cache=tmp_path / "cache",
        dry_run=True,
        executor="slurm",
        slurm=SlurmOptions(partition="gpu", gpus_per_node=1),
    )
    assert cmd.run() == 0
    text = capsys.readouterr().out
    assert text.count("#!/bin/bash") == 3
    assert "#SBATCH --array=0-1%2" in text and "#SBATCH --array=0-3%4" in text  # 2 SFT/RM artifacts, 4 runs
    assert "#SBATCH --dependency=afterany:SFT_ARRAY_JOB_ID" in text
    assert "#SBATCH --dependency=afterany:RM_ARRAY_JOB_ID" in text
    assert "#SBATCH --partition=gpu" in text and "#SBATCH --gpus-per-node=1" in text
    assert not out.exists()


def test_slurm_stages_with_submitit_local_executor(tmp_path, fake):
    import submitit

    study = load_study(make_study(tmp_path, FLIP))
    out, cache = tmp_path / "runs", tmp_path / "cache"
    specs = expand(study, out)
    tasks = stage_tasks(specs, out, cache, FAKE, "test")
    assert [len(tasks[s]) for s in ("sft", "rm", "ppo")] == [2, 2, 4]
    scripts = sbatch_scripts(tasks, SlurmOptions(gpus_per_node=0), tmp_path / "slurm", "t")
    assert [stage for stage, _ in scripts] == ["sft", "rm", "ppo"]

    def make(stage):
        ex = submitit.LocalExecutor(folder=tmp_path / "slurm" / stage)
        ex.update_parameters(timeout_min=5)
        return ex

    jobs = submit(tasks, make, chain="wait")
    outcomes = [j.result() for j in jobs["ppo"]]
    assert sorted(o.status for o in outcomes) == ["ok"] * 4
    assert all(is_complete(s) for s in specs)
    # everything built: a second plan has nothing left to submit
    assert [len(v) for v in stage_tasks(specs, out, cache, FAKE, "test").values()] == [0, 0, 0]


def test_stats_command(tmp_path, fake, capsys):
    study = make_study(tmp_path, FLIP)
    out = tmp_path / "runs"
    assert AblateCmd(study, out=out, workers=1, cache=tmp_path / "cache").run() == 0
    (out / "stats.csv").unlink()
    assert StatsCmd(out).run() == 0
    assert (out / "stats.csv").exists() and "verdicts" in capsys.readouterr().out
    assert StatsCmd(tmp_path / "missing").run() == 2


# ---- the one end-to-end test with the real pipeline -----------------------------------------------------------


@pytest.mark.slow
def test_smoke_study_end_to_end(tmp_path, monkeypatch, capsys):
    """`nplus ablate ablations/smoke.toml --out DIR --workers 2` with the real pipeline, then again, then --dry-run."""
    monkeypatch.delenv(RUN_FN_ENV, raising=False)
    monkeypatch.chdir(ROOT)
    out, cache = tmp_path / "smoke", tmp_path / "cache"
    argv = ["ablate", "ablations/smoke.toml", "--out", str(out), "--workers", "2", "--cache", str(cache)]
    assert main(argv) == 0, capsys.readouterr()
    assert "0 complete, 4 to run" in capsys.readouterr().out
    results = (out / "results.csv").read_text().splitlines()
    assert results[0] == "study,variant,seed,size,metric,value" and any(",ppo.win_rate," in r for r in results)
    stats = (out / "stats.csv").read_text().splitlines()
    assert stats[0].startswith("study,variant,size,metric,direction,n,mean,std,ci_low,ci_high")
    assert any(r.startswith("smoke,missing_eos_penalty=off,,ppo.win_rate,") for r in stats)
    for d in out.glob("*/seed=*"):
        assert (d / "DONE").exists() and (d / "log.txt").exists() and not (d / "error.txt").exists()
    assert main(argv) == 0
    assert "4 complete, 0 to run" in capsys.readouterr().out
    before = sorted(p.stat().st_mtime for p in out.rglob("*"))
    assert main(argv + ["--dry-run"]) == 0
    plan = capsys.readouterr().out
    assert "PPO-level runs: 4 (4 complete, 0 to run)" in plan and "sft 2 (2 in cache), rm 2 (2 in cache)" in plan
    assert sorted(p.stat().st_mtime for p in out.rglob("*")) == before
