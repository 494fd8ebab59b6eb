"""Query formatting, padding and response tokens: the data-stage details.

The paper pre-tokenizes TL;DR once (sfd's ``tldr_dataset.py``, itself following OpenAI's
``summarize_from_feedback/tasks.py``) so that every stage sees identical token ids. Each data-stage
detail is decided in exactly one small function below -- or, for query truncation, in
:mod:`nplus.data.truncation` -- which receives the detail's value as a plain string (the registry in
``nplus/details.py`` owns names, docs, values and their validation):

==========================  =================================================
detail                      function
==========================  =================================================
``query_truncation``        :func:`~nplus.data.truncation.encode_query` /
                            :func:`~nplus.data.truncation.truncate_query`
                            (``drop``: the builder removes the rows)
``query_padding_side``      :func:`pad` (called with the side by the builder)
``pad_token``               :func:`prepare_tokenizer`
``reference_leading_space`` :func:`sft_reference_text` / :func:`sft_response_ids`
``reference_eos``           :func:`sft_reference_text` / :func:`sft_response_ids`
``preference_eos``          :func:`preference_text` / :func:`preference_response_ids`
==========================  =================================================

The values arrive checked by ``Details``; :func:`prepare_tokenizer` and the truncation entry points, which other
modules also call, check theirs again with the registry's :func:`nplus.details.check_value`.

Every function encodes with ``add_special_tokens=False``: GPT-NeoX/Pythia adds no BOS, and a
tokenizer that did would otherwise insert one in the middle of ``query + response``.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

from nplus.details import check_value

QUERY_TEMPLATE = "SUBREDDIT: r/{subreddit}\n\nTITLE: {title}\n\nPOST: {post}\n\nTL;DR:"
"""The paper's query template: no space after ``TL;DR:`` -- the response brings its own leading space."""

DISTINCT_PAD_TOKEN = "[PAD]"
"""The pad token sfd adds to Pythia's tokenizer (which has none)."""


class DataBuildError(ValueError):
    """A dataset cannot be built as asked (a query that cannot fit, query + response over a total limit, a
    missing column, a tokenizer without EOS): the user fixes the lengths, the data or the tokenizer.
    ``nplus`` prints it in one line and exits 2."""


def encode(tokenizer, text: str) -> list[int]:
    """Token ids of ``text`` without special tokens (no BOS/EOS added by the tokenizer)."""
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def encode_many(tokenizer, texts: list[str]) -> list[list[int]]:
    """Batch version of :func:`encode` (fast tokenizers encode a batch in parallel)."""
    return encode_batch(tokenizer, texts)[0]


def encode_batch(tokenizer, texts: list[str]) -> tuple[list[list[int]], list | None]:
    """:func:`encode_many`, and the ``tokenizers.Encoding`` of each text for a fast tokenizer."""
    if not texts:  # transformers fails on an empty batch
        return [], []
    batch = tokenizer(texts, add_special_tokens=False)
    return [list(ids) for ids in batch["input_ids"]], getattr(batch, "encodings", None)


def _require_eos_id(tokenizer) -> int:
    """The tokenizer's EOS id; every detail that appends EOS or pads with it needs one."""
    if tokenizer.eos_token_id is None:
        raise DataBuildError("the tokenizer has no eos_token; set one (e.g. eos_token='<|endoftext|>')")
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
    check_value("pad_token", pad_token)
    eos_id = _require_eos_id(tokenizer)
    tok = copy.deepcopy(tokenizer)
    if pad_token == "eos":
        tok.pad_token = tok.eos_token
    elif tok.pad_token is None or tok.pad_token_id == eos_id:
        tok.add_special_tokens({"pad_token": DISTINCT_PAD_TOKEN})
    return tok


# --------------------------------------------------------------------------------------------------
# query formatting (its truncation, detail `query_truncation`: nplus.data.truncation)
# --------------------------------------------------------------------------------------------------


def format_query(subreddit: str, title: str, post: str) -> str:
    """Fill :data:`QUERY_TEMPLATE`; ``None`` fields (CNN/DM rows have no subreddit) become empty."""
    return QUERY_TEMPLATE.format(subreddit=subreddit or "", title=title or "", post=post or "")


# --------------------------------------------------------------------------------------------------
# detail `query_padding_side` (and the right padding of training sequences)
# --------------------------------------------------------------------------------------------------


def pad(ids: Sequence[int], length: int, pad_id: int, side: str) -> list[int]:
    """Pad ``ids`` to exactly ``length`` on ``side``; never truncates.

    Queries are left-padded in the paper so that generation continues right after ``TL;DR:`` for every
    row of a batch; ``query + response`` training sequences are always right-padded.
    """
    if len(ids) > length:
        raise ValueError(f"cannot pad {len(ids)} tokens to length {length}")
    fill = [pad_id] * (length - len(ids))
    if side == "left":
        return fill + list(ids)
    if side == "right":
        return list(ids) + fill
    raise ValueError(f"padding side must be left or right, got {side!r}")


# --------------------------------------------------------------------------------------------------
# details `reference_leading_space`, `reference_eos`, `preference_eos`
# --------------------------------------------------------------------------------------------------


def sft_reference_text(summary: str, tokenizer, leading_space: str, eos: str) -> str:
    """The SFT target text: ``" " + summary + eos_token`` in the paper.

    The dataset's ``summary`` has no leading space; without one the token boundary after ``TL;DR:``
    differs from what generation sees. Without EOS the SFT model never learns to stop.
    """
    text = (" " if leading_space == "on" else "") + summary
    if eos == "on":
        _require_eos_id(tokenizer)
        text += tokenizer.eos_token
    return text


def sft_response_ids(summary: str, tokenizer, leading_space: str, eos: str) -> list[int]:
    """Token ids of :func:`sft_reference_text` (EOS appended as its id, un-truncated, un-padded)."""
    return sft_response_ids_many([summary], tokenizer, leading_space, eos)[0]


def sft_response_ids_many(summaries: Sequence[str], tokenizer, leading_space: str, eos: str) -> list[list[int]]:
    """:func:`sft_response_ids` of many summaries, in one tokenizer call."""
    space = " " if leading_space == "on" else ""
    # the EOS id is appended rather than its text encoded, so any tokenizer gives exactly one EOS token
    tail = [_require_eos_id(tokenizer)] if eos == "on" else []
    return [ids + tail for ids in encode_many(tokenizer, [space + summary for summary in summaries])]


def preference_text(text: str, tokenizer, eos: str) -> str:
    """A comparison summary as scored by the RM: the text (already space-led) + EOS in the paper."""
    if eos == "on":
        _require_eos_id(tokenizer)
        return text + tokenizer.eos_token
    return text


def preference_response_ids(text: str, tokenizer, eos: str) -> list[int]:
    """Token ids of :func:`preference_text` (un-truncated, un-padded)."""
    return preference_response_ids_many([text], tokenizer, eos)[0]


def preference_response_ids_many(texts: Sequence[str], tokenizer, eos: str) -> list[list[int]]:
    """:func:`preference_response_ids` of many texts, in one tokenizer call."""
    tail = [_require_eos_id(tokenizer)] if eos == "on" else []
    return [ids + tail for ids in encode_many(tokenizer, list(texts))]
