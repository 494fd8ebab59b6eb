"""The kill -9 campaign (issue #16): SIGKILL `nplus ablate` at random points of a study, resume it with the same
command every time, and check that nothing was lost, redone or read half-written.

    python -m nplus.ablate.faults --kills 20 --out runs/faults        # `make faults`: real training, minutes

1. Reference: the study once, uninterrupted, into ``OUT/reference`` (its own cache). It also counts the atomic
   writes a sweep makes, the range the ``write`` points are drawn from.
2. Sweeps: the study from scratch into ``OUT/sweepN`` (its own cache), each invocation killed at a random point,
   then resumed with the same command, until ``--kills`` invocations have died; the sweep in progress is then
   resumed to the end. The points (``--points``, seeded by ``--seed``; delays and n uniform over what is left of
   the sweep, see :class:`Draws`):

   - ``timer``: SIGKILL the runner's process group (runner and workers, no cleanup) after a random delay: lands
     in start-up, data generation, base building, training, evaluation, ...
   - ``write``: the n-th atomic write of the invocation (summary.json, DONE, config.json, stats.csv, ...) kills
     the process group with half the temp file written (``NPLUS_FAULT``, nplus/rundir.py).
   - ``checkpoint``: the n-th SFT/RM checkpoint save, between its weight files and the rest.
   - ``stats``: inside ``write_stats``, results.csv written and stats.csv not.

   After every kill: every DONE marker (run directories and cache artifacts) that the runner would accept lists
   only files that exist, parse (JSON) and open (safetensors), and a run directory's lists its summary.json
   (else "half-written read as finished"); a marker already seen is unchanged (else the run or artifact was
   redone: "duplicated"). At the end of a sweep: the same run directories as the reference, each complete or
   failed as in the reference ("runs lost" counts the others), and stats.csv compared with the reference's byte
   for byte and as a table without the wall-time rows (two uninterrupted sweeps differ there too).
3. Two runners started at once on a fresh copy (``OUT/pair``), held at a start barrier (``NPLUS_START_BARRIER``)
   until both have listed what is left: every spec that completes was attempted exactly once (the ``====``
   headers of its log.txt).

Exit status 0 when nothing was lost, duplicated or half-read and the stats tables are identical; else 1.
"""

from __future__ import annotations

import csv
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import tyro

from nplus.ablate.runner import RUN_FN_ENV
from nplus.rundir import BARRIER_ENV, DONE, FAULT_COUNTER_ENV, FAULT_ENV, FAULT_POINTS, done_problem, read_json

POINTS = ("timer", *FAULT_POINTS)
WALL_TIME = "wall_time_s"  # metrics whose name ends so are timings: they differ between any two sweeps


@dataclass(frozen=True)
class Campaign:
    """Kill -9 the ablation runner at random points of a study, resume each time, check nothing is lost."""

    kills: int = 20
    """Invocations to kill (each one followed by a resume with the same command)."""
    out: Path = Path("runs/faults")
    """Working directory: reference/, sweepN/, pair/ (each with its own cache) and logs/; a previous campaign's is
    wiped first, any other existing directory refused."""
    study: Path = Path("ablations/faults.toml")
    """The study to sweep (default: the smoke preset with a PPO-only flip and a variant whose PPO loss is NaN)."""
    workers: int = 2
    """`nplus ablate --workers`."""
    points: tuple[str, ...] = POINTS
    """Kinds of kill point to draw from: timer, write, checkpoint, stats."""
    seed: int = 0
    """Seed of the draws (kinds, delays, n-th hits)."""
    run_fn: str | None = None
    """Replace the pipeline ("module:function", as NPLUS_ABLATE_RUN_FN): the test suite's fakes."""
    pair: bool = True
    """Finish with two runners started at once on a fresh copy."""


@dataclass
class Tally:
    kills: dict[str, int] = field(default_factory=lambda: {p: 0 for p in POINTS})
    resumes: int = 0
    sweeps: int = 0
    lost: int = 0
    duplicated: int = 0
    half_written: int = 0
    stale_markers: int = 0
    stats_bytes: list[bool] = field(default_factory=list)
    stats_table: list[bool] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def killed(self) -> int:
        return sum(self.kills.values())


# ---- one invocation of the runner -------------------------------------------------------------------------------


def runner_command(c: Campaign, out: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "nplus.cli",
        "ablate",
        str(c.study),
        "--out",
        str(out),
        "--cache",
        str(out.with_name(out.name + "-cache")),
        "--workers",
        str(c.workers),
    ]


def launch(c: Campaign, out: Path, log: Path, fault: str | None = None, barrier: str | None = None) -> subprocess.Popen:
    """Start the runner in its own session, so that killing its process group spares this process."""
    env = {k: v for k, v in os.environ.items() if k not in (FAULT_ENV, FAULT_COUNTER_ENV, BARRIER_ENV)}
    if barrier:
        env[BARRIER_ENV] = barrier
    if c.run_fn:
        env[RUN_FN_ENV] = c.run_fn
    if fault:
        counter = log.with_suffix(".hits")
        counter.unlink(missing_ok=True)
        env.update({FAULT_ENV: fault, FAULT_COUNTER_ENV: str(counter)})
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as f:
        return subprocess.Popen(
            runner_command(c, out), stdout=f, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )


def wait_or_kill(proc: subprocess.Popen, delay: float | None) -> int:
    """The runner's exit status; -9 when it was SIGKILLed (by a fault point, or here after ``delay`` s)."""
    try:
        return proc.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        return proc.wait()
    finally:
        _wait_group_gone(proc.pid)


def _wait_group_gone(pgid: int, timeout: float = 10.0) -> None:
    """Workers of a killed runner die with it (same group) or by their orphan watchdog; wait for them, so the
    next invocation does not find their locks still held. Read from /proc, because a killed worker that nobody
    reaps stays a zombie (which holds no locks) and still answers ``killpg(pgid, 0)``."""
    deadline = time.time() + timeout
    while time.time() < deadline and any(_alive_in_group(stat, pgid) for stat in Path("/proc").glob("[0-9]*/stat")):
        time.sleep(0.1)


def _alive_in_group(stat: Path, pgid: int) -> bool:
    try:
        fields = stat.read_text().rsplit(")", 1)[1].split()  # after "pid (comm)": state, ppid, pgrp, ...
    except (OSError, IndexError):
        return False  # exited meanwhile
    return int(fields[2]) == pgid and fields[0] != "Z"


# ---- checks ---------------------------------------------------------------------------------------------------


def _content_problem(path: Path) -> str | None:
    """Read a file as its consumer would: JSON parses, safetensors opens and every tensor loads."""
    try:
        if path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="np") as f:
                for key in f.keys():
                    f.get_tensor(key)
    except Exception as e:  # noqa: BLE001 - any failure to read is the finding
        return f"{path}: {type(e).__name__}: {e}"
    return None


def inspect(roots: list[Path], seen: dict[Path, bytes]) -> tuple[list[str], list[str], list[str]]:
    """(half-written read as finished, redone, markers that no longer match their files) under ``roots``;
    ``seen`` (DONE path -> bytes) is updated with the markers found."""
    half, redone, stale = [], [], []
    for marker, before in list(seen.items()):
        now = marker.read_bytes() if marker.is_file() else None
        if now != before:
            redone.append(f"{marker.parent}: DONE {'rewritten' if now else 'removed'} after it was complete")
    for root in roots:
        for marker in sorted(root.rglob(DONE)) if root.is_dir() else []:
            d = marker.parent
            problem = done_problem(d)
            if problem is not None:
                stale.append(f"{d}: {problem}")
                continue
            listed = read_json(marker)["files"]
            if d.name.startswith("seed="):  # a run directory
                if "summary.json" not in listed:
                    half.append(f"{d}: DONE without summary.json")
            half += [p for p in (_content_problem(d / n) for n in listed) if p]
            seen[marker] = marker.read_bytes()
    return half, redone, stale


def run_states(out: Path, specs: list[str]) -> dict[str, str]:
    """Each spec's state as the runner and stats see it: complete, failed, or missing."""
    states = {}
    for rel in specs:
        d = out / rel
        states[rel] = "complete" if done_problem(d) is None else "failed" if (d / "error.txt").exists() else "missing"
    return states


def stats_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return [r for r in csv.DictReader(f) if not r.get("metric", "").endswith(WALL_TIME)]


def compare_sweep(out: Path, ref: Path, t: Tally) -> None:
    specs = [s["run_dir"] for s in read_json(ref / "study.json")["specs"]]
    want, got = run_states(ref, specs), run_states(out, specs)
    for rel in specs:
        if got[rel] != want[rel]:
            t.lost += 1
            t.problems.append(f"{out / rel}: {got[rel]}, reference {want[rel]}")
    extra = sorted(str(p.relative_to(out)) for p in out.glob("**/seed=*") if str(p.relative_to(out)) not in specs)
    t.problems += [f"{out / e}: a run directory the study does not have" for e in extra]
    t.lost += len(extra)
    a, b = ref / "stats.csv", out / "stats.csv"
    t.stats_bytes.append(b.is_file() and a.read_bytes() == b.read_bytes())
    t.stats_table.append(b.is_file() and stats_rows(a) == stats_rows(b))
    if not t.stats_table[-1]:
        t.problems.append(f"{b}: differs from {a} (wall-time rows aside)")


def attempts(run_dir: Path) -> int:
    log = run_dir / "log.txt"
    return sum(line.startswith("==== ") for line in log.read_text().splitlines()) if log.is_file() else 0


# ---- the campaign ---------------------------------------------------------------------------------------------


@dataclass
class Draws:
    """The kill points: kinds in shuffled rounds (every kind once per round, so a short campaign still has each);
    the timer's delay and the n-th hit uniform over what is left of the sweep, estimated as the reference's
    seconds and hits times the fraction of runs not complete yet (a point drawn past the end would be wasted)."""

    rng: random.Random
    points: tuple[str, ...]
    ref_seconds: float
    ref_hits: dict[str, int]  # write and checkpoint hits of the uninterrupted reference
    queue: list[str] = field(default_factory=list)

    def next(self, left: float) -> tuple[str, str | None, float | None]:
        """(kind, NPLUS_FAULT value or None, timer delay or None), ``left`` the fraction of runs not complete."""
        if not self.queue:
            self.queue = self.rng.sample(self.points, len(self.points))
        kind = self.queue.pop()
        if kind == "timer":
            return kind, None, self.rng.uniform(0.3, self.ref_seconds * left)
        if kind == "stats":  # once per invocation, at its end
            return kind, f"{kind}:1", None
        return kind, f"{kind}:{self.rng.randint(1, max(1, round(self.ref_hits[kind] * left)))}", None


def sweep(c: Campaign, draws: Draws, t: Tally, out: Path, ref: Path, ref_rc: int, logs: Path) -> None:
    """One sweep from scratch: killed and resumed until the campaign has its kills, then resumed to the end."""
    t.sweeps += 1
    seen: dict[Path, bytes] = {}
    roots = [out, out.with_name(out.name + "-cache")]
    specs = [s["run_dir"] for s in read_json(ref / "study.json")["specs"]]
    invocation = 0
    while True:
        left = sum(state != "complete" for state in run_states(out, specs).values()) / len(specs)
        kind, fault, delay = draws.next(left) if t.killed < c.kills else ("none", None, None)
        invocation += 1
        log = logs / f"{out.name}-{invocation:03d}-{kind}.txt"
        rc = wait_or_kill(launch(c, out, log, fault), delay)
        t.resumes += invocation > 1
        half, redone, stale = inspect(roots, seen)
        t.half_written += len(half)
        t.duplicated += len(redone)
        t.stale_markers += len(stale)
        t.problems += half + redone + stale
        if rc == -signal.SIGKILL:
            t.kills[kind] += 1
            continue
        if rc != ref_rc:
            t.problems.append(f"{log}: exit status {rc}, reference {ref_rc}")
        break
    compare_sweep(out, ref, t)


def pair_check(c: Campaign, ref: Path, logs: Path) -> tuple[int, int, bool, list[str]]:
    """Two runners at once on a fresh copy: (specs completed, completed specs attempted more than once, whether
    both runners started before either had completed a run, problems)."""
    out = c.out / "pair"
    # both list what is left before either runs anything (a fast run can finish before the other process is up)
    barrier = f"{logs / 'pair-barrier'}:2"
    procs = [launch(c, out, logs / f"pair-{i}.txt", barrier=barrier) for i in (1, 2)]
    codes = [wait_or_kill(p, None) for p in procs]
    problems = [f"pair runner {i}: exit status {rc}" for i, rc in enumerate(codes, 1) if rc not in (0, 1, 3)]
    # each runner's first line: "<study>: <n> complete, <m> to run ..."
    starts = [re.search(r": (\d+) complete, \d+ to run", (logs / f"pair-{i}.txt").read_text()) for i in (1, 2)]
    overlapped = all(m is not None and m.group(1) == "0" for m in starts)
    if not overlapped:  # then nothing was tested
        problems.append("the two runners did not overlap: one found runs complete when it started")
    specs = [s["run_dir"] for s in read_json(ref / "study.json")["specs"]]
    want, got = run_states(ref, specs), run_states(out, specs)
    problems += [f"{out / r}: {got[r]}, reference {want[r]}" for r in specs if got[r] != want[r]]
    done = [r for r in specs if got[r] == "complete"]
    twice = [r for r in done if attempts(out / r) != 1]
    problems += [f"{out / r}: trained {attempts(out / r)} times" for r in twice]
    return len(done), len(twice), overlapped, problems


def run(c: Campaign) -> int:
    unknown = sorted(set(c.points) - set(POINTS))
    if unknown or not c.points:
        print(f"error: --points {' '.join(unknown) or '(none)'}: valid points: {', '.join(POINTS)}", file=sys.stderr)
        return 2
    if not c.study.is_file():
        print(f"error: no such study file: {c.study}", file=sys.stderr)
        return 2
    logs = c.out / "logs"
    if c.out.is_dir() and any(c.out.iterdir()) and not (logs / "reference.txt").is_file():
        print(f"error: --out {c.out} exists and is not a campaign's directory; it would be wiped", file=sys.stderr)
        return 2
    t0 = time.time()
    shutil.rmtree(c.out, ignore_errors=True)
    t = Tally()
    # 1. the uninterrupted reference, counting its atomic writes (n = 0 never fires) and checkpoints (one per SFT
    #    and RM artifact)
    ref = c.out / "reference"
    ref_rc = wait_or_kill(launch(c, ref, logs / "reference.txt", fault="write:0"), None)
    ref_seconds = time.time() - t0
    ref_cache = ref.with_name(ref.name + "-cache")
    ref_hits = {
        "write": int((logs / "reference.hits").read_text()),
        "checkpoint": len([*ref_cache.glob("sft/*/DONE"), *ref_cache.glob("rm/*/DONE")]),
    }
    draws = Draws(random.Random(c.seed), c.points, ref_seconds, ref_hits)
    specs = [s["run_dir"] for s in read_json(ref / "study.json")["specs"]] if (ref / "study.json").is_file() else []
    states = run_states(ref, specs)
    if not specs or ref_rc not in (0, 1) or "missing" in states.values():
        print(
            f"error: the uninterrupted reference sweep did not finish (exit status {ref_rc}); see "
            f"{logs / 'reference.txt'}",
            file=sys.stderr,
        )
        return 1
    # 2. sweeps, each killed and resumed
    while t.killed < c.kills:
        sweep(c, draws, t, c.out / f"sweep{t.sweeps + 1}", ref, ref_rc, logs)
    # 3. two runners at once
    pair = pair_check(c, ref, logs) if c.pair else None
    if pair:
        t.problems += pair[3]

    n_ok = sum(s == "complete" for s in states.values())
    by_kind = ", ".join(f"{k} {v}" for k, v in t.kills.items() if k in c.points)
    identical = all(t.stats_table)
    print(f"kill -9 campaign: {c.study}, {c.workers} workers, pipeline {c.run_fn or 'nplus.pipeline:run_pipeline'}")
    print(
        f"reference sweep (uninterrupted): {len(specs)} runs ({n_ok} complete, {len(specs) - n_ok} failed), "
        f"{ref_seconds:.1f} s, {ref_hits['write']} atomic writes, {ref_hits['checkpoint']} checkpoints"
    )
    print(f"points killed: {t.killed} ({by_kind}) over {t.sweeps} sweeps")
    print(f"resumes: {t.resumes}")
    print(f"runs lost: {t.lost}")
    print(f"duplicated: {t.duplicated}")
    print(f"half-written read as finished: {t.half_written}")
    print(f"markers not matching their files: {t.stale_markers}")
    print(
        f"stats identical: {'yes' if identical else 'no'} ({sum(t.stats_table)}/{len(t.stats_table)} sweeps as a "
        f"table without wall-time rows; {sum(t.stats_bytes)}/{len(t.stats_bytes)} byte-identical)"
    )
    if pair:
        print(
            f"two runners at once: {pair[0]} runs completed, trained twice: {pair[1]} (both started before "
            f"any run was complete: {'yes' if pair[2] else 'no'})"
        )
    print(f"wall time: {time.time() - t0:.0f} s")
    for p in t.problems:
        print(f"  problem: {p}")
    ok = not t.problems and t.lost == t.duplicated == t.half_written == 0 and identical
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    return run(tyro.cli(Campaign, args=argv))


if __name__ == "__main__":
    sys.exit(main())
