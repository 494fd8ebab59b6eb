"""The local ablation runner: a process pool over run specs, resumable, with failures contained.

Bookkeeping lives in the run directories themselves, so the runner keeps no state of its own and can be killed
at any moment (even ``kill -9``) losing at most the runs in flight:

- a run is complete when its ``DONE`` marker exists, names the spec's config hash (``run_pipeline`` writes it
  atomically, last) and the outputs it lists still have their recorded size and sha256; a DONE for another hash
  (the study changed) is stale and the run is redone, and so is one whose summary was truncated or altered;
- each run holds a non-blocking lock on ``<run_dir>/.lock`` while it runs, so two runners (or a runner and an
  orphaned worker) never execute the same spec at once: a locked spec is skipped and reported;
- a failed run leaves ``error.txt`` (message + traceback) and no DONE; the sweep goes on.

Scheduling: upstream artifacts (base model, SFT, RM) are content-addressed and shared, so for every distinct
artifact one spec is its *leader* (the baseline first); the other specs needing it start once the artifact is
in the cache (or its leader has finished), instead of occupying a worker while waiting on its lock.
"""

from __future__ import annotations

import contextlib
import importlib
import multiprocessing
import os
import sys
import threading
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from nplus.ablate.study import RunSpec, Study, expand
from nplus.bases import read_manifest
from nplus.data.sources import default_cache
from nplus.rundir import (
    DONE,
    DiskFullError,
    atomic_write_json,
    atomic_write_text,
    done_problem,
    file_lock,
    is_done,
    read_json,
    start_barrier,
)

# The function that executes one spec: run_fn(cfg, out_dir, cache, command=...) -> summary dict, writing DONE last.
DEFAULT_RUN_FN = "nplus.pipeline:run_pipeline"
# Test hook: "module:function" replacing the pipeline, so the runner's bookkeeping can be tested with fakes.
RUN_FN_ENV = "NPLUS_ABLATE_RUN_FN"
UPSTREAM = ("base", "sft", "rm")
# Key metrics echoed in the one-line report of a finished run.
ECHO_METRICS = ("ppo.win_rate", "ppo.kl", "ppo.mean_length", "rm.accuracy", "sft.rouge_l")
EXIT_FAILED, EXIT_LOCKED = 1, 3


def run_fn_ref() -> str:
    return os.environ.get(RUN_FN_ENV) or DEFAULT_RUN_FN


def load_callable(ref: str) -> Callable[..., Any]:
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)


# ---- state of a run directory --------------------------------------------------------------------------------


def is_complete(spec: RunSpec) -> bool:
    """DONE was written for this spec's config (a DONE without a hash is trusted) and its files verify."""
    if done_problem(spec.run_dir) is not None:
        return False
    try:  # read again: another runner may be redoing a stale run meanwhile
        info = read_json(spec.run_dir / DONE)
    except (OSError, ValueError):
        return False
    return info.get("hash", spec.config.hash) == spec.config.hash


def artifact_built(cache: Path, stage: str, key: str) -> bool:
    return is_done(Path(cache) / stage / key)


# ---- executing one spec (in a worker process, or a SLURM job) ------------------------------------------------


@dataclass
class Outcome:
    """What happened to one spec in this invocation."""

    variant: str
    size: str | None
    seed: int
    run_dir: str
    status: str  # ok | failed | locked | complete
    seconds: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)
    error: str | None = None

    @property
    def label(self) -> str:
        return f"{self.variant}{f' size={self.size}' if self.size else ''} seed={self.seed}"

    def line(self) -> str:
        shown = " ".join(f"{k}={v:.3g}" for k, v in self.metrics.items())
        tail = f"  {self.error}" if self.error else ""
        return f"[{self.status:>6}] {self.label:<40} {shown} ({self.seconds:.1f}s){tail}"


@contextlib.contextmanager
def _output_to(path: Path) -> Iterator[None]:
    """Send stdout/stderr to ``path``: the file descriptors (C-level and child-process output) and the Python
    streams (which a host such as pytest or submitit may have replaced)."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved_fds, saved_streams = (os.dup(1), os.dup(2)), (sys.stdout, sys.stderr)
    with open(path, "a", buffering=1) as log:
        log.write(f"==== {time.strftime('%Y-%m-%d %H:%M:%S')} pid {os.getpid()}\n")
        log.flush()
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        # A stream on descriptor 2 itself, never closed: logging handlers created during this spec (transformers
        # makes one on first use) keep it, and it writes wherever fd 2 points, i.e. the next spec's log. Handing
        # them `log` instead left them writing to a closed file ("--- Logging error ---") from the second spec on.
        stream = open(2, "w", buffering=1, closefd=False, encoding="utf-8", errors="backslashreplace")
        sys.stdout = sys.stderr = stream
        try:
            yield
        finally:
            stream.flush()
            log.flush()
            sys.stdout, sys.stderr = saved_streams
            os.dup2(saved_fds[0], 1)
            os.dup2(saved_fds[1], 2)
            os.close(saved_fds[0])
            os.close(saved_fds[1])


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}".strip()


def _key_metrics(summary: Any) -> dict[str, float]:
    if not isinstance(summary, dict):
        return {}
    return {k: float(summary[k]) for k in ECHO_METRICS if isinstance(summary.get(k), (int, float))}


def execute_spec(spec: RunSpec, cache: Path, run_fn: str, command: str, threads: int | None = None) -> Outcome:
    """Run one spec under its run-dir lock; any exception becomes error.txt and a ``failed`` outcome."""
    run_dir = Path(spec.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    out = Outcome(spec.variant, spec.size, spec.seed, str(run_dir), "ok")
    t0 = time.time()
    with file_lock(run_dir / ".lock", blocking=False) as taken:
        if not taken:
            out.status = "locked"
            return out
        if is_complete(spec):
            out.status = "complete"
            return out
        # A stale DONE (another config) or error must not survive this attempt, whatever happens in it.
        for stale in (DONE, "error.txt"):
            (run_dir / stale).unlink(missing_ok=True)
        with _output_to(run_dir / "log.txt"):
            try:
                fn = load_callable(run_fn)
                if threads and "torch" in sys.modules:
                    sys.modules["torch"].set_num_threads(threads)
                print(f"{spec.label}: {command}", flush=True)
                summary = fn(spec.config, run_dir, cache, command=command)
                problem = done_problem(run_dir)
                if problem is not None:
                    raise RuntimeError(f"{run_fn} returned without a valid {DONE} ({problem})")
                out.metrics = _key_metrics(summary)
            except Exception as e:  # contained: the sweep goes on (NonFiniteLoss and a full disk included)
                traceback.print_exc()
                (run_dir / DONE).unlink(missing_ok=True)
                out.status, out.error = "failed", _first_line(e)
                with contextlib.suppress(DiskFullError):  # no room for error.txt: the outcome still reports it
                    atomic_write_text(run_dir / "error.txt", f"{_first_line(e)}\n\n{traceback.format_exc()}")
    out.seconds = time.time() - t0
    return out


def _orphan_watchdog(parent: int) -> None:
    """Exit when the runner dies (kill -9 included), so an orphaned worker never keeps running a spec."""
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(1)


def _init_worker(threads: int, parent: int) -> None:
    # Set before torch is imported, so its thread pool is sized once: workers × threads ≤ cores.
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)
    os.environ["NPLUS_PROGRESS"] = "0"
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")  # keep log.txt readable
    threading.Thread(target=_orphan_watchdog, args=(parent,), daemon=True).start()


# ---- scheduling ----------------------------------------------------------------------------------------------


def _built_stages(spec: RunSpec) -> tuple[str, ...]:
    """The upstream stages of ``spec`` that no run builds: a committed base model made with its base-stage
    configuration (nplus/bases; checked by the run itself) is an input, like Pythia, so no run waits for it."""
    from nplus.models import is_ladder  # here: imports torch; the planner stays torch-free

    name = spec.config.model.name
    manifest = read_manifest(name) if is_ladder(name) else None
    return ("base",) if manifest is not None and manifest.get("base_hash") == spec.config.stage_hash("base") else ()


def leaders(specs: list[RunSpec]) -> dict[tuple[str, str], int]:
    """For every distinct upstream artifact, the first spec (in priority order) that needs it builds it."""
    out: dict[tuple[str, str], int] = {}
    for i, spec in enumerate(specs):
        for stage in UPSTREAM:
            out.setdefault((stage, spec.config.stage_hash(stage)), i)
    return out


def blocked_by(specs: list[RunSpec], i: int, lead: dict[tuple[str, str], int]) -> list[tuple[str, str, int]]:
    """The artifacts spec ``i`` needs that another spec builds: (stage, hash, leader index)."""
    deps = []
    built = _built_stages(specs[i])
    for stage in UPSTREAM:
        key = (stage, specs[i].config.stage_hash(stage))
        if stage not in built and lead[key] != i:
            deps.append((stage, key[1], lead[key]))
    return deps


def is_ready(deps: list[tuple[str, str, int]], finished: set[int], cache: Path) -> bool:
    """Every artifact the spec needs is built, or the spec that was to build it has finished (even failed)."""
    return all(j in finished or artifact_built(cache, stage, key) for stage, key, j in deps)


def threads_per_worker(workers: int) -> int:
    """Torch threads per worker so that workers × threads ≤ the cores this process may use."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores // workers)


@dataclass
class SweepResult:
    specs: list[RunSpec]
    outcomes: list[Outcome]  # of the specs that were not already complete

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status == "failed"]

    @property
    def locked(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status == "locked"]

    @property
    def exit_code(self) -> int:
        return EXIT_FAILED if self.failed else EXIT_LOCKED if self.locked else 0


def write_study_json(study: Study, specs: list[RunSpec], out: Path) -> None:
    """The resolved study and its spec list: what `nplus stats` and the report read to find the runs."""
    atomic_write_json(
        Path(out) / "study.json",
        {
            "study": study.as_dict(),
            "specs": [{**s.as_dict(), "run_dir": str(Path(s.run_dir).relative_to(out))} for s in specs],
        },
    )


def run_local(specs: list[RunSpec], cache: Path, workers: int, run_fn: str, command: str) -> list[Outcome]:
    """Execute ``specs`` on a pool of ``workers`` processes; returns one outcome per spec, in finishing order."""
    from tqdm.auto import tqdm

    lead = leaders(specs)
    deps = {i: blocked_by(specs, i, lead) for i in range(len(specs))}
    threads = threads_per_worker(workers)
    pending = list(range(len(specs)))
    finished: set[int] = set()
    outcomes: list[Outcome] = []
    running: dict[Future, int] = {}
    bar = tqdm(total=len(specs), desc="runs", unit="run", file=sys.stderr, dynamic_ncols=True)

    def new_pool() -> ProcessPoolExecutor:
        # spawn: no fork of a parent that may hold torch threads or locks.
        return ProcessPoolExecutor(
            max_workers=workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_worker,
            initargs=(threads, os.getpid()),
        )

    pool = new_pool()
    try:
        while pending or running:
            for i in [i for i in pending if is_ready(deps[i], finished, cache)]:
                if len(running) >= workers:
                    break
                pending.remove(i)
                running[pool.submit(execute_spec, specs[i], cache, run_fn, command, threads)] = i
            if not running:  # everything pending waits on artifacts that nobody is building: should not happen
                raise RuntimeError(f"scheduler stalled with {len(pending)} specs pending")
            done, _ = wait(list(running), timeout=1.0, return_when=FIRST_COMPLETED)
            broken = False
            for fut in done:
                i = running.pop(fut)
                try:
                    outcome = fut.result()
                except BrokenProcessPool as e:  # a worker died (OOM killer, segfault): fail its spec, go on
                    broken = True
                    outcome = _worker_died(specs[i], e)
                finished.add(i)
                outcomes.append(outcome)
                bar.update(1)
                bar.write(outcome.line())
            if broken:
                for fut, i in list(running.items()):
                    running.pop(fut)
                    finished.add(i)
                    outcomes.append(_worker_died(specs[i], None))
                    bar.update(1)
                    bar.write(outcomes[-1].line())
                pool.shutdown(wait=False, cancel_futures=True)
                pool = new_pool()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        bar.close()
    return outcomes


def _worker_died(spec: RunSpec, e: BaseException | None) -> Outcome:
    msg = "worker process died" + (f": {e}" if e else " (pool broken by another worker)")
    if not is_done(spec.run_dir):
        atomic_write_text(Path(spec.run_dir) / "error.txt", msg + "\n")
    return Outcome(spec.variant, spec.size, spec.seed, str(spec.run_dir), "failed", error=msg)


def run_study(
    study: Study,
    out: Path,
    workers: int = 1,
    cache: Path | None = None,
    command: str = "",
    echo: Callable[[str], None] = print,
) -> SweepResult:
    """Expand, skip what is complete, run the rest locally, write study.json first."""
    out, cache = Path(out), Path(cache or default_cache())
    specs = expand(study, out)
    write_study_json(study, specs, out)
    todo = [s for s in specs if not is_complete(s)]
    echo(
        f"{study.name}: {len(specs) - len(todo)} complete, {len(todo)} to run"
        + (f" on {workers} workers × {threads_per_worker(workers)} threads" if todo else "")
    )
    start_barrier()
    if todo and run_fn_ref() == DEFAULT_RUN_FN:
        prepare_shared(todo, cache, echo)
    outcomes = run_local(todo, cache, workers, run_fn_ref(), command) if todo else []
    return SweepResult(specs, outcomes)


def prepare_shared(specs: list[RunSpec], cache: Path, echo: Callable[[str], None]) -> None:
    """Build what every spec shares (generated data, tokenized datasets, base models) once, in this process with
    every core, before the pool starts: otherwise one single-threaded worker builds it while the others wait.
    A failure here is only reported: the specs that need the artifact then fail on their own, contained."""
    from nplus.pipeline import base_model, load_data  # here: imports torch; the planner stays torch-free

    seen: set[str] = set()
    for spec in specs:
        key = spec.config.stage_hash("base") + str(spec.config.lengths) + str(spec.config.details)
        if key in seen:
            continue
        seen.add(key)
        try:
            base_model(spec.config, load_data(spec.config, cache), cache)
        except Exception as e:  # noqa: BLE001 - contained; the specs report it
            echo(f"could not prepare shared artifacts for {spec.label}: {_first_line(e)}")


def failure_summary(result: SweepResult) -> str:
    lines = []
    if result.failed:
        lines.append(f"{len(result.failed)} of {len(result.specs)} runs failed:")
        lines += [f"  {o.label}: {o.error}  (see {o.run_dir}/error.txt, log.txt)" for o in result.failed]
    if result.locked:
        lines.append(f"{len(result.locked)} runs skipped: locked by another runner (rerun once it has finished):")
        lines += [f"  {o.label}" for o in result.locked]
    return "\n".join(lines)


# ---- the plan (--dry-run): what would run, what is shared, how long ---------------------------------------------

# Rough per-stage seconds, used only when nothing was measured yet: smoke/demo on a 2-core CPU, paper presets
# per 8×H100 node (N+ paper scale). Printed as estimates.
DEFAULT_SECONDS: dict[str, dict[str, float]] = {
    "smoke": {"base": 5, "sft": 10, "rm": 10, "ppo": 25},
    "demo": {"base": 60, "sft": 60, "rm": 45, "ppo": 150},
    "paper-1b": {"base": 0, "sft": 1800, "rm": 1800, "ppo": 4 * 3600},
    "paper-2.8b": {"base": 0, "sft": 3600, "rm": 3600, "ppo": 8 * 3600},
    "paper-6.9b": {"base": 0, "sft": 7200, "rm": 7200, "ppo": 16 * 3600},
}


def _artifact_key(model: str, task: dict) -> str:
    return f"{model}|{task.get('name')}|{task.get('synth_scale')}"


def measured_seconds(cache: Path, out: Path) -> dict[str, dict[str, list[float]]]:
    """Past stage times: SFT/RM from ``<cache>/<stage>/*/eval.json``, PPO from summary.json under the runs root."""
    times: dict[str, dict[str, list[float]]] = {"sft": {}, "rm": {}, "ppo": {}}
    for stage in ("sft", "rm"):
        for ev in sorted((Path(cache) / stage).glob("*/eval.json")):
            try:
                cfg, wall = read_json(ev.parent / "config.json"), read_json(ev)["wall_time_s"]
            except (OSError, ValueError, KeyError):
                continue
            times[stage].setdefault(_artifact_key(cfg["model"]["name"], cfg["task"]), []).append(float(wall))
    # Summaries of this study and its sibling studies (runs/<study>/...), keyed by preset and model.
    root = Path(out).parent
    for sm in sorted(root.glob("*/**/summary.json")) if root.is_dir() else []:
        try:
            s = read_json(sm)
            times["ppo"].setdefault(f"{s['preset']}|{s['model']}", []).append(float(s["ppo_wall_time_s"]))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return times


@dataclass
class Plan:
    specs: list[RunSpec]
    complete: int
    artifacts: dict[str, int]  # distinct upstream artifacts per stage
    cached: dict[str, int]  # of which already built
    sharing: dict[str, str]  # variant -> what it shares with the baseline
    serial_seconds: float
    sources: list[str]

    def wall_seconds(self, workers: int) -> float:
        return self.serial_seconds / max(1, min(workers, max(1, len(self.specs) - self.complete)))


def _sharing(specs: list[RunSpec], baseline: str) -> dict[str, str]:
    base = {(s.size, s.seed): s.stage_hashes() for s in specs if s.variant == baseline}
    out: dict[str, str] = {}
    for variant in dict.fromkeys(s.variant for s in specs if s.variant != baseline):
        hs = [(s.stage_hashes(), base.get((s.size, s.seed))) for s in specs if s.variant == variant]
        shared = [st for st in UPSTREAM if all(b and h[st] == b[st] for h, b in hs)]
        if "rm" in shared:
            out[variant] = "shares base, SFT and RM (PPO-only change)"
        elif "sft" in shared:
            out[variant] = "shares base and SFT, new RM"
        elif "base" in shared:
            out[variant] = "shares base, new SFT and RM"
        else:
            out[variant] = "new base, SFT and RM"
    return out


def make_plan(study: Study, specs: list[RunSpec], cache: Path, out: Path) -> Plan:
    """Count distinct artifacts by stage hash, what each variant shares with the baseline, and time to run."""
    measured = measured_seconds(cache, out)
    todo = [s for s in specs if not is_complete(s)]
    artifacts, cached = {}, {}
    serial, sources = 0.0, set()

    def seconds(stage: str, spec: RunSpec) -> float:
        cfg = spec.config
        key = (
            f"{cfg.preset}|{cfg.model.name}" if stage == "ppo" else _artifact_key(cfg.model.name, cfg.to_dict()["task"])
        )
        if measured.get(stage, {}).get(key):
            vals = measured[stage][key]
            sources.add(f"{stage}: measured ({len(vals)} past runs)")
            return sum(vals) / len(vals)
        default = DEFAULT_SECONDS.get(cfg.preset, DEFAULT_SECONDS["demo"])[stage]
        sources.add(f"{stage}: estimate ({cfg.preset} default {default:.0f}s)")
        return default

    for stage in UPSTREAM:
        keys = {s.config.stage_hash(stage): s for s in specs}
        artifacts[stage] = len(keys)
        built = {k for k, spec in keys.items() if artifact_built(cache, stage, k) or stage in _built_stages(spec)}
        cached[stage] = len(built)
        needed = {s.config.stage_hash(stage) for s in todo} - built
        serial += sum(seconds(stage, keys[k]) for k in needed)
    serial += sum(seconds("ppo", s) for s in todo)
    return Plan(
        specs, len(specs) - len(todo), artifacts, cached, _sharing(specs, study.baseline), serial, sorted(sources)
    )


def _duration(s: float) -> str:
    return f"{s:.0f}s" if s < 120 else f"{s / 60:.1f} min" if s < 7200 else f"{s / 3600:.1f} h"


def plan_text(study: Study, plan: Plan, workers: int) -> str:
    todo = len(plan.specs) - plan.complete
    sizes = f", sizes {' '.join(study.sizes)}" if study.sizes else ""
    lines = [
        f"study {study.name} ({study.path}): preset {study.preset}, seeds {study.seeds_name} {list(study.seeds)}"
        f"{sizes}, {len(study.variants)} variants, baseline {study.baseline!r}",
        f"PPO-level runs: {len(plan.specs)} ({plan.complete} complete, {todo} to run)",
        "distinct upstream artifacts: "
        + ", ".join(
            f"{st} {plan.artifacts[st]} ({plan.cached[st]} {'committed or in cache' if st == 'base' else 'in cache'})"
            for st in UPSTREAM
        ),
    ]
    if plan.sharing:
        lines.append("sharing with the baseline:")
        w = max(len(v) for v in plan.sharing)
        lines += [f"  {v:<{w}}  {what}" for v, what in plan.sharing.items()]
    lines.append(
        f"estimated time: {_duration(plan.serial_seconds)} of compute, about "
        f"{_duration(plan.wall_seconds(workers))} wall with {workers} worker(s)"
    )
    lines += [f"  {src}" for src in plan.sources]
    return "\n".join(lines)
