"""Base models for the embedded task: the analogue of Pythia's pretraining (recipe ``BASE_RECIPE``).

A base model must have what a pretrained LM has and the task needs: it reads the post it continues. Language-model
training on posts alone does not produce that at this size (docs/tldr-synth.md, "Capability"), so the recipe has
two phases:

1. induction: repeated random-token spans at random offsets, the one distribution that only in-context copying
   predicts, until the induction circuit forms (``copy_gain`` jumps from ≈ 0 to several nats);
2. language: posts followed by their TL;DR lines, each window starting at a document so that the TL;DR's post is
   in context, from a corpus large enough never to repeat (``pretrain_extra_posts`` fresh posts beyond the SFT
   training posts), so that reading the body pays and memorizing title → TL;DR does not; a share of each
   batch's rows stays span rows, which keeps the circuit exercised.

The base model is shared by every training seed and every detail variant (as a Pythia checkpoint is), keeps the
ladder's dropout in its saved config and is not affected by any detail. Built ones are committed (nplus/bases).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import GPTNeoXForCausalLM

from nplus.config import Config, width_scale
from nplus.data.formatting import format_query
from nplus.evaluation.probes import copy_probe
from nplus.models import BASE_DROPOUT, LADDER_DROPOUT_KEYS, count_parameters, ladder_config, set_dropout
from nplus.rundir import atomic_write_text, fault_point, share_file_modes
from nplus.stages.common import MetricsLog, check_finite, progress, seed_everything, set_lr
from nplus.tasks.synth import pretraining_posts

# Spans of the induction phase: random tokens, each repeated once after a random gap. Offsets must vary: a
# fixed-length repeat [x, x] is solved by a head that looks back a fixed distance, which copies nothing else.
SPAN_LENGTHS = (6, 48)
SPAN_GAPS = (0, 24)
WARMUP = 100
MAX_POSITIONS = 2048


def pretraining_texts(sft_train, corpus: str, extra_posts: int = 0, synth_seed: int = 0) -> list[tuple[str, str]]:
    """The documents of base pretraining as (query, TL;DR line) pairs: every SFT training post formatted as a query
    (with ``posts_tldr`` followed by its TL;DR line; with ``posts`` the line is empty), then ``extra_posts`` fresh
    generated posts with their TL;DR lines."""

    def doc(subreddit: str, title: str, post: str, summary: str) -> tuple[str, str]:
        return format_query(subreddit, title, post), (" " + summary if corpus == "posts_tldr" else "")

    texts = [doc(r["subreddit"], r["title"], r["post"], r["summary"]) for r in sft_train]
    if extra_posts:
        texts += [doc(p.subreddit, p.title, p.text, p.reference) for p in pretraining_posts(synth_seed, extra_posts)]
    return texts


def token_stream(docs: list[tuple[str, str]], tokenizer) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(query, TL;DR) documents joined by EOS → ((N,) token ids, (D,) index of each document's first token, (N,)
    bool: the token belongs to a TL;DR line or is the EOS that closes the document). The two parts are encoded
    apart; the TL;DR line starts with a space, where the pre-tokenizer splits anyway, so the ids are the same as
    encoding the joined text."""
    eos = tokenizer.eos_token_id
    ids: list[int] = []
    tldr: list[bool] = []
    starts: list[int] = []
    queries = tokenizer([q for q, _ in docs], add_special_tokens=False)["input_ids"]
    lines = tokenizer([t for _, t in docs], add_special_tokens=False)["input_ids"]
    for q, t in zip(queries, lines):
        starts.append(len(ids))
        ids += q + t + [eos]
        tldr += [False] * len(q) + [True] * (len(t) + 1)
    return torch.tensor(ids, dtype=torch.long), torch.tensor(starts, dtype=torch.long), torch.tensor(tldr)


def span_batch(batch: int, seq: int, vocab_size: int, gen: torch.Generator, bos: int = 0) -> torch.Tensor:
    """(batch, seq + 1) rows of random spans (tokens 2..V-1), each followed by a random gap and its repeat."""
    (lo, hi), (glo, ghi) = SPAN_LENGTHS, SPAN_GAPS
    rows = []
    for _ in range(batch):
        parts = [torch.tensor([bos])]
        n = 1
        while n < seq + 1:
            k = int(torch.randint(lo, hi + 1, (1,), generator=gen))
            gap = int(torch.randint(glo, ghi + 1, (1,), generator=gen))
            x = torch.randint(2, vocab_size, (k,), generator=gen)
            parts += [x, torch.randint(2, vocab_size, (gap,), generator=gen), x]
            n += 2 * k + gap
        rows.append(torch.cat(parts)[: seq + 1])
    return torch.stack(rows)


def document_batch(
    stream: torch.Tensor, starts: torch.Tensor, batch: int, seq: int, gen: torch.Generator
) -> torch.Tensor:
    """(batch, seq + 1) token positions of windows that each begin at a random document's first token (running
    into the next document when it is short), so a TL;DR line always has its post in context. Positions, so that
    the ids and the TL;DR mask are read from the same windows."""
    first = starts[torch.randint(0, starts.numel(), (batch,), generator=gen)].clamp(max=stream.numel() - seq - 1)
    return first[:, None] + torch.arange(seq + 1)  # (B, S + 1)


def weighted_lm_loss(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean next-token NLL with per-target weights: logits (B, S, V), targets (B, S), weights (B, S) → scalar.
    ``None`` is the plain mean, computed as such so that unweighted builds keep their exact losses."""
    if weights is None:
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))
    nll = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1), reduction="none")  # (B·S,)
    w = weights.reshape(-1).to(nll.dtype)
    return (nll * w).sum() / w.sum()


def recipe_lr(base_lr: float, language_lr: float, step: int, induction_steps: int, language_steps: int) -> float:
    """Linear warm-up, constant through the induction phase, then a new warm-up to ``language_lr`` and cosine
    to 5 % of it over the language phase."""
    if step < induction_steps:
        return base_lr * min(1.0, (step + 1) / WARMUP)
    k = step - induction_steps
    return (
        language_lr
        * min(1.0, (k + 1) / WARMUP)
        * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * k / max(1, language_steps))))
    )


def peak_lrs(m, hidden: int) -> tuple[float, float]:
    """(induction, language) peak learning rates of a rung ``hidden`` wide under ``m.pretrain_lr_rule``."""
    scale = width_scale(m.pretrain_lr_rule, hidden)
    return m.pretrain_lr * scale, (m.pretrain_language_lr or m.pretrain_lr) * scale


class InductionNotFormed(RuntimeError):
    """The induction phase ended without the copying circuit: the language phase would build a base that cannot
    read its post, so the build stops here (its checkpoint kept) instead of shipping one."""


@torch.no_grad()
def validation_loss(model, docs: list[tuple[str, str]], tokenizer, seq_len: int, batch: int = 32) -> float:
    """Mean next-token NLL over held-out documents (query + TL;DR line + EOS, as pretraining sees them), each row
    one document from its first token, cut at ``seq_len + 1`` tokens: the rung's language-model quality on posts
    it never trained on (manifest key ``validation_loss``)."""
    ids, starts, _ = token_stream(docs, tokenizer)
    eos = tokenizer.eos_token_id
    bounds = starts.tolist() + [ids.numel()]  # each document runs from its start to the next one's
    rows = [ids[a:b][: seq_len + 1] for a, b in zip(bounds, bounds[1:])]
    total, count = 0.0, 0
    for b in range(0, len(rows), batch):
        chunk = rows[b : b + batch]
        width = max(len(r) for r in chunk)
        x = torch.full((len(chunk), width), eos, dtype=torch.long)
        mask = torch.zeros(len(chunk), width - 1, dtype=torch.bool)
        for j, r in enumerate(chunk):
            x[j, : len(r)] = r
            mask[j, : len(r) - 1] = True  # right padding: the targets past a document's EOS are not counted
        logits = model(input_ids=x[:, :-1], use_cache=False).logits  # (b, W - 1, V)
        nll = F.cross_entropy(logits.reshape(-1, logits.size(-1)), x[:, 1:].reshape(-1), reduction="none")
        total += float(nll[mask.reshape(-1)].double().sum())
        count += int(mask.sum())
    return total / count


# ------------------------------------------------------------------------------------------------------------------
# Checkpoints: everything the next update depends on, so that a resumed build ends bit-identical to an uninterrupted
# one (same CPU type and thread count). safetensors only: a checkpoint is never unpickled.

CHECKPOINT = "checkpoint.safetensors"


class CheckpointMismatch(RuntimeError):
    """A checkpoint made by another configuration or thread count: resuming from it would not be this build."""


def save_checkpoint(
    path: Path, step: int, model, opt: torch.optim.Optimizer, gen: torch.Generator, losses: list[float], identity: str
) -> None:
    from safetensors.torch import save_file

    tensors = {f"model.{k}": v.detach().clone() for k, v in model.state_dict().items()}
    for i, p in enumerate(model.parameters()):
        for k, v in opt.state.get(p, {}).items():
            tensors[f"opt.{i}.{k}"] = v.detach().clone().reshape(-1) if v.dim() == 0 else v.detach().clone()
    tensors["rng.data"] = gen.get_state()
    tensors["rng.torch"] = torch.get_rng_state()
    tensors["losses"] = torch.tensor(losses, dtype=torch.float64)  # .item() floats are float32 values: exact
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata={"step": str(step), "identity": identity})
    share_file_modes(tmp)  # safetensors writes 0600; a shared cache's checkpoint is resumed by colleagues too
    fault_point("checkpoint")  # the kill test dies here: the new checkpoint written, the previous one still in place
    tmp.replace(path)


def load_checkpoint(
    path: Path, model, opt: torch.optim.Optimizer, gen: torch.Generator, identity: str
) -> tuple[int, list[float]] | None:
    """Restore a checkpoint written for ``identity`` (the base-stage hash); returns (next step, losses) or None
    when there is none. One written for another configuration is an error, never silently reused."""
    from safetensors import safe_open

    if not path.is_file():
        return None
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        if meta.get("identity") != identity:
            raise CheckpointMismatch(
                f"{path}: a checkpoint of another base configuration or thread count "
                f"({meta.get('identity')}; this build is {identity}): resume with the same "
                "--threads, or pass --fresh to start over"
            )
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    state = {}
    for i, p in enumerate(model.parameters()):
        s = {k.split(".", 2)[2]: v for k, v in tensors.items() if k.startswith(f"opt.{i}.")}
        if s:
            state[i] = {k: (v.reshape(()) if k == "step" else v) for k, v in s.items()}
    opt.load_state_dict({"state": state, "param_groups": opt.state_dict()["param_groups"]})
    gen.set_state(tensors["rng.data"])
    torch.set_rng_state(tensors["rng.torch"])
    return int(meta["step"]), tensors["losses"].tolist()


def language_batch(
    m, stream: torch.Tensor, starts: torch.Tensor, tldr: torch.Tensor, V: int, gen: torch.Generator, eos_id: int
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A language-phase batch: (B, S + 1) document windows, the first rows replaced by span rows
    (model.pretrain_span_mix), and the (B, S) target weights (None when TL;DR targets weigh as the rest)."""
    n_span_rows = round(m.pretrain_batch * m.pretrain_span_mix)
    weights = None
    pos = document_batch(stream, starts, m.pretrain_batch, m.pretrain_seq_len, gen)  # (B, S + 1)
    window = stream[pos]
    if m.pretrain_tldr_weight != 1:  # TL;DR targets weigh more: they are where reading the post pays
        weights = 1 + (m.pretrain_tldr_weight - 1) * tldr[pos[:, 1:]].float()  # (B, S)
    if n_span_rows:
        window[:n_span_rows] = span_batch(n_span_rows, m.pretrain_seq_len, V, gen, eos_id)
        if weights is not None:
            weights[:n_span_rows] = 1
    return window, weights


def check_copy_bar(model, m, V: int, copy_bar: float, induction_lr: float, log: MetricsLog, step: int, bar) -> None:
    """At the end of the induction phase: log copy_gain and raise InductionNotFormed when it is under ``copy_bar``
    (before the checkpoint: a rerun of this configuration fails here again)."""
    gain = copy_probe(model, V)["copy_gain"]
    log.log(step, **{"base/copy_gain": gain})
    if gain < copy_bar:
        bar.close()
        raise InductionNotFormed(
            f"base {m.name}: copy_gain {gain:.2f} < {copy_bar} after the {m.pretrain_induction_steps} "
            f"induction updates (peak lr {induction_lr:.2e}): the induction circuit did not form; lower "
            "model.pretrain_lr or raise model.pretrain_induction_steps (docs/tldr-synth.md, section The ladder)"
        )


def _fresh_model(m, tokenizer) -> GPTNeoXForCausalLM:
    """The untrained ladder model (its weights drawn from the seeded global RNG), in training mode without dropout."""
    # Rotary positions have no learned table: the size only bounds generation, so it is fixed rather than taken
    # from the run's lengths (which are not part of the base model's identity).
    max_pos = MAX_POSITIONS
    model = GPTNeoXForCausalLM(
        ladder_config(
            m.name, len(tokenizer), max_pos, tokenizer.eos_token_id, tokenizer.pad_token_id, rotary_pct=m.rotary_pct
        )
    )
    # Pretrained without dropout, as Pythia was; the saved config keeps the ladder's 0.1, which is the "model
    # default" that details.dropout=model_default re-enables downstream.
    set_dropout(model, "disabled")
    model.train()
    return model


def _resume(
    checkpoint: Path | None, model, opt, gen: torch.Generator, identity: str, out_dir: Path
) -> tuple[int, list[float], MetricsLog]:
    """(first update, losses so far, log): from the checkpoint when there is a matching one, the log cut to match."""
    first, losses = 0, []
    if checkpoint is not None and (resumed := load_checkpoint(checkpoint, model, opt, gen, identity)):
        first, losses = resumed
    log = MetricsLog(out_dir / "metrics.jsonl", "base")
    if first:
        _truncate_log(out_dir / "metrics.jsonl", first)
    return first, losses, log


def _update(model, opt, window: torch.Tensor, weights: torch.Tensor | None, grad_clip, step: int) -> float:
    """One next-token update on a (B, S + 1) window; → its loss (checked finite before the step)."""
    logits = model(input_ids=window[:, :-1], use_cache=False).logits  # (B, S, V)
    loss = weighted_lm_loss(logits, window[:, 1:], weights)
    check_finite(loss, "base", step)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    opt.step()
    return loss.item()


def _save_base(
    model, tokenizer, out_dir: Path, losses, first: int, steps: int, train_time: float, stream, starts, V: int, probe
) -> dict:
    """Save the trained base model (safetensors) and → pretrain_base's result, with the copy probe and ``probe``."""
    model.config.update(dict.fromkeys(LADDER_DROPOUT_KEYS, BASE_DROPOUT))  # set_dropout zeroed the config too
    model.save_pretrained(out_dir / "model", safe_serialization=True)
    tokenizer.save_pretrained(out_dir / "model")
    model.eval()
    return {
        "loss": losses[-1],
        "first_losses": losses[:8],
        "params": count_parameters(model),
        "tokens": int(stream.numel()),
        "model": model,
        "hidden": model.config.hidden_size,
        "resumed_at": first,
        "updates": steps,
        "train_time_s": train_time,
        "documents": int(starts.numel()),
        "stream": stream,
        **copy_probe(model, V),
        **(probe(model) if probe else {}),
    }


def pretrain_base(
    cfg: Config,
    sft_train,
    tokenizer,
    out_dir: Path,
    stop_after: int | None = None,
    probe=None,
    checkpoint: Path | None = None,
    checkpoint_every: int = 250,
    copy_bar: float | None = None,
) -> dict:
    """Train a ladder model from scratch with the two-phase recipe; save it with safetensors into out_dir/model.

    ``stop_after`` ends after that many updates without saving (the schedule is the full run's): the test that
    the committed weights come from this recipe replays the first updates. ``probe(model) -> dict`` adds probe
    figures (post_swap_gap) to the result; ``stream`` is the pretraining token stream (hashed into the manifest).
    ``checkpoint``: a file written every ``checkpoint_every`` updates and at the end, resumed from when present
    (``bases.build`` deletes it once the manifest is written). ``copy_bar``: the least ``copy_gain`` at the end of
    the induction phase, else InductionNotFormed."""
    m = cfg.model
    gen = seed_everything(m.pretrain_seed)
    model = _fresh_model(m, tokenizer)
    total = m.pretrain_induction_steps + m.pretrain_steps
    steps = total if stop_after is None else min(total, stop_after)
    # Only the language phase and the manifest read the token stream: a replay of the first updates, all of the
    # induction phase, skips building it (15-30 s for the demo corpus on 2 cores).
    if stop_after is None or steps > m.pretrain_induction_steps:
        stream, starts, tldr = token_stream(
            pretraining_texts(sft_train, m.pretrain_corpus, m.pretrain_extra_posts, cfg.task.synth_seed), tokenizer
        )
    V = len(tokenizer)
    induction_lr, language_lr = peak_lrs(m, model.config.hidden_size)
    opt = torch.optim.AdamW(model.parameters(), lr=induction_lr, eps=1e-8)
    # CPU results depend on the thread count in the last bits: a checkpoint resumes under the count it was made with
    identity = f"{cfg.stage_hash('base')}/threads={torch.get_num_threads()}"
    first, losses, log = _resume(checkpoint, model, opt, gen, identity, out_dir)
    bar = progress(steps, f"base {m.name}")
    bar.update(first)
    t_train = time.time()
    for step in range(first, steps):
        set_lr(opt, recipe_lr(induction_lr, language_lr, step, m.pretrain_induction_steps, m.pretrain_steps))
        if step < m.pretrain_induction_steps:  # 1. induction phase
            window, weights = span_batch(m.pretrain_batch, m.pretrain_span_len, V, gen, tokenizer.eos_token_id), None
        else:  # 2. language phase
            window, weights = language_batch(m, stream, starts, tldr, V, gen, tokenizer.eos_token_id)
        losses.append(_update(model, opt, window, weights, m.pretrain_grad_clip, step))
        if step % 10 == 0 or step == total - 1:
            log.log(step, **{"base/loss": losses[-1]})
        bar.update(1)
        bar.set_postfix(
            loss=f"{losses[-1]:.3f}", phase="induction" if step < m.pretrain_induction_steps else "language"
        )
        done = step + 1
        if copy_bar is not None and done == m.pretrain_induction_steps:  # the circuit must be there by now
            check_copy_bar(model, m, V, copy_bar, induction_lr, log, step, bar)
        # the last one too: the caller deletes it once the manifest is written, so a crash after training costs nothing
        if (
            checkpoint is not None
            and stop_after is None
            and (done % checkpoint_every == 0 or done in (m.pretrain_induction_steps, steps))
        ):
            save_checkpoint(checkpoint, done, model, opt, gen, losses, identity)
    bar.close()
    train_time = time.time() - t_train
    if stop_after is not None:
        return {"losses": losses}
    return _save_base(model, tokenizer, out_dir, losses, first, steps, train_time, stream, starts, V, probe)


def _truncate_log(path: Path, first: int) -> None:
    """A resumed build logs its updates from ``first`` again: drop the rows a killed run wrote past its checkpoint."""
    if path.is_file():
        rows = [line for line in path.read_text().splitlines() if line.strip()]
        keep = []
        for r in rows:
            try:
                if json.loads(r)["step"] < first:
                    keep.append(r)
            except json.JSONDecodeError:  # the line a kill cut short
                continue
        atomic_write_text(path, "".join(r + "\n" for r in keep))  # a kill mid-rewrite keeps the old log whole
