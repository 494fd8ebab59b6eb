"""The fast newline truncation (nplus.data.truncation_fast) equals the paper's loop, and the lemmas its proof
rests on hold: hypothesis on generated posts and tokenizers around its premise, against a direct transcription of
the paper's loop (``tests.test_formatting.paper_truncation``), and the real tldr-synth corpus.
"""

from __future__ import annotations

import functools
import unicodedata
from unittest import mock

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from nplus.data import truncation, truncation_fast
from nplus.data.formatting import encode, format_query, prepare_tokenizer
from nplus.data.truncation import QueryCache, encode_queries, encode_query
from tests.test_formatting import CORPUS, EOS, make_tokenizer, paper_truncation, subreddits


@pytest.fixture
def tok() -> PreTrainedTokenizerFast:
    return make_tokenizer()


@functools.lru_cache(maxsize=None)
def make_variant(name: str) -> PreTrainedTokenizerFast:
    """Tokenizers around the fast truncation path's premise (see ``truncation_fast._fast_plan``).

    * ``plain``: :func:`make_tokenizer` (premise holds; no added token can meet the cue).
    * ``added``: more added tokens, some normalized, one of them ``"\n\n"`` (part of the cue's ``T``):
      the premise holds with the added-token margin and without the cue's lower bound.
    * ``nfc``: Pythia-like -- NFC normalizer, normalized whitespace-run added tokens, a post-processor
      that trims offsets.
    * ``cue``: an added token ``"TL;DR"`` inside the cue.
    * ``lstrip``: an added token with ``lstrip``: the premise fails, the paper's loop runs.
    * ``metaspace``: another pre-tokenizer: the premise fails, the paper's loop runs.
    * ``facts``: tldr-synth's pre-tokenizer (whole ages and durations, then GPT-2's split): premise (c').
    """
    tok = Tokenizer(models.BPE())
    if name == "facts":
        from nplus.tasks.tokenizer import pre_tokenizer

        tok.pre_tokenizer = pre_tokenizer()
        tok.decoder = decoders.ByteLevel()
        alphabet = pre_tokenizers.ByteLevel.alphabet()
    elif name == "metaspace":
        tok.pre_tokenizer = pre_tokenizers.Metaspace()
        tok.decoder = decoders.Metaspace()
        alphabet = []
    else:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        alphabet = pre_tokenizers.ByteLevel.alphabet()
    if name == "nfc":
        tok.normalizer = normalizers.NFC()
        tok.post_processor = processors.ByteLevel(trim_offsets=True)
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=[EOS], initial_alphabet=alphabet)
    tok.train_from_iterator(CORPUS * 20, trainer)
    extra = {
        "plain": [],
        "added": [
            AddedToken("  ", normalized=True),
            AddedToken("\n\n", normalized=False),
            AddedToken("cat is", normalized=True),
            AddedToken("[SEP]", special=True, normalized=False),
        ],
        "nfc": [AddedToken(" " * n, normalized=True) for n in (2, 3, 4, 8)],
        "cue": [AddedToken("TL;DR", normalized=True)],
        "lstrip": [AddedToken("cat", lstrip=True)],
        "metaspace": [],
        "facts": [],
    }[name]
    tok.add_tokens(extra)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, clean_up_tokenization_spaces=False)


VARIANTS = ("plain", "added", "nfc", "cue", "lstrip", "metaspace", "facts")
FAST_VARIANTS = ("plain", "added", "nfc", "cue", "facts")  # the fast path's premise holds


def paper_query(subreddit, title, post, tokenizer, max_tokens):
    """``(ids, text)`` of the paper's loop, or ``"error"`` when even the empty post is over the limit."""
    try:
        kept = paper_truncation(subreddit, title, post, tokenizer, max_tokens)
    except AssertionError:
        return "error"
    text = format_query(subreddit, title, kept)
    return encode(tokenizer, text), text


def ours(rows, tokenizer, max_tokens, cache=None):
    """:func:`encode_queries` as ``[(ids, text)]``, or ``"error"`` (the paper's loop failing on a row)."""
    try:
        return [(q.ids, q.text) for q in encode_queries(rows, tokenizer, max_tokens, "newline", cache)]
    except ValueError as e:
        assert "could not truncate" in str(e)
        return "error"


# Fragments that meet every corner of the fast path's proof: word and whitespace boundaries (runs of
# spaces, tabs, trailing spaces before newlines), contractions, digits, multi-byte and combining
# characters (NFC-sensitive ones included: "e" + U+0301, U+212B ANGSTROM SIGN, Hangul jamo), words far
# longer than any limit, and the text of added tokens and of the cue itself.
FRAGMENTS = [
    "cat",
    " cat",
    " dog",
    " the",
    "I'm",
    " they're",
    "'s",
    "'",
    " 2024",
    "42",
    ".",
    "?!",
    " ...",
    ",",
    " ",
    "  ",
    "   ",
    "\t",
    " \t ",
    "é",
    " é",
    "e\u0301",
    "\u212b",
    "中文",
    " 😀",
    "\u1100\u1161",
    "\u11a8",
    "\u0958",
    "ﬁ",
    "<|endoftext|>",
    "[PAD]",
    "[SEP]",
    "cat is",
    "TL;DR",
    "TL;DR:",
    "\n\nTL",
    ";DR:",
    "a" * 40,
    " " + "b" * 150,
    "x" * 300,
    # tldr-synth's fact tokens and near misses (premise c'): whole ages and durations, and what breaks them
    "24F",
    "(24F)",
    " 2 years",
    " 12 months",
    "3 weeks",
    " 1 year",
    " 7 monthsx",
    "24",
    "F",
    "M",
    " years",
    " weeks",
    " 12",
    " 1",
    "9",
    "yearsy",
    "(3",
    "5M)",
    " 100 years",
]
NEWLINE_FRAGMENTS = ["\n", "\n\n", " \n", "\n ", "\n\n\n"]
NFC_CHANGES = {"e\u0301", "\u212b", "\u1100\u1161", "\u11a8", "\u0958"}  # fail the NFC quick check
NFC_SAFE = [f for f in FRAGMENTS if f not in NFC_CHANGES]


def _posts(fragments):
    return st.one_of(
        st.lists(st.sampled_from(fragments), max_size=100).map("".join),  # no newline: character trimming only
        st.lists(st.sampled_from(fragments + NEWLINE_FRAGMENTS), max_size=100).map("".join),
        st.tuples(
            st.lists(st.sampled_from(fragments), min_size=20, max_size=100),
            st.sampled_from(NEWLINE_FRAGMENTS),
            st.lists(st.sampled_from(fragments), max_size=20),
        ).map(lambda t: "".join(t[0]) + t[1] + "".join(t[2])),
    )


fragment_posts = st.one_of(_posts(FRAGMENTS), _posts(NFC_SAFE))
fragment_titles = st.lists(st.sampled_from([f for f in FRAGMENTS if len(f) < 20]), max_size=6).map("".join)
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _truncate_spy():
    """Patch the paper's loop (the fast path's fallback) to count the rows it decides."""
    calls = []
    real = truncation.truncate_at_newlines

    def spy(*args):
        calls.append(args[:3])
        return real(*args)

    return calls, mock.patch.object(truncation, "truncate_at_newlines", spy)


@FAST
@given(
    variant=st.sampled_from(VARIANTS),
    subreddit=subreddits,
    title=fragment_titles,
    post=fragment_posts,
    extra=st.integers(min_value=-3, max_value=60),
)
def test_fast_newline_truncation_equals_the_paper_loop(variant, subreddit, title, post, extra):
    """Exactly the paper's ids, text and failures, for every tokenizer; the fallback only where needed."""
    tok = make_variant(variant)
    max_tokens = max(1, len(encode(tok, format_query(subreddit, title, ""))) + extra)
    expected = paper_query(subreddit, title, post, tok, max_tokens)
    calls, patch = _truncate_spy()
    with patch:
        got = ours([(subreddit, title, post)], tok, max_tokens)
    assert got == (expected if expected == "error" else [expected])
    truncated = expected == "error" or expected[1] != format_query(subreddit, title, post)
    event(f"{variant}: {'truncated' if truncated else 'fits'}, fallback={bool(calls)}")
    # where the premise holds the proof is complete: the canary never fails and the loop never runs
    full = format_query(subreddit, title, post)
    if variant in FAST_VARIANTS and (variant != "nfc" or truncation_fast._nfc_quick_check_yes(full)):
        assert not calls
    if variant in ("lstrip", "metaspace"):
        assert truncation_fast._fast_plan(tok) is None


@settings(FAST, max_examples=40)
@given(
    variant=st.sampled_from(FAST_VARIANTS),
    rows=st.lists(st.tuples(subreddits, fragment_titles, fragment_posts), min_size=1, max_size=4),
    extra=st.integers(min_value=0, max_value=60),
    repeat=st.booleans(),
)
def test_fast_truncation_of_many_rows_with_a_cache(variant, rows, extra, repeat):
    """Batched rows, repeated rows and a cache shared across calls give the paper's result per row."""
    tok = make_variant(variant)
    max_tokens = max(len(encode(tok, format_query(s, t, ""))) for s, t, _ in rows) + extra
    rows = rows + rows[::-1] if repeat else rows
    expected = [paper_query(*row, tok, max_tokens) for row in rows]
    cache = QueryCache()
    assert ours(rows, tok, max_tokens, cache) == expected
    assert ours(rows, tok, max_tokens, cache) == expected  # from the cache
    assert ours(rows[:1], tok, max_tokens + 1, cache) == [paper_query(*rows[0], tok, max_tokens + 1)]


def test_fast_truncation_scans_few_candidates_on_long_newline_free_posts(tok):
    """The point of the fast path: hundreds of one-character cuts cost a handful of short encodings."""
    post = " ".join(f"word{i} and some more text" for i in range(60))  # ~1700 characters, no newline
    max_tokens = len(encode(tok, format_query("cats", "Help", ""))) + 50
    scan = truncation_fast._Scan.split_candidate
    with mock.patch.object(truncation_fast._Scan, "split_candidate", autospec=True, side_effect=scan) as spy:
        q = encode_query("cats", "Help", post, tok, max_tokens, "newline")
    kept = paper_truncation("cats", "Help", post, tok, max_tokens)
    assert q.text == format_query("cats", "Help", kept)
    assert len(post) - len(kept) > 1000  # the paper's loop encodes over a thousand queries
    assert 0 < spy.call_count <= 8 + 16  # the fast path: its first batch or two


def test_fast_plan_checks_its_premise():
    plain = truncation_fast._fast_plan(make_variant("plain"))
    assert plain is not None and not plain.nfc
    assert plain.margin == len(EOS) - 1 + 2  # the longest non-normalized added token
    assert plain.tail_tokens == len(encode(make_variant("plain"), "TL;DR:")) + 2
    assert plain.row_margin(format_query("a", "b", "c")) == 2  # no added token in the row
    assert plain.row_margin(format_query("a", "b", "c" + EOS)) == plain.margin
    added = truncation_fast._fast_plan(make_variant("added"))
    # the longest non-normalized (EOS) and normalized ("cat is") added tokens; "\n\n" may meet the cue
    assert added.margin == (len(EOS) - 1) + (len("cat is") - 1) + 2 and added.tail_tokens == 0
    assert truncation_fast._fast_plan(make_variant("cue")).tail_tokens == 0  # "TL;DR" may be one token
    assert truncation_fast._fast_plan(make_variant("nfc")).nfc
    assert truncation_fast._fast_plan(make_variant("lstrip")) is None
    assert truncation_fast._fast_plan(make_variant("metaspace")) is None
    facts = truncation_fast._fast_plan(make_variant("facts"))
    assert facts.regex_margin == 12 and facts.row_margin(format_query("a", "b", "c")) == 12
    assert facts.margin == len(EOS) - 1 + 12
    # a plan follows its tokenizer: prepare_tokenizer adds [PAD], a longer added token
    prepared = prepare_tokenizer(make_variant("plain"), "distinct")
    assert truncation_fast._fast_plan(prepared).margin == plain.margin
    prepared.add_tokens([AddedToken("a much longer added token", normalized=False)])
    assert truncation_fast._fast_plan(prepared).margin == len("a much longer added token") - 1 + 2


@settings(max_examples=300, deadline=None)
@given(
    text=st.lists(st.sampled_from(FRAGMENTS + NEWLINE_FRAGMENTS), max_size=40).map("".join),
    m=st.integers(min_value=0, max_value=400),
    tail=st.sampled_from(["", "\n\nTL;DR:", " ", "x", "'re", "\n", " 1"]),
)
def test_byte_level_pieces_ending_two_characters_before_a_change_are_kept(text, m, tail):
    """Lemma R of the fast path, on the real pre-tokenizer: pieces of ``text`` ending at ``<= m - 2``
    are pieces of any text that agrees with it on ``[0, m)``."""
    pre = pre_tokenizers.ByteLevel(add_prefix_space=False)
    m = min(m, len(text))
    stable = [p for p in pre.pre_tokenize_str(text) if p[1][1] <= m - 2]
    assert pre.pre_tokenize_str(text[:m] + tail)[: len(stable)] == stable


@settings(max_examples=500, deadline=None)
@given(
    text=st.lists(st.sampled_from(FRAGMENTS + NEWLINE_FRAGMENTS), max_size=40).map("".join),
    m=st.integers(min_value=0, max_value=400),
    tail=st.sampled_from(["", "\n\nTL;DR:", " ", "x", "'re", "\n", " 1", "F", "M)", " years", "0 weeks", "2 months"]),
)
def test_fact_split_pieces_ending_eleven_characters_before_a_change_are_kept(text, m, tail):
    """Lemma R' of the fast path, on tldr-synth's pre-tokenizer: pieces of ``text`` ending at ``<= m - 11`` are
    pieces of any text that agrees with it on ``[0, m)`` (the code keeps one character of slack: 12)."""
    from nplus.tasks.tokenizer import pre_tokenizer

    pre = pre_tokenizer()
    m = min(m, len(text))
    stable = [p for p in pre.pre_tokenize_str(text) if p[1][1] <= m - 11]
    assert pre.pre_tokenize_str(text[:m] + tail)[: len(stable)] == stable


def test_fast_truncation_of_tldr_synth_posts_equals_the_paper_loop():
    """The real corpus's long posts (many newline-free) under the real tokenizer: the paper's kept post, row by row."""
    from nplus.tasks import synth
    from nplus.tasks.tokenizer import train_tokenizer

    posts = [p for p in synth.build_posts(0, "small")["train"]]
    tok = prepare_tokenizer(train_tokenizer(x for p in posts for x in (p.title, p.text, p.reference)), "distinct")
    long = [p for p in posts if len(p.text.split()) > 200][:12]
    assert any("\n" not in p.text for p in long)
    assert truncation_fast._fast_plan(tok) is not None
    for limit in (96, 160):
        rows = [(p.subreddit, p.title, p.text) for p in long]
        calls, patch = _truncate_spy()
        with patch:
            got = ours(rows, tok, limit)
        assert not calls  # the fast path decided every row
        assert got == [paper_query(*row, tok, limit) for row in rows]


@settings(max_examples=300, deadline=None)
@given(
    text=st.lists(st.sampled_from(FRAGMENTS + NEWLINE_FRAGMENTS + ["\u0301", "\u0323", "\u0f73"]), max_size=20).map(
        "".join
    )
)
def test_nfc_quick_check_yes_means_every_substring_is_nfc(text):
    if truncation_fast._nfc_quick_check_yes(text):
        for i in range(len(text) + 1):
            for j in range(i, len(text) + 1):
                assert unicodedata.is_normalized("NFC", text[i:j])


def test_nfc_quick_check_examples():
    assert truncation_fast._nfc_quick_check_yes("plain ascii") and truncation_fast._nfc_quick_check_yes("café 中文 😀")
    assert not truncation_fast._nfc_quick_check_yes("cafe\u0301")  # composes
    assert not truncation_fast._nfc_quick_check_yes("\u212b")  # a singleton: NFC replaces it
    assert not truncation_fast._nfc_quick_check_yes("\u1100\u1161")  # Hangul jamo compose by rule
    assert not truncation_fast._nfc_quick_check_yes("a\u0323\u0301"[::-1])  # out-of-order combining marks
