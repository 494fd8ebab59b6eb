"""The SLURM executor with several processes per run: the paper's grid asks for one 8-GPU node and 8 tasks per
job, each task exports the torch.distributed environment before the pipeline starts, and the arrays keep their
SFT → RM → PPO `afterany` chain.

Nothing here talks to a cluster: the dry run prints sbatch scripts, submission goes to a stand-in for
submitit.SlurmExecutor (which checks the parameter names and values with submitit's own sbatch writer), and the
multi-process path runs for real with submitit's LocalExecutor (2 tasks per job, gloo on CPU) and a fake run
function that joins the process group the way run_pipeline does.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest

from nplus.ablate.cli import AblateCmd
from nplus.ablate.runner import is_complete
from nplus.ablate.slurm import (
    SlurmOptions,
    Task,
    by_processes,
    execute_spec_task,
    sbatch_scripts,
    slurm_executor_factory,
    stage_tasks,
    submit,
)
from nplus.ablate.study import expand, load_study
from nplus.rundir import atomic_write_json, mark_done

ROOT = Path(__file__).resolve().parent.parent
PAPER_STUDY = ROOT / "ablations" / "paper_scaling.toml"
RANKED_FAKE = "tests.test_slurm_paper:ranked_fake_run"


def _tree(path: Path) -> list[Path]:
    return sorted(path.rglob("*"))


def _scripts(text: str) -> list[str]:
    return ["#!/bin/bash" + s for s in text.split("#!/bin/bash")[1:]]


# ---- the paper grid: dry run ------------------------------------------------------------------------------------


@pytest.fixture
def no_submission(monkeypatch):
    """Any attempt to submit fails the test."""
    import submitit

    import nplus.ablate.slurm as slurm

    def refuse(*args, **kwargs):
        raise AssertionError("a dry run submitted something")

    monkeypatch.setattr(slurm, "submit", refuse)
    monkeypatch.setattr(slurm, "slurm_executor_factory", refuse)
    monkeypatch.setattr(submitit.SlurmExecutor, "_submit_command", refuse)


def test_paper_dry_run_asks_for_eight_tasks_per_job(tmp_path, capsys, no_submission):
    out, cache = tmp_path / "runs", tmp_path / "cache"
    before = _tree(tmp_path)
    assert AblateCmd(PAPER_STUDY, out=out, cache=cache, dry_run=True, executor="slurm").run() == 0
    text = capsys.readouterr().out
    assert "PPO-level runs: 12 (0 complete, 12 to run)" in text  # 3 sizes × 4 seeds
    scripts = _scripts(text)
    assert len(scripts) == 3  # one array per stage: every paper size runs 8 processes
    stages = ("sft", "rm", "ppo")
    for stage, script in zip(stages, scripts):
        assert f"#SBATCH --job-name=nplus-paper_scaling-{stage}" in script
        assert "#SBATCH --array=0-11%12" in script  # 12 SFT and 12 RM artifacts (seed is upstream), 12 runs
        assert "#SBATCH --nodes=1" in script
        assert "#SBATCH --ntasks-per-node=8" in script
        assert "#SBATCH --gpus-per-node=8" in script
        assert "#SBATCH --cpus-per-task=10" in script
        assert re.search(r"^srun .*--kill-on-bad-exit=1 .*-m submitit\.core\._submit", script, re.M), script
    assert "--dependency" not in scripts[0]
    assert "#SBATCH --dependency=afterany:SFT_ARRAY_JOB_ID\n" in scripts[1]
    assert "#SBATCH --dependency=afterany:RM_ARRAY_JOB_ID\n" in scripts[2]
    assert _tree(tmp_path) == before and not out.exists() and not cache.exists()  # nothing written


def test_paper_dry_run_command_line(tmp_path):
    """The documented command, as a subprocess: offline, quick, nothing written."""
    closed = "http://127.0.0.1:9"
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HTTPS_PROXY": closed,
        "https_proxy": closed,
        "HTTP_PROXY": closed,
        "http_proxy": closed,
        "PATH": os.path.dirname(sys.executable),
    }  # no sbatch on PATH
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "nplus.cli",
            "ablate",
            "ablations/paper_scaling.toml",
            "--executor",
            "slurm",
            "--dry-run",
            "--out",
            str(tmp_path / "runs"),
            "--cache",
            str(tmp_path / "cache"),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("#SBATCH --ntasks-per-node=8") == 3
    assert "afterany:SFT_ARRAY_JOB_ID" in r.stdout and "afterany:RM_ARRAY_JOB_ID" in r.stdout
    assert list(tmp_path.iterdir()) == []


def test_slurm_parameters():
    opts = SlurmOptions()
    p8 = opts.parameters("ppo", "s", 8)
    assert (p8["nodes"], p8["ntasks_per_node"], p8["gpus_per_node"]) == (1, 8, 8)
    assert p8["srun_args"] == ["--kill-on-bad-exit=1"]
    p1 = opts.parameters("ppo", "s")  # the embedded task: one process, one GPU
    assert (p1["ntasks_per_node"], p1["gpus_per_node"]) == (1, 1) and "srun_args" not in p1
    assert "gpus_per_node" not in SlurmOptions(gpus_per_node=0).parameters("ppo", "s", 2)  # CPU processes
    with pytest.raises(ValueError, match="fewer than the 8 processes"):
        SlurmOptions(gpus_per_node=4).parameters("ppo", "s", 8)


# ---- submission: arrays, dependencies and resources -------------------------------------------------------------


class FakeJob:
    def __init__(self, job_id: str):
        self.job_id = job_id


class FakeSlurmExecutor:
    """Stands in for submitit.SlurmExecutor: checks parameters with submitit's own code, numbers the arrays."""

    arrays: list["FakeSlurmExecutor"] = []

    def __init__(self, folder):
        self.folder, self.parameters, self.submitted = Path(folder), {}, []

    def update_parameters(self, **kwargs):
        from submitit.slurm.slurm import SlurmExecutor, _make_sbatch_string  # the real class, not the stand-in

        unknown = set(kwargs) - SlurmExecutor._valid_parameters()
        assert not unknown, unknown
        self.parameters.update(kwargs)
        _make_sbatch_string(command="true", folder=self.folder, **self.parameters)  # raises on bad values

    @contextmanager
    def batch(self):
        yield
        FakeSlurmExecutor.arrays.append(self)
        self.array_id = str(1000 + len(FakeSlurmExecutor.arrays))

    def submit(self, fn, *args):
        self.submitted.append((fn, args))
        job = FakeJob(f"{1001 + len(FakeSlurmExecutor.arrays)}_{len(self.submitted) - 1}")
        return job


def _mixed_study(tmp_path: Path) -> Path:
    """The paper grid at 1B plus a variant on 4 processes: two arrays per stage."""
    path = tmp_path / "ablations" / "mixed.toml"
    path.parent.mkdir(parents=True)
    path.write_text(
        'name = "mixed"\npreset = "paper"\nseeds = "paper"\nsizes = ["1b"]\n'
        '[[variants]]\nname = "four-gpus"\nhparams = { processes = 4 }\n'
    )
    return path


def test_submit_groups_by_processes_and_chains_every_array(tmp_path, monkeypatch):
    import submitit

    monkeypatch.setattr(submitit, "SlurmExecutor", FakeSlurmExecutor)
    FakeSlurmExecutor.arrays = []
    study = load_study(_mixed_study(tmp_path))
    out, cache = tmp_path / "runs", tmp_path / "cache"
    specs = expand(study, out)
    tasks = stage_tasks(specs, out, cache, RANKED_FAKE, "test")
    assert {s: sorted(by_processes(tasks[s])) for s in tasks} == {"sft": [4, 8], "rm": [4, 8], "ppo": [4, 8]}
    jobs = submit(tasks, slurm_executor_factory(out / ".slurm", SlurmOptions(partition="gpu"), study.name))
    arrays = FakeSlurmExecutor.arrays
    assert [a.folder.name for a in arrays] == ["sft", "sft", "rm", "rm", "ppo", "ppo"]
    for a in arrays:
        n = a.parameters["ntasks_per_node"]
        assert a.parameters["gpus_per_node"] == n and a.parameters["nodes"] == 1 and n in (4, 8)
        assert a.parameters["partition"] == "gpu" and a.parameters["srun_args"] == ["--kill-on-bad-exit=1"]
        assert all(args[0].config.processes == n for _, args in a.submitted)  # each spec in its own size of job
        assert len(a.submitted) == 4  # 4 seeds
    # every array of a stage waits for every array of the stage before, by its real array id
    assert "dependency" not in arrays[0].parameters and "dependency" not in arrays[1].parameters
    for later, earlier in ((arrays[2:4], arrays[0:2]), (arrays[4:6], arrays[2:4])):
        ids = [e.array_id for e in earlier]
        for a in later:
            assert a.parameters["dependency"] == f"afterany:{ids[0]}:{ids[1]}"
    assert [len(jobs[s]) for s in ("sft", "rm", "ppo")] == [8, 8, 8]
    # the task functions export the distributed environment first
    assert {fn.__name__ for a in arrays for fn, _ in a.submitted} == {"build_stage_task", "execute_spec_task"}
    # and the dry run names both arrays of a stage in the dependency
    text = "".join(s for _, s in sbatch_scripts(tasks, SlurmOptions(), out / ".slurm", study.name))
    assert text.count("#SBATCH --ntasks-per-node=4") == 3 and text.count("#SBATCH --ntasks-per-node=8") == 3
    assert text.count("#SBATCH --dependency=afterany:SFT_P4_ARRAY_JOB_ID:SFT_P8_ARRAY_JOB_ID") == 2
    assert text.count("#SBATCH --dependency=afterany:RM_P4_ARRAY_JOB_ID:RM_P8_ARRAY_JOB_ID") == 2


def test_a_task_outside_a_submitit_job_runs_as_one_process(tmp_path, monkeypatch):
    """Called directly (no submitit job), the task is the local runner's execute_spec: nothing exported."""
    monkeypatch.delenv("SUBMITIT_EXECUTOR", raising=False)
    for var in ("RANK", "WORLD_SIZE", "MASTER_ADDR"):
        monkeypatch.delenv(var, raising=False)
    study = load_study(ROOT / "ablations" / "smoke.toml")
    spec = expand(study, tmp_path / "runs")[0]
    outcome = execute_spec_task(spec, tmp_path / "cache", "tests.test_runner:fake_run", "test")
    assert outcome.status == "ok" and is_complete(spec)
    assert "RANK" not in os.environ and "WORLD_SIZE" not in os.environ


# ---- the multi-process path for real: submitit LocalExecutor, 2 tasks per job -----------------------------------


def ranked_fake_run(cfg, out_dir, cache, command=None, stop_after="ppo"):
    """Joins the process group as run_pipeline does (nplus.stages.common.dist), checks the world size against
    cfg.processes, does one collective (a rank that did not join would hang it), and writes like the main
    process would: artifacts and DONE on rank 0 only. kl_estimator=k2 fails on every rank."""
    from nplus.stages.common import dist

    D = dist()
    assert D.world == cfg.processes, (D.world, cfg.processes)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    mean_rank = D.mean(float(D.rank))
    atomic_write_json(
        out_dir / f"rank{D.rank}.json",
        {
            "rank": D.rank,
            "world": D.world,
            "mean_rank": mean_rank,
            "stop_after": stop_after,
            **{k: os.environ.get(k) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")},
        },
    )
    if cfg.details.kl_estimator == "k2" and stop_after == "ppo":
        raise RuntimeError(f"fake failure on rank {D.rank}")
    D.barrier()
    if not D.is_main:
        return {}
    if stop_after != "ppo":
        mark_done(Path(cache) / stop_after / cfg.stage_hash(stop_after))
        return {}
    atomic_write_json(out_dir / "summary.json", {"ppo.win_rate": 0.5, "seed": cfg.seed})
    mark_done(out_dir, {"hash": cfg.hash})
    return {"ppo.win_rate": 0.5}


def _two_process_study(tmp_path: Path) -> Path:
    (tmp_path / "seeds").mkdir()
    (tmp_path / "seeds" / "one.txt").write_text("7\n")
    path = tmp_path / "ablations" / "twoproc.toml"
    path.parent.mkdir()
    path.write_text(
        'name = "twoproc"\npreset = "smoke"\nseeds = "one"\n'
        '[hparams]\nprocesses = 2\n"sft.micro_batch" = 8\n"rm.micro_batch" = 8\n"ppo.micro_batch" = 8\n'
        '[[variants]]\nname = "fails"\ndetails = { kl_estimator = "k2" }\n'
    )
    return path


@pytest.mark.slow
def test_two_process_jobs_with_submitit_local_executor(tmp_path, monkeypatch):
    import submitit

    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # the job processes import this module by name
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("NPLUS_PROGRESS", "0")
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(var, raising=False)
    study = load_study(_two_process_study(tmp_path))
    out, cache = tmp_path / "runs", tmp_path / "cache"
    specs = expand(study, out)
    ok, failing = (next(s for s in specs if s.variant == v) for v in ("baseline", "fails"))
    tasks = stage_tasks(specs, out, cache, RANKED_FAKE, "test")
    assert [len(tasks[s]) for s in ("sft", "rm", "ppo")] == [1, 1, 2]  # the failing variant shares SFT and RM
    assert {t.processes for ts in tasks.values() for t in ts} == {2}

    def make(stage, processes=1):
        ex = submitit.LocalExecutor(folder=tmp_path / "slurm" / stage)
        ex.update_parameters(timeout_min=5, tasks_per_node=processes)
        return ex

    jobs = submit(tasks, make, chain="wait")
    # SFT and RM: both ranks of each job ran the stage, in one process group of 2
    for stage in ("sft", "rm"):
        assert jobs[stage][0].exception() is None
        scratch = out / ".stages" / stage / ok.config.stage_hash(stage)
        ranks = [json.loads((scratch / f"rank{r}.json").read_text()) for r in (0, 1)]
        assert [(x["rank"], x["world"], x["RANK"], x["WORLD_SIZE"], x["LOCAL_RANK"]) for x in ranks] == [
            (0, 2, "0", "2", "0"),
            (1, 2, "1", "2", "1"),
        ]
        assert all(x["mean_rank"] == 0.5 for x in ranks)  # the collective saw both ranks
        assert ranks[0]["MASTER_PORT"] == ranks[1]["MASTER_PORT"] is not None
        assert (cache / stage / ok.config.stage_hash(stage) / "DONE").exists()
    # PPO, the good run: rank 0 ran execute_spec (log.txt, DONE), rank 1 joined the same call
    job = jobs["ppo"][[t.args[0].variant for t in tasks["ppo"]].index("baseline")]
    results = job.results()
    assert [o.status for o in results] == ["ok", "ok"]
    assert is_complete(ok) and (ok.run_dir / "log.txt").exists() and not (ok.run_dir / "error.txt").exists()
    assert all(json.loads((ok.run_dir / f"rank{r}.json").read_text())["mean_rank"] == 0.5 for r in (0, 1))
    # PPO, the failing run: error.txt, no DONE, the job reports the failure
    bad = jobs["ppo"][[t.args[0].variant for t in tasks["ppo"]].index("fails")]
    assert bad.exception() is not None
    assert (failing.run_dir / "error.txt").exists() and not is_complete(failing)
    assert "fake failure" in (failing.run_dir / "error.txt").read_text()
    # a complete run: rank 0 reports it complete and rank 1 does not start the pipeline (no hang)
    again = submit(
        {"sft": [], "rm": [], "ppo": [Task("ppo", ok.label, execute_spec_task, (ok, cache, RANKED_FAKE, "test"), 2)]},
        make,
        chain="wait",
    )
    assert [o.status for o in again["ppo"][0].results()] == ["complete", "skipped"]
