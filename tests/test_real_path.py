"""The real path (``task=tldr``) end to end on CPU: SFT → RM → PPO through the same code a GPU run takes.

The inputs are what a machine without hub access would hold: a random-weight GPT-NeoX model with its tokenizer
saved in hub layout (config.json, model.safetensors, tokenizer files), the TL;DR datasets as local parquet
snapshots in the public schemas (the tldr-synth corpus, which has exactly those schemas; laid out as
`hf download` writes them), and the OpenAI-compatible judge answered by the loopback chat server of
tests/test_judge_server.py, reached through the openai client's own OPENAI_BASE_URL / OPENAI_API_KEY variables
(the pipeline builds the paper's judge, gpt-3.5-turbo-0125, with no base URL of its own). The server answers with
the gold judge's verdicts on this corpus. Only the smoke preset's sizes are kept, so the run takes seconds.
The pipeline also runs as 2 CPU processes under torchrun with gloo, as tests/test_distributed.py launches them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import AutoTokenizer, GPTNeoXForCausalLM

from nplus.config import apply_overrides
from nplus.models import ladder_config
from nplus.presets import preset
from nplus.rundir import done_problem, read_json, read_jsonl
from nplus.tasks.gold import GoldJudge
from nplus.tasks.synth import generate
from nplus.tooling.testing import run_isolated
from tests import test_judge_server as judge_server
from tests.snapshots import write_hub_snapshots

# make test-fast leaves it out: the public-task path end to end, trained in fresh processes
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
SECRET = "sk-test-real-path-7c21"


@pytest.fixture(scope="module")
def real_inputs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("real")
    synth = root / "synth"
    generate(synth, 0, "tiny")
    write_hub_snapshots(synth, root / "sft", root / "cmp")
    # a random-weight GPT-NeoX (Pythia's architecture) in hub layout, with its tokenizer
    tokenizer = AutoTokenizer.from_pretrained(str(synth / "tokenizer"))
    model = GPTNeoXForCausalLM(
        ladder_config("nano", len(tokenizer), 256, tokenizer.eos_token_id, tokenizer.pad_token_id)
    )
    model.save_pretrained(str(root / "model"))
    tokenizer.save_pretrained(str(root / "model"))
    return {
        "root": root,
        "synth": synth,
        "sft": root / "sft",
        "cmp": root / "cmp" / "comparisons",
        "model": root / "model",
    }


def test_tldr_task_runs_end_to_end_on_local_copies(real_inputs, tmp_path, monkeypatch):
    files = {p.name for p in real_inputs["model"].iterdir()}
    assert "model.safetensors" in files and "config.json" in files and not any(f.endswith(".bin") for f in files)
    cfg = apply_overrides(
        preset("smoke", 1),
        hparams={
            "task.name": "tldr",
            "task.sft_source": str(real_inputs["sft"]),
            "task.comparisons_source": str(real_inputs["cmp"]),
            "model.name": str(real_inputs["model"]),
        },
    )
    # the server's verdicts come from the gold judge of this corpus (its module-level judge knows other posts)
    monkeypatch.setattr(judge_server, "GOLD", GoldJudge.from_dir(real_inputs["synth"]))
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    with judge_server.ChatServer({}) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        summary, _ = run_isolated(cfg, tmp_path / "run", tmp_path / "cache")
        judged = server.total_requests
    run = tmp_path / "run"
    assert (run / "DONE").exists() and read_json(run / "config.json")["task"]["name"] == "tldr"
    assert summary["model"] == str(real_inputs["model"])
    # every generation-based evaluation went through the chat server: SFT once, PPO periodically and at the end
    n_eval = cfg.task.max_eval
    assert judged >= 2 * n_eval and judged % n_eval == 0
    for stage in ("sft", "ppo"):
        assert 0.0 <= summary[f"{stage}.win_rate"] <= 1.0
        assert summary[f"{stage}.gold_score"] is None  # the real task has no gold judge
    rows = [r for r in read_jsonl(run / "samples.jsonl") if r["stage"] == "ppo"]
    assert len(rows) == n_eval and all(r["outcome"] in ("win", "loss") for r in rows)
    assert all(r["judge_raw"].splitlines()[-1] in ("Preferred: A", "Preferred: B") for r in rows)
    # the datasets were built from the parquet copies with the model's tokenizer; the base was not pretrained
    cache = tmp_path / "cache"
    assert not (cache / "base").exists() and not (cache / "data").exists()
    assert len([p for p in (cache / "built").iterdir() if p.is_dir()]) == 1
    sft_eval = read_json(Path(summary["artifacts"]["sft"]) / "eval.json")
    assert sft_eval["n_failed"] == sft_eval["n_unparseable"] == 0
    # the key reached the server and nothing else
    assert server.auth_headers == {f"Bearer {SECRET}"}
    for path in [*run.rglob("*"), *cache.rglob("*.json*")]:
        if path.is_file():
            assert SECRET not in path.read_text(errors="replace"), path
    assert json.loads((run / "config.json").read_text())["model"]["name"] == str(real_inputs["model"])


def test_tldr_pipeline_on_two_processes(real_inputs, tmp_path, monkeypatch):
    """The same run as 2 CPU processes (torchrun, gloo; what `accelerate launch` does on GPUs): every stage trains
    on both ranks, and what is written once (evaluation, judging, samples, summary) is written by rank 0 only."""
    torchrun = Path(sys.executable).parent / "torchrun"
    if not torchrun.exists():
        pytest.skip("torchrun not found next to the interpreter")
    run, cache = tmp_path / "run", tmp_path / "cache"
    monkeypatch.setattr(judge_server, "GOLD", GoldJudge.from_dir(real_inputs["synth"]))
    with judge_server.ChatServer({}) as server:
        env = {
            **os.environ,
            "OPENAI_API_KEY": SECRET,
            "OPENAI_BASE_URL": server.base_url,
            "ACCELERATE_USE_CPU": "1",
            "OMP_NUM_THREADS": "1",
            "NPLUS_PROGRESS": "0",
        }
        r = subprocess.run(
            [
                str(torchrun),
                "--standalone",
                "--nproc_per_node",
                "2",
                "-m",
                "nplus.cli",
                "pipeline",
                "--preset",
                "smoke",
                "--seed",
                "1",
                "--out",
                str(run),
                "--cache",
                str(cache),
                "--set",
                "task.name=tldr",
                f"task.sft_source={real_inputs['sft']}",
                f"task.comparisons_source={real_inputs['cmp']}",
                f"model.name={real_inputs['model']}",
                "processes=2",
                "sft.micro_batch=8",
                "rm.micro_batch=8",
                "ppo.micro_batch=8",
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        judged = server.total_requests
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    assert done_problem(run) is None
    cfg = read_json(run / "config.json")
    assert cfg["task"]["name"] == "tldr" and cfg["processes"] == 2 and cfg["model"]["name"] == str(real_inputs["model"])
    summary, evals = read_json(run / "summary.json"), read_json(run / "eval.json")
    for stage in ("sft", "ppo"):
        assert 0.0 <= summary[f"{stage}.win_rate"] <= 1.0 and summary[f"{stage}.gold_score"] is None
    # judged once per evaluation, by one rank: SFT, each periodic PPO evaluation, the final one
    n_eval = cfg["task"]["max_eval"]
    assert judged == n_eval * (2 + len(evals["ppo"]["evals"]))
    rows = [r for r in read_jsonl(run / "samples.jsonl") if r["stage"] == "ppo"]
    assert len(rows) == n_eval and all(r["outcome"] in ("win", "loss") for r in rows)
    # one training row per optimizer step (rank 0 logs the means over ranks); periodic evaluations add their own
    metrics = [m for m in read_jsonl(run / "metrics.jsonl") if not any(k.startswith("eval/") for k in m)]
    for stage in ("sft", "rm", "ppo"):
        steps = [m["step"] for m in metrics if m["stage"] == stage]
        assert steps and len(steps) == len(set(steps)), stage
    assert len([p for p in (cache / "built").iterdir() if p.is_dir()]) == 1 and not (cache / "base").exists()
    assert all(done_problem(Path(summary["artifacts"][s])) is None for s in ("sft", "rm"))
    assert server.auth_headers == {f"Bearer {SECRET}"}
