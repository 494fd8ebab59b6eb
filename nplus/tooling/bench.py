"""`make bench`: speed and memory figures for the smoke and demo presets (printed, never asserted).

For each preset, one pipeline run from an empty cache: wall time per stage (data build, base pretraining, SFT,
RM, PPO), PPO episodes/s, sampling and training tokens/s (measured separately per update), and peak resident
memory of the process.

`phases`: one PPO update at the demo's shapes on random-weight models, per phase (generation, scoring passes,
PPO epochs): seconds, FLOPs from the formulas in nplus/tooling/perf.py, FLOP/s and its fraction of this machine's fp32
matmul peak (measured in the same command). `costs`: episodes/s and peak memory of one update at 3 rungs × 3
batch sizes, each in a fresh process.
"""

from __future__ import annotations

import json
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from nplus.pipeline import run_pipeline
from nplus.presets import preset
from nplus.rundir import read_json, read_jsonl
from nplus.tooling import perf


def bench(name: str, seed: int = 1) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cache, out = Path(tmp) / "cache", Path(tmp) / "run"
        t0 = time.time()
        summary = run_pipeline(preset(name, seed), out, cache)
        total = time.time() - t0
        # a committed base model (nplus/bases) is an input, like Pythia: nothing is pretrained then
        base = next(cache.glob("base/*/manifest.json"), None)
        base_rows = read_jsonl(base.parent / "metrics.jsonl") if base else []
        ppo = [r for r in read_jsonl(out / "metrics.jsonl") if r["stage"] == "ppo" and "time/rollout_s" in r]
        sft_eval, rm_eval = (
            read_json(next(cache.glob("sft/*/eval.json"))),
            read_json(next(cache.glob("rm/*/eval.json"))),
        )
        rollout_s = sum(r["time/rollout_s"] for r in ppo)
        train_s = sum(r["time/train_s"] for r in ppo)
        cfg = preset(name, seed)
        return {
            "preset": name,
            "params": summary["params"],
            "total_s": round(total, 1),
            "base_pretrain_s": round(base_rows[-1]["time_s"], 1) if base and base_rows else None,
            "sft_s (train+eval)": round(sft_eval["wall_time_s"], 1),
            "rm_s (train+eval)": round(rm_eval["wall_time_s"], 1),
            "ppo_s (train+eval)": round(summary["ppo_wall_time_s"], 1),
            "ppo_episodes_per_s": round(len(ppo) * cfg.ppo.batch_size / (rollout_s + train_s), 1),
            "sampling_tokens_per_s": round(sum(r["time/sampled_tokens"] for r in ppo) / rollout_s, 1),
            "training_tokens_per_s": round(sum(r["time/train_tokens"] for r in ppo) / train_s, 1),
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        }


def phases(
    rung: str = "tiny",
    batch: int = 64,
    query: int = 160,
    response: int = 40,
    epochs: int = 4,
    vocab: int = 1750,
    repeats: int = 3,
    peak_n: int = 2048,
) -> list[dict]:
    """Per-phase rows of one PPO update (median seconds of ``repeats`` after a warm-up update)."""
    from dataclasses import replace

    base = preset("demo", 1)
    cfg = replace(
        base,
        ppo=replace(
            base.ppo,
            batch_size=batch,
            micro_batch=batch,
            num_minibatches=1,
            ppo_epochs=epochs,
            response_length=response,
        ),
    )
    queries = perf.random_queries(batch, query, vocab)
    times = [
        perf.time_update(cfg, perf.ladder_models(rung, vocab, query + response + 8, seed=r), queries)
        for r in range(repeats + 1)
    ][1:]
    peak = perf.matmul_peak_flops(peak_n)
    flops = perf.phase_flops(perf.ladder_shape(rung, vocab), batch, query, response, epochs)
    tokens = {
        "generation": batch * response,
        "scoring": batch * (query + response),
        "training": batch * (query + response) * epochs,
    }
    rows = []
    for name in ("generation", "scoring", "training"):
        sec = statistics.median(t[name] for t in times)
        rows.append(
            {
                "phase": name,
                "seconds": round(sec, 3),
                "range_s": f"{min(t[name] for t in times):.3f}-{max(t[name] for t in times):.3f}",
                "tokens_per_s": round(tokens[name] / sec),
                "gflop": round(flops[name] / 1e9, 2),
                "gflop_per_s": round(flops[name] / sec / 1e9, 2),
                "fraction_of_peak": round(flops[name] / sec / peak, 4),
            }
        )
    total = sum(r["seconds"] for r in rows)
    rows.append(
        {
            "phase": "update",
            "seconds": round(total, 3),
            "range_s": "",
            "tokens_per_s": round(batch / total, 1),
            "gflop": round(sum(flops.values()) / 1e9, 2),
            "gflop_per_s": round(sum(flops.values()) / total / 1e9, 2),
            "fraction_of_peak": round(sum(flops.values()) / total / peak, 4),
        }
    )
    print(f"fp32 matmul peak ({peak_n}^3 torch.matmul, {torch.get_num_threads()} threads): {peak / 1e9:.1f} GFLOP/s")
    print(
        f"one PPO update, {rung} rung, batch {batch}, query {query}, response {response}, {epochs} epochs, "
        f"separate critic (median of {repeats}; update row: tokens_per_s = episodes/s)"
    )
    return rows


def main(argv: list[str] | None = None) -> int:
    args = (argv if argv is not None else sys.argv[1:]) or ["smoke", "demo", "phases", "costs"]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for name in args:
        if name == "phases":
            print(perf.format_table(phases()), flush=True)
        elif name == "costs":
            print(
                "one PPO update with random weights (query 160, response 40, 4 epochs, 1 minibatch), each row in a "
                "fresh process"
            )
            print(perf.format_table(perf.cost_table()), flush=True)
        else:
            print(json.dumps(bench(name), indent=2), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
