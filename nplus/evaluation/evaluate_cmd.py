"""``nplus eval``: judge policy summaries against references and write ``eval.json`` + ``judgments.jsonl``.

1. read the samples (a run directory's ``samples.jsonl`` or a JSONL / CSV file) and check every column first,
2. build the judge (gold / openai / hf) and check its settings,
3. judge each response against its reference in a seeded random A/B order (optionally both orders),
4. compute win rate (Wilson + bootstrap), length-controlled win rate, win rate by length, ROUGE, position bias,
5. write one row per example to ``judgments.jsonl`` and the aggregates to ``eval.json`` (atomically).
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any, Callable, Literal

import numpy as np
import tyro

from nplus.evaluation import metrics
from nplus.evaluation.judge_factory import make_judge
from nplus.evaluation.judges import GoldJudgeAdapter, Judge, judge_against_reference
from nplus.evaluation.rouge import rouge_scores
from nplus.rundir import atomic_write_json, atomic_write_text, check_writable_dir


@dataclass(frozen=True)
class JudgeOptions:
    """Settings of the judge; each judge reads only the ones it needs."""

    judge_model: str | None = None
    """openai: chat model name (default gpt-3.5-turbo-0125, the paper's judge). hf: local model directory."""
    judge_base_url: str | None = None
    """openai: base URL of an OpenAI-compatible endpoint, e.g. http://localhost:8000/v1 (default: OpenAI)."""
    api_key_env: str = "OPENAI_API_KEY"
    """openai: name of the environment variable holding the API key (the key itself is never written)."""
    judge_seed: int = 0
    """Seed of the per-example A/B order (recorded in every judgment row)."""
    both_orders: bool = False
    """Judge every example in both A/B orders; disagreeing orders count as ties (reports position consistency)."""
    concurrency: int = 8
    """openai: requests in flight at once."""
    max_retries: int = 5
    """openai: retries per request on 429 / 5xx / timeouts / connection errors (exponential back-off)."""
    timeout_s: float = 60.0
    """openai: per-request timeout in seconds."""
    retry_base_delay_s: float = 1.0
    """openai: first back-off delay in seconds (doubles per retry, with jitter)."""
    temperature: float = 0.0
    """openai: sampling temperature of the judge."""
    max_tokens: int = 128
    """openai: maximum reply length in tokens."""
    price_per_1m: tuple[float, float] | None = None
    """openai: USD per 1M (input, output) tokens for the cost estimate (default: built-in table by model)."""
    cache_dir: Path | None = Path(".cache/judge")
    """openai: directory of the reply cache (a rerun costs nothing); None disables it."""
    data_dir: Path | None = None
    """gold: the tldr-synth data directory holding facts.jsonl."""
    device: str | None = None
    """hf: torch device (default: cuda when available, else cpu)."""


@dataclass(frozen=True)
class EvalConfig:
    """Judge policy summaries against reference summaries."""

    input: Path
    """A run directory (reads its samples.jsonl) or a .jsonl / .csv file with columns post (or query),
    response, reference and optional id, finished."""
    out: Path | None = None
    """Output directory for eval.json and judgments.jsonl (default: <file stem>_eval/ next to an input file;
    required for a run directory, whose own eval.json its DONE marker vouches for)."""
    stage: str | None = None
    """Evaluate rows of this stage (sft / ppo) when the input has a stage column (default: ppo if present,
    else the only stage)."""
    judge: Literal["gold", "openai", "hf"] = "gold"
    """Which judge: the tldr-synth gold judge, an OpenAI-compatible chat model, or a local causal LM."""
    judge_options: Annotated[JudgeOptions, tyro.conf.OmitArgPrefixes] = JudgeOptions()
    """Judge settings."""
    length_unit: Literal["words", "tokens"] = "words"
    """Unit of the summary lengths used for the length-controlled win rate and mean length."""
    tokenizer: Path | None = None
    """Local tokenizer directory, required when length_unit is tokens."""
    limit: int | None = None
    """Evaluate only the first N examples (e.g. to bound the cost of a paid judge)."""
    n_bootstrap: int = 1000
    """Bootstrap resamples for the win-rate and ROUGE intervals."""
    seed: int = 0
    """Seed of the bootstrap."""


class EvalInputError(ValueError):
    """The input or the configuration is unusable; raised before any judging."""


class JudgeFailedError(RuntimeError):
    """Every judge request failed (endpoint down, timeouts, quota): there is no result to write."""


@dataclass(frozen=True)
class Example:
    """One policy summary to judge against its reference."""

    id: str
    post: str
    response: str
    reference: str
    finished: bool = True


_QUERY_POST = re.compile(r"\nPOST:\s?(.*?)\s*\n\nTL;DR:\s*$", re.DOTALL)


def post_from_query(query: str) -> str | None:
    """Extract the post from a formatted query ``SUBREDDIT: r/...\\n\\nTITLE: ...\\n\\nPOST: ...\\n\\nTL;DR:``.

    A query whose post was truncated to fit 512 tokens yields the truncated post, which the gold judge (it
    looks posts up by exact text) will not find: prefer a ``post`` column when there is one.
    """
    match = _QUERY_POST.search("\n" + query.strip())
    return match.group(1) if match else None


def read_rows(path: Path) -> tuple[Path, list[dict[str, Any]]]:
    """Rows of a run directory's samples.jsonl, a JSONL file or a CSV file; returns (file read, rows)."""
    path = Path(path)
    if path.is_dir():
        path = path / "samples.jsonl"
        if not path.exists():
            raise EvalInputError(f"{path.parent} is a directory without samples.jsonl (not a run directory?)")
    if not path.exists():
        raise EvalInputError(f"input file {path} does not exist")
    if path.suffix == ".csv":
        with path.open(newline="") as f:
            return path, list(csv.DictReader(f))
    if path.suffix not in (".jsonl", ".json"):
        raise EvalInputError(f"input file {path}: expected a run directory, .jsonl or .csv")
    rows = []
    for line_no, line in enumerate(path.read_text().splitlines(), start=1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise EvalInputError(f"{path}, line {line_no}: not valid JSON ({exc})") from exc
    return path, rows


def select_stage(rows: list[dict[str, Any]], stage: str | None, path: Path) -> tuple[list[dict[str, Any]], str | None]:
    """Keep the rows of one stage when rows carry a ``stage``; default ppo if present, else the only stage."""
    present = sorted({r["stage"] for r in rows if r.get("stage") is not None})
    if not present:
        return rows, stage
    if stage is None:
        if "ppo" not in present and len(present) > 1:
            raise EvalInputError(f"{path} holds stages {present}: choose one with --stage")
        stage = "ppo" if "ppo" in present else present[0]
    if stage not in present:
        raise EvalInputError(f"{path} has no rows of stage {stage!r} (stages present: {present})")
    return [r for r in rows if r.get("stage") == stage], stage


def _parse_bool(value: Any, path: Path, row: int) -> bool:
    """``finished`` from JSON (bool) or CSV (text)."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes"):
        return True
    if text in ("0", "false", "no"):
        return False
    raise EvalInputError(f"{path}, row {row}: column 'finished' must be true/false, got {value!r}")


def examples_from_rows(rows: list[dict[str, Any]], path: Path) -> list[Example]:
    """Validate rows and turn them into examples. Errors name the file, the row (1-based) and the column.

    Later rows replace earlier ones with the same id (a run that evaluated twice keeps its final samples).
    """
    if not rows:
        raise EvalInputError(f"{path} has no rows")
    columns = set().union(*(r.keys() for r in rows))
    for column in ("response", "reference"):
        if column not in columns:
            raise EvalInputError(f"{path} has no column '{column}' (columns: {sorted(columns)})")
    if "post" not in columns and "query" not in columns:
        raise EvalInputError(f"{path} has neither a 'post' nor a 'query' column (columns: {sorted(columns)})")
    by_id: dict[str, Example] = {}
    for row_no, row in enumerate(rows, start=1):
        for column in ("response", "reference"):
            if row.get(column) is None:
                raise EvalInputError(f"{path}, row {row_no}: column '{column}' is empty")
        post = row.get("post")
        if not post:
            if not row.get("query"):
                raise EvalInputError(f"{path}, row {row_no}: both 'post' and 'query' are empty")
            post = post_from_query(row["query"])
            if post is None:
                raise EvalInputError(f"{path}, row {row_no}: column 'query' does not contain 'POST: ... TL;DR:'")
        finished = _parse_bool(row["finished"], path, row_no) if row.get("finished") not in (None, "") else True
        example_id = str(row["id"]) if row.get("id") not in (None, "") else str(row_no - 1)
        by_id[example_id] = Example(example_id, post, row["response"], row["reference"], finished)
    return list(by_id.values())


def length_counter(unit: str, tokenizer_path: Path | None) -> Callable[[str], int]:
    """A function text -> length in words, or in tokens of a local tokenizer (text given a leading space,
    as a summary follows "TL;DR:" in the model's input)."""
    if unit == "words":
        return lambda text: len(text.split())
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_path, local_files_only=True)
    return lambda text: len(tokenizer(" " + text.strip(), add_special_tokens=False)["input_ids"])


def check_config(cfg: EvalConfig) -> None:
    """Fail before any work on settings that cannot work (the judge's own checks come when it is built)."""
    opts = cfg.judge_options
    if cfg.judge == "gold":
        if opts.data_dir is None:
            raise EvalInputError("judge gold needs --data-dir (the tldr-synth data directory with facts.jsonl)")
        if not (Path(opts.data_dir) / "facts.jsonl").exists():
            raise EvalInputError(f"gold judge: {Path(opts.data_dir) / 'facts.jsonl'} does not exist")
    if cfg.judge == "hf" and (opts.judge_model is None or not Path(opts.judge_model).is_dir()):
        raise EvalInputError(f"judge hf needs --judge-model set to a local model directory, got {opts.judge_model!r}")
    if cfg.length_unit == "tokens" and (cfg.tokenizer is None or not Path(cfg.tokenizer).is_dir()):
        raise EvalInputError(
            f"length_unit tokens needs --tokenizer set to a local tokenizer directory, got {cfg.tokenizer!r}"
        )
    if cfg.limit is not None and cfg.limit < 1:
        raise EvalInputError(f"--limit must be positive, got {cfg.limit}")


def judge_from_options(kind: str, opts: JudgeOptions) -> Judge:
    """Build the judge named ``kind``, passing it only the options it reads."""
    if kind == "gold":
        return make_judge("gold", data_dir=opts.data_dir)
    if kind == "hf":
        return make_judge("hf", model=opts.judge_model, device=opts.device)
    chosen_model = {"model": opts.judge_model} if opts.judge_model is not None else {}
    return make_judge(
        "openai",
        **chosen_model,
        base_url=opts.judge_base_url,
        api_key_env=opts.api_key_env,
        concurrency=opts.concurrency,
        max_retries=opts.max_retries,
        timeout_s=opts.timeout_s,
        retry_base_delay_s=opts.retry_base_delay_s,
        temperature=opts.temperature,
        max_tokens=opts.max_tokens,
        cache_dir=opts.cache_dir,
        price_per_1m=opts.price_per_1m,
    )


def default_out(cfg: EvalConfig) -> Path:
    """``--out``, or ``<stem>_eval/`` next to an input file. A run directory has no default: its eval.json is the
    pipeline's, vouched for by its DONE marker, and rewriting it would make stats drop the run and the runner
    retrain it."""
    if cfg.out is not None:
        return Path(cfg.out)
    path = Path(cfg.input)
    if path.is_dir():
        raise EvalInputError(
            f"--input {path} is a run directory: pass --out DIR for the evaluation's eval.json and "
            "judgments.jsonl (the run's own eval.json is left as the pipeline wrote it)"
        )
    return path.with_name(f"{path.stem}_eval")


def aggregate(
    records: list[dict[str, Any]],
    examples: list[Example],
    response_lengths: np.ndarray,
    reference_lengths: np.ndarray,
    both_orders: bool,
    n_boot: int,
    seed: int,
) -> dict[str, Any]:
    """All eval.json metrics from the judgment records, the texts and their lengths."""
    outcomes = [r["outcome"] for r in records]
    x = metrics.log_length_ratio(response_lengths, reference_lengths)
    decided = np.array([o in ("win", "loss") for o in outcomes])
    wins = np.array([o == "win" for o in outcomes], dtype=float)[decided]
    choices = [r["choice"] for r in records] + ([r["swapped"]["choice"] for r in records] if both_orders else [])
    result: dict[str, Any] = {
        **metrics.win_rate_summary(outcomes, n_boot=n_boot, seed=seed),
        **metrics.length_controlled_win_rate(wins, x[decided]),
        "length_bins": metrics.length_bins(wins, x[decided]),
        **rouge_scores([e.response for e in examples], [e.reference for e in examples], n_boot=n_boot, seed=seed),
        "mean_length": float(response_lengths.mean()),
        "mean_reference_length": float(reference_lengths.mean()),
        "eos_rate": float(np.mean([e.finished for e in examples])),
    }
    bias = metrics.position_bias(choices)
    result["position_bias"], result["position_bias_ci"] = bias["position_bias"], bias["position_bias_ci"]
    if both_orders:
        consistency = metrics.position_consistency(
            [r["winner"] for r in records], [r["swapped"]["winner"] for r in records]
        )
        result["position_consistency"] = consistency["position_consistency"]
        result["position_consistency_ci"] = consistency["position_consistency_ci"]
    return result


def _jsonable_config(cfg: EvalConfig) -> dict[str, Any]:
    """The config as written to eval.json (paths as strings). Holds the key's variable name, never the key."""
    return json.loads(json.dumps(asdict(cfg), default=str))


def run_eval(cfg: EvalConfig) -> dict[str, Any]:
    """Run the evaluation described by ``cfg``; returns the eval.json aggregates."""
    # 1. read and validate everything before any judging
    check_config(cfg)
    path, rows = read_rows(cfg.input)
    out = default_out(cfg)  # created only when there are results to write: a refused eval leaves nothing
    check_writable_dir(out, "--out")
    rows, stage = select_stage(rows, cfg.stage, path)
    examples = examples_from_rows(rows, path)[: cfg.limit]
    count = length_counter(cfg.length_unit, cfg.tokenizer)
    response_lengths = np.array([count(e.response) for e in examples])
    reference_lengths = np.array([count(e.reference) for e in examples])
    # 2. the judge (an openai judge checks its API key here, the gold judge that it knows every post)
    opts = cfg.judge_options
    judge = judge_from_options(cfg.judge, opts)
    if isinstance(judge, GoldJudgeAdapter):
        unknown = judge.unknown_posts([e.post for e in examples])
        if unknown:
            raise EvalInputError(
                f"{path}: the post of example id {examples[unknown[0]].id!r} (and "
                f"{len(unknown) - 1} more) is not in {opts.data_dir}/facts.jsonl; the gold "
                "judge needs the exact tldr-synth post text"
            )
    # 3. judge against the reference in a seeded random order
    records = judge_against_reference(
        judge,
        [e.post for e in examples],
        [e.response for e in examples],
        [e.reference for e in examples],
        finished=[e.finished for e in examples],
        seed=opts.judge_seed,
        both_orders=opts.both_orders,
    )
    if all(r["outcome"] == "failed" for r in records):  # a null win rate with exit 0 would pass for a result
        errors = sorted({side["error"] for r in records for side in [r, r.get("swapped") or {}] if side.get("error")})
        raise JudgeFailedError(
            f"every judgment failed ({len(records)} example{'s' * (len(records) != 1)}; errors: "
            f"{'; '.join(errors[:3]) or 'none recorded'}); nothing written to {out}. Check the "
            "judge's endpoint, model and quota and rerun (replies already received are cached)"
        )
    # 4. metrics
    result = {
        "judge": judge.name,
        "judge_model": judge.model,
        "judge_seed": opts.judge_seed,
        "both_orders": opts.both_orders,
        "seed": cfg.seed,
        "stage": stage,
        "input": str(path),
        "length_unit": cfg.length_unit,
        **aggregate(
            records, examples, response_lengths, reference_lengths, opts.both_orders, cfg.n_bootstrap, cfg.seed
        ),
        "judge_stats": judge.stats(),
        "config": _jsonable_config(cfg),
    }
    # 5. write: one row per example, then the aggregates
    out.mkdir(parents=True, exist_ok=True)
    x = metrics.log_length_ratio(response_lengths, reference_lengths)
    lines = [
        json.dumps(
            {
                **asdict(e),
                "response_length": int(n_resp),
                "reference_length": int(n_ref),
                "log_length_ratio": float(x_i),
                **record,
            }
        )
        + "\n"
        for e, record, n_resp, n_ref, x_i in zip(examples, records, response_lengths, reference_lengths, x)
    ]
    atomic_write_text(out / "judgments.jsonl", "".join(lines))
    atomic_write_json(out / "eval.json", result)
    return result
