"""The SLURM executor: the same run specs and run directories, submitted as job arrays with stage dependencies.

Three arrays, as the paper's runs were launched (DETAILS.md §7): one task per distinct SFT artifact not yet in
the cache, then one per distinct RM artifact, then one per PPO-level run that is not complete. Each array
depends on the previous one with ``afterany`` rather than ``afterok``: with ``afterok`` one failed SFT task
(say a NaN under ``dropout=model_default``) would cancel every RM and PPO task of the sweep, whereas with
``afterany`` the specs whose artifact is missing fail on their own (and rebuild it, or leave error.txt) and the
rest of the sweep goes on, as it does locally. A PPO task is ``runner.execute_spec``: the same run-dir lock,
log.txt, error.txt and DONE rules as the local runner, so a sweep can be resumed by either executor.

Artifact locks are ``flock`` locks under the cache; use a cache on a file system where flock works across
nodes (most cluster file systems do; some NFS setups do not).
"""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from nplus.ablate.runner import artifact_built, execute_spec, is_complete, load_callable
from nplus.ablate.study import RunSpec

STAGE_ORDER = ("sft", "rm", "ppo")
DEPENDENCY = "afterany"


@dataclass(frozen=True)
class SlurmOptions:
    """sbatch resources of every task (one pipeline run or one stage build per task)."""

    partition: str | None = None
    """SLURM partition (default: the cluster's)."""
    time_min: int = 24 * 60
    """Time limit of each task in minutes."""
    gpus_per_node: int = 8
    """GPUs per task (the paper used one 8-GPU node per run; use 0 or 1 for the embedded task)."""
    cpus_per_task: int = 16
    """CPU cores per task."""
    array_parallelism: int = 64
    """Tasks of one array allowed to run at once."""

    def parameters(self, stage: str, study: str) -> dict[str, Any]:
        params: dict[str, Any] = {"job_name": f"nplus-{study}-{stage}", "time": self.time_min,
                                  "cpus_per_task": self.cpus_per_task, "array_parallelism": self.array_parallelism}
        if self.gpus_per_node:
            params["gpus_per_node"] = self.gpus_per_node
        if self.partition:
            params["partition"] = self.partition
        return params


def build_stage(spec: RunSpec, cache: Path, stage: str, run_fn: str, scratch: Path, command: str) -> str:
    """An SFT or RM array task: run the pipeline up to ``stage`` (artifacts land in the cache); returns its hash."""
    load_callable(run_fn)(spec.config, scratch, cache, command=command, stop_after=stage)
    return spec.config.stage_hash(stage)


@dataclass(frozen=True)
class Task:
    stage: str
    label: str
    fn: Callable[..., Any]
    args: tuple


def stage_tasks(specs: list[RunSpec], out: Path, cache: Path, run_fn: str, command: str) -> dict[str, list[Task]]:
    """The three arrays: distinct SFT and RM artifacts still to build, then the PPO-level runs not complete."""
    todo = [s for s in specs if not is_complete(s)]
    tasks: dict[str, list[Task]] = {stage: [] for stage in STAGE_ORDER}
    for stage in ("sft", "rm"):
        seen: set[str] = set()
        for s in todo:
            key = s.config.stage_hash(stage)
            if key in seen or artifact_built(cache, stage, key):
                continue
            seen.add(key)
            scratch = Path(out) / ".stages" / stage / key
            tasks[stage].append(Task(stage, f"{stage} {key} ({s.label})", build_stage,
                                     (s, cache, stage, run_fn, scratch, command)))
    tasks["ppo"] = [Task("ppo", s.label, execute_spec, (s, cache, run_fn, command)) for s in todo]
    return tasks


def sbatch_scripts(tasks: dict[str, list[Task]], options: SlurmOptions, folder: Path, study: str) -> list[tuple[str, str]]:
    """(stage, sbatch script) for each non-empty array, with the #SBATCH lines submitit would submit."""
    from submitit.slurm.slurm import _make_sbatch_string  # submitit's own script writer (no cluster needed)

    scripts = []
    previous = None
    for stage in STAGE_ORDER:
        n = len(tasks[stage])
        if not n:
            continue
        stage_folder = Path(folder) / stage
        params = options.parameters(stage, study)
        if previous:
            # The real job id is only known after sbatch; the dry run names the stage it waits for.
            params["dependency"] = f"{DEPENDENCY}:{previous.upper()}_ARRAY_JOB_ID"
        command = " ".join([shlex.quote(sys.executable), "-u -m submitit.core._submit", shlex.quote(str(stage_folder))])
        scripts.append((stage, _make_sbatch_string(command=command, folder=stage_folder, map_count=n if n > 1 else None,
                                                   **params)))
        previous = stage
    return scripts


def submit(tasks: dict[str, list[Task]], make_executor: Callable[[str], Any], chain: str = "dependency") -> dict[str, list[Any]]:
    """Submit each stage as one batch (a SLURM array). ``chain="dependency"``: later arrays wait through sbatch
    dependencies (SlurmExecutor); ``chain="wait"``: wait for a stage's jobs before submitting the next (for
    executors without dependencies, e.g. submitit's LocalExecutor in tests)."""
    jobs: dict[str, list[Any]] = {}
    previous: list[Any] = []
    for stage in STAGE_ORDER:
        if not tasks[stage]:
            continue
        executor = make_executor(stage)
        if previous and chain == "dependency":
            array_id = str(previous[0].job_id).split("_")[0]
            executor.update_parameters(dependency=f"{DEPENDENCY}:{array_id}")
        if previous and chain == "wait":
            for job in previous:
                job.exception()  # blocks until done; a failure does not stop later stages (afterany)
        with executor.batch():
            jobs[stage] = [executor.submit(t.fn, *t.args) for t in tasks[stage]]
        previous = jobs[stage]
    return jobs


def slurm_executor_factory(folder: Path, options: SlurmOptions, study: str) -> Callable[[str], Any]:
    import submitit

    def make(stage: str) -> Any:
        ex = submitit.SlurmExecutor(folder=Path(folder) / stage)
        ex.update_parameters(**options.parameters(stage, study))
        return ex

    return make
