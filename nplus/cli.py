"""The ``nplus`` command line (tyro): every flag's help comes from the dataclass field docstrings."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal, Optional

import tyro

from nplus.config import non_negative, positive, ranged
from nplus.details import REGISTRY, registry_json


def _set_threads(threads: int | None) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)


@dataclass(frozen=True)
class DataCmd:
    """Generate the embedded `tldr-synth` task (datasets in the public TL;DR schemas, gold facts, tokenizer)."""

    task: tyro.conf.Positional[Literal["tldr-synth"]]
    """The task to generate."""
    out: Path
    """Output directory (sft/, comparisons/, facts.jsonl, tokenizer/, card.json)."""
    seed: int = ranged(0)
    """Generator seed: the same seed gives byte-identical datasets."""
    scale: Literal["default", "small", "tiny"] = "default"
    """Corpus size: default (thousands of posts, for the demo), small (tests), tiny."""
    comparisons: int | None = None
    """Training comparisons (None: the scale's; more are drawn after the same validation pairs, as
    task.synth_comparisons does in a run)."""

    def run(self) -> int:
        from nplus.tasks.synth import comparisons_count, generate

        try:
            comparisons_count(self.scale, self.comparisons)
        except ValueError as e:
            print(f"error: --comparisons {self.comparisons}: {e}", file=sys.stderr)
            return 2
        card = generate(self.out, seed=self.seed, scale=self.scale, comparisons=self.comparisons)
        print(json.dumps(card, indent=2))
        return 0


@dataclass(frozen=True)
class BaseCmd:
    """Build a base model of the embedded ladder with the pretraining recipe (deterministic on CPU; minutes to
    tens of minutes) and write it with its manifest into nplus/bases/RUNG (what the repository ships)."""

    action: tyro.conf.Positional[Literal["build"]]
    """`build`: run the recipe."""
    rung: str = "tiny"
    """Ladder rung (nano, nano2, micro, tiny, mini, micro4, xs, s, m, l)."""
    preset: str = "demo"
    """Preset whose task and model settings (recipe hyperparameters) the base is built with."""
    out: Path | None = None
    """Write here instead of nplus/bases/RUNG."""
    cache: Path | None = None
    """Cache for the generated corpus (default: $NPLUS_CACHE or runs/.cache)."""
    threads: int | None = positive(None)
    """torch threads. Results are bit-identical for the same CPU type and thread count; a build resumes only under
    the thread count it started with."""
    checkpoint_every: int = positive(250)
    """Write a checkpoint every this many updates (under the cache); a rerun of the same command resumes from it."""
    fresh: bool = False
    """Discard this rung's checkpoint and start over."""
    copy_bar: float = non_negative(2.0)
    """Least copy_gain at the end of the induction phase; below it the build stops there with what to change
    (0: no check)."""

    def run(self) -> int:
        from nplus import bases
        from nplus.config import ConfigError, apply_overrides
        from nplus.models import LADDER
        from nplus.pipeline import default_cache, load_data
        from nplus.presets import preset

        if self.rung not in LADDER:
            raise ConfigError(f"--rung {self.rung!r}: not a ladder rung; valid rungs: {', '.join(LADDER)}")
        cfg = apply_overrides(preset(self.preset), hparams={"model.name": self.rung})
        if cfg.task.name != "tldr-synth":
            raise ConfigError(f"--preset {self.preset}: base models are built for the embedded task (tldr-synth) only")
        if self.checkpoint_every < 1:
            raise ConfigError(f"--checkpoint-every {self.checkpoint_every}: must be a positive number of updates")
        _set_threads(self.threads)
        out = self.out or bases.BASES_DIR / self.rung
        cache = self.cache or default_cache()
        checkpoint = cache / "base-builds" / f"{self.rung}-{cfg.stage_hash('base')}" / "checkpoint.safetensors"
        if self.fresh:
            checkpoint.unlink(missing_ok=True)
        elif checkpoint.is_file():
            print(f"resuming {self.rung} from {checkpoint}", file=sys.stderr)
        data = load_data(cfg, cache)
        manifest = bases.build(
            cfg,
            data,
            out,
            command=f"nplus base build --rung {self.rung} --preset {self.preset}",
            preset=self.preset,
            checkpoint=checkpoint,
            checkpoint_every=self.checkpoint_every,
            copy_bar=self.copy_bar if self.copy_bar > 0 else None,
        )
        print(
            json.dumps(
                {
                    k: manifest[k]
                    for k in (
                        "rung",
                        "recipe",
                        "base_hash",
                        "params",
                        "probes",
                        "validation_loss",
                        "build_time_s",
                        "tokens_per_s",
                        "matmul_peak_fraction",
                    )
                },
                indent=2,
            )
        )
        print(f"base model: {out}", file=sys.stderr)
        return 0


@dataclass(frozen=True)
class DetailsCmd:
    """List the implementation details: name, stage, paper value, alternatives, doc and source."""

    json: bool = False
    """Print a JSON list of {name, stage, paper, alternatives, doc, source}."""
    markdown: bool = False
    """Print the README's markdown table."""

    def run(self) -> int:
        from nplus.details import table_markdown

        if self.json:
            print(registry_json())
        elif self.markdown:
            print(table_markdown())
        else:
            w = max(len(n) for n in REGISTRY)
            print(f"{'stage':5}  {'detail':{w}}  {'paper':27}  alternatives")
            for d in REGISTRY.values():
                print(f"{d.stage:5}  {d.name:{w}}  {d.paper:27}  {', '.join(d.alternatives)}")
        return 0


def _detail_flags() -> type:
    """``--details.NAME VALUE`` flags generated from the registry. Each defaults to None = "as the preset says",
    so a flag overrides the preset's value only when given (help text and choices come from the registry)."""
    fields = []
    for d in REGISTRY.values():
        typ = Annotated[Optional[Literal[d.choices]], tyro.conf.arg(help=f"{d.doc} (paper: {d.paper})")]
        fields.append((d.name, typ, dataclasses.field(default=None)))
    return dataclasses.make_dataclass("DetailFlags", fields, frozen=True)


DetailFlags = _detail_flags()


@dataclass(frozen=True)
class RewardFlags:
    """Where the RL stage's score comes from (the same as --set reward.source=... reward.rule=...)."""

    source: str | None = None
    """rm (default: the learned reward model), gold (tldr-synth's gold judge: the upper bound) or rule."""
    rule: str | None = None
    """With source=rule: keywords (+1 per key-fact word) or sentiment (+1 positive, −2 negative word)."""


@dataclass(frozen=True)
class RunArgs:
    """A pipeline run: a preset, a seed, detail flips and hyperparameter overrides."""

    out: Path = Path("runs/pipeline")
    """Run directory (config.json, metrics.jsonl, samples.jsonl, eval.json, summary.json, ...)."""
    preset: str = "smoke"
    """Preset: smoke, demo, paper-1b, paper-2.8b or paper-6.9b."""
    seed: int = 1
    """Training seed (data order, sampling, head init)."""
    details: DetailFlags = field(default_factory=DetailFlags)
    """Implementation details to flip (default: the preset's values, which are the paper's except where a preset
    says otherwise)."""
    algorithm: str | None = None
    """Policy-optimization algorithm after SFT and RM: ppo (default), dpo, rloo, reinforce or grpo (the same as
    --set algorithm=NAME). SFT and RM artifacts are shared across algorithms."""
    reward: RewardFlags = field(default_factory=RewardFlags)
    """Reward source of the policy-optimization stage (--reward.source, --reward.rule)."""
    framework: str | None = None
    """Framework-emulation preset (paper, trl-ppo, openrlhf, deepspeed-chat, trlx, lmhp): its detail values
    replace the preset's; --details flags still override them."""
    set: tuple[str, ...] = ()
    """Hyperparameter overrides as dotted KEY=VALUE, e.g. --set ppo.total_episodes=2048 ppo.kl_coef=0.01 (a field
    that has no effect in the resolved configuration is an error naming what governs it: the stage rates ppo.lr,
    sft.lr, rm.lr act only under --details.learning-rate per_stage, lr only under single)."""
    cache: Path | None = None
    """Artifact cache for data, base, SFT and RM (default: $NPLUS_CACHE or runs/.cache)."""
    dry_run: bool = False
    """Print the resolved configuration and exit without loading data or models."""
    threads: int | None = positive(None)
    """torch threads (default: torch's choice)."""
    track: bool = False
    """Mirror metrics and samples to wandb (offline mode when WANDB_API_KEY is unset)."""
    overwrite: bool = False
    """Replace the finished run in --out (one with a DONE marker); without it such a run is never overwritten."""

    def resolve(self):
        from nplus.config import apply_overrides
        from nplus.presets import preset

        cfg = preset(self.preset, self.seed)
        if self.framework:  # a framework's values first, then the flags given on the command line
            from nplus.frameworks import framework_details

            cfg = apply_overrides(cfg, details=framework_details(self.framework))
        given = {k: v for k, v in dataclasses.asdict(self.details).items() if v is not None}
        hp = {"algorithm": self.algorithm} if self.algorithm is not None else {}
        hp.update({f"reward.{k}": v for k, v in dataclasses.asdict(self.reward).items() if v is not None})
        for item in self.set:
            if "=" not in item:
                from nplus.config import ConfigError

                raise ConfigError(f"--set expects KEY=VALUE (e.g. --set ppo.lr=1e-4), got {item!r}")
            k, v = item.split("=", 1)
            hp[k] = v
        return apply_overrides(cfg, hparams=hp, details=given)  # together: a --set is judged under the flags given


def _run_stages(args: RunArgs, stop_after: str) -> int:
    from nplus.pipeline import run_pipeline

    cfg = args.resolve()
    if args.dry_run:
        print(
            json.dumps(
                {
                    **cfg.to_dict(),
                    "hash": cfg.hash,
                    "stage_hashes": {s: cfg.stage_hash(s) for s in ("base", "sft", "rm", "ppo")},
                },
                indent=2,
            )
        )
        return 0
    _set_threads(args.threads)
    summary = run_pipeline(cfg, args.out, args.cache, stop_after=stop_after, track=args.track, overwrite=args.overwrite)
    print(json.dumps({k: v for k, v in summary.items() if not isinstance(v, dict)}, indent=2))
    print(f"run directory: {args.out}", file=sys.stderr)
    return 0


@dataclass(frozen=True)
class PipelineCmd(RunArgs):
    """Run base → SFT → RM → PPO and write summary.json (upstream stages are reused from the cache)."""

    def run(self) -> int:
        return _run_stages(self, "ppo")


@dataclass(frozen=True)
class SftCmd(RunArgs):
    """Run the SFT stage (and the base model it needs); writes the SFT evaluation (ROUGE, win rate)."""

    def run(self) -> int:
        return _run_stages(self, "sft")


@dataclass(frozen=True)
class RmCmd(RunArgs):
    """Run the reward-model stage (and SFT before it); writes accuracy, calibration and normalization."""

    def run(self) -> int:
        return _run_stages(self, "rm")


@dataclass(frozen=True)
class PpoCmd(RunArgs):
    """Run PPO (SFT and RM from the cache or trained first); same as `pipeline`."""

    def run(self) -> int:
        return _run_stages(self, "ppo")


def _commands() -> dict[str, type]:
    cmds: dict[str, type] = {
        "data": DataCmd,
        "base": BaseCmd,
        "details": DetailsCmd,
        "pipeline": PipelineCmd,
        "sft": SftCmd,
        "rm": RmCmd,
        "ppo": PpoCmd,
    }
    from nplus.evaluation.evaluate_cmd import EvalConfig

    cmds["eval"] = EvalConfig
    from nplus.data.label_cmd import LabelConfig

    cmds["label"] = LabelConfig
    from nplus.data.build_cmd import DataBuildCmd

    cmds["data-build"] = DataBuildCmd
    try:
        from nplus.ablate.cli import AblateCmd, StatsCmd

        cmds["ablate"], cmds["stats"] = AblateCmd, StatsCmd
    except ImportError:
        pass
    try:
        from nplus.report.cli import ReportCmd

        cmds["report"] = ReportCmd
    except ImportError:
        pass
    return cmds


# Errors a user can fix (bad flag value, study file, data schema, missing download): one line, exit 2.
# A full disk is one too (DiskFullError names the path; an OSError that says so is reported the same way).
USER_ERRORS = (
    "RunDirError",
    "PathError",
    "BaseModelError",
    "DetailError",
    "ConfigError",
    "StudyError",
    "FrameworkError",
    "SchemaError",
    "DataSourceError",
    "EvalInputError",
    "JudgeConfigError",
    "ReportError",
    "WandbMissingError",
    "DataBuildError",
    "JudgeFailedError",
    "DiskFullError",
    "LabelInputError",
    "InductionNotFormed",
    "CheckpointMismatch",
)
# `--debug` (anywhere on the command line) or NPLUS_DEBUG=1: let every error through with its traceback.
DEBUG_FLAG, DEBUG_ENV = "--debug", "NPLUS_DEBUG"
EXIT_USER, EXIT_INTERRUPTED = 2, 130  # 130 = 128 + SIGINT, what a shell reports for a Ctrl-C
INTERRUPTED = (
    "interrupted; rerun the same command to resume: finished runs, cached stages and artifacts are kept "
    "and nothing half-written is reused (--debug for the traceback)"
)


def os_error_line(e: OSError) -> str:
    """One line for an operating-system error: what the system said and the path(s) it said it about."""
    paths = " -> ".join(str(p) for p in (e.filename, e.filename2) if p is not None)
    reason = e.strerror or (str(e).splitlines() or [type(e).__name__])[0]
    return f"{reason}: {paths}" if paths else f"{reason} ({type(e).__name__})"


def merge_repeated_set(argv: list[str]) -> list[str]:
    """Gather the values of every ``--set`` flag behind the first one. tyro keeps only the last occurrence of a
    flag, so ``--set task.name=tldr --set model.name=DIR`` would silently drop ``task.name``; both that form
    and ``--set A=1 B=2`` mean all the overrides given."""
    if sum(a == "--set" or a.startswith("--set=") for a in argv) < 2:
        return argv
    rest: list[str] = []
    values: list[str] = []
    first, i = None, 0
    while i < len(argv):
        if argv[i] == "--set" or argv[i].startswith("--set="):
            first = len(rest) if first is None else first
            if argv[i] != "--set":
                values.append(argv[i].removeprefix("--set="))
            i += 1
            while argv[i:] and argv[i] != "--set" and not argv[i].startswith("-"):
                values.append(argv[i])
                i += 1
            continue
        rest.append(argv[i])
        i += 1
    return rest[:first] + ["--set", *values] + rest[first:]


def check_detail_flags(argv: list[str]) -> None:
    """An unknown ``--details.NAME`` names the valid details (tyro would only say "unrecognized option")."""
    from nplus.details import DetailError

    for arg in argv:
        if arg.startswith("--details."):
            name = arg.removeprefix("--details.").split("=", 1)[0].replace("-", "_")
            if name not in REGISTRY:
                raise DetailError(f"--details.{name}: unknown detail; valid details: {', '.join(REGISTRY)}")


def check_flag_ranges(cmd: object, prefix: str = "--") -> None:
    """A command's flags declared with a range (nplus.config.ranged and its shorthands, e.g. --threads, --workers)
    hold a value in it: one line naming the flag, before anything runs (tyro checks only the type)."""
    from nplus.config import check_declared_ranges

    check_declared_ranges(cmd, prefix)


def check_output_paths(cmd: object) -> None:
    """Every command's --out and --cache (when given) is a directory it may write, checked before it writes
    anything: a file in the way, no permission or a name too long is one line naming the path, not a traceback
    after provenance (commands that default them check their defaults where they resolve them)."""
    from nplus.rundir import check_writable_dir

    for name in ("out", "cache"):
        value = getattr(cmd, name, None)
        if isinstance(value, Path):
            check_writable_dir(value, f"--{name}")


def main(argv: list[str] | None = None) -> int:
    """Run one command. A user error, an operating-system error (a path refused) and Ctrl-C end in one line on
    stderr (exit 2, 2 and 130), never a traceback, unless --debug or NPLUS_DEBUG=1 asks for it."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = DEBUG_FLAG in argv or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    argv = [a for a in argv if a != DEBUG_FLAG]
    try:
        cmds = _commands()
        argv = merge_repeated_set(argv)
        check_detail_flags(argv)
        obj = tyro.extras.subcommand_cli_from_dict(
            cmds, args=argv, prog="nplus", description="nplus: the implementation details of RLHF with PPO, measured."
        )
        check_flag_ranges(obj)
        check_output_paths(obj)
        if hasattr(obj, "run"):
            return int(obj.run() or 0)
        from nplus.evaluation.evaluate_cmd import run_eval

        result = run_eval(obj)
        print(json.dumps({k: v for k, v in result.items() if not isinstance(v, (list, dict))}, indent=2))
        return 0
    except BrokenPipeError:  # `nplus ... | head`: the reader left; nothing to say (Python docs' recipe)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"error: {INTERRUPTED}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as e:  # noqa: BLE001 - re-raised unless it is a user error
        from nplus.rundir import DiskFullError, is_disk_full

        if debug:
            raise
        if type(e).__name__ not in USER_ERRORS and is_disk_full(e):
            e = DiskFullError(getattr(e, "filename", None) or "a file", e)
        if type(e).__name__ in USER_ERRORS:
            print(f"error: {e}", file=sys.stderr)
            return EXIT_USER
        if isinstance(e, OSError):
            print(f"error: {os_error_line(e)}", file=sys.stderr)
            return EXIT_USER
        raise


if __name__ == "__main__":
    sys.exit(main())
