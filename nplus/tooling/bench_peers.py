"""`make bench-peers`: TRL's PPO trainer and nplus's PPO, one after the other, on the same models and prompts.

Runs in the bench-only environment .venv-bench (nplus/tooling/bench_peers_requirements.txt: trl 1.12.0, the last
release with
a PPO trainer); trl is never a dependency of nplus. Offline: the models are random-weight GPT-NeoX ladder models
written with save_pretrained into a temporary directory (a policy / SFT ``GPTNeoXForCausalLM`` and a reward model
``GPTNeoXForSequenceClassification`` with one label), and both trainers load those files:

- TRL: policy and reference from the policy directory, reward and value model from the RM directory.
- nplus: the same directories through nplus's loaders (the RM's score layer, which has no bias, becomes a head
  with bias 0: the same function), via ``train_ppo`` exactly as a pipeline run calls it.

Each run is a fresh spawned process (so peak RSS is its own), with 1 torch thread unless --threads. The first
update of each run is a warm-up and is not timed. Printed: episodes/s, sampled tokens/s, seconds per phase
(generation / scoring passes / training), peak RSS, and nplus / TRL ratios, median and range over the runs.

Settings that cannot be matched exactly (see the printed notes and the README of issue #15's report):
- TRL generates with ``model.generate`` (stops a batch early once every row has produced EOS; with random weights
  EOS is rare, so it runs the full length); nplus samples a fixed length with its own KV-cache loop.
- TRL computes full-sequence logits in every forward (reference, training); nplus computes the response's only.
- TRL's optimizer: transformers' AdamW with weight decay 0; nplus: torch AdamW with its default weight decay 0.01
  (same cost). Both use eps 1e-5, linear LR decay, no gradient clipping.
- TRL subtracts ``missing_eos_penalty`` (1.0); nplus replaces the score by −1 (the paper). Same cost.
- TRL's phase times come from wrapping its module-level ``batch_generation`` (generation) and measuring the rollout
  block up to the PPO epochs by wrapping its ``forward``/``get_reward`` under no_grad (scoring); training =
  update wall time − generation − scoring, so TRL's per-update bookkeeping (gc.collect, metric gathering) lands
  in its training figure; the gc.collect() share is printed separately (gc_in_training_s).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

PAD_ID, EOS_ID = 1, 0


def make_tokenizer(vocab: int):
    """A word-level tokenizer over ``vocab`` ids (t0 = EOS, t1 = [PAD]): the trainers only need its ids."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    words = {f"t{i}": i for i in range(vocab)}
    tok = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(WordLevel(words, unk_token="t2")), eos_token="t0", pad_token="t1", unk_token="t2"
    )
    tok.padding_side = "left"
    return tok


def write_models(root: Path, rung: str, vocab: int, max_positions: int, seed: int) -> dict:
    import torch
    from transformers import GPTNeoXForCausalLM, GPTNeoXForSequenceClassification

    from nplus.models import ScalarModel, ladder_config, set_dropout  # here: a worker loads only its framework

    torch.manual_seed(seed)
    config = ladder_config(rung, vocab, max_positions, EOS_ID, PAD_ID)
    policy = set_dropout(GPTNeoXForCausalLM(config), "disabled")
    policy.save_pretrained(root / "sft", safe_serialization=True)
    config.num_labels = 1
    rm = set_dropout(GPTNeoXForSequenceClassification(config), "disabled")
    rm.save_pretrained(root / "rm_hf", safe_serialization=True)
    # nplus's reward-model layout, written from the same weights: trunk + a linear head with bias 0 (the trunk taken
    # from the model in memory: loading rm_hf as a bare trunk printed a LOAD REPORT for its score head)
    backbone = rm.base_model
    head = torch.nn.Linear(config.hidden_size, 1)
    with torch.no_grad():
        head.weight.copy_(rm.score.weight)
        head.bias.zero_()
    ScalarModel(backbone, head).save(root / "rm_nplus")
    make_tokenizer(vocab).save_pretrained(root / "tokenizer")
    return {k: str(root / k) for k in ("sft", "rm_hf", "rm_nplus", "tokenizer")}


def queries(n: int, length: int, vocab: int, seed: int):
    """(n, Lq) left-padded random prompts, real lengths in [Lq/2, Lq] (as nplus/perf.random_queries)."""
    from nplus.tooling.perf import random_queries  # here: a worker loads only its framework

    return random_queries(n, length, vocab, seed)


def run_nplus(paths: dict, a: dict) -> dict:
    from dataclasses import replace

    import torch

    torch.set_num_threads(a["threads"])
    from transformers import AutoTokenizer

    from nplus.models import RewardNormalization  # here: a worker loads only its framework
    from nplus.presets import preset  # here: a worker loads only its framework
    from nplus.rundir import read_jsonl  # here: a worker loads only its framework
    from nplus.stages.ppo import train_ppo  # here: a worker loads only its framework

    base = preset("demo", a["seed"])
    cfg = replace(
        base,
        ppo=replace(
            base.ppo,
            batch_size=a["batch"],
            micro_batch=a["batch"],
            num_minibatches=1,
            ppo_epochs=a["epochs"],
            response_length=a["response"],
            temperature=a["temperature"],
            total_episodes=a["batch"] * a["updates"],
            eval_every=0,
            lr=a["lr"],
        ),
        details=replace(base.details, adam_eps="1e-5"),
    )
    tok = AutoTokenizer.from_pretrained(paths["tokenizer"])
    q = queries(a["batch"] * a["updates"], a["query"], a["vocab"], a["seed"])
    with tempfile.TemporaryDirectory() as run_dir:
        train_ppo(cfg, Path(paths["sft"]), Path(paths["rm_nplus"]), RewardNormalization(), q, tok, Path(run_dir))
        rows = [r for r in read_jsonl(Path(run_dir) / "metrics.jsonl") if "time/rollout_s" in r][1:]
    phases = [
        {
            "generation": r["time/generation_s"],
            "scoring": r["time/rollout_s"] - r["time/generation_s"],
            "training": r["time/train_s"],
        }
        for r in rows
    ]
    return _summary(phases, a, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def run_trl(paths: dict, a: dict) -> dict:
    import torch

    torch.set_num_threads(a["threads"])
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer
    from trl.experimental.ppo import PPOTrainer
    from trl.experimental.ppo import ppo_trainer as mod

    tok = AutoTokenizer.from_pretrained(paths["tokenizer"])
    q = queries(a["batch"] * a["updates"], a["query"], a["vocab"], a["seed"])
    dataset = Dataset.from_dict({"input_ids": q.tolist()})
    clock = {"generation": 0.0, "scoring": 0.0, "gc": 0.0}
    _time_trl_phases(mod, clock)
    updates: list[dict] = []
    with tempfile.TemporaryDirectory() as out:
        args = _trl_config(out, a)
        trainer = PPOTrainer(
            args=args,
            processing_class=tok,
            model=AutoModelForCausalLM.from_pretrained(paths["sft"]),
            ref_model=AutoModelForCausalLM.from_pretrained(paths["sft"]),
            reward_model=AutoModelForSequenceClassification.from_pretrained(paths["rm_hf"], num_labels=1),
            value_model=AutoModelForSequenceClassification.from_pretrained(paths["rm_hf"], num_labels=1),
            train_dataset=dataset,
            callbacks=[_update_clock(clock, updates)],
        )
        trainer.train()
    return _summary(updates[1:], a, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def _time_trl_phases(mod, clock: dict) -> None:
    """Wrap TRL's module-level generation, no-grad scoring passes and gc.collect so that each adds its seconds to
    ``clock``: TRL has no phase timers of its own."""
    import gc
    import types

    import torch

    def timed(fn, key, only_no_grad=False):
        def wrapper(*args, **kwargs):
            if only_no_grad and torch.is_grad_enabled():
                return fn(*args, **kwargs)
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                clock[key] += time.perf_counter() - t0

        return wrapper

    mod.batch_generation = timed(mod.batch_generation, "generation")
    mod.forward = timed(mod.forward, "scoring", only_no_grad=True)
    mod.get_reward = timed(mod.get_reward, "scoring", only_no_grad=True)
    mod.gc = types.SimpleNamespace(collect=timed(gc.collect, "gc"))  # TRL collects garbage once per update


def _update_clock(clock: dict, updates: list[dict]):
    """A trainer callback that appends each update's phase seconds to ``updates`` (training = wall time − the
    timed phases) and restarts ``clock`` for the next update."""
    from transformers import TrainerCallback

    class Clock(TrainerCallback):
        def on_train_begin(self, *_, **__):
            self.t = time.perf_counter()

        def on_step_end(self, *_, **__):
            now = time.perf_counter()
            wall = now - self.t
            updates.append(
                {
                    "generation": clock["generation"],
                    "scoring": clock["scoring"],
                    "training": wall - clock["generation"] - clock["scoring"],
                    "gc_in_training": clock["gc"],
                }
            )
            clock.update(generation=0.0, scoring=0.0, gc=0.0)
            self.t = now

    return Clock()


def _trl_config(out: str, a: dict):
    """TRL's PPOConfig matched to nplus's settings as far as they can be (the module docstring lists what cannot)."""
    from trl.experimental.ppo import PPOConfig

    return PPOConfig(
        output_dir=out,
        report_to="none",
        save_strategy="no",
        logging_steps=10**6,
        disable_tqdm=True,
        use_cpu=True,
        bf16=False,
        fp16=False,
        seed=a["seed"],
        dataloader_num_workers=0,
        per_device_train_batch_size=a["batch"],
        gradient_accumulation_steps=1,
        local_rollout_forward_batch_size=a["batch"],
        num_mini_batches=1,
        num_ppo_epochs=a["epochs"],
        total_episodes=a["batch"] * a["updates"],
        response_length=a["response"],
        temperature=a["temperature"],
        learning_rate=a["lr"],
        adam_epsilon=1e-5,
        lr_scheduler_type="linear",
        kl_coef=0.05,
        kl_estimator="k1",
        whiten_rewards=False,
        gamma=1.0,
        lam=0.95,
        cliprange=0.2,
        cliprange_value=0.2,
        vf_coef=0.1,
        stop_token="eos",
        missing_eos_penalty=1.0,
        num_sample_generations=0,
    )


def _summary(phases: list[dict], a: dict, rss_mib: float) -> dict:
    seconds = {k: statistics.median(p[k] for p in phases) for k in ("generation", "scoring", "training")}
    update = statistics.median(p["generation"] + p["scoring"] + p["training"] for p in phases)
    extra = (
        {"gc_in_training_s": statistics.median(p["gc_in_training"] for p in phases)}
        if "gc_in_training" in phases[0]
        else {}
    )
    return {
        **extra,
        "episodes_per_s": a["batch"] / update,
        "sampled_tokens_per_s": a["batch"] * a["response"] / seconds["generation"],
        **{f"{k}_s": v for k, v in seconds.items()},
        "update_s": update,
        "peak_rss_mib": rss_mib,
        "updates_timed": len(phases),
    }


def _spawned(fn, *args):
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


def _parse(argv: list[str] | None) -> dict:
    """The command line as a plain dict: it is pickled into every spawned run."""
    ap = argparse.ArgumentParser(prog="python -m nplus.tooling.bench_peers", description=__doc__.splitlines()[0])
    ap.add_argument("--rung", default="tiny")
    ap.add_argument("--vocab", type=int, default=1750)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--query", type=int, default=160)
    ap.add_argument("--response", type=int, default=40)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--updates", type=int, default=3, help="updates per run, the first untimed")
    ap.add_argument(
        "--runs",
        type=int,
        default=8,
        help="interleaved nplus/TRL pairs (the order alternates per pair); "
        "3 pairs understated the run-to-run spread: two idle invocations gave ratios 1.61 and 1.96",
    )
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--only", choices=["nplus", "trl"], default=None)
    return vars(ap.parse_args(argv))


def _print_setup(a: dict) -> str:
    """Print the machine, the library versions and the settings (figures mean nothing without them); return the
    machine line the summary repeats."""
    import torch
    import transformers

    try:
        import trl

        trl_version = trl.__version__
    except ImportError:
        trl_version = None
    from nplus.rundir import cpu_model

    machine = f"{cpu_model()}; torch threads {a['threads']} per run"
    print(f"machine: {machine}")
    print(
        f"torch {torch.__version__}, transformers {transformers.__version__}, trl {trl_version}, threads {a['threads']}"
    )
    print(
        "settings: "
        + json.dumps(
            {
                k: a[k]
                for k in (
                    "rung",
                    "vocab",
                    "batch",
                    "query",
                    "response",
                    "epochs",
                    "updates",
                    "runs",
                    "temperature",
                    "lr",
                )
            }
        )
    )
    return machine


def main(argv: list[str] | None = None) -> int:
    a = _parse(argv)
    machine = _print_setup(a)
    results: dict[str, list[dict]] = {"nplus": [], "trl": []}
    names = [a["only"]] if a["only"] else ["nplus", "trl"]
    with tempfile.TemporaryDirectory() as tmp:
        paths = _spawned(write_models, Path(tmp), a["rung"], a["vocab"], a["query"] + a["response"] + 8, a["seed"])
        for run in range(a["runs"]):
            # interleaved, and the order alternates per pair (ABBA...), so that drifting load and warm-up affect both
            # alike
            for name in names if run % 2 == 0 else names[::-1]:
                r = _spawned(run_nplus if name == "nplus" else run_trl, paths, a)
                results[name].append(r)
                print(f"run {run + 1} {name}: " + json.dumps({k: round(v, 3) for k, v in r.items()}), flush=True)
    _print_summary(results, names, a["runs"], machine)
    return 0


def _print_summary(results: dict[str, list[dict]], names: list[str], runs: int, machine: str) -> None:
    """Per system the median [min, max] of each figure over its runs, and with both systems the per-pair nplus/TRL
    ratios (paired by run, so that drifting load cancels)."""
    print(f"figures below: median [min, max] over {runs} run(s) per system on {machine}")
    keys = (
        "episodes_per_s",
        "sampled_tokens_per_s",
        "generation_s",
        "scoring_s",
        "training_s",
        "update_s",
        "peak_rss_mib",
    )
    for name in names:
        print(f"{name:5s} " + "  ".join(f"{k} {_med_range([r[k] for r in results[name]])}" for k in keys))
    if len(names) == 2:
        ratios = {k: [n[k] / t[k] for n, t in zip(results["nplus"], results["trl"])] for k in keys}
        print("nplus/TRL (paired by run) " + "  ".join(f"{k} {_med_range(v, 2)}" for k, v in ratios.items()))


def _med_range(values: list[float], digits: int = 3) -> str:
    return f"{statistics.median(values):.{digits}f} [{min(values):.{digits}f}, {max(values):.{digits}f}]"


if __name__ == "__main__":
    sys.exit(main())
