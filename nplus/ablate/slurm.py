"""The SLURM executor: the same run specs and run directories, submitted as job arrays with stage dependencies.

Three arrays, as the paper's runs were launched (DETAILS.md §7): one job per distinct SFT artifact not yet in
the cache, then one per distinct RM artifact, then one per PPO-level run that is not complete. Each array
depends on the previous one with ``afterany`` rather than ``afterok``: with ``afterok`` one failed SFT job
(say a NaN under ``dropout=model_default``) would cancel every RM and PPO job of the sweep, whereas with
``afterany`` the specs whose artifact is missing fail on their own (and rebuild it, or leave error.txt) and the
rest of the sweep goes on, as it does locally. A PPO job runs ``runner.execute_spec`` (on rank 0): the same
run-dir lock, log.txt, error.txt and DONE rules as the local runner, so a sweep can be resumed by either executor.

One run is one job of ``cfg.processes`` SLURM tasks on one node (8 for the paper presets: one 8-GPU node per run,
DETAILS.md §7), one task per data-parallel process. Each task exports the torch.distributed environment that
submitit derives from SLURM (``TorchDistributedEnvironment``: RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, ...)
before the pipeline starts, so accelerate's ``Accelerator`` sees the world size that ``run_pipeline`` checks
against ``cfg.processes``. Tasks that need different numbers of processes go into separate arrays of the same
stage; every array of a stage depends on every array of the stage before. Where the paper's scripts ran one SLURM
task that called ``accelerate launch`` (which then spawned 8 processes), here SLURM starts the 8 processes itself
and submitit pickles the same Python call into each of them; the result is the same process group.

Artifact locks are ``flock`` locks under the cache; use a cache on a file system where flock works across
nodes (most cluster file systems do; some NFS setups do not).
"""

from __future__ import annotations

import inspect
import shlex
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from nplus.ablate.runner import Outcome, artifact_built, execute_spec, is_complete, load_callable
from nplus.ablate.study import RunSpec
from nplus.rundir import atomic_write_text

STAGE_ORDER = ("sft", "rm", "ppo")
DEPENDENCY = "afterany"


@dataclass(frozen=True)
class SlurmOptions:
    """sbatch resources of every job (one pipeline run or one stage build per job, one SLURM task per process)."""

    partition: str | None = None
    """SLURM partition (default: the cluster's)."""
    time_min: int = 24 * 60
    """Time limit of each job in minutes."""
    gpus_per_node: int | None = None
    """GPUs per job (one node per run). Default: one per process of the run, i.e. the config's `processes` (8 for
    the paper presets, 1 for the embedded task); 0 runs on CPUs (gloo)."""
    cpus_per_task: int = 10
    """CPU cores per process (a SLURM task is one process; a paper run is 8 tasks, 80 cores, as sfd's
    --cpus-per-gpu=10)."""
    array_parallelism: int = 64
    """Jobs of one array allowed to run at once."""

    def parameters(self, stage: str, study: str, processes: int = 1) -> dict[str, Any]:
        """sbatch parameters (submitit.SlurmExecutor names) of one job running ``processes`` processes."""
        gpus = processes if self.gpus_per_node is None else self.gpus_per_node
        if 0 < gpus < processes:
            # Two ranks on one GPU make NCCL fail at start-up ("duplicate GPU"); say so before submitting.
            raise ValueError(
                f"--slurm.gpus-per-node={gpus} is fewer than the {processes} processes of a run "
                f"(one GPU per process, or 0 for CPU processes)"
            )
        params: dict[str, Any] = {
            "job_name": f"nplus-{study}-{stage}",
            "time": self.time_min,
            "nodes": 1,
            "ntasks_per_node": processes,
            "cpus_per_task": self.cpus_per_task,
            "array_parallelism": self.array_parallelism,
        }
        if gpus:
            params["gpus_per_node"] = gpus
        if processes > 1:
            # One failed rank leaves the others blocked in a collective until the time limit; end the whole
            # job step instead (a failing task raises, so it exits non-zero).
            params["srun_args"] = ["--kill-on-bad-exit=1"]
        if self.partition:
            params["partition"] = self.partition
        return params


def build_stage(spec: RunSpec, cache: Path, stage: str, run_fn: str, scratch: Path, command: str) -> str:
    """An SFT or RM array task: run the pipeline up to ``stage`` (artifacts land in the cache); returns its hash."""
    load_callable(run_fn)(spec.config, scratch, cache, command=command, stop_after=stage)
    return spec.config.stage_hash(stage)


# ---- one job = cfg.processes SLURM tasks -----------------------------------------------------------------------


def export_torch_distributed() -> int:
    """In a submitit job of several tasks, export RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR and
    MASTER_PORT for this task and return the number of tasks; otherwise change nothing and return 1.

    A single-task job exports nothing, so it runs exactly as under the local runner (accelerate then sees no
    distributed environment). CUDA_VISIBLE_DEVICES is left alone: every task sees the node's GPUs and accelerate
    picks ``cuda:LOCAL_RANK``, as under ``accelerate launch``/torchrun (on clusters that bind one GPU per task it
    takes ``LOCAL_RANK % device_count`` = the one visible GPU). Values already in the environment are
    overwritten: the job's own topology is the truth, not what the submitting shell had exported.
    """
    import submitit

    try:
        env = submitit.JobEnvironment()
    except RuntimeError:  # not inside a submitit job (called directly)
        return 1
    if env.num_tasks <= 1:
        return 1
    submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
    return env.num_tasks


def build_stage_task(spec: RunSpec, cache: Path, stage: str, run_fn: str, scratch: Path, command: str) -> str:
    """An SFT/RM array task on every rank of its job: the pipeline coordinates the ranks itself (main-process
    writes, barriers around the artifact)."""
    export_torch_distributed()
    try:
        return build_stage(spec, cache, stage, run_fn, scratch, command)
    except Exception:
        traceback.print_exc()
        raise  # a non-zero exit ends the job step (--kill-on-bad-exit), so no rank waits for a dead one


# Rank 0 runs a PPO-level spec through ``execute_spec`` (run-dir lock, completeness check, log.txt, error.txt,
# DONE), which takes the run function by name. The other ranks must start the pipeline only if rank 0 actually
# does (it may find the run complete, or locked by another runner), and must not start it otherwise or they
# would wait forever for rank 0 in the first collective. So rank 0 runs a named wrapper that broadcasts "go"
# before calling the real run function; if execute_spec returns without having called it, rank 0 broadcasts
# "no go". This is per process state: one task process executes one spec.
_GO: dict[str, Any] = {"run_fn": None, "announced": False}


def _broadcast_go(go: bool | None) -> bool:
    """Rank 0 sends ``go``; every other rank receives it."""
    import torch.distributed as torch_dist

    box = [go]
    torch_dist.broadcast_object_list(box, src=0)
    return bool(box[0])


def _announce_then_run(cfg, out_dir, cache, command=None, **kwargs):
    """Rank 0's run function inside ``execute_spec``: let the other ranks start, then run the real one."""
    _GO["announced"] = True
    _broadcast_go(True)
    return load_callable(_GO["run_fn"])(cfg, out_dir, cache, command=command, **kwargs)


def execute_spec_task(spec: RunSpec, cache: Path, run_fn: str, command: str) -> Outcome:
    """A PPO array task. One process: ``execute_spec`` itself. Several: rank 0 runs ``execute_spec`` (lock, logs,
    error.txt, DONE) and the other ranks join the same pipeline call; returns each rank's outcome."""
    world = export_torch_distributed()
    if world == 1:
        return execute_spec(spec, cache, run_fn, command)
    from nplus.stages.common import dist  # here: imports torch, needed in the job process only

    D = dist()  # joins the process group: every rank of the job meets here
    if D.is_main:
        _GO.update(run_fn=run_fn, announced=False)
        outcome = execute_spec(spec, cache, f"{__name__}:_announce_then_run", command)
        if not _GO["announced"]:
            _broadcast_go(False)
        if outcome.status == "failed":
            # error.txt is written; exiting non-zero ends the job step so the other ranks do not wait on a
            # collective until the time limit.
            raise RuntimeError(f"{spec.label}: {outcome.error} (see {spec.run_dir}/error.txt)")
        return outcome
    out = Outcome(spec.variant, spec.size, spec.seed, str(spec.run_dir), "ok")
    if not _broadcast_go(None):
        out.status = "skipped"  # rank 0 found the run complete or locked; its outcome says which
        return out
    try:
        load_callable(run_fn)(spec.config, Path(spec.run_dir), cache, command=command)
    except Exception as e:
        # Rank 0 may be killed before it can record anything: leave the first error unless one is there.
        error = Path(spec.run_dir) / "error.txt"
        if not error.exists():
            atomic_write_text(error, f"rank {D.rank}: {type(e).__name__}: {e}\n\n{traceback.format_exc()}")
        raise
    return out


@dataclass(frozen=True)
class Task:
    stage: str
    label: str
    fn: Callable[..., Any]
    args: tuple
    processes: int = 1
    """SLURM tasks (data-parallel processes) of the job: the spec's ``cfg.processes``."""


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
            tasks[stage].append(
                Task(
                    stage,
                    f"{stage} {key} ({s.label})",
                    build_stage_task,
                    (s, cache, stage, run_fn, scratch, command),
                    s.config.processes,
                )
            )
    tasks["ppo"] = [
        Task("ppo", s.label, execute_spec_task, (s, cache, run_fn, command), s.config.processes) for s in todo
    ]
    return tasks


def by_processes(tasks: list[Task]) -> dict[int, list[Task]]:
    """A stage's tasks grouped by processes per job (one SLURM array each: sbatch resources are per array)."""
    groups: dict[int, list[Task]] = {}
    for t in tasks:
        groups.setdefault(t.processes, []).append(t)
    return dict(sorted(groups.items()))


def _array_name(stage: str, processes: int, groups: int) -> str:
    """The dry run's stand-in for an array's job id (real ids are only known after sbatch)."""
    return f"{stage.upper()}_ARRAY_JOB_ID" if groups == 1 else f"{stage.upper()}_P{processes}_ARRAY_JOB_ID"


def sbatch_scripts(
    tasks: dict[str, list[Task]], options: SlurmOptions, folder: Path, study: str
) -> list[tuple[str, str]]:
    """(stage, sbatch script) for each non-empty array, with the #SBATCH lines submitit would submit."""
    from submitit.slurm.slurm import _make_sbatch_string  # submitit's own script writer (no cluster needed)

    scripts = []
    previous: list[str] = []
    for stage in STAGE_ORDER:
        groups = by_processes(tasks[stage])
        if not groups:
            continue
        stage_folder = Path(folder) / stage
        names = []
        for processes, group in groups.items():
            n = len(group)
            params = options.parameters(stage, study, processes)
            if previous:
                params["dependency"] = ":".join([DEPENDENCY, *previous])
            command = " ".join(
                [shlex.quote(sys.executable), "-u -m submitit.core._submit", shlex.quote(str(stage_folder))]
            )
            scripts.append(
                (
                    stage,
                    _make_sbatch_string(command=command, folder=stage_folder, map_count=n if n > 1 else None, **params),
                )
            )
            names.append(_array_name(stage, processes, len(groups)))
        previous = names
    return scripts


def _make(make_executor: Callable[..., Any], stage: str, processes: int) -> Any:
    """``make_executor(stage, processes)``; a factory that takes only the stage can make single-process
    executors only, and gets called that way."""
    if processes == 1 and len(inspect.signature(make_executor).parameters) == 1:
        return make_executor(stage)
    return make_executor(stage, processes)


def submit(
    tasks: dict[str, list[Task]], make_executor: Callable[..., Any], chain: str = "dependency"
) -> dict[str, list[Any]]:
    """Submit each stage as batches (SLURM arrays), one per processes-per-job value; ``make_executor(stage,
    processes)`` returns an executor for jobs of that many tasks. ``chain="dependency"``: later arrays wait
    through sbatch dependencies on every array of the stage before (SlurmExecutor); ``chain="wait"``: wait for
    a stage's jobs before submitting the next (for executors without dependencies, e.g. submitit's
    LocalExecutor in tests)."""
    jobs: dict[str, list[Any]] = {}
    previous: list[Any] = []
    for stage in STAGE_ORDER:
        groups = by_processes(tasks[stage])
        if not groups:
            continue
        if previous and chain == "wait":
            for job in previous:
                job.exception()  # blocks until done; a failure does not stop later stages (afterany)
        array_ids = list(dict.fromkeys(str(job.job_id).split("_")[0] for job in previous))
        jobs[stage] = []
        for processes, group in groups.items():
            executor = _make(make_executor, stage, processes)
            if array_ids and chain == "dependency":
                executor.update_parameters(dependency=":".join([DEPENDENCY, *array_ids]))
            with executor.batch():
                jobs[stage] += [executor.submit(t.fn, *t.args) for t in group]
        previous = jobs[stage]
    return jobs


def slurm_executor_factory(folder: Path, options: SlurmOptions, study: str) -> Callable[..., Any]:
    import submitit

    def make(stage: str, processes: int = 1) -> Any:
        ex = submitit.SlurmExecutor(folder=Path(folder) / stage)
        ex.update_parameters(**options.parameters(stage, study, processes))
        return ex

    return make
