"""Query formatting, truncation, padding and response tokens: the data-stage details.

The paper pre-tokenizes TL;DR once (sfd's ``tldr_dataset.py``, itself following OpenAI's
``summarize_from_feedback/tasks.py``) so that every stage sees identical token ids. Each data-stage
detail is decided in exactly one small function below, which receives the detail's value as a plain
string (the registry in ``nplus/details.py`` owns names, docs and defaults):

==========================  ==========================  =================================================
detail                      values (paper first)        function
==========================  ==========================  =================================================
``query_truncation``        ``newline`` | ``hard``      :func:`encode_query` / :func:`truncate_query`
``query_padding_side``      ``left`` | ``right``        :func:`pad` (called with the side by the builder)
``pad_token``               ``distinct`` | ``eos``      :func:`prepare_tokenizer`
``reference_leading_space`` ``on`` | ``off``            :func:`sft_reference_text` / :func:`sft_response_ids`
``reference_eos``           ``on`` | ``off``            :func:`sft_reference_text` / :func:`sft_response_ids`
``preference_eos``          ``on`` | ``off``            :func:`preference_text` / :func:`preference_response_ids`
==========================  ==========================  =================================================

Every function encodes with ``add_special_tokens=False``: GPT-NeoX/Pythia adds no BOS, and a
tokenizer that did would otherwise insert one in the middle of ``query + response``.
"""

from __future__ import annotations

import bisect
import copy
import json
import sys
import unicodedata
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from itertools import dropwhile, islice
from typing import NamedTuple

QUERY_TEMPLATE = "SUBREDDIT: r/{subreddit}\n\nTITLE: {title}\n\nPOST: {post}\n\nTL;DR:"
"""The paper's query template: no space after ``TL;DR:`` -- the response brings its own leading space."""

TRUNCATION_MODES = ("newline", "hard")
PADDING_SIDES = ("left", "right")
PAD_TOKEN_MODES = ("distinct", "eos")
ON_OFF = ("on", "off")

DISTINCT_PAD_TOKEN = "[PAD]"
"""The pad token sfd adds to Pythia's tokenizer (which has none)."""

# Candidate prefixes of the post are encoded in growing batches: most queries fit at once (batch of 1),
# and a long newline-free post needing thousands of one-character cuts is scanned 64 candidates a time.
_MAX_CANDIDATE_BATCH = 64
# The fast path (see `_FastTruncation`) starts its scan with this many candidates per row: the proven
# bound usually leaves the answer among the first few dozen.
_FIRST_FAST_BATCH = 32


def check_choice(name: str, value: str, allowed: Sequence[str]) -> str:
    """Return ``value`` if it is one of ``allowed``; fail fast with the detail's name otherwise."""
    if value not in allowed:
        raise ValueError(f"{name} must be one of {tuple(allowed)}, got {value!r}")
    return value


def encode(tokenizer, text: str) -> list[int]:
    """Token ids of ``text`` without special tokens (no BOS/EOS added by the tokenizer)."""
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _encode_many(tokenizer, texts: list[str]) -> list[list[int]]:
    """Batch version of :func:`encode` (fast tokenizers encode a batch in parallel)."""
    return [list(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]


def _require_eos_id(tokenizer) -> int:
    """The tokenizer's EOS id; every detail that appends EOS or pads with it needs one."""
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no eos_token; set one (e.g. eos_token='<|endoftext|>')")
    return int(tokenizer.eos_token_id)


# --------------------------------------------------------------------------------------------------
# detail `pad_token`
# --------------------------------------------------------------------------------------------------


def prepare_tokenizer(tokenizer, pad_token: str):
    """Return a copy of ``tokenizer`` whose pad token follows the ``pad_token`` detail.

    * ``"distinct"`` (paper): keep an existing pad token if it differs from EOS, else add ``[PAD]``
      as a new special token. The vocabulary grows by one when added; sfd maps pad ids to 0 before the
      embedding, so the model's embedding table need not grow.
    * ``"eos"``: pad = EOS. Masks built as ``ids != pad_id`` then also drop real EOS tokens, so the
      model never learns to stop and the reward's "last non-pad token" is wrong -- the ablation.

    The input tokenizer is never mutated (tokenizers are often shared between stages); the function is
    idempotent, so ``prepare_tokenizer(prepare_tokenizer(t, m), m)`` has the same ids as one call.
    """
    check_choice("pad_token", pad_token, PAD_TOKEN_MODES)
    eos_id = _require_eos_id(tokenizer)
    tok = copy.deepcopy(tokenizer)
    if pad_token == "eos":
        tok.pad_token = tok.eos_token
    elif tok.pad_token is None or tok.pad_token_id == eos_id:
        tok.add_special_tokens({"pad_token": DISTINCT_PAD_TOKEN})
    return tok


# --------------------------------------------------------------------------------------------------
# query formatting and detail `query_truncation`
# --------------------------------------------------------------------------------------------------


def format_query(subreddit: str, title: str, post: str) -> str:
    """Fill :data:`QUERY_TEMPLATE`; ``None`` fields (CNN/DM rows have no subreddit) become empty."""
    return QUERY_TEMPLATE.format(subreddit=subreddit or "", title=title or "", post=post or "")


def post_cut_candidates(post: str) -> Iterator[int]:
    """Prefix lengths ``k`` (keep ``post[:k]``) that the paper's loop tries, longest first.

    sfd: ``while len(encode(query)) > limit: post = post[:post.rindex("\\n")]`` and, once no newline is
    left, ``post = post[:-1]``. The sequence of posts it visits is therefore: the full post, then the
    post cut at each newline from the last to the first, then the newline-free head shortened by one
    character at a time down to the empty string.
    """
    yield len(post)
    end = len(post)
    while (cut := post.rfind("\n", 0, end)) >= 0:
        yield cut
        end = cut
    yield from range(end - 1, -1, -1)


class EncodedQuery(NamedTuple):
    """A formatted, possibly truncated, un-padded query."""

    ids: list[int]  # (n,) with n <= max_tokens
    text: str  # the query text the ids encode (decoded ids for ``hard``)
    truncated: bool  # whether the full formatted query exceeded max_tokens


def _truncate_at_newlines(subreddit, title, post, tokenizer, max_tokens) -> EncodedQuery:
    """The paper's truncation: the longest candidate of :func:`post_cut_candidates` that fits.

    Equivalent to sfd's one-candidate-at-a-time loop (the first fitting candidate in its order), but
    candidates are encoded in batches so that very long newline-free posts stay cheap.
    """
    candidates = post_cut_candidates(post)
    tried = 0  # candidates tried so far; the first one is the untouched post
    batch_size = 1
    while cuts := list(islice(candidates, batch_size)):
        texts = [format_query(subreddit, title, post[:k]) for k in cuts]
        for text, ids in zip(texts, _encode_many(tokenizer, texts)):
            if len(ids) <= max_tokens:
                return EncodedQuery(ids, text, truncated=tried > 0)
            tried += 1
        batch_size = min(2 * batch_size, _MAX_CANDIDATE_BATCH)
    raise ValueError(
        f"could not truncate the query to {max_tokens} tokens: it is longer even with an empty post "
        f"(subreddit={subreddit!r}, title={title!r})"
    )


def _truncate_hard(subreddit, title, post, tokenizer, max_tokens) -> EncodedQuery:
    """The ablation: keep the first ``max_tokens`` tokens of the full query.

    Slices mid-word and, for long posts, cuts off the ``TL;DR:`` cue itself.
    """
    ids = encode(tokenizer, format_query(subreddit, title, post))
    if len(ids) <= max_tokens:
        return EncodedQuery(ids, format_query(subreddit, title, post), truncated=False)
    kept = ids[:max_tokens]
    return EncodedQuery(kept, tokenizer.decode(kept, skip_special_tokens=False), truncated=True)


def encode_query(subreddit: str, title: str, post: str, tokenizer, max_tokens: int, mode: str) -> EncodedQuery:
    """Format and encode a query of at most ``max_tokens`` tokens (detail ``query_truncation``).

    ``mode="newline"`` (paper) cuts the *post* at its last newline (or, with none left, by one
    character) until the encoded query fits, so the query always ends with ``TL;DR:``;
    ``mode="hard"`` keeps the first ``max_tokens`` tokens of the full query.
    """
    check_choice("query_truncation", mode, TRUNCATION_MODES)
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be positive, got {max_tokens}")
    if mode == "newline":
        return _truncate_at_newlines(subreddit, title, post, tokenizer, max_tokens)
    return _truncate_hard(subreddit, title, post, tokenizer, max_tokens)


def encode_queries(
    rows: Sequence[tuple[str, str, str]], tokenizer, max_tokens: int, mode: str
) -> list[EncodedQuery]:
    """:func:`encode_query` for many ``(subreddit, title, post)`` rows, same results.

    All full queries are encoded in one (parallel) tokenizer call; only the rows over the limit -- a
    minority in TL;DR -- go through the one-row truncation.
    """
    check_choice("query_truncation", mode, TRUNCATION_MODES)
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be positive, got {max_tokens}")
    texts = [format_query(*row) for row in rows]
    return [
        EncodedQuery(ids, text, truncated=False)
        if len(ids) <= max_tokens
        else encode_query(*row, tokenizer, max_tokens, mode)
        for row, text, ids in zip(rows, texts, _encode_many(tokenizer, texts))
    ]


def truncate_query(subreddit: str, title: str, post: str, tokenizer, max_tokens: int, mode: str) -> list[int]:
    """Un-padded query ids, ``len <= max_tokens`` (see :func:`encode_query`)."""
    return encode_query(subreddit, title, post, tokenizer, max_tokens, mode).ids


# --------------------------------------------------------------------------------------------------
# detail `query_padding_side` (and the right padding of training sequences)
# --------------------------------------------------------------------------------------------------


def pad(ids: Sequence[int], length: int, pad_id: int, side: str) -> list[int]:
    """Pad ``ids`` to exactly ``length`` on ``side``; never truncates.

    Queries are left-padded in the paper so that generation continues right after ``TL;DR:`` for every
    row of a batch; ``query + response`` training sequences are always right-padded.
    """
    check_choice("padding side", side, PADDING_SIDES)
    if len(ids) > length:
        raise ValueError(f"cannot pad {len(ids)} tokens to length {length}")
    fill = [pad_id] * (length - len(ids))
    return fill + list(ids) if side == "left" else list(ids) + fill


# --------------------------------------------------------------------------------------------------
# details `reference_leading_space`, `reference_eos`, `preference_eos`
# --------------------------------------------------------------------------------------------------


def sft_reference_text(summary: str, tokenizer, leading_space: str, eos: str) -> str:
    """The SFT target text: ``" " + summary + eos_token`` in the paper.

    The dataset's ``summary`` has no leading space; without one the token boundary after ``TL;DR:``
    differs from what generation sees. Without EOS the SFT model never learns to stop.
    """
    check_choice("reference_leading_space", leading_space, ON_OFF)
    check_choice("reference_eos", eos, ON_OFF)
    text = (" " if leading_space == "on" else "") + summary
    if eos == "on":
        _require_eos_id(tokenizer)
        text += tokenizer.eos_token
    return text


def sft_response_ids(summary: str, tokenizer, leading_space: str, eos: str) -> list[int]:
    """Token ids of :func:`sft_reference_text` (EOS appended as its id, un-truncated, un-padded)."""
    check_choice("reference_leading_space", leading_space, ON_OFF)
    check_choice("reference_eos", eos, ON_OFF)
    ids = encode(tokenizer, (" " if leading_space == "on" else "") + summary)
    # the EOS id is appended rather than its text encoded, so any tokenizer gives exactly one EOS token
    return ids + [_require_eos_id(tokenizer)] if eos == "on" else ids


def preference_text(text: str, tokenizer, eos: str) -> str:
    """A comparison summary as scored by the RM: the text (already space-led) + EOS in the paper."""
    check_choice("preference_eos", eos, ON_OFF)
    if eos == "on":
        _require_eos_id(tokenizer)
        return text + tokenizer.eos_token
    return text


def preference_response_ids(text: str, tokenizer, eos: str) -> list[int]:
    """Token ids of :func:`preference_text` (un-truncated, un-padded)."""
    check_choice("preference_eos", eos, ON_OFF)
    ids = encode(tokenizer, text)
    return ids + [_require_eos_id(tokenizer)] if eos == "on" else ids
