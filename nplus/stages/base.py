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

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import GPTNeoXForCausalLM

from nplus.config import Config
from nplus.data.formatting import format_query
from nplus.evaluation.probes import copy_probe
from nplus.models import BASE_DROPOUT, LADDER_DROPOUT_KEYS, count_parameters, ladder_config, set_dropout
from nplus.stages.common import MetricsLog, check_finite, progress, seed_everything, set_lr

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
        from nplus.tasks.synth import pretraining_posts

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
        rows.append(torch.cat(parts)[:seq + 1])
    return torch.stack(rows)


def document_batch(stream: torch.Tensor, starts: torch.Tensor, batch: int, seq: int, gen: torch.Generator) -> torch.Tensor:
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
    return language_lr * min(1.0, (k + 1) / WARMUP) * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * k / max(1, language_steps))))


def pretrain_base(cfg: Config, sft_train, tokenizer, out_dir: Path, stop_after: int | None = None,
                  probe=None) -> dict:
    """Train a ladder model from scratch with the two-phase recipe; save it with safetensors into out_dir/model.

    ``stop_after`` ends after that many updates without saving (the schedule is the full run's): the test that
    the committed weights come from this recipe replays the first updates. ``probe(model) -> dict`` adds probe
    figures (post_swap_gap) to the result; ``stream`` is the pretraining token stream (hashed into the manifest)."""
    m = cfg.model
    gen = seed_everything(m.pretrain_seed)
    # Rotary positions have no learned table: the size only bounds generation, so it is fixed rather than taken
    # from the run's lengths (which are not part of the base model's identity).
    max_pos = MAX_POSITIONS
    model = GPTNeoXForCausalLM(ladder_config(m.name, len(tokenizer), max_pos, tokenizer.eos_token_id,
                                             tokenizer.pad_token_id, rotary_pct=m.rotary_pct))
    # Pretrained without dropout, as Pythia was; the saved config keeps the ladder's 0.1, which is the "model
    # default" that details.dropout=model_default re-enables downstream.
    set_dropout(model, "disabled")
    model.train()
    steps = total = m.pretrain_induction_steps + m.pretrain_steps
    if stop_after is not None:
        steps = min(total, stop_after)
    # Only the language phase and the manifest read the token stream: a replay of the first updates, all of the
    # induction phase, skips building it (15-30 s for the demo corpus on 2 cores).
    if stop_after is None or steps > m.pretrain_induction_steps:
        stream, starts, tldr = token_stream(pretraining_texts(sft_train, m.pretrain_corpus, m.pretrain_extra_posts,
                                                              cfg.task.synth_seed), tokenizer)
    V = len(tokenizer)
    opt = torch.optim.AdamW(model.parameters(), lr=m.pretrain_lr, eps=1e-8)
    log = MetricsLog(out_dir / "metrics.jsonl", "base")
    n_span_rows = round(m.pretrain_batch * m.pretrain_span_mix)
    bar = progress(steps, f"base {m.name}")
    losses: list[float] = []
    for step in range(steps):
        set_lr(opt, recipe_lr(m.pretrain_lr, m.pretrain_language_lr or m.pretrain_lr, step, m.pretrain_induction_steps,
                              m.pretrain_steps))
        weights = None
        if step < m.pretrain_induction_steps:  # 1. induction phase
            window = span_batch(m.pretrain_batch, m.pretrain_span_len, V, gen, tokenizer.eos_token_id)
        else:  # 2. language phase: document windows, the first rows replaced by span rows
            pos = document_batch(stream, starts, m.pretrain_batch, m.pretrain_seq_len, gen)  # (B, S + 1)
            window = stream[pos]
            if m.pretrain_tldr_weight != 1:  # TL;DR targets weigh more: they are where reading the post pays
                weights = 1 + (m.pretrain_tldr_weight - 1) * tldr[pos[:, 1:]].float()  # (B, S)
            if n_span_rows:
                window[:n_span_rows] = span_batch(n_span_rows, m.pretrain_seq_len, V, gen, tokenizer.eos_token_id)
                if weights is not None:
                    weights[:n_span_rows] = 1
        logits = model(input_ids=window[:, :-1], use_cache=False).logits  # (B, S, V)
        loss = weighted_lm_loss(logits, window[:, 1:], weights)
        check_finite(loss, "base", step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if step % 10 == 0 or step == total - 1:
            log.log(step, **{"base/loss": losses[-1]})
        bar.update(1)
        bar.set_postfix(loss=f"{losses[-1]:.3f}", phase="induction" if step < m.pretrain_induction_steps else "language")
    bar.close()
    if stop_after is not None:
        return {"losses": losses}
    model.config.update(dict.fromkeys(LADDER_DROPOUT_KEYS, BASE_DROPOUT))  # set_dropout zeroed the config too
    model.save_pretrained(out_dir / "model", safe_serialization=True)
    tokenizer.save_pretrained(out_dir / "model")
    model.eval()
    return {"loss": losses[-1], "first_losses": losses[:8], "params": count_parameters(model), "tokens": int(stream.numel()),
            "documents": int(starts.numel()), "stream": stream, **copy_probe(model, V), **(probe(model) if probe else {})}
