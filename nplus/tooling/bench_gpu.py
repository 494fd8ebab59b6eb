"""`make bench-gpu`: a few PPO updates on a Pythia-1B-shaped GPT-NeoX with random weights (no download).

On CUDA: the trained models (policy, separate critic) keep fp32 weights and run under bf16 autocast, the frozen
ones (reference, reward model) are bf16, as a mixed-precision run of the paper at 1B would be. Per phase it
prints tokens/s, FLOP/s from the formulas in nplus/tooling/perf.py and MFU = FLOP/s / the bf16 matmul peak measured in
the same command (``--peak-tflops`` replaces the measured peak by a nominal one, e.g. 989 for an H100/H200 SXM),
and the peak GPU memory. ``--tiny`` runs the same code on the nano rung in fp32 (CPU by default, seconds): the
test suite runs it that way; no GPU is ever required.

Paper shapes per GPU (1B: 512 rollouts over 8 GPUs, micro-batch 16): batch 64, query 512, response 53.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from dataclasses import replace

import torch
from transformers import GPTNeoXConfig

from nplus.models import ladder_config
from nplus.presets import preset
from nplus.tooling import perf


def _sig(x: float) -> float:
    """Three significant digits: a tiny CPU config's MFU is ~1e-5, which rounding to decimals would print as 0."""
    return float(f"{x:.3g}")


def pythia_1b_config(vocab: int = 50304, max_positions: int = 2048) -> GPTNeoXConfig:
    """EleutherAI/pythia-1b-deduped's shape: hidden 2048, 16 layers, 8 heads, FFN 8192, rotary on 25 % of head
    dims, parallel residual, untied embeddings; no dropout."""
    return GPTNeoXConfig(
        vocab_size=vocab,
        hidden_size=2048,
        num_hidden_layers=16,
        num_attention_heads=8,
        intermediate_size=8192,
        max_position_embeddings=max_positions,
        attention_dropout=0.0,
        hidden_dropout=0.0,
        bos_token_id=perf.EOS_ID,
        eos_token_id=perf.EOS_ID,
        pad_token_id=perf.PAD_ID,
        tie_word_embeddings=False,
        use_parallel_residual=True,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.25},
    )


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m nplus.tooling.bench_gpu", description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="nano rung, fp32, small shapes (CPU unless --device)")
    ap.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available, cpu with --tiny)")
    ap.add_argument("--updates", type=int, default=3, help="timed updates (after one warm-up)")
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--micro-batch", type=int, default=None)
    ap.add_argument("--query", type=int, default=None)
    ap.add_argument("--response", type=int, default=None)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--peak-tflops", type=float, default=None, help="nominal peak instead of the measured matmul peak")
    return ap.parse_args(argv)


def _device(args: argparse.Namespace) -> torch.device:
    """The device to time on; the 1B shape without CUDA stops here unless asked for (it would take hours on CPU)."""
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() and not args.tiny else "cpu"))
    if not args.tiny and device.type != "cuda" and args.device is None:
        raise SystemExit(
            "bench_gpu: no CUDA device (the .venv's torch is CPU-only). Run it with a CUDA build of torch "
            "(make bench-gpu GPU_PY=/path/to/python), or --tiny, or force the 1B shape with --device cpu."
        )
    return device


def _shapes(args: argparse.Namespace) -> tuple[GPTNeoXConfig, int, int, int, int, int]:
    """Model config, vocab, batch, micro-batch, query and response lengths: the tiny or the paper's 1B defaults,
    each replaced by its flag when given."""
    if args.tiny:
        vocab, defaults = 64, dict(batch=4, micro_batch=2, query=16, response=8)
        config = ladder_config("nano", vocab, 64, perf.EOS_ID, perf.PAD_ID)
    else:
        vocab, defaults = 50304, dict(batch=64, micro_batch=16, query=512, response=53)
        config = pythia_1b_config(vocab)
    batch = args.batch or defaults["batch"]
    micro = args.micro_batch or defaults["micro_batch"]
    query, response = args.query or defaults["query"], args.response or defaults["response"]
    return config, vocab, batch, micro, query, response


def _peak(args: argparse.Namespace, on_cuda: bool) -> tuple[float, str]:
    """The FLOP/s that MFU divides by and where it came from: the nominal flag, else a matmul measured here."""
    if args.peak_tflops:
        return args.peak_tflops * 1e12, "nominal (--peak-tflops)"
    if on_cuda:
        return perf.matmul_peak_flops(8192, 5, "cuda", torch.bfloat16), "measured bf16 8192^3 matmul"
    return perf.matmul_peak_flops(1024, 3), "measured fp32 1024^3 matmul"


def _phase_rates(times: list[dict], tokens: dict, flops: dict, peak: float) -> dict:
    """Per phase the median seconds over the timed updates, and the tokens/s, TFLOP/s and MFU they give."""
    phases = {}
    for name in ("generation", "scoring", "training"):
        sec = statistics.median(t[name] for t in times)
        phases[name] = {
            "seconds": round(sec, 4),
            "tokens_per_s": round(tokens[name] / sec, 1),
            "tflop_per_s": _sig(flops[name] / sec / 1e12),
            "mfu": _sig(flops[name] / sec / peak),
        }
    return phases


def run(args: argparse.Namespace) -> dict:
    device = _device(args)
    on_cuda = device.type == "cuda"
    config, vocab, batch, micro, query, response = _shapes(args)
    base = preset("demo", 1)
    cfg = replace(
        base,
        ppo=replace(
            base.ppo,
            batch_size=batch,
            micro_batch=micro,
            num_minibatches=1,
            ppo_epochs=args.epochs,
            response_length=response,
        ),
    )
    autocast = torch.bfloat16 if on_cuda else None
    frozen_dtype = torch.bfloat16 if on_cuda else torch.float32
    queries = perf.random_queries(batch, query, vocab).to(device)
    with torch.device(device):
        policy, ref, rm, critic = perf.random_models(config)
    ref, rm = ref.to(frozen_dtype), rm.to(frozen_dtype).requires_grad_(False)
    ref.requires_grad_(False)
    models = (policy, ref, rm, critic)
    if on_cuda:
        torch.cuda.reset_peak_memory_stats(device)
    times = [perf.time_update(cfg, models, queries, autocast) for _ in range(args.updates + 1)][1:]
    peak, peak_source = _peak(args, on_cuda)
    flops = perf.phase_flops(perf.Shape.of(config), batch, query, response, args.epochs)
    tokens = {
        "generation": batch * response,
        "scoring": batch * (query + response),
        "training": batch * (query + response) * args.epochs,
    }
    phases = _phase_rates(times, tokens, flops, peak)
    total = sum(statistics.median(t[n] for t in times) for n in phases)
    return {
        "model": "nano (tiny test config)" if args.tiny else "pythia-1b shape, random weights",
        "params_per_model": sum(q.numel() for q in policy.parameters()),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if on_cuda else "cpu",
        "precision": "bf16 autocast (trained), bf16 (frozen)" if on_cuda else "fp32",
        "batch": batch,
        "micro_batch": micro,
        "query": query,
        "response": response,
        "ppo_epochs": args.epochs,
        "updates_timed": args.updates,
        "phases": phases,
        "update_s": round(total, 4),
        "episodes_per_s": round(batch / total, 2),
        "mfu_update": _sig(sum(flops.values()) / total / peak),
        "peak_tflops": round(peak / 1e12, 3),
        "peak_source": peak_source,
        "peak_memory_mib": round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
        if on_cuda
        else round(perf.peak_rss_mib(), 1),
        "peak_memory_kind": "torch.cuda.max_memory_allocated" if on_cuda else "peak RSS",
    }


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, cuda available: {torch.cuda.is_available()}")
    print(json.dumps(run(args), indent=2), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
