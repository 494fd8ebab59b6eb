"""Tests of nplus.data.formatting and nplus.data.truncation: query template, truncation, padding, response tokens.

One test per data-stage detail proves that flipping it changes the output of the function that owns
it (``test_detail_<name>_changes_output``); hypothesis checks the truncation invariants on generated
posts against a direct transcription of the paper's loop (:func:`paper_truncation`; the fast path's equality
with it: tests/test_truncation_fast.py).
"""

from __future__ import annotations

import functools
import pickle

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from nplus.data.formatting import (
    DISTINCT_PAD_TOKEN,
    QUERY_TEMPLATE,
    encode,
    format_query,
    pad,
    preference_response_ids,
    preference_response_ids_many,
    preference_text,
    prepare_tokenizer,
    sft_reference_text,
    sft_response_ids,
    sft_response_ids_many,
)
from nplus.data.truncation import QueryCache, encode_queries, encode_query, post_cut_candidates, truncate_query

EOS = "<|endoftext|>"
CORPUS = [
    "SUBREDDIT: r/relationships\n\nTITLE: My cat ignores me\n\nPOST: I have a cat. She is grumpy.\n\nTL;DR:",
    " my cat hates me and I do not know why",
    "My boyfriend (25M) and I (24F) moved in together last month and the cat is not happy about it.",
    "We tried treats, toys and a new bed. Nothing works! What should we do?",
    " I need advice about my job, my landlord and my dog.",
]


@functools.lru_cache(maxsize=1)
def make_tokenizer() -> PreTrainedTokenizerFast:
    """A tiny byte-level BPE (GPT-2 style: no prefix space, EOS special token, no pad token)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600, special_tokens=[EOS], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(CORPUS * 20, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, clean_up_tokenization_spaces=False)


@pytest.fixture
def tok() -> PreTrainedTokenizerFast:
    return make_tokenizer()


def paper_truncation(subreddit: str, title: str, post: str, tokenizer, max_tokens: int) -> str:
    """The paper's loop, one candidate at a time: the post it keeps."""
    while len(encode(tokenizer, format_query(subreddit, title, post))) > max_tokens:
        assert post, "the header alone is over the limit"
        cut = post.rfind("\n")
        post = post[:cut] if cut >= 0 else post[:-1]
    return post


def kept_post(query: str, subreddit: str, title: str) -> str:
    """Recover the post from a formatted query (fails if the template's head or the TL;DR cue is lost)."""
    head = f"SUBREDDIT: r/{subreddit}\n\nTITLE: {title}\n\nPOST: "
    assert query.startswith(head) and query.endswith("\n\nTL;DR:")
    return query[len(head) : -len("\n\nTL;DR:")]


LONG_POST = "\n".join(
    f"Paragraph {i}: my cat ignores me and the dog is not happy about it either, what should we do?" for i in range(12)
)


# --------------------------------------------------------------------------------------------------
# template and candidates
# --------------------------------------------------------------------------------------------------


def test_format_query_matches_the_paper_template():
    q = format_query("cats", "Help", "body")
    assert q == "SUBREDDIT: r/cats\n\nTITLE: Help\n\nPOST: body\n\nTL;DR:"
    assert q == QUERY_TEMPLATE.format(subreddit="cats", title="Help", post="body")
    assert not q.endswith(" ")  # the response brings its own leading space


def test_format_query_treats_missing_fields_as_empty():
    assert format_query(None, None, "article") == "SUBREDDIT: r/\n\nTITLE: \n\nPOST: article\n\nTL;DR:"


def test_post_cut_candidates_follow_the_paper_loop():
    # full post, then each newline from the last, then one character at a time
    assert list(post_cut_candidates("ab\ncd\ne")) == [7, 5, 2, 1, 0]
    assert list(post_cut_candidates("abc")) == [3, 2, 1, 0]
    assert list(post_cut_candidates("ab\n")) == [3, 2, 1, 0]
    assert list(post_cut_candidates("")) == [0]


# --------------------------------------------------------------------------------------------------
# truncation
# --------------------------------------------------------------------------------------------------


def test_short_query_is_not_truncated(tok):
    q = encode_query("cats", "Help", "short post", tok, 512, "newline")
    assert not q.truncated
    assert q.text == format_query("cats", "Help", "short post")
    assert q.ids == encode(tok, q.text)
    assert encode_query("cats", "Help", "short post", tok, 512, "hard") == q


def test_newline_truncation_cuts_at_the_last_fitting_newline(tok):
    post = "first paragraph\nsecond paragraph\nthird paragraph"
    cut = post.rindex("\n")  # keep "first paragraph\nsecond paragraph"
    limit = len(encode(tok, format_query("cats", "Help", post[:cut])))
    q = encode_query("cats", "Help", post, tok, limit, "newline")
    assert q.truncated
    assert kept_post(q.text, "cats", "Help") == post[:cut]
    assert len(q.ids) <= limit


def test_newline_truncation_trims_characters_without_newlines(tok):
    post = "a long post without any newline " * 20
    header = len(encode(tok, format_query("cats", "Help", "")))
    q = encode_query("cats", "Help", post, tok, header + 10, "newline")
    kept = kept_post(q.text, "cats", "Help")
    assert post.startswith(kept) and 0 < len(kept) < len(post)
    assert len(q.ids) <= header + 10
    assert kept == paper_truncation("cats", "Help", post, tok, header + 10)


def test_newline_truncation_raises_when_the_header_alone_is_too_long(tok):
    with pytest.raises(ValueError, match="could not truncate"):
        encode_query("cats", "a very long title " * 10, "post", tok, 8, "newline")


def test_hard_truncation_can_lose_the_tldr_cue(tok):
    # the concrete failure the ablation is about: the prompt no longer ends with the cue
    limit = 64
    ids = truncate_query("relationships", "My cat ignores me", LONG_POST, tok, limit, "hard")
    assert len(ids) == limit
    decoded = tok.decode(ids)
    assert not decoded.endswith("TL;DR:")
    assert "TL;DR:" not in decoded
    # while the paper's truncation keeps it
    kept = tok.decode(truncate_query("relationships", "My cat ignores me", LONG_POST, tok, limit, "newline"))
    assert kept.endswith("\n\nTL;DR:")


def test_hard_truncation_keeps_a_prefix_of_the_full_encoding(tok):
    full = encode(tok, format_query("cats", "Help", LONG_POST))
    q = encode_query("cats", "Help", LONG_POST, tok, 100, "hard")
    assert q.truncated and q.ids == full[:100]
    assert q.text == tok.decode(full[:100])


@pytest.mark.parametrize("mode", ["newline", "hard", "drop"])
def test_encode_queries_matches_one_row_at_a_time(tok, mode):
    rows = [("cats", "Help", "short"), ("cats", "Help", LONG_POST), ("dogs", "", ""), ("tifu", "x", LONG_POST[:300])]
    assert encode_queries(rows, tok, 80, mode) == [encode_query(*row, tok, 80, mode) for row in rows]


def test_drop_marks_only_the_over_long_queries(tok):
    rows = [("cats", "Help", "short"), ("cats", "Help", LONG_POST), ("dogs", "", "")]
    newline, drop = encode_queries(rows, tok, 80, "newline"), encode_queries(rows, tok, 80, "drop")
    assert [q.truncated for q in drop] == [q.truncated for q in newline] == [False, True, False]
    assert drop[1] == ([], "", True) and drop[0] == newline[0] and drop[2] == newline[2]


def test_unknown_truncation_mode_fails_fast(tok):
    with pytest.raises(ValueError, match="query_truncation"):
        truncate_query("cats", "Help", "post", tok, 10, "middle")


ALPHABET = list("abcdefghij klmnopqrstuvwxyz ABC.,!?'()-") + ["\n", "é", "中", "😀", "\t"]
NO_NEWLINE = [c for c in ALPHABET if c != "\n"]
paragraph = st.text(alphabet=st.sampled_from(ALPHABET), max_size=120)
newline_free = st.text(alphabet=st.sampled_from(NO_NEWLINE), min_size=200, max_size=1200)
posts = st.one_of(
    st.lists(paragraph, min_size=1, max_size=12).map("\n".join),  # paragraphs
    st.lists(paragraph, min_size=1, max_size=12).map("\n\n".join),  # blank-line separated
    newline_free,  # very long, no newline at all: character trimming only
    st.tuples(newline_free, st.lists(paragraph, max_size=3)).map(lambda t: "\n".join([t[0], *t[1]])),
)
subreddits = st.sampled_from(["relationships", "AskReddit", "tifu", "中文"])
titles = st.text(alphabet=st.sampled_from(NO_NEWLINE), max_size=40)
HYPOTHESIS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@HYPOTHESIS
@given(subreddit=subreddits, title=titles, post=posts, extra=st.integers(min_value=0, max_value=200))
def test_newline_truncation_properties(subreddit, title, post, extra):
    tok = make_tokenizer()
    max_tokens = len(encode(tok, format_query(subreddit, title, ""))) + extra
    q = encode_query(subreddit, title, post, tok, max_tokens, "newline")

    # never over the limit, and the ids are exactly the encoding of the returned text
    assert len(q.ids) <= max_tokens
    assert q.ids == encode(tok, q.text)
    assert tok.decode(q.ids) == q.text
    # the TL;DR: cue is always the tail of the query
    assert q.text.endswith("TL;DR:")
    kept = kept_post(q.text, subreddit, title)
    # the kept post is the original cut at a newline boundary, or character-trimmed with no newline left
    assert post.startswith(kept)
    if kept != post:
        assert q.truncated
        assert post[len(kept)] == "\n" or "\n" not in kept
        event("cut at a newline" if post[len(kept)] == "\n" else "character-trimmed")
    else:
        assert not q.truncated
        event("not truncated")
    # and it is exactly the post the paper's one-candidate-at-a-time loop keeps
    assert kept == paper_truncation(subreddit, title, post, tok, max_tokens)


def test_query_cache_pickles_empty_and_follows_its_tokenizer(tok):
    cache = QueryCache()
    rows = [("cats", "Help", LONG_POST)]
    first = encode_queries(rows, tok, 80, "newline", cache)
    assert len(cache) == 1
    assert len(pickle.loads(pickle.dumps(cache))) == 0
    first[0].ids.append(-1)  # callers own their ids
    assert encode_queries(rows, tok, 80, "newline", cache)[0].ids == encode_query(*rows[0], tok, 80, "newline").ids
    other = prepare_tokenizer(tok, "distinct")
    encode_queries(rows, other, 80, "newline", cache)
    assert len(cache) == 1  # emptied, then refilled for the other tokenizer


def test_encode_queries_raises_for_the_first_row_that_cannot_fit(tok):
    rows = [("cats", "Help", "short"), ("first", "a very long title " * 10, LONG_POST), ("second", "x " * 60, "")]
    with pytest.raises(ValueError, match="subreddit='first'"):
        encode_queries(rows, tok, 40, "newline")


def test_batched_response_ids_match_one_at_a_time(tok):
    summaries = ["my cat hates me", "", " a b", "中文 😀"]
    for space in ("on", "off"):
        for eos in ("on", "off"):
            assert sft_response_ids_many(summaries, tok, space, eos) == [
                sft_response_ids(x, tok, space, eos) for x in summaries
            ]
    for eos in ("on", "off"):
        one_at_a_time = [preference_response_ids(x, tok, eos) for x in summaries]
        assert preference_response_ids_many(summaries, tok, eos) == one_at_a_time
    assert sft_response_ids_many([], tok, "on", "on") == []


@HYPOTHESIS
@given(subreddit=subreddits, title=titles, post=posts, max_tokens=st.integers(min_value=1, max_value=300))
def test_hard_truncation_properties(subreddit, title, post, max_tokens):
    tok = make_tokenizer()
    full = encode(tok, format_query(subreddit, title, post))
    q = encode_query(subreddit, title, post, tok, max_tokens, "hard")
    assert len(q.ids) == min(len(full), max_tokens)
    assert q.ids == full[: len(q.ids)]
    assert q.truncated == (len(full) > max_tokens)


# --------------------------------------------------------------------------------------------------
# padding and the pad token
# --------------------------------------------------------------------------------------------------


def test_pad_left_and_right_positions():
    assert pad([7, 8, 9], 5, 0, "left") == [0, 0, 7, 8, 9]
    assert pad([7, 8, 9], 5, 0, "right") == [7, 8, 9, 0, 0]
    assert pad([7, 8, 9], 3, 0, "left") == [7, 8, 9]
    assert pad([], 2, 1, "right") == [1, 1]


def test_pad_never_truncates():
    with pytest.raises(ValueError, match="cannot pad"):
        pad([1, 2, 3], 2, 0, "left")


def test_prepare_tokenizer_distinct_adds_a_new_pad_token(tok):
    prepared = prepare_tokenizer(tok, "distinct")
    assert prepared.pad_token == DISTINCT_PAD_TOKEN
    assert prepared.pad_token_id != prepared.eos_token_id
    assert prepared.pad_token_id == len(tok)  # appended after the original vocabulary
    assert tok.pad_token is None and len(prepared) == len(tok) + 1  # the input is not mutated


def test_prepare_tokenizer_eos_uses_the_eos_id(tok):
    prepared = prepare_tokenizer(tok, "eos")
    assert prepared.pad_token_id == prepared.eos_token_id == tok.eos_token_id
    assert tok.pad_token is None and len(prepared) == len(tok)


def test_prepare_tokenizer_is_idempotent_and_keeps_a_distinct_existing_pad(tok):
    once = prepare_tokenizer(tok, "distinct")
    twice = prepare_tokenizer(once, "distinct")
    assert twice.pad_token_id == once.pad_token_id and len(twice) == len(once)
    # a pad equal to EOS is not "distinct": it gets replaced by [PAD]
    fixed = prepare_tokenizer(prepare_tokenizer(tok, "eos"), "distinct")
    assert fixed.pad_token == DISTINCT_PAD_TOKEN and fixed.pad_token_id != fixed.eos_token_id


def test_prepare_tokenizer_rejects_unknown_values(tok):
    with pytest.raises(ValueError, match="pad_token"):
        prepare_tokenizer(tok, "zero")


# --------------------------------------------------------------------------------------------------
# response tokens
# --------------------------------------------------------------------------------------------------


def test_sft_reference_is_space_summary_eos_in_the_paper(tok):
    assert sft_reference_text("my cat hates me", tok, "on", "on") == " my cat hates me" + EOS
    ids = sft_response_ids("my cat hates me", tok, "on", "on")
    assert ids == encode(tok, " my cat hates me" + EOS)  # appending the id == encoding the EOS text
    assert ids[-1] == tok.eos_token_id and ids.count(tok.eos_token_id) == 1


def test_preference_response_only_appends_eos(tok):
    assert preference_text(" my cat hates me", tok, "on") == " my cat hates me" + EOS
    assert preference_response_ids(" my cat hates me", tok, "on") == encode(tok, " my cat hates me") + [
        tok.eos_token_id
    ]
    assert preference_response_ids(" my cat hates me", tok, "off") == encode(tok, " my cat hates me")


def test_responses_do_not_get_special_tokens_from_the_tokenizer(tok):
    # nothing but the summary's own tokens (and EOS when asked): no BOS in the middle of query + response
    assert sft_response_ids("cat", tok, "off", "off") == tok("cat", add_special_tokens=False)["input_ids"]


# --------------------------------------------------------------------------------------------------
# one test per detail: flipping it changes the output of the function that owns it
# --------------------------------------------------------------------------------------------------


def test_detail_query_truncation_changes_output(tok):
    newline = truncate_query("relationships", "My cat", LONG_POST, tok, 100, "newline")
    hard = truncate_query("relationships", "My cat", LONG_POST, tok, 100, "hard")
    drop = truncate_query("relationships", "My cat", LONG_POST, tok, 100, "drop")
    assert newline != hard and drop == []  # drop: no ids, the builder removes the row
    assert tok.decode(newline).endswith("TL;DR:") and not tok.decode(hard).endswith("TL;DR:")


def test_detail_query_padding_side_changes_output():
    left, right = pad([5, 6], 4, 0, "left"), pad([5, 6], 4, 0, "right")
    assert left != right
    assert left[-1] == 6 and right[0] == 5  # left padding puts the query's end at the last position


def test_detail_pad_token_changes_output(tok):
    distinct, eos = prepare_tokenizer(tok, "distinct"), prepare_tokenizer(tok, "eos")
    assert distinct.pad_token_id != eos.pad_token_id
    assert pad([5], 3, distinct.pad_token_id, "left") != pad([5], 3, eos.pad_token_id, "left")
    # with pad = eos, a padded response ending in EOS is indistinguishable from its pads
    response = sft_response_ids("cat", tok, "on", "on")
    padded = pad(response, len(response) + 2, eos.pad_token_id, "right")
    assert padded[-3:] == [tok.eos_token_id] * 3


def test_detail_reference_leading_space_changes_output(tok):
    on = sft_response_ids("my cat hates me", tok, "on", "on")
    off = sft_response_ids("my cat hates me", tok, "off", "on")
    assert on[0] != off[0]  # the first token changes: "Ġmy" vs "my"
    assert tok.decode(on[:1]).startswith(" ") and not tok.decode(off[:1]).startswith(" ")
    assert sft_reference_text("x", tok, "on", "on") != sft_reference_text("x", tok, "off", "on")


def test_detail_reference_eos_changes_output(tok):
    on = sft_response_ids("my cat hates me", tok, "on", "on")
    off = sft_response_ids("my cat hates me", tok, "on", "off")
    assert on == off + [tok.eos_token_id]
    assert sft_reference_text("x", tok, "on", "on") == sft_reference_text("x", tok, "on", "off") + EOS


def test_detail_preference_eos_changes_output(tok):
    on = preference_response_ids(" my cat hates me", tok, "on")
    off = preference_response_ids(" my cat hates me", tok, "off")
    assert on == off + [tok.eos_token_id]
    assert preference_text(" x", tok, "on") != preference_text(" x", tok, "off")
