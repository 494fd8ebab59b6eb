"""Query truncation, detail ``query_truncation``: a formatted query of at most ``max_tokens`` tokens.

``newline`` (paper) cuts the *post* at its last newline (or, with none left, by one character) until
the encoded query fits, so the query always ends with ``TL;DR:`` (:func:`post_cut_candidates` lists the
cuts, longest first; :func:`truncate_at_newlines` is the paper's loop, the reference); ``hard`` keeps the
first ``max_tokens`` tokens of the full query; ``drop`` keeps no ids and the builder removes the row.
:func:`encode_query` and :func:`truncate_query` do one row, :func:`encode_queries` many, remembering the
truncated rows of one build in a :class:`QueryCache`. The query text and its encoding
(``add_special_tokens=False``) come from :mod:`nplus.data.formatting`.

The paper's loop re-encodes the whole query once per dropped character; :func:`encode_queries` gets exactly its
result from a few short encodings per row through :mod:`nplus.data.truncation_fast`, where a proof covers the
tokenizer -- byte-level BPE such as Pythia's and ours -- and runs the reference elsewhere.
"""

from __future__ import annotations

import weakref
from array import array
from collections.abc import Iterator, Sequence
from itertools import islice
from typing import NamedTuple

from nplus.data.formatting import DataBuildError, encode_batch, encode_many, format_query
from nplus.data.truncation_fast import NO_FIT, truncate_fast
from nplus.details import check_value

# The reference encodes its candidates in growing batches: most queries fit at once (batch of 1), and a long
# newline-free post needing thousands of one-character cuts is scanned 64 candidates a time.
_MAX_CANDIDATE_BATCH = 64


# --------------------------------------------------------------------------------------------------
# the paper's truncation (the reference)
# --------------------------------------------------------------------------------------------------


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


def truncate_at_newlines(subreddit, title, post, tokenizer, max_tokens) -> EncodedQuery:
    """The paper's truncation, the reference: the longest candidate of :func:`post_cut_candidates` that fits.

    Equivalent to sfd's one-candidate-at-a-time loop (the first fitting candidate in its order), with
    candidates encoded in batches. Costly on long newline-free posts (one encoding of the whole query per
    dropped character): :func:`encode_queries` runs it only where the fast path's premise fails
    (:mod:`nplus.data.truncation_fast`).
    """
    candidates = post_cut_candidates(post)
    tried = 0  # candidates tried so far; the first one is the untouched post
    batch_size = 1
    while cuts := list(islice(candidates, batch_size)):
        texts = [format_query(subreddit, title, post[:k]) for k in cuts]
        for text, ids in zip(texts, encode_many(tokenizer, texts)):
            if len(ids) <= max_tokens:
                return EncodedQuery(ids, text, truncated=tried > 0)
            tried += 1
        batch_size = min(2 * batch_size, _MAX_CANDIDATE_BATCH)
    raise _cannot_truncate(subreddit, title, max_tokens)


def _cannot_truncate(subreddit, title, max_tokens) -> DataBuildError:
    return DataBuildError(
        f"could not truncate the query to {max_tokens} tokens: it is longer even with an empty post "
        f"(subreddit={subreddit!r}, title={title!r})"
    )


def _truncate_hard(full_ids: list[int], tokenizer, max_tokens: int) -> EncodedQuery:
    """The ablation: keep the first ``max_tokens`` tokens of the full query (``full_ids`` is over the limit).

    Slices mid-word and, for long posts, cuts off the ``TL;DR:`` cue itself.
    """
    kept = full_ids[:max_tokens]
    return EncodedQuery(kept, tokenizer.decode(kept, skip_special_tokens=False), truncated=True)


# --------------------------------------------------------------------------------------------------
# the entry points: every mode, many rows, a cache
# --------------------------------------------------------------------------------------------------


def encode_query(subreddit: str, title: str, post: str, tokenizer, max_tokens: int, mode: str) -> EncodedQuery:
    """Format and encode a query of at most ``max_tokens`` tokens (detail ``query_truncation``).

    ``mode="newline"`` (paper) cuts the *post* at its last newline (or, with none left, by one
    character) until the encoded query fits, so the query always ends with ``TL;DR:``;
    ``mode="hard"`` keeps the first ``max_tokens`` tokens of the full query; ``mode="drop"`` returns no ids
    (``ids=[]``, ``truncated=True``) for an over-long query: the builder removes such rows.
    """
    return encode_queries([(subreddit, title, post)], tokenizer, max_tokens, mode)[0]


def encode_queries(
    rows: Sequence[tuple[str, str, str]],
    tokenizer,
    max_tokens: int,
    mode: str,
    cache: QueryCache | None = None,
) -> list[EncodedQuery]:
    """:func:`encode_query` for many ``(subreddit, title, post)`` rows, same results.

    Repeated rows are encoded once, all full queries in one (parallel) tokenizer call; only the rows
    over the limit -- a minority in TL;DR -- are truncated, with the fast path
    (:func:`nplus.data.truncation_fast.truncate_fast`, same results) where its premise holds for the tokenizer
    and row and with the reference, :func:`truncate_at_newlines`, otherwise. ``cache`` (one per build) keeps the
    newline-truncated rows across calls: comparisons repeat their posts. Every returned row owns its
    ``ids``.
    """
    check_value("query_truncation", mode)
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be positive, got {max_tokens}")
    if mode != "newline":
        cache = None  # the ablation's truncation costs one decode: nothing to keep
    if cache is not None:
        cache.bind(tokenizer)
    found: dict[tuple, EncodedQuery] = {}
    todo = []
    for row in dict.fromkeys(tuple(r) for r in rows):
        hit = cache.get(max_tokens, row) if cache is not None else None
        if hit is not None:
            found[row] = hit
        else:
            todo.append(row)
    texts = [format_query(*row) for row in todo]
    all_ids, encodings = encode_batch(tokenizer, texts)
    over: list[tuple[tuple, str, list[int], object]] = []  # (row, text, ids, encoding or None)
    for i, (row, text, ids) in enumerate(zip(todo, texts, all_ids)):
        if len(ids) <= max_tokens:
            found[row] = EncodedQuery(ids, text, truncated=False)
        else:
            over.append((row, text, ids, encodings[i] if encodings else None))
    if mode == "hard":
        for row, _, ids, _ in over:
            found[row] = _truncate_hard(ids, tokenizer, max_tokens)
    elif mode == "drop":  # nothing is cut: the row is marked, and the builder leaves it out
        for row, *_ in over:
            found[row] = EncodedQuery([], "", truncated=True)
    else:
        fast = truncate_fast(over, tokenizer, max_tokens, post_cut_candidates)
        for row, *_ in over:  # in input order, so that the first row that cannot fit raises
            q = fast[row]
            if q is NO_FIT:
                raise _cannot_truncate(row[0], row[1], max_tokens)
            if q is None:  # the fast path's premise does not hold for this row: the reference decides
                found[row] = truncate_at_newlines(row[0], row[1], row[2] or "", tokenizer, max_tokens)
            else:
                found[row] = EncodedQuery(*q, truncated=True)
    if cache is not None:
        for row, *_ in over:
            cache.put(max_tokens, row, found[row])
    return [(q := found[tuple(row)])._replace(ids=list(q.ids)) for row in rows]


def truncate_query(subreddit: str, title: str, post: str, tokenizer, max_tokens: int, mode: str) -> list[int]:
    """Un-padded query ids, ``len <= max_tokens`` (see :func:`encode_query`)."""
    return encode_query(subreddit, title, post, tokenizer, max_tokens, mode).ids


class QueryCache:
    """Newline-truncated queries of one dataset build, keyed by ``(max_tokens, row)``.

    Only rows over the limit are kept (the others cost a share of one batched call), at most
    ``max_entries`` of them, each as the kept post length and its ids (about 6 KB a row at the paper's
    512 tokens). The cache binds to the first tokenizer it serves and empties itself when it sees
    another one (or the same one with a different vocabulary size). It pickles empty, so the
    ``datasets`` fingerprint of a ``map`` that receives it stays stable and each worker process of a
    ``num_proc`` map starts its own.
    """

    def __init__(self, max_entries: int = 20_000) -> None:
        self.max_entries = max_entries
        self._entries: dict[tuple, tuple[int, array]] = {}
        self._owner = None  # (weakref to the tokenizer, its len)

    def __reduce__(self):
        return (QueryCache, (self.max_entries,))

    def __len__(self) -> int:
        return len(self._entries)

    def bind(self, tokenizer) -> None:
        owner = self._owner
        if owner is None or owner[0]() is not tokenizer or owner[1] != len(tokenizer):
            self._entries.clear()
            self._owner = (weakref.ref(tokenizer), len(tokenizer))

    def get(self, max_tokens: int, row: tuple) -> EncodedQuery | None:
        entry = self._entries.get((max_tokens, row))
        if entry is None:
            return None
        kept, ids = entry
        return EncodedQuery(list(ids), format_query(row[0], row[1], (row[2] or "")[:kept]), truncated=True)

    def put(self, max_tokens: int, row: tuple, query: EncodedQuery) -> None:
        if len(self._entries) < self.max_entries:
            kept = len(query.text) - len(format_query(row[0], row[1], ""))
            self._entries[(max_tokens, row)] = (kept, array("q", query.ids))
