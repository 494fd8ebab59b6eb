"""Capability probes: does a model copy from its context, and does it read the post it summarizes?

- ``copy_probe``: in-context copying on random tokens (induction), recorded for every base model.
- ``post_swap_gap``: how much a model's prediction of the reference TL;DR depends on the post body.
- ``fact_accuracy``: how often a policy's summaries restate the post-body facts that only copying can get right.

A summary that beats a human reference must restate the post's ages, duration and feeling, which the title does
not carry; these probes say whether the model can (copy_probe), does (post_swap_gap) and did (fact_accuracy).
"""

from __future__ import annotations

from typing import Sequence

import torch

from nplus.data.formatting import preference_response_ids_many
from nplus.models import lm_logits
from nplus.ops import logprobs_of
from nplus.tasks.summaries import fact_check_pairs

# Facts only the post body gives, restated token for token from it (the title carries relation and event).
BODY_FACTS = ("narrator", "counterpart", "duration", "feeling")


@torch.no_grad()
def copy_probe(model, vocab_size: int, n: int = 16, length: int = 48, seed: int = 0) -> dict:
    """Mean NLL of a random token sequence the first time (≈ ln V) and when it is repeated right after.
    A model with induction heads predicts the repeat (second ≪ first); ``copy_gain`` = first − second."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(2, vocab_size, (n, length), generator=g)
    ids = torch.cat([x, x], 1)  # (n, 2·length)
    logp = torch.log_softmax(model(input_ids=ids, use_cache=False).logits[:, :-1].float(), -1)
    nll = -logp.gather(2, ids[:, 1:, None]).squeeze(2)  # (n, 2·length − 1): position t predicts token t+1
    first, second = float(nll[:, : length - 1].mean()), float(nll[:, length:].mean())
    return {"copy_nll_first": first, "copy_nll_repeat": second, "copy_gain": first - second}


@torch.no_grad()
def response_nll(
    model, queries: Sequence[Sequence[int]], responses: Sequence[Sequence[int]], pad_id: int, batch_size: int = 32
) -> torch.Tensor:
    """(N,) mean NLL per response token of ``responses[i]`` following ``queries[i]`` (un-padded id lists)."""
    out = []
    for start in range(0, len(queries), batch_size):
        qs, rs = queries[start : start + batch_size], responses[start : start + batch_size]
        L = max(len(q) + len(r) for q, r in zip(qs, rs))
        ids = torch.full((len(qs), L), pad_id, dtype=torch.long)  # right padded
        for i, (q, r) in enumerate(zip(qs, rs)):
            ids[i, : len(q) + len(r)] = torch.tensor(list(q) + list(r))
        logp = torch.log_softmax(lm_logits(model, ids, pad_id)[:, :-1].float(), -1)  # (B, L-1, V)
        nll = -logp.gather(2, ids[:, 1:, None]).squeeze(2)  # (B, L-1): position t predicts token t+1
        for i, (q, r) in enumerate(zip(qs, rs)):
            out.append(nll[i, len(q) - 1 : len(q) + len(r) - 1].mean())
    return torch.stack(out)


def post_swap_gap(model, rows: Sequence[dict], encode_query, encode_response, pad_id: int) -> dict:
    """NLL of each row's reference summary given another post's body (the next row's, under this row's own
    subreddit and title) minus given its own post, in nats per token, averaged over rows. 0: the body is not read.

    ``rows``: dicts with subreddit, title, post, summary. ``encode_query(subreddit, title, post) -> ids`` applies the
    run's query format and truncation; ``encode_response(summary) -> ids`` the reference form (space, EOS)."""
    was_training = model.training
    model.eval()
    responses = [encode_response(r["summary"]) for r in rows]
    own = [encode_query(r["subreddit"], r["title"], r["post"]) for r in rows]
    other = [encode_query(r["subreddit"], r["title"], rows[(i + 1) % len(rows)]["post"]) for i, r in enumerate(rows)]
    nll_own, nll_other = response_nll(model, own, responses, pad_id), response_nll(model, other, responses, pad_id)
    model.train(was_training)
    return {"post_swap_gap": float((nll_other - nll_own).mean()), "reference_nll": float(nll_own.mean())}


def fact_accuracy(
    judge, posts: Sequence[str], queries: Sequence[str], summaries: Sequence[str], slots: Sequence[str] = BODY_FACTS
) -> dict:
    """Share of the post-body facts inside the (truncated) query that the summaries state with the post's value
    (the gold judge's reading), overall and per slot. Facts cut from the query by truncation are not counted."""
    hits = {s: [0, 0] for s in slots}
    for post, query, summary in zip(posts, queries, summaries):
        visible, stated = judge.stated(post, query), judge.stated(post, summary)
        for s in slots:
            if s in visible:
                hits[s][1] += 1
                hits[s][0] += s in stated
    total = sum(n for _, n in hits.values())
    return {
        "fact_accuracy": sum(k for k, _ in hits.values()) / total if total else float("nan"),
        **{f"fact_accuracy_{s}": (k / n if n else float("nan")) for s, (k, n) in hits.items()},
    }


def fact_check_sequences(
    posts: Sequence, query_ids: Sequence[Sequence[int]], tokenizer, preference_eos: str, pad_id: int, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """The reward model's fact-checking probe set: for each ``tldr-synth`` post (a generator ``Post``) and its
    un-padded query ids, the minimal pairs of ``nplus.tasks.summaries.fact_check_pairs`` encoded as the RM scores
    a comparison summary (leading space, EOS per details.preference_eos). → right (N, L), wrong (N, L) right-padded
    query + summary ids, and the N slots."""
    rows: list[tuple[list[int], str, str, str]] = []
    for i, (post, q) in enumerate(zip(posts, query_ids)):
        rows += [(list(q), slot, right, wrong) for slot, right, wrong in fact_check_pairs(post, seed + i)]
    right = preference_response_ids_many([" " + r[2] for r in rows], tokenizer, preference_eos)
    wrong = preference_response_ids_many([" " + r[3] for r in rows], tokenizer, preference_eos)
    seqs = [r[0] + ids for r, ids in zip(rows, right)] + [r[0] + ids for r, ids in zip(rows, wrong)]
    width = max(map(len, seqs))
    ids = torch.tensor([s + [pad_id] * (width - len(s)) for s in seqs], dtype=torch.long)
    return ids[: len(rows)], ids[len(rows) :], [r[1] for r in rows]


@torch.no_grad()
def sequence_logprob(model, ids: torch.Tensor, pad_id: int, batch_size: int = 64) -> torch.Tensor:
    """(N, L) right-padded ids → (N,) the sum of each sequence's token log-probabilities after its first token."""
    out = []
    for x in ids.split(batch_size):
        real = (x != pad_id)[:, 1:]  # (B, L-1): position t predicts token t+1, a pad predicts nothing
        out.append((logprobs_of(lm_logits(model, x, pad_id)[:, :-1], x[:, 1:]) * real).sum(1))
    return torch.cat(out) if out else torch.zeros(0)


def likelihood_fact_check(model, right: torch.Tensor, wrong: torch.Tensor, pad_id: int) -> float:
    """Share of fact-check minimal pairs (fact_check_sequences) a causal LM finds the right summary more likely in.
    Both sequences share the query, so this compares the summaries' log-likelihoods: what the RM's initial weights
    know about the post's facts, next to what the trained RM reads out (fact_check_accuracy)."""
    was_training = model.training
    model.eval()
    hits = sequence_logprob(model, right, pad_id) > sequence_logprob(model, wrong, pad_id)
    model.train(was_training)
    return float(hits.float().mean()) if hits.numel() else float("nan")


def fact_check_accuracy(score_right: Sequence[float], score_wrong: Sequence[float], slots: Sequence[str]) -> dict:
    """Share of minimal pairs whose right summary scores above the wrong one, overall (``fact_check_accuracy``;
    0.5 is chance) and per slot (``fact_check_accuracy_<slot>``)."""
    by: dict[str, list[bool]] = {}
    for r, w, s in zip(score_right, score_wrong, slots):
        by.setdefault(s, []).append(r > w)
    hits = [h for v in by.values() for h in v]
    return {
        "fact_check_accuracy": sum(hits) / len(hits) if hits else float("nan"),
        **{f"fact_check_accuracy_{s}": sum(v) / len(v) for s, v in by.items()},
    }
