"""The paper presets (`paper-1b`, `paper-2.8b`, `paper-6.9b`) against the released configuration, and the
launch configs in nplus/configs/.

The reference values below are copied by hand from shared/reference/DETAILS.md §3 (hyperparameter table and
per-size PPO memory knobs), §1 (seeds, validation split) and §4 (evaluation set sizes), so that a preset drifting
from the paper fails here with the field named, instead of silently changing what a "paper" run means.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from nplus.details import REGISTRY, Details
from nplus.presets import PRESETS, preset

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "nplus" / "configs"

# ---- DETAILS.md §3: one table for every size -------------------------------------------------------------------
LR = 3e-6  # "One learning rate, 3e-6, for every stage and size"
ADAM_EPS = "1e-5"  # "AdamW eps 1e-5"
SFT_BATCH, SFT_EPOCHS = 128, 1
RM_BATCH, RM_EPOCHS = 64, 1
PPO = {  # PPO column of §3 ("other" row) and §2 items 21-30
    "lr": LR,
    "total_episodes": 1_000_000,
    "batch_size": 512,
    "ppo_epochs": 4,  # K = 4
    "num_minibatches": 1,  # §2.30: 1 minibatch (the whole 512 batch, accumulated)
    "response_length": 53,
    "temperature": 0.7,
    "kl_coef": 0.05,  # β, fixed (no adaptive controller in the release)
    "gamma": 1.0,
    "lam": 0.95,
    "cliprange": 0.2,
    "cliprange_value": 0.2,
    "vf_coef": 0.1,
    "missing_eos_score": -1.0,  # EOS penalty −1 (replace)
}
PPO_UPDATES = 1_953  # "1,953 × 4 epochs" = 1,000,000 // 512
EVAL_TEMPERATURE = 0.01
LENGTHS = {"query": 512, "sft_response": 53, "sft_total": 562, "pref_response": 169, "pref_total": 638}
PROCESSES = 8  # "8×H100 per run" (§2.31), "micro-batch × accumulation × 8 GPUs = 512"
# per-size PPO memory knobs: (model, micro-batch, accumulation)
SIZES = {
    "1b": ("EleutherAI/pythia-1b-deduped", 16, 4),
    "2.8b": ("EleutherAI/pythia-2.8b-deduped", 4, 16),
    "6.9b": ("EleutherAI/pythia-6.9b-deduped", 1, 64),
}
# details that §3 names explicitly (the rest are covered by "every detail at the paper value" below)
DETAILS_IN_TABLE = {
    "learning_rate": "single",
    "adam_eps": ADAM_EPS,
    "missing_eos_penalty": "replace",
    "reward_whitening": "off",
    "advantage_whitening": "on",
    "kl_estimator": "k1",
    "kl_placement": "reward",  # "β 0.05 k1 per-token": a per-token reward, not a loss term
    "kl_controller": "fixed",
    "value_clipping": "on",
    "value_init": "reward_model",  # "critic: RM"
    "reward_head_init": "scaled_normal",  # "head std 1/sqrt(d+1)"
    "reward_normalization": "reference_bias",  # "bias = mean reference score"
    "lr_schedule": "linear",  # PPO "3e-6 linear→0"
    "eval_temperature": "near_greedy",  # "eval T = 0.01"
}
# §1 / §4: the data and evaluation sets of the paper
SFT_SOURCE = "vwxyzjn/summarize_from_feedback_tldr_3_filtered"
COMPARISONS_SOURCE = "openai/summarize_from_feedback"
VALIDATION_POSTS = 6_447  # win rates are judged on the whole validation split
RM_VALIDATION_PAIRS = 83_802  # TL;DR validation comparisons (86,086 minus the 2,284 CNN/DM ones)
PAPER_SEEDS = (44413, 55513, 66613, 77713)


@pytest.fixture(params=sorted(SIZES), ids=lambda s: f"paper-{s}")
def size(request):
    return request.param


def test_the_three_paper_presets_exist():
    assert {f"paper-{s}" for s in SIZES} <= set(PRESETS)
    assert {k for k in PRESETS if k.startswith("paper-")} == {f"paper-{s}" for s in SIZES}


def test_learning_rate_and_optimizer(size):
    cfg = preset(f"paper-{size}")
    assert cfg.details.learning_rate == "single"
    assert cfg.lr == LR
    for stage in ("sft", "rm", "ppo"):
        assert cfg.stage_lr(stage, 2048) == LR, stage
        # the per-stage rates are unused under `single`, but must not disagree with the paper either
        assert getattr(cfg, stage).lr == LR, stage
    assert cfg.details.adam_eps == ADAM_EPS


def test_sft_and_rm(size):
    cfg = preset(f"paper-{size}")
    assert (cfg.sft.batch_size, cfg.sft.epochs) == (SFT_BATCH, SFT_EPOCHS)
    assert (cfg.rm.batch_size, cfg.rm.epochs) == (RM_BATCH, RM_EPOCHS)
    for stage in ("sft", "rm"):
        s = getattr(cfg, stage)
        assert s.micro_batch * cfg.grad_accum(stage) * cfg.processes == s.batch_size, stage


def test_ppo_hyperparameters(size):
    cfg = preset(f"paper-{size}")
    got = {k: getattr(cfg.ppo, k) for k in PPO}
    assert got == PPO
    assert cfg.ppo.num_updates == PPO_UPDATES == 1_000_000 // 512


def test_ppo_memory_knobs(size):
    cfg = preset(f"paper-{size}")
    model, micro, accum = SIZES[size]
    assert cfg.processes == PROCESSES
    assert cfg.ppo.micro_batch == micro
    assert cfg.grad_accum("ppo") == accum
    assert micro * accum * PROCESSES == PPO["batch_size"]


def test_model_lengths_and_evaluation(size):
    cfg = preset(f"paper-{size}")
    assert cfg.model.name == SIZES[size][0]
    assert cfg.model.pretrain_steps == 0  # Pythia is the base model: nothing is pretrained here
    assert dataclasses.asdict(cfg.lengths) == LENGTHS
    assert cfg.eval_temperature == EVAL_TEMPERATURE and cfg.sampling_eval_temperature == EVAL_TEMPERATURE
    assert (cfg.task.name, cfg.task.sft_source, cfg.task.comparisons_source) == ("tldr", SFT_SOURCE, COMPARISONS_SOURCE)
    assert cfg.task.max_sft_train is None and cfg.task.max_comparisons_train is None  # all the data
    assert cfg.task.max_eval == VALIDATION_POSTS
    assert cfg.task.max_rm_eval == RM_VALIDATION_PAIRS


def test_details_are_the_papers(size):
    cfg = preset(f"paper-{size}")
    assert {k: getattr(cfg.details, k) for k in DETAILS_IN_TABLE} == DETAILS_IN_TABLE
    # and every other detail at its registered paper value
    assert cfg.details == Details()
    assert cfg.details.diff() == {}
    assert all(getattr(cfg.details, name) == d.paper for name, d in REGISTRY.items())


def test_sizes_differ_only_in_model_and_memory_knobs():
    """Apart from the model and the PPO memory knobs (micro-batch; ZeRO-3 offload of the frozen models at 6.9B),
    which do not change the maths, the three presets are one configuration: the scaling study varies model size
    and nothing else."""
    dicts = {s: preset(f"paper-{s}").to_dict() for s in SIZES}
    assert {s: d["ppo"]["frozen_offload"] for s, d in dicts.items()} == {"1b": False, "2.8b": False, "6.9b": True}
    for d in dicts.values():
        d.pop("preset"), d["model"].pop("name"), d["ppo"].pop("micro_batch"), d["ppo"].pop("frozen_offload")
    assert dicts["1b"] == dicts["2.8b"] == dicts["6.9b"]


def test_paper_seeds_file():
    seeds = tuple(int(x) for x in (ROOT / "seeds" / "paper.txt").read_text().split())
    assert seeds == PAPER_SEEDS


def test_dry_run_prints_the_preset_offline_and_fast(tmp_path):
    """`nplus pipeline --preset paper-1b --dry-run` resolves the configuration without touching the hub: no
    network (hub offline, and any HTTP(S) request sent to a closed local port), no data, no model, under a
    timeout so that a hang fails the test instead of stalling the suite."""
    closed = "http://127.0.0.1:9"  # discard port: nothing listens, so a connection attempt fails at once
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HTTP_PROXY": closed,
        "HTTPS_PROXY": closed,
        "http_proxy": closed,
        "https_proxy": closed,
        "NO_PROXY": "",
        "no_proxy": "",
        "HF_HOME": str(tmp_path / "hf"),
    }
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "nplus.cli",
            "pipeline",
            "--preset",
            "paper-1b",
            "--seed",
            "44413",
            "--dry-run",
            "--out",
            str(tmp_path / "run"),
            "--cache",
            str(tmp_path / "cache"),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    shown = json.loads(r.stdout)
    cfg = preset("paper-1b", seed=44413)
    assert {k: v for k, v in shown.items() if k not in ("hash", "stage_hashes")} == json.loads(
        json.dumps(cfg.to_dict())
    )
    assert shown["hash"] == cfg.hash
    # what the dry run shows is enough to read the batch split: 16 × 4 × 8 = 512
    ppo = shown["ppo"]
    assert ppo["batch_size"] // (ppo["micro_batch"] * shown["processes"]) == 4 == cfg.grad_accum("ppo")
    assert ppo["total_episodes"] // ppo["batch_size"] == PPO_UPDATES
    # a dry run writes nothing
    assert not (tmp_path / "run").exists() and not (tmp_path / "cache").exists()


# ---- nplus/configs: accelerate / DeepSpeed launch configs ------------------------------------------------------


def _yaml(name: str) -> dict:
    return yaml.safe_load((CONFIGS / name).read_text())


@pytest.mark.parametrize("name", ["accelerate_ddp.yaml", "deepspeed_zero2.yaml", "deepspeed_zero3_offload.yaml"])
def test_launch_configs_are_valid_accelerate_configs(name):
    """accelerate's own loader accepts them (it rejects unknown keys), on one machine with the presets' 8
    processes, so `accelerate launch --config_file` starts the world size that `run_pipeline` requires."""
    from accelerate.commands.config.config_args import load_config_from_file

    raw = _yaml(name)
    cfg = load_config_from_file(str(CONFIGS / name))
    assert cfg.num_processes == raw["num_processes"] == PROCESSES == preset("paper-1b").processes
    assert cfg.num_machines == 1
    assert raw["use_cpu"] is False


def test_ddp_config():
    raw = _yaml("accelerate_ddp.yaml")
    assert raw["distributed_type"] == "MULTI_GPU"
    # fp32: rollout log-probs come from the unwrapped model outside autocast, training log-probs from the
    # prepared one; both must use one precision or the PPO ratio is not 1 on the first minibatch
    assert raw["mixed_precision"] == "no"
    assert "deepspeed_config" not in raw


def test_zero2_config_is_the_papers():
    """§2.31: accelerate + DeepSpeed ZeRO-2, bf16, 8 GPUs; no gradient clipping (none in §3, none in sfd's
    accelerate config), no offload for the trained models."""
    raw = _yaml("deepspeed_zero2.yaml")
    ds = raw["deepspeed_config"]
    assert raw["distributed_type"] == "DEEPSPEED"
    assert ds["zero_stage"] == 2
    assert raw["mixed_precision"] == "bf16"
    assert ds["offload_optimizer_device"] == "none" and ds["offload_param_device"] == "none"
    assert "gradient_clipping" not in ds


def test_zero3_offload_config_is_for_the_frozen_models():
    """§2.31: for 6.9B the frozen reference and reward models use ZeRO-3 with CPU parameter offload. The
    accelerate config points at a DeepSpeed JSON that can also be passed to `deepspeed.initialize` as is."""
    raw = _yaml("deepspeed_zero3_offload.yaml")
    assert raw["distributed_type"] == "DEEPSPEED" and raw["mixed_precision"] == "bf16"
    ds_file = ROOT / raw["deepspeed_config"]["deepspeed_config_file"]  # relative to the repository root
    ds = json.loads(ds_file.read_text())
    assert ds_file.parent == CONFIGS
    zero = ds["zero_optimization"]
    assert zero["stage"] == 3
    assert zero["offload_param"]["device"] == "cpu"
    assert "offload_optimizer" not in zero  # frozen models have no optimizer state
    assert ds["bf16"]["enabled"] is True
    # deepspeed.initialize cannot resolve "auto" without accelerate's help: every value is concrete
    assert "auto" not in json.dumps(ds)
    assert "gradient_clipping" not in ds


def test_deepspeed_is_optional():
    """nplus (the CLI with every subcommand, the pipeline and the stages) imports without deepspeed, and does not
    import it eagerly where it is installed."""
    code = (
        "import sys, nplus, nplus.cli, nplus.pipeline, nplus.stages.ppo, nplus.ablate.slurm, nplus.data.build_cmd; "
        "nplus.cli._commands(); "
        "assert 'deepspeed' not in sys.modules, 'deepspeed imported'"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    pyproject = (ROOT / "pyproject.toml").read_text()
    deps = pyproject.split("dependencies = [", 1)[1].split("]", 1)[0]
    assert "deepspeed" not in deps
