"""Invariant (TRL style): the same global batch split as 2 processes × 1 micro-batch and 1 process × 2 micro-batches
gives the same training trajectory. Runs two CPU processes with gloo through torchrun, which accelerate's
``Accelerator`` picks up (the same code path as ``accelerate launch`` on GPUs).

Stated tolerance: per-step losses agree to 1e-4 absolute (fp32 all-reduce order differs from local summation).
"""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nplus.rundir import read_json, read_jsonl

# make test-fast leaves it out: multi-process training runs
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
TOL = 1e-4
SPLIT = ["sft.micro_batch=8", "rm.micro_batch=8", "ppo.micro_batch=8"]  # smoke: global batches of 16


def _run(cmd, env=None):
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env={**os.environ, **(env or {})})
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    return r


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("dist")
    cache = root / "cache"
    torchrun = Path(sys.executable).parent / "torchrun"
    if not torchrun.exists():
        pytest.skip("torchrun not found next to the interpreter")
    common = ["-m", "nplus.cli", "rm", "--preset", "smoke", "--seed", "1", "--cache", str(cache)]
    # 1 process × 2 micro-batches
    _run([sys.executable, *common, "--out", str(root / "one"), "--set", *SPLIT])
    # 2 processes × 1 micro-batch
    _run(
        [
            str(torchrun),
            "--standalone",
            "--nproc_per_node",
            "2",
            *common,
            "--out",
            str(root / "two"),
            "--set",
            "processes=2",
            *SPLIT,
        ],
        env={"ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"},
    )
    return root


def _losses(run: Path, key: str) -> list[float]:
    return [r[key] for r in read_jsonl(run / "metrics.jsonl") if key in r]


@pytest.mark.parametrize("key", ["sft/loss", "rm/loss", "rm/accuracy"])
def test_two_by_one_equals_one_by_two(runs, key):
    one, two = _losses(runs / "one", key), _losses(runs / "two", key)
    assert len(one) == len(two) > 0
    assert max(abs(a - b) for a, b in zip(one, two)) < TOL


def test_final_metrics_agree(runs):
    a, b = read_json(runs / "one" / "summary.json"), read_json(runs / "two" / "summary.json")
    assert abs(a["rm.accuracy"] - b["rm.accuracy"]) < 1e-9 or abs(a["rm.accuracy"] - b["rm.accuracy"]) <= 1 / 128


def test_processes_mismatch_is_a_clear_error(tmp_path):
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "nplus.cli",
            "pipeline",
            "--preset",
            "smoke",
            "--out",
            str(tmp_path / "x"),
            "--set",
            "processes=2",
            "sft.micro_batch=8",
            "rm.micro_batch=8",
            "ppo.micro_batch=8",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2 and "launched with 1 processes" in r.stderr


def test_indivisible_batch_is_a_clear_error(tmp_path):
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "nplus.cli",
            "pipeline",
            "--preset",
            "smoke",
            "--out",
            str(tmp_path / "x"),
            "--set",
            "sft.micro_batch=5",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2 and "must be divisible" in r.stderr


def test_single_process_training_is_not_wrapped_and_backward_averages_micro_batches():
    import torch

    from nplus.stages.common import dist

    D = dist()
    model = torch.nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    assert D.prepare_training(model, opt, micro_batch=2, accum=2) == (model, opt)
    x = torch.arange(12.0).view(4, 3)
    for i, micro in enumerate(x.chunk(2)):
        D.backward(model(micro).sum(), accum=2, last=i == 1)
    got = model.weight.grad.clone()
    model.zero_grad()
    (model(x).sum() / 2).backward()
    assert torch.allclose(got, model.weight.grad)


@pytest.mark.skipif(importlib.util.find_spec("deepspeed") is not None, reason="deepspeed is installed here")
def test_frozen_offload_without_deepspeed_fails_before_any_output(tmp_path):
    from nplus.config import ConfigError, apply_overrides
    from nplus.pipeline import run_pipeline
    from nplus.presets import preset

    cfg = apply_overrides(preset("smoke"), {"ppo.frozen_offload": "true"})
    with pytest.raises(ConfigError, match="pip install deepspeed"):
        run_pipeline(cfg, tmp_path / "run", cache=tmp_path / "cache")
    assert not (tmp_path / "run").exists()
