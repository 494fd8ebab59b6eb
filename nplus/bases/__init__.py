"""Base models of the embedded world as versioned inputs, the way Pythia checkpoints are for the real one.

``nplus base build --rung R`` runs the pretraining recipe (nplus/stages/base.py) and writes ``nplus/bases/R/``:
``model/`` (safetensors, config, tokenizer) and ``manifest.json`` (recipe version, base-stage hash and config,
sha256 of the weights, of the tokenizer and of the pretraining token stream, probe figures, build time,
package versions). The repository ships the rungs the presets use, so a fresh clone never pretrains.

A pipeline whose base-stage configuration is the one a committed base was built with loads it, after checking the
weights' sha256, the recipe version and that this corpus's tokenizer is the one it was trained with; any mismatch
is an error that names the command that rebuilds it. Other configurations build their base into the cache.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

from nplus.config import BASE_RECIPE
from nplus.rundir import cpu_model, share_file_modes

BASES_DIR = Path(__file__).resolve().parent
WEIGHTS = "model.safetensors"


class BaseModelError(RuntimeError):
    """A committed base model that cannot be used as it is (missing or altered file, stale recipe or corpus)."""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def sha256_tensor(t) -> str:
    return hashlib.sha256(t.numpy().tobytes()).hexdigest()


def rebuild_command(rung: str) -> str:
    return f"nplus base build --rung {rung}"


def manifest_path(rung: str, root: Path = BASES_DIR) -> Path:
    return root / rung / "manifest.json"


def read_manifest(rung: str, root: Path = BASES_DIR) -> dict | None:
    path = manifest_path(rung, root)
    return json.loads(path.read_text()) if path.is_file() else None


def committed_base(cfg, tokenizer_file: Path | None, root: Path = BASES_DIR) -> Path | None:
    """The committed base model directory for ``cfg`` (checked), or None when none was built with its base-stage
    configuration. Raises BaseModelError when the one that was is missing, altered or stale."""
    rung = cfg.model.name
    manifest = read_manifest(rung, root)
    if manifest is None or manifest.get("base_hash") != cfg.stage_hash("base"):
        return None
    fix = f"rebuild it with `{rebuild_command(rung)}`"
    model_dir = root / rung / "model"
    if manifest.get("recipe") != BASE_RECIPE:
        raise BaseModelError(
            f"committed base model {rung}: built with recipe {manifest.get('recipe')}, this code is "
            f"recipe {BASE_RECIPE}; {fix}"
        )
    weights = model_dir / WEIGHTS
    if not weights.is_file():
        raise BaseModelError(f"committed base model {rung}: {weights} is missing; {fix} (or restore it from git)")
    actual = sha256_file(weights)
    if actual != manifest["weights_sha256"]:
        raise BaseModelError(
            f"committed base model {rung}: sha256 of {weights} is {actual[:12]}…, its manifest says "
            f"{manifest['weights_sha256'][:12]}…; {fix} (or restore it from git)"
        )
    if tokenizer_file is not None and sha256_file(tokenizer_file) != manifest["tokenizer_sha256"]:
        raise BaseModelError(
            f"committed base model {rung}: trained with another tokenizer than this corpus's "
            f"({tokenizer_file}; the generator changed?); {fix}"
        )
    return model_dir


def build(
    cfg,
    data,
    out_dir: Path,
    command: str | None = None,
    preset: str | None = None,
    checkpoint: Path | None = None,
    checkpoint_every: int = 250,
    copy_bar: float | None = None,
) -> dict:
    """Run the recipe for ``cfg`` into ``out_dir`` (model/ and manifest.json); returns the manifest. ``checkpoint``
    (a file under the cache) makes the build resumable; ``copy_bar`` stops it when the induction phase ends without
    the copying circuit (nplus/stages/base.py)."""
    import torch
    import transformers

    from nplus.stages.base import pretrain_base, pretraining_texts, validation_loss  # here: torch

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tok = data.tokenizer
    t0 = time.time()
    result = pretrain_base(
        cfg,
        data.sft["train"],
        tok,
        out_dir,
        probe=lambda model: base_probes(cfg, data, model),
        checkpoint=checkpoint,
        checkpoint_every=checkpoint_every,
        copy_bar=copy_bar,
    )
    wall = time.time() - t0  # a resumed build counts this invocation's time only (the manifest says so)
    m = cfg.model
    held_out = pretraining_texts(
        data.sft["validation"].select(range(min(VALIDATION_DOCS, len(data.sft["validation"])))), m.pretrain_corpus
    )
    tokenizer_file = data.data_dir / "tokenizer" / "tokenizer.json" if data.data_dir else None
    cost = build_cost(cfg, len(tok), result["resumed_at"], result["updates"])
    speed = cost["tokens"] / result["train_time_s"]
    manifest = {
        "rung": cfg.model.name,
        "recipe": BASE_RECIPE,
        "preset": preset,
        "base_hash": cfg.stage_hash("base"),
        "config": cfg.stage_dict("base"),
        "weights_sha256": sha256_file(out_dir / "model" / WEIGHTS),
        "tokenizer_sha256": sha256_file(tokenizer_file) if tokenizer_file else None,
        "corpus_sha256": sha256_tensor(result["stream"]),
        "probes": {
            k: result[k]
            for k in ("copy_gain", "copy_nll_first", "copy_nll_repeat", "post_swap_gap", "reference_nll")
            if k in result
        },
        "validation_loss": validation_loss(result["model"], held_out, tok, m.pretrain_seq_len),
        "loss": result["loss"],
        "first_losses": result["first_losses"],
        "params": result["params"],
        "non_embedding_params": result["params"] - 2 * len(tok) * result["hidden"],
        "tokens": result["tokens"],
        "documents": result["documents"],
        "build_time_s": round(wall, 1),
        "resumed_at_update": result["resumed_at"],
        "threads": torch.get_num_threads(),
        "device": cpu_model(),
        "tokens_per_s": round(speed, 1),
        "matmul_peak_fraction": round(cost["flops"] / result["train_time_s"] / matmul_peak(), 3),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        "command": command or rebuild_command(cfg.model.name),
    }
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    share_file_modes(out_dir)  # safetensors' 0600 weights: the same mode as the manifest beside them
    if checkpoint is not None:
        checkpoint.unlink(missing_ok=True)
    return manifest


# Held-out documents of the manifest's validation_loss: the first validation posts with their TL;DR lines
VALIDATION_DOCS = 512


def build_cost(cfg, vocab: int, first: int, last: int) -> dict:
    """Tokens and matmul FLOPs (forward + backward = 3 forwards) of pretraining updates [first, last) of ``cfg``'s
    rung: the manifest's tokens/s and share of the machine's matmul peak."""
    from nplus.models import LADDER  # here: torch; manifests read torch-free
    from nplus.tooling.perf import Shape, head_flops, trunk_flops  # here: torch; manifests read torch-free

    hidden, layers, _ = LADDER[cfg.model.name]
    s, m = Shape(hidden, layers, vocab, 4 * hidden), cfg.model
    tokens = flops = 0.0
    for window, n in (
        (m.pretrain_span_len, max(0, min(last, m.pretrain_induction_steps) - first)),
        (m.pretrain_seq_len, max(0, last - max(first, m.pretrain_induction_steps))),
    ):
        tokens += n * m.pretrain_batch * window
        flops += n * 3 * (trunk_flops(s, m.pretrain_batch, 0, window) + head_flops(s, m.pretrain_batch, window))
    return {"tokens": tokens, "flops": flops}


def matmul_peak() -> float:
    from nplus.tooling.perf import matmul_peak_flops  # here: torch; manifests read torch-free

    return matmul_peak_flops(n=1024, repeats=3)


def base_probes(cfg, data, model, n: int = 256) -> dict:
    """post_swap_gap of a model on the first ``n`` validation posts, with the run's query format and truncation."""
    from nplus.data.formatting import sft_response_ids  # here: torch; manifests read torch-free
    from nplus.data.truncation import truncate_query  # here: torch; manifests read torch-free
    from nplus.evaluation.probes import post_swap_gap  # here: torch; manifests read torch-free

    d, tok = cfg.details, data.tokenizer
    # `drop` keeps no ids for an over-long query, and a swapped post can make one: the probe cuts it as the paper does
    truncation = "newline" if d.query_truncation == "drop" else d.query_truncation
    rows = data.sft["validation"].select(range(min(n, len(data.sft["validation"]))))
    rows = [{k: r[k] for k in ("subreddit", "title", "post", "summary")} for r in rows]
    return post_swap_gap(
        model,
        rows,
        lambda sub, title, post: truncate_query(sub, title, post, tok, cfg.lengths.query, truncation),
        lambda summary: sft_response_ids(summary, tok, d.reference_leading_space, d.reference_eos),
        tok.pad_token_id,
    )
