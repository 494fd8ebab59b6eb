"""Fast, exact newline truncation: the paper's result from a few short encodings per over-long row.

The paper's truncation (:func:`nplus.data.truncation.truncate_at_newlines`, the reference) re-encodes the whole
query once per dropped character. :func:`truncate_fast` drops the candidates a proof (below) shows to be over the
limit and encodes only a short tail of the others, for tokenizers the proof covers -- byte-level BPE such as
Pythia's and ours. It returns ``None`` for a row where the proof's premise fails, and the caller
(:func:`nplus.data.truncation.encode_queries`) then runs the reference. ``tests/test_truncation_fast.py`` checks
it against a transcription of the paper's loop.
"""

from __future__ import annotations

import bisect
import copy
import json
import sys
import unicodedata
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from itertools import dropwhile, islice

from nplus.data.formatting import QUERY_TEMPLATE, encode_many, format_query

# The scan starts with this many candidates per row (the proven bound usually leaves the answer among the first few
# dozen) and doubles the batch up to _MAX_BATCH.
_FIRST_FAST_BATCH = 8
_MAX_BATCH = 64

NO_FIT = "no candidate fits"
""":func:`truncate_fast`'s answer for a row that cannot fit even with an empty post (the reference raises)."""

# Notation: for a row, H = "SUBREDDIT: r/..\n\nTITLE: ..\n\nPOST: ", T = "\n\nTL;DR:", Q(c) = H + post[:c] + T
# and f(c) = len(encode(Q(c))). The paper keeps the first candidate c of `post_cut_candidates` -- a
# strictly decreasing sequence -- with f(c) <= limit. Where f(c) > limit is *proven* for every c >= c_b,
# dropping those candidates and computing f exactly for the others, in the same order, keeps the same c.
# f need not be monotone: below c_b no candidate is skipped.
#
# Premise, checked for the tokenizer by `_fast_plan` (else the paper's loop runs): a fast tokenizer whose
# encoding of a text is (a) split out its added tokens -- the non-normalized ones on the raw text, then
# the normalized ones in each normalized remaining piece -- by leftmost-longest search, none with
# lstrip/rstrip/single_word; (b) normalizer None or NFC; (c) the GPT-2 regex of the ByteLevel
# pre-tokenizer (no prefix space) on each remaining piece, or tldr-synth's split (c'): the same regex behind
# two fact alternatives, then the byte-level alphabet (nplus.tasks.tokenizer); (d) the model on each resulting split
# on its own, deterministically (no BPE dropout). With NFC a row qualifies only if Q(len(post)) passes Unicode's
# NFC quick check with YES: that check is per character plus an order test on neighbours, so every
# substring of H + post[:c] + T (T starts with "\n") passes it too and NFC changes none of them.
#
# Lemma R. The regex match at position i, [i, j), depends only on the characters i..j (one past its end):
# the contractions read at most i+2 <= j, the greedy classes stop at the first character outside them
# (index j), `\s+(?!\S)` backtracks from the end k of the whitespace run, reading index k = j+1 at most;
# no alternative looks behind. The matches tile the text, so by induction from the left two texts that
# agree on [0, m) have the same pieces among those ending at <= m - 2.
# Lemma R' (premise c'). Tried first at i, the fact alternatives read at most i..i+10 (" 12 months" and the "\b"
# after it); the GPT-2 ones then decide as in R. So the match [i, j) depends on the characters before
# max(j + 2, i + 11), and pieces ending at <= m - 11 are shared: everywhere below, R's 2 becomes
# REGEX_MARGIN's 12 for this split (one character of slack; tests check 11).
# Lemma A. A leftmost-longest search over patterns of at most M characters decides a match starting at
# i from the characters before i + M: two texts agreeing on [0, m) have the same matches starting at
# <= m - M, and the gaps after the last of them agree on [.., m - M + 1) (on [.., m) when M = 0).
# 1. Q(c) and Q(len(post)) agree on [0, |H| + c). Applying A to the non-normalized added tokens (longest
#    M1), then A to the normalized ones (M2) in the gap, then R: every split of Q(len(post)) ending at
#    <= |H| + c - K, K = max(M1 - 1, 0) + max(M2 - 1, 0) + 2, is also a split of Q(c), with the same
#    tokens by (d). If no added token occurs in any Q(c) -- none in Q(len(post)), none in T, and none
#    with a proper suffix that starts T (so none straddles post[:c] + T) -- then M1 = M2 = 0 and K = 2.
# 2. Those stable splits end at a split boundary s of Q(c). No added-token match of Q(c) starts in
#    [0, s) without ending there (it would be one of them), and no regex match looks behind, so the
#    splits of Q(c) after s are those of Q(c)[s:] encoded on its own: f(c) = L(c) + len(encode(Q(c)[s:]))
#    with L(c) the stable splits' tokens: each candidate costs the encoding of a few dozen characters.
# 3. Lower bound. If no added token can overlap T (as in 1), T = "\n\n" + "TL;DR:" lies in one regex
#    gap. "TL;DR:" starts a piece (no alternative matches across "\n" into a letter) and, as nothing
#    looks behind, is split and encoded as on its own. The whitespace run ending with T's "\n\n" is split
#    by `\s+(?!\S)` into all but its last character, then `\s+` takes that last "\n": two more splits.
#    A BPE model whose vocabulary holds every ByteLevel character gives every split at least one token.
#    So f(c) >= L(c) + t, t = len(encode("TL;DR:")) (+ 2), all after the stable splits; L is
#    nondecreasing in c, so c_b = min{c : L(c) > limit - t} = (end of the split that pushes the running
#    count of Q(len(post)) over limit - t) + K - |H|.
# The splits and their token counts come from one encoding of Q(len(post)) with untrimmed offsets: the
# tokenizer's own when its post-processor leaves offsets alone, else that of a copy without
# post-processor, which must then give the same ids. Its splits must tile the text. As a canary, the
# tokenizer itself re-encodes every kept query, which must give the ids composed in 2; any failure sends
# the row to the paper's loop.

_QUERY_TAIL = QUERY_TEMPLATE.split("{post}")[1]  # T
_QUERY_CUE = _QUERY_TAIL.lstrip()  # "TL;DR:"
assert _QUERY_TAIL == "\n\n" + _QUERY_CUE and _QUERY_CUE[0].isalpha()  # the shape lemma 3 relies on
_BYTE_LEVEL_KEYS = {"type", "add_prefix_space", "trim_offsets", "use_regex"}
# K's regex term per pre-tokenizer the fast path accepts: GPT-2's regex (lemma R) or tldr-synth's fact split (R').
REGEX_MARGIN = {"byte_level": 2, "fact_split": 12}


def _regex_margin(pre) -> int | None:
    """The regex term of K for a pre-tokenizer's state (premise c or c'), or None when neither holds."""
    from nplus.tasks.tokenizer import FACT_PATTERN, GPT2_PATTERN  # here: tokenizers, only for the fast path

    def byte_level(d, use_regex: bool) -> bool:
        return (
            isinstance(d, dict)
            and d.get("type") == "ByteLevel"
            and set(d) <= _BYTE_LEVEL_KEYS
            and d.get("use_regex", True) is use_regex
            and d.get("add_prefix_space") is False
        )

    if byte_level(pre, True):
        return REGEX_MARGIN["byte_level"]
    split = {
        "type": "Split",
        "pattern": {"Regex": f"{FACT_PATTERN}|{GPT2_PATTERN}"},
        "behavior": "Isolated",
        "invert": False,
    }
    if (
        isinstance(pre, dict)
        and pre.get("type") == "Sequence"
        and len(pre.get("pretokenizers", [])) == 2
        and pre["pretokenizers"][0] == split
        and byte_level(pre["pretokenizers"][1], False)
    ):
        return REGEX_MARGIN["fact_split"]
    return None


@dataclass(frozen=True)
class _FastPlan:
    structure: object  # `tokenizers.Tokenizer`: the backend without post-processor
    margin: int  # K of lemma 1 for rows in which an added token may occur
    regex_margin: int  # K's regex term: 2 (lemma R) or 12 (R')
    added: tuple[str, ...]  # contents of the added tokens
    tail_tokens: int  # t of lemma 3 (0 where some added token may overlap T)
    nfc: bool  # rows must pass the NFC quick check
    own_offsets: bool  # the tokenizer's encodings have untrimmed offsets (no copy needed)

    def row_margin(self, text: str) -> int:
        """K for the row whose full query is ``text`` (lemma 1)."""
        if self.tail_tokens and not any(a in text for a in self.added):
            return self.regex_margin
        return self.margin


# tokenizer -> (fingerprint, plan or None); the backend copy is the only costly part
_PLANS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _fast_plan(tokenizer) -> _FastPlan | None:
    """The fast path's plan for ``tokenizer``, or ``None`` when its premise does not hold."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return None
    try:
        from tokenizers import models, normalizers, pre_tokenizers, processors

        added = list(backend.get_added_tokens_decoder().values())
        pre_state = backend.pre_tokenizer.__getstate__() if backend.pre_tokenizer is not None else b"null"
        fingerprint = (
            id(backend),
            backend.get_vocab_size(with_added_tokens=True),
            type(backend.normalizer).__name__,
            pre_state,
            tuple((t.content, t.lstrip, t.rstrip, t.single_word, t.normalized) for t in added),
            type(backend.model).__name__,
            getattr(backend.model, "dropout", None),
            backend.post_processor.__getstate__() if backend.post_processor is not None else b"null",
            bool(getattr(tokenizer, "split_special_tokens", False)),
        )
        cached = _PLANS.get(tokenizer)
        if cached is not None and cached[0] == fingerprint:
            return cached[1]
        plan = None
        regex_margin = _regex_margin(json.loads(pre_state))
        if (
            (backend.normalizer is None or type(backend.normalizer) is normalizers.NFC)
            and type(backend.pre_tokenizer) in (pre_tokenizers.ByteLevel, pre_tokenizers.Sequence)
            and regex_margin is not None
            and not getattr(backend.model, "dropout", None)
            and all(t.content and not (t.lstrip or t.rstrip or t.single_word) for t in added)
            and not getattr(tokenizer, "split_special_tokens", False)  # (a): special tokens are split out
        ):
            structure = copy.deepcopy(backend)  # encodes as the tokenizer's calls do, keeping offsets
            structure.post_processor = None
            structure.no_truncation()
            structure.no_padding()
            structure.encode_special_tokens = False
            contents = tuple(t.content for t in added)
            raw = max((len(t.content) for t in added if not t.normalized), default=0)
            normalized = max((len(t.content) for t in added if t.normalized), default=0)
            tail_tokens = 0
            if not any(
                a in _QUERY_TAIL or any(_QUERY_TAIL.startswith(a[k:]) for k in range(1, len(a))) for a in contents
            ):
                tail_tokens = len(structure.encode(_QUERY_CUE, add_special_tokens=False).ids)
                if type(backend.model) is models.BPE and set(pre_tokenizers.ByteLevel.alphabet()) <= set(
                    backend.get_vocab(with_added_tokens=False)
                ):
                    tail_tokens += 2
            plan = _FastPlan(
                structure=structure,
                margin=max(raw - 1, 0) + max(normalized - 1, 0) + regex_margin,
                regex_margin=regex_margin,
                added=contents,
                tail_tokens=tail_tokens,
                nfc=backend.normalizer is not None,
                own_offsets=backend.post_processor is None
                or (
                    type(backend.post_processor) is processors.ByteLevel
                    and json.loads(backend.post_processor.__getstate__()).get("trim_offsets") is False
                ),
            )
        _PLANS[tokenizer] = (fingerprint, plan)
        return plan
    except (AttributeError, TypeError, ValueError):  # an unexpected tokenizer: stay on the paper's loop
        return None


@lru_cache(maxsize=1)
def _nfc_maybe() -> frozenset[int]:
    """A superset of the code points whose NFC quick-check value is MAYBE: every second character of a
    canonical two-character decomposition, and the Hangul vowel and trailing jamo (composed by rule)."""
    seconds = set(range(0x1161, 0x1176)) | set(range(0x11A8, 0x11C3))
    for cp in range(sys.maxunicode + 1):
        d = unicodedata.decomposition(chr(cp))
        if d and not d.startswith("<") and len(parts := d.split()) == 2:
            seconds.add(int(parts[1], 16))
    return frozenset(seconds)


@lru_cache(maxsize=1 << 16)
def _nfc_yes(ch: str) -> bool:
    """NFC quick check of one character is YES (conservatively: unassigned characters are not, as the
    tokenizer's Unicode version may be newer than Python's)."""
    return unicodedata.category(ch) != "Cn" and ord(ch) not in _nfc_maybe() and unicodedata.normalize("NFC", ch) == ch


def _nfc_quick_check_yes(text: str) -> bool:
    """Unicode's NFC quick check (UAX #15) answers YES for ``text``: then ``text`` and each of its
    substrings are in NFC."""
    if text.isascii():
        return True
    last = 0
    for ch in text:
        if ch < "\x80":
            last = 0
            continue
        ccc = unicodedata.combining(ch)
        if (ccc and last > ccc) or not _nfc_yes(ch):
            return False
        last = ccc
    return True


def _split_bounds(encoding, threshold: int) -> tuple[list[int], list[int]] | None:
    """``(ends, cum)`` of the splits of an encoding up to the one whose tokens take the running count
    over ``threshold``: ``ends[w]`` is where split ``w`` ends (in characters) and ``cum[w]`` the number
    of tokens of splits ``0..w-1``. ``None`` unless those splits tile the start of the text, or if the
    count never exceeds ``threshold``; ``([], [0])`` if ``threshold < 0``."""
    ends: list[int] = []
    cum = [0]
    for word, (start, end) in zip(encoding.word_ids, encoding.offsets):
        if word is None:
            return None
        if word == len(ends) - 1:
            cum[-1] += 1
            ends[-1] = max(ends[-1], end)
        elif cum[-1] > threshold:  # the crossing split is complete
            break
        elif word == len(ends) and start == (ends[-1] if ends else 0):
            ends.append(end)
            cum.append(cum[-1] + 1)
        else:  # a split without tokens, or offsets that do not tile
            return None
    return (ends, cum) if cum[-1] > threshold else None


class _Scan:
    """One over-limit row of :func:`truncate_fast`: the candidates still to try, and the bound."""

    def __init__(self, row, full_ids, ends, cum, margin, candidates: Iterator[int]):
        self.row, self.full_ids, self.ends, self.cum, self.margin = row, full_ids, ends, cum, margin
        self.post = row[2] or ""
        self.head = format_query(row[0], row[1], "")[: -len(_QUERY_TAIL)]  # H
        # c_b (lemma 3): the last split takes the count over the limit; no split: nothing can fit
        first_excluded = ends[-1] + margin - len(self.head) if ends else -1
        # the full post (the first candidate) is known to be over the limit
        self.candidates = dropwhile(lambda c: c >= first_excluded, islice(candidates, 1, None))
        self.batch = _FIRST_FAST_BATCH

    def split_candidate(self, cut: int) -> tuple[int, str]:
        """``(L(cut), rest)`` (lemma 2): the query of ``post[:cut]`` is encoded as ``full_ids[:L(cut)]``
        (its stable splits) followed by the encoding of ``rest``, the text after them."""
        stable = bisect.bisect_right(self.ends, len(self.head) + cut - self.margin)
        start = self.ends[stable - 1] if stable else 0
        if start >= len(self.head):
            return self.cum[stable], self.post[start - len(self.head) : cut] + _QUERY_TAIL
        return self.cum[stable], self.head[start:] + self.post[:cut] + _QUERY_TAIL


def truncate_fast(
    over: list[tuple[tuple, str, list[int], object]],
    tokenizer,
    max_tokens: int,
    candidates: Callable[[str], Iterator[int]],
) -> dict[tuple, tuple[list[int], str] | str | None]:
    """The paper's truncation for rows over the limit (``(row, full query, its ids, its encoding)``),
    same results; ``candidates(post)`` is the paper's order of cuts
    (:func:`nplus.data.truncation.post_cut_candidates`), so both paths scan the same candidates.

    Returns per row the kept query's ``(ids, text)``, :data:`NO_FIT` where the paper's loop would find
    none that fits, or ``None`` where the premise of the proof above fails (the caller then runs the
    paper's loop).
    """
    result: dict[tuple, tuple[list[int], str] | str | None] = {row: None for row, *_ in over}
    plan = _fast_plan(tokenizer) if over else None
    if plan is None:
        return result
    eligible = [item for item in over if not plan.nfc or _nfc_quick_check_yes(item[1])]
    # the splits of each full query: the tokenizer's own encodings where their offsets are untrimmed
    if not plan.own_offsets or any(enc is None for *_, enc in eligible):
        encodings = plan.structure.encode_batch([text for _, text, *_ in eligible], add_special_tokens=False)
        eligible = [(row, text, ids, enc) for (row, text, ids, _), enc in zip(eligible, encodings)]
    pending: list[_Scan] = []
    for row, text, ids, enc in eligible:
        bounds = _split_bounds(enc, max_tokens - plan.tail_tokens) if enc.ids == ids else None
        if bounds is not None:
            pending.append(_Scan(row, ids, *bounds, plan.row_margin(text), candidates(row[2] or "")))
    found: list[tuple[_Scan, int, list[int]]] = []  # (row, kept prefix, its composed ids)
    while pending:
        batches = []
        for scan in pending:
            cuts = list(islice(scan.candidates, scan.batch))
            scan.batch = min(2 * scan.batch, _MAX_BATCH)
            batches.append((scan, cuts, [scan.split_candidate(c) for c in cuts]))
        rests = plan.structure.encode_batch(
            [rest for _, _, split in batches for _, rest in split], add_special_tokens=False
        )
        position, still = 0, []
        for scan, cuts, split in batches:
            if not cuts:  # every candidate is over the limit
                result[scan.row] = NO_FIT
                continue
            for i, (cut, (stable, _)) in enumerate(zip(cuts, split)):
                if stable + len(rests[position + i]) <= max_tokens:
                    found.append((scan, cut, scan.full_ids[:stable] + rests[position + i].ids))
                    break
            else:
                still.append(scan)
            position += len(cuts)
        pending = still
    # canary: the tokenizer itself must give the composed ids for every kept query
    texts = [format_query(scan.row[0], scan.row[1], scan.post[:cut]) for scan, cut, _ in found]
    for (scan, _, ids), text, real in zip(found, texts, encode_many(tokenizer, texts)):
        result[scan.row] = (real, text) if real == ids else None
    return result
