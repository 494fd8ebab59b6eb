"""`make bench`: speed and memory figures for the smoke and demo presets (printed, never asserted).

For each preset, one pipeline run from an empty cache: wall time per stage (data build, base pretraining, SFT,
RM, PPO), PPO episodes/s, sampling and training tokens/s (measured separately per update), and peak resident
memory of the process.
"""

from __future__ import annotations

import json
import resource
import sys
import tempfile
import time
from pathlib import Path

from nplus.config import preset
from nplus.rundir import read_json, read_jsonl


def bench(name: str, seed: int = 1) -> dict:
    from nplus.pipeline import run_pipeline

    with tempfile.TemporaryDirectory() as tmp:
        cache, out = Path(tmp) / "cache", Path(tmp) / "run"
        t0 = time.time()
        summary = run_pipeline(preset(name, seed), out, cache)
        total = time.time() - t0
        # a committed base model (nplus/bases) is an input, like Pythia: nothing is pretrained then
        base = next(cache.glob("base/*/manifest.json"), None)
        base_rows = read_jsonl(base.parent / "metrics.jsonl") if base else []
        ppo = [r for r in read_jsonl(out / "metrics.jsonl") if r["stage"] == "ppo" and "time/rollout_s" in r]
        sft_eval, rm_eval = read_json(next(cache.glob("sft/*/eval.json"))), read_json(next(cache.glob("rm/*/eval.json")))
        rollout_s = sum(r["time/rollout_s"] for r in ppo)
        train_s = sum(r["time/train_s"] for r in ppo)
        cfg = preset(name, seed)
        return {
            "preset": name, "params": summary["params"], "total_s": round(total, 1),
            "base_pretrain_s": round(base_rows[-1]["time_s"], 1) if base and base_rows else None,
            "sft_s (train+eval)": round(sft_eval["wall_time_s"], 1), "rm_s (train+eval)": round(rm_eval["wall_time_s"], 1),
            "ppo_s (train+eval)": round(summary["ppo_wall_time_s"], 1),
            "ppo_episodes_per_s": round(len(ppo) * cfg.ppo.batch_size / (rollout_s + train_s), 1),
            "sampling_tokens_per_s": round(sum(r["time/sampled_tokens"] for r in ppo) / rollout_s, 1),
            "training_tokens_per_s": round(sum(r["time/train_tokens"] for r in ppo) / train_s, 1),
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        }


def main(argv: list[str] | None = None) -> int:
    import torch

    names = (argv if argv is not None else sys.argv[1:]) or ["smoke", "demo"]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for name in names:
        print(json.dumps(bench(name), indent=2), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
