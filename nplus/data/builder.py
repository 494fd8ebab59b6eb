"""Pre-tokenized SFT and preference datasets (the paper's ``..._oai_preprocessing`` form).

The builder only orchestrates: every data-stage detail is decided by one function of
:mod:`nplus.data.formatting` or (query truncation) :mod:`nplus.data.truncation`. Both builders return
``(DatasetDict, stats)`` where ``stats`` maps each split to counts a run records next to its data (sfd
asserts that the true maximum lengths equal its constants; we report them instead):

* ``n_rows``
* ``n_query_truncated``   -- queries longer than ``Lengths.query`` before truncation (removed rows under
  ``query_truncation=drop``, which ``n_rows`` no longer counts)
* ``max_response_tokens`` -- longest response before truncation (incl. EOS when appended)
* ``n_response_truncated`` -- responses cut to the response limit (for preferences: chosen and
  rejected counted separately)

Token columns hold plain ids; the pad id is ``prepare_tokenizer(tokenizer, details.pad_token)``'s. With
``pad_token="eos"`` pads and real EOS tokens share an id, so the ``*_len`` columns are the only reliable
way for a trainer to build masks (which is exactly why that alternative hurts in the paper).
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import sys
from dataclasses import replace

import numpy as np
from datasets import Dataset, DatasetDict, Features, List, Value, concatenate_datasets

from nplus.config import Lengths
from nplus.data import formatting, truncation, truncation_fast
from nplus.data.formatting import (
    DataBuildError,
    pad,
    preference_response_ids_many,
    preference_text,
    prepare_tokenizer,
    sft_reference_text,
    sft_response_ids_many,
)
from nplus.data.truncation import QueryCache, encode_queries
from nplus.details import Details, stage_details

CNNDM_BATCHES = ("batch0_cnndm", "cnndm0", "cnndm2")
"""Comparison batches on CNN/DM articles: the out-of-distribution split of the RM evaluation."""
CNNDM_SPLIT = "validation_cnndm"

SFT_INPUT_COLUMNS = ("subreddit", "title", "post", "summary")
PREFERENCE_INPUT_COLUMNS = ("info", "summaries", "choice")

# per-row bookkeeping columns, turned into `stats` and dropped before returning
_RAW_RESPONSE_MAX = "_max_response_tokens"
_RESPONSE_TRUNCATED = "_n_response_truncated"
_QUERY_TRUNCATED = "_query_truncated"
_PRIVATE_COLUMNS = (_RAW_RESPONSE_MAX, _RESPONSE_TRUNCATED, _QUERY_TRUNCATED)

# Schemas of the added columns: fixed so that every split (even an empty one) has the same columns.
_STR, _INT, _IDS = Value("string"), Value("int64"), List(Value("int64"))
_PRIVATE_FEATURES = {name: _INT for name in _PRIVATE_COLUMNS}
SFT_FEATURES = {
    "query": _STR,
    "query_token": _IDS,  # (lengths.query,)
    "query_token_len": _INT,
    "reference_response": _STR,
    "reference_response_token": _IDS,  # (lengths.sft_response,)
    "response_token_len": _INT,
    "query_reference_response_token": _IDS,  # (lengths.sft_total,)
}
PREFERENCE_FEATURES = {
    "query": _STR,
    "query_token": _IDS,  # (lengths.query,)
    "query_token_len": _INT,
    "chosen": _STR,
    "rejected": _STR,
    "chosen_token": _IDS,  # (lengths.pref_response,)
    "rejected_token": _IDS,  # (lengths.pref_response,)
    "chosen_token_len": _INT,
    "rejected_token_len": _INT,
    "query_chosen_token": _IDS,  # (lengths.pref_total,)
    "query_rejected_token": _IDS,  # (lengths.pref_total,)
}


DATA_DETAILS = stage_details("data")
"""The data-stage details, in registry order: the only details a built dataset depends on."""


def data_details(details: Details) -> dict[str, str]:
    """The data-stage details' values (``{name: value}``, registry order): a built dataset's cache key and the
    ``details`` of ``nplus data-build``'s stats.json."""
    return {name: getattr(details, name) for name in DATA_DETAILS}


def applied_lengths(lengths: Lengths, query_truncation: str) -> Lengths:
    """The limits a build enforces for the ``query_truncation`` detail.

    Newline truncation (paper) keeps ``lengths`` as they are: the cut lands at a newline, so query + response
    stays within the measured totals (562 / 638 at the paper's lengths, sfd asserts it). A hard cut leaves every
    over-long query at exactly ``lengths.query`` tokens, so with the paper's lengths 512 + 53 > 562 and the
    ablation could never be built: under ``hard`` each total is raised to at least query + its response limit
    (565 / 681), the rule CNN/DM comparisons already follow. Queries keep their ``lengths.query`` width, so the
    ablation changes only how queries are cut, not how long they may be.
    """
    if query_truncation != "hard":
        return lengths
    return replace(
        lengths,
        sft_total=max(lengths.sft_total, lengths.query + lengths.sft_response),
        pref_total=max(lengths.pref_total, lengths.query + lengths.pref_response),
    )


# --------------------------------------------------------------------------------------------------
# row-level helpers
# --------------------------------------------------------------------------------------------------


def _pad_right_at_least(ids: list[int], length: int, pad_id: int) -> list[int]:
    """Right-pad to ``length``; longer rows are kept whole so the post-build check can count them."""
    return pad(ids, max(length, len(ids)), pad_id, "right")


def _query_fields(info: dict) -> tuple[str, str, str]:
    """(subreddit, title, post) of a comparison's ``info``; CNN/DM rows carry ``article``, not ``post``."""
    post = info.get("post")
    if post is None:
        post = info.get("article") or ""
    return info.get("subreddit") or "", info.get("title") or "", post


def _require_columns(ds: DatasetDict, columns: tuple[str, ...]) -> None:
    """Fail fast, naming the split, when the public schema's columns are missing."""
    for split, d in ds.items():
        missing = [c for c in columns if c not in d.column_names]
        if missing:
            raise DataBuildError(f"split {split!r} lacks columns {missing}; has {d.column_names}")


def _column(d: Dataset, name: str) -> np.ndarray:
    """One column as a numpy array (without materializing the others)."""
    return np.asarray(d.select_columns([name]).with_format("numpy")[:][name])


# --------------------------------------------------------------------------------------------------
# batched map functions
# --------------------------------------------------------------------------------------------------


def _sft_batch(
    batch: dict,
    *,
    tokenizer,
    lengths: Lengths,
    details: Details,
    pad_id: int,
    cache: QueryCache | None = None,
    code_version: str = "",
) -> dict:
    """Pre-tokenize a batch of SFT rows (``datasets.map(batched=True)``); ``code_version`` only enters
    the ``datasets`` fingerprint (see :func:`_code_version`)."""
    out: dict[str, list] = {k: [] for k in (*SFT_FEATURES, *_PRIVATE_COLUMNS)}
    # 1. queries: truncated to `lengths.query` (batched tokenizer calls; truncations remembered in `cache`)
    rows = list(zip(batch["subreddit"], batch["title"], batch["post"]))
    queries = encode_queries(rows, tokenizer, lengths.query, details.query_truncation, cache)
    # 2. reference responses: leading space / EOS per details, cut to the SFT response limit
    responses = sft_response_ids_many(
        batch["summary"], tokenizer, details.reference_leading_space, details.reference_eos
    )
    for q, summary, response in zip(queries, batch["summary"], responses):
        kept = response[: lengths.sft_response]
        # 3. training sequence: un-padded query + response, right-padded (as generation will see it)
        out["query"].append(q.text)
        out["query_token"].append(pad(q.ids, lengths.query, pad_id, details.query_padding_side))
        out["query_token_len"].append(len(q.ids))
        out["reference_response"].append(
            sft_reference_text(summary, tokenizer, details.reference_leading_space, details.reference_eos)
        )
        out["reference_response_token"].append(pad(kept, lengths.sft_response, pad_id, "right"))
        out["response_token_len"].append(len(kept))
        out["query_reference_response_token"].append(_pad_right_at_least(q.ids + kept, lengths.sft_total, pad_id))
        out[_RAW_RESPONSE_MAX].append(len(response))
        out[_RESPONSE_TRUNCATED].append(int(len(response) > lengths.sft_response))
        out[_QUERY_TRUNCATED].append(int(q.truncated))
    return out


def _preference_batch(
    batch: dict,
    *,
    tokenizer,
    lengths: Lengths,
    details: Details,
    pad_id: int,
    cache: QueryCache | None = None,
    code_version: str = "",
) -> dict:
    """Pre-tokenize a batch of comparisons (``datasets.map(batched=True)``); ``code_version`` only enters
    the ``datasets`` fingerprint (see :func:`_code_version`)."""
    out: dict[str, list] = {k: [] for k in (*PREFERENCE_FEATURES, *_PRIVATE_COLUMNS)}
    # 1. queries, exactly as for SFT (comparisons repeat their posts: `cache` truncates each once)
    rows = [_query_fields(info) for info in batch["info"]]
    queries = encode_queries(rows, tokenizer, lengths.query, details.query_truncation, cache)
    # 2. chosen = summaries[choice]; the texts already start with a space, only EOS is appended
    pairs = [(summaries[c], summaries[1 - c]) for summaries, c in zip(batch["summaries"], batch["choice"])]
    responses = iter(
        preference_response_ids_many([s["text"] for pair in pairs for s in pair], tokenizer, details.preference_eos)
    )
    for q, pair in zip(queries, pairs):
        out["query"].append(q.text)
        out["query_token"].append(pad(q.ids, lengths.query, pad_id, details.query_padding_side))
        out["query_token_len"].append(len(q.ids))
        out[_QUERY_TRUNCATED].append(int(q.truncated))
        raw_lens = []
        for name, summary in zip(("chosen", "rejected"), pair):
            response = next(responses)
            kept = response[: lengths.pref_response]
            raw_lens.append(len(response))
            out[name].append(preference_text(summary["text"], tokenizer, details.preference_eos))
            out[f"{name}_token"].append(pad(kept, lengths.pref_response, pad_id, "right"))
            out[f"{name}_token_len"].append(len(kept))
            # 3. the RM's input: un-padded query + response, right-padded
            out[f"query_{name}_token"].append(_pad_right_at_least(q.ids + kept, lengths.pref_total, pad_id))
        out[_RAW_RESPONSE_MAX].append(max(raw_lens))
        out[_RESPONSE_TRUNCATED].append(sum(n > lengths.pref_response for n in raw_lens))
    return out


# --------------------------------------------------------------------------------------------------
# post-build checks and stats
# --------------------------------------------------------------------------------------------------


def _check_total(d: Dataset, split: str, response_len_column: str, limit: int, name: str) -> None:
    """Raise if any ``query + response`` is longer than ``limit`` (sfd asserts the same)."""
    if len(d) == 0:
        return
    totals = _column(d, "query_token_len") + _column(d, response_len_column)  # (n_rows,)
    over = int((totals > limit).sum())
    if over:
        raise DataBuildError(
            f"split {split!r}: {over} rows have query + {response_len_column.removesuffix('_token_len')} "
            f"longer than Lengths.{name}={limit} (longest: {int(totals.max())} tokens). "
            f"Raise Lengths.{name} or lower Lengths.query / the response limit."
        )


@functools.lru_cache(maxsize=1)
def _code_version() -> str:
    """A hash of the code that computes the columns.

    ``datasets`` fingerprints a map function without the functions it calls, so a dataset loaded from
    disk would otherwise get its cached columns back after :mod:`nplus.data.formatting`,
    :mod:`nplus.data.truncation` or :mod:`nplus.data.truncation_fast` changed.
    """
    modules = (formatting, truncation, truncation_fast, sys.modules[__name__])
    source = "".join(inspect.getsource(m) for m in modules)
    return hashlib.sha256(source.encode()).hexdigest()[:16]


def _map_split(d: Dataset, fn, added: dict, fn_kwargs: dict, num_proc: int | None, desc: str) -> Dataset:
    """``d.map(fn, batched=True)`` with a fixed schema; an empty split gets the same (empty) columns."""
    features = Features({**d.features, **added, **_PRIVATE_FEATURES})
    if len(d) == 0:  # `map` would skip the function and leave the new columns out
        return Dataset.from_dict({name: [] for name in features}, features=features)
    fn_kwargs = {**fn_kwargs, "code_version": _code_version()}
    return d.map(fn, batched=True, fn_kwargs=fn_kwargs, features=features, num_proc=num_proc, desc=desc)


def _finish(d: Dataset, query_truncation: str, split: str) -> tuple[Dataset, dict[str, int]]:
    """Turn the bookkeeping columns into the split's stats and drop them; under ``query_truncation=drop``
    also remove the rows whose query did not fit (TRL's ppo_tldr.py filter, DeepSpeed-Chat's step-3 prompts)."""
    n = len(d)
    stats = {
        "n_rows": n,
        "n_query_truncated": int(_column(d, _QUERY_TRUNCATED).sum()) if n else 0,
        "max_response_tokens": int(_column(d, _RAW_RESPONSE_MAX).max()) if n else 0,
        "n_response_truncated": int(_column(d, _RESPONSE_TRUNCATED).sum()) if n else 0,
    }
    if query_truncation == "drop" and n:
        d = d.select(np.flatnonzero(_column(d, _QUERY_TRUNCATED) == 0))
        stats["n_rows"] = len(d)
        if not len(d):
            raise DataBuildError(
                f"split {split!r}: details.query_truncation=drop left none of its {n} rows (every "
                "query is longer than Lengths.query); raise Lengths.query or use newline / hard"
            )
    return d.remove_columns(list(_PRIVATE_COLUMNS)), stats


def split_cnndm(ds: DatasetDict) -> DatasetDict:
    """Move comparisons of the CNN/DM batches into their own split ``validation_cnndm`` (if any)."""
    kept, moved = {}, []
    for split, d in ds.items():
        is_cnndm = np.isin(_column(d, "batch"), CNNDM_BATCHES) if len(d) else np.zeros(0, dtype=bool)
        if is_cnndm.any():
            kept[split] = d.select(np.flatnonzero(~is_cnndm))
            moved.append(d.select(np.flatnonzero(is_cnndm)))
        else:
            kept[split] = d
    if moved:
        if CNNDM_SPLIT in kept:
            raise DataBuildError(f"input already has a {CNNDM_SPLIT!r} split and CNN/DM rows elsewhere")
        kept[CNNDM_SPLIT] = concatenate_datasets(moved)
    return DatasetDict(kept)


# --------------------------------------------------------------------------------------------------
# builders
# --------------------------------------------------------------------------------------------------


def build_sft(
    ds: DatasetDict,
    tokenizer,
    lengths: Lengths = Lengths(),
    details: Details = Details(),
    num_proc: int | None = None,
) -> tuple[DatasetDict, dict[str, dict[str, int]]]:
    """Pre-tokenize TL;DR SFT data (columns ``id, subreddit, title, post, summary``).

    Adds ``query`` (str), ``query_token`` (lengths.query, padded on ``details.query_padding_side``),
    ``query_token_len``, ``reference_response`` (str), ``reference_response_token`` (lengths.sft_response,
    right-padded), ``response_token_len``, ``query_reference_response_token`` (lengths.sft_total,
    right-padded un-padded-query + response). Original columns are kept. Under ``query_truncation=hard`` the
    total is :func:`applied_lengths`'s.

    ``tokenizer`` is passed through :func:`prepare_tokenizer` (a copy; idempotent), so use the same
    call to get the tokenizer/pad id that matches these ids. Returns ``(dataset, stats per split)``.
    """
    _require_columns(ds, SFT_INPUT_COLUMNS)
    lengths = applied_lengths(lengths, details.query_truncation)
    tok = prepare_tokenizer(tokenizer, details.pad_token)
    kwargs = dict(tokenizer=tok, lengths=lengths, details=details, pad_id=tok.pad_token_id, cache=QueryCache())
    built, stats = {}, {}
    for split, d in ds.items():
        d = _map_split(d, _sft_batch, SFT_FEATURES, kwargs, num_proc, f"sft {split}")
        _check_total(d, split, "response_token_len", lengths.sft_total, "sft_total")
        built[split], stats[split] = _finish(d, details.query_truncation, split)
    return DatasetDict(built), stats


def build_preferences(
    ds: DatasetDict,
    tokenizer,
    lengths: Lengths = Lengths(),
    details: Details = Details(),
    num_proc: int | None = None,
    cnndm_lengths: Lengths | None = None,
) -> tuple[DatasetDict, dict[str, dict[str, int]]]:
    """Pre-tokenize human comparisons (``openai/summarize_from_feedback``, config ``comparisons``).

    Adds ``query``, ``query_token`` (lengths.query), ``query_token_len``, ``chosen`` / ``rejected``
    (texts; chosen = ``summaries[choice]``), ``chosen_token`` / ``rejected_token`` (lengths.pref_response,
    right-padded), ``chosen_token_len`` / ``rejected_token_len``, ``query_chosen_token`` /
    ``query_rejected_token`` (lengths.pref_total, right-padded). Original columns (``info``, ``split``,
    ``batch``, ``extra``, ``worker``, ...) are kept.

    Rows of the CNN/DM batches move to the split ``validation_cnndm``; their ``info`` has ``article``
    instead of ``post``, formatted with the same template. Their articles are long, so the 512-token
    query plus a response can exceed the TL;DR total: they use ``cnndm_lengths``, by default ``lengths``
    with ``pref_total = query + pref_response``. Under ``query_truncation=hard`` every split's total is
    :func:`applied_lengths`'s. Returns ``(dataset, stats per split)``.
    """
    _require_columns(ds, PREFERENCE_INPUT_COLUMNS)
    lengths = applied_lengths(lengths, details.query_truncation)
    tok = prepare_tokenizer(tokenizer, details.pad_token)
    if cnndm_lengths is None:
        cnndm_lengths = replace(lengths, pref_total=max(lengths.pref_total, lengths.query + lengths.pref_response))
    if all("batch" in d.column_names for d in ds.values()):
        ds = split_cnndm(ds)
    built, stats = {}, {}
    cache = QueryCache()  # one for all splits: the key holds the query limit
    for split, d in ds.items():
        split_lengths = cnndm_lengths if split == CNNDM_SPLIT else lengths
        kwargs = dict(tokenizer=tok, lengths=split_lengths, details=details, pad_id=tok.pad_token_id, cache=cache)
        d = _map_split(d, _preference_batch, PREFERENCE_FEATURES, kwargs, num_proc, f"preferences {split}")
        for name in ("chosen", "rejected"):
            _check_total(d, split, f"{name}_token_len", split_lengths.pref_total, "pref_total")
        built[split], stats[split] = _finish(d, details.query_truncation, split)
    return DatasetDict(built), stats
