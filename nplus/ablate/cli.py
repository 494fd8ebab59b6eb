"""`nplus ablate` and `nplus stats` (wired into nplus/cli.py)."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import tyro

from nplus.ablate.runner import failure_summary, make_plan, plan_text, run_fn_ref, run_study, write_study_json
from nplus.ablate.slurm import SlurmOptions, sbatch_scripts, slurm_executor_factory, stage_tasks, submit
from nplus.ablate.study import expand, load_study
from nplus.config import positive
from nplus.data.sources import default_cache
from nplus.rundir import command_line
from nplus.stats import verdict_lines, write_stats


@dataclass(frozen=True)
class AblateCmd:
    """Run a study file: every variant × size × seed, resumable, failures contained; then `nplus stats`."""

    study: tyro.conf.Positional[Path]
    """Study file (TOML), e.g. ablations/demo.toml."""
    out: Path | None = None
    """Output directory: one run directory per spec, study.json, results.csv, stats.csv (default runs/<study name>)."""
    workers: int = positive(1)
    """Local worker processes; each gets max(1, cores // workers) torch threads."""
    dry_run: bool = False
    """Print the plan (runs, distinct SFT/RM artifacts, sharing, estimated time; sbatch scripts for slurm) and exit."""
    executor: Literal["local", "slurm"] = "local"
    """local: a process pool on this machine; slurm: job arrays SFT → RM → PPO through submitit."""
    cache: Path | None = None
    """Artifact cache for data, base, SFT and RM (default: $NPLUS_CACHE or runs/.cache)."""
    slurm: SlurmOptions = field(default_factory=SlurmOptions)
    """SLURM resources (with --executor slurm)."""

    def run(self) -> int:
        study = load_study(self.study)
        out = self.out or Path("runs") / study.name
        cache = self.cache or default_cache()
        specs = expand(study, out)
        if self.dry_run:
            print(plan_text(study, make_plan(study, specs, cache, out), self.workers))
            if self.executor == "slurm":
                _print_sbatch(study.name, specs, out, cache, self.slurm)
            return 0
        if self.executor == "slurm":
            return _submit_slurm(study, specs, out, cache, self.slurm)
        result = run_study(study, out, self.workers, cache, command=command_line())
        code = result.exit_code
        _write_stats(out)
        summary = failure_summary(result)
        if summary:
            print(summary, file=sys.stderr)
        return code


def _write_stats(out: Path) -> None:
    stats = write_stats(out)
    lines = verdict_lines(stats)
    print(f"results: {out / 'results.csv'}, stats: {out / 'stats.csv'}")
    if lines:
        print("verdicts (paired against the baseline, Holm-adjusted):")
        print("\n".join(lines))


def _print_sbatch(name: str, specs: list, out: Path, cache: Path, options: SlurmOptions) -> None:
    tasks = stage_tasks(specs, out, cache, run_fn_ref(), command_line())
    for stage, script in sbatch_scripts(tasks, options, out / ".slurm", name):
        print(f"\n# ---- {stage}: {len(tasks[stage])} task(s) ----\n{script}")


def _submit_slurm(study, specs: list, out: Path, cache: Path, options: SlurmOptions) -> int:
    write_study_json(study, specs, out)
    tasks = stage_tasks(specs, out, cache, run_fn_ref(), command_line())
    jobs = submit(tasks, slurm_executor_factory(out / ".slurm", options, study.name))
    for stage, js in jobs.items():
        print(f"{stage}: {len(js)} task(s), job {str(js[0].job_id).split('_')[0]}")
    print(f"when they have finished: nplus stats {out}")
    return 0


@dataclass(frozen=True)
class StatsCmd:
    """Aggregate a study's runs: results.csv, failures.csv, stats.csv and stats.json (paired tests, Holm, verdicts)."""

    runs: tyro.conf.Positional[Path]
    """The study's output directory (the --out of `nplus ablate`)."""

    def run(self) -> int:
        if not self.runs.is_dir():
            print(f"error: no such directory: {self.runs}", file=sys.stderr)
            return 2
        _write_stats(self.runs)
        return 0
