"""Tests of nplus.data.builder on tiny in-memory datasets in the public schemas."""

from __future__ import annotations

import functools

import pytest
from datasets import Dataset, DatasetDict, load_from_disk
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from nplus.config import Lengths
from nplus.data import builder
from nplus.data.builder import CNNDM_SPLIT, DATA_DETAILS, build_preferences, build_sft, data_details
from nplus.data.formatting import encode, format_query, prepare_tokenizer
from nplus.details import REGISTRY, Details

EOS = "<|endoftext|>"
# small limits so that a few short rows exercise truncation
LENGTHS = Lengths(query=48, sft_response=8, sft_total=56, pref_response=10, pref_total=58)

LONG_POST = "\n".join(f"Paragraph {i}: my cat ignores me and the dog is not happy about it." for i in range(8))


@functools.lru_cache(maxsize=1)
def make_tokenizer() -> PreTrainedTokenizerFast:
    """A tiny byte-level BPE (GPT-2 style: no prefix space, EOS special token, no pad token)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=500, special_tokens=[EOS], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    corpus = ["SUBREDDIT: r/cats\n\nTITLE: Help\n\nPOST: my cat ignores me.\n\nTL;DR: my cat is sad", LONG_POST]
    tok.train_from_iterator(corpus * 20, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, clean_up_tokenization_spaces=False)


@pytest.fixture
def tok() -> PreTrainedTokenizerFast:
    return make_tokenizer()


@pytest.fixture
def sft_ds() -> DatasetDict:
    """`vwxyzjn/summarize_from_feedback_tldr_3_filtered` schema (summaries without a leading space)."""
    rows = [
        dict(id="t1", subreddit="cats", title="Help", post="my cat ignores me.", summary="my cat is sad"),
        dict(id="t2", subreddit="cats", title="Help", post=LONG_POST, summary="cat"),
        dict(id="t3", subreddit="dogs", title="Hi", post="dog", summary="a summary that is far too long for eight"),
    ]
    return DatasetDict(
        train=Dataset.from_list(rows[:2]),
        validation=Dataset.from_list(rows[2:]),
    )


def comparison(cid, post, texts, choice, batch, split, article=None, subreddit="cats", title="Help"):
    """One row of `openai/summarize_from_feedback` (config `comparisons`)."""
    return dict(
        info=dict(id=cid, post=post, title=title, subreddit=subreddit, site=None, article=article),
        summaries=[dict(text=t, policy=f"policy{i}", note=None) for i, t in enumerate(texts)],
        choice=choice,
        worker="w1",
        batch=batch,
        split=split,
        extra=dict(confidence=7),
    )


@pytest.fixture
def pref_ds() -> DatasetDict:
    """Comparisons (summaries start with a space), including one CNN/DM row in validation."""
    return DatasetDict(
        train=Dataset.from_list(
            [
                comparison("c1", "my cat ignores me.", [" cat sad", " my cat ignores me"], 1, "batch3", "train"),
                comparison("c2", LONG_POST, [" dog", " a cat"], 0, "batch4", "train"),
            ]
        ),
        validation=Dataset.from_list(
            [
                comparison("c3", "dog", [" one", " two"], 0, "batch10", "valid1"),
                comparison(
                    "c4",
                    None,
                    [" news", " story"],
                    1,
                    "cnndm0",
                    "valid2",
                    article="CNN article text.",
                    subreddit=None,
                    title=None,
                ),
            ]
        ),
    )


# --------------------------------------------------------------------------------------------------
# SFT
# --------------------------------------------------------------------------------------------------


def test_build_sft_columns_shapes_and_contents(tok, sft_ds):
    out, stats = build_sft(sft_ds, tok, LENGTHS, Details())
    prepared = prepare_tokenizer(tok, "distinct")
    pad_id = prepared.pad_token_id
    assert set(out) == {"train", "validation"}
    row = out["train"][0]
    # original columns kept
    assert {"id", "subreddit", "title", "post", "summary"} <= set(out["train"].column_names)
    assert row["query"] == format_query("cats", "Help", "my cat ignores me.")
    assert row["reference_response"] == " my cat is sad" + EOS
    for split in out.values():
        for r in split:
            assert len(r["query_token"]) == LENGTHS.query
            assert len(r["reference_response_token"]) == LENGTHS.sft_response
            assert len(r["query_reference_response_token"]) == LENGTHS.sft_total
            q = r["query_token"][LENGTHS.query - r["query_token_len"] :]  # left-padded
            assert q == encode(prepared, r["query"])
            assert r["query_token"][: LENGTHS.query - r["query_token_len"]] == [pad_id] * (
                LENGTHS.query - r["query_token_len"]
            )
            resp = r["reference_response_token"][: r["response_token_len"]]
            # training sequence = un-padded query + response, then right pads
            n = r["query_token_len"] + r["response_token_len"]
            assert r["query_reference_response_token"][:n] == q + resp
            assert set(r["query_reference_response_token"][n:]) <= {pad_id}
    assert stats["train"]["n_rows"] == 2


def test_build_sft_truncation_stats(tok, sft_ds):
    out, stats = build_sft(sft_ds, tok, LENGTHS, Details())
    # t2 has a long post: truncated at a newline, keeps the TL;DR: cue
    assert stats["train"]["n_query_truncated"] == 1
    assert out["train"][1]["query"].endswith("\n\nTL;DR:")
    # t3's summary is longer than sft_response: cut to the limit (its EOS is lost), and counted
    assert stats["validation"]["n_response_truncated"] == 1
    assert stats["validation"]["max_response_tokens"] > LENGTHS.sft_response
    r = out["validation"][0]
    assert r["response_token_len"] == LENGTHS.sft_response
    assert tok.eos_token_id not in r["reference_response_token"]
    assert stats["train"]["n_response_truncated"] == 0
    assert stats["train"]["max_response_tokens"] == len(encode(tok, " my cat is sad")) + 1


def test_build_sft_rejects_totals_over_the_limit(tok, sft_ds):
    tight = Lengths(query=48, sft_response=8, sft_total=20, pref_response=10, pref_total=58)
    with pytest.raises(ValueError, match="sft_total=20"):
        build_sft(sft_ds, tok, tight, Details())


def test_build_sft_right_padding_and_eos_pad(tok, sft_ds):
    out, _ = build_sft(sft_ds, tok, LENGTHS, Details(query_padding_side="right", pad_token="eos"))
    r = out["train"][0]
    n = r["query_token_len"]
    assert r["query_token"][:n] == encode(tok, r["query"])
    assert r["query_token"][n:] == [tok.eos_token_id] * (LENGTHS.query - n)


def test_build_sft_details_reach_the_columns(tok, sft_ds):
    out, _ = build_sft(sft_ds, tok, LENGTHS, Details(reference_leading_space="off", reference_eos="off"))
    r = out["train"][0]
    assert r["reference_response"] == "my cat is sad"
    assert r["reference_response_token"][: r["response_token_len"]] == encode(tok, "my cat is sad")
    hard, stats = build_sft(sft_ds, tok, LENGTHS, Details(query_truncation="hard"))
    assert stats["train"]["n_query_truncated"] == 1
    assert hard["train"][1]["query_token_len"] == LENGTHS.query
    assert not hard["train"][1]["query"].endswith("TL;DR:")


def test_query_truncation_drop_removes_exactly_the_over_long_rows(tok, sft_ds, pref_ds):
    paper, _ = build_sft(sft_ds, tok, LENGTHS, Details())
    dropped, stats = build_sft(sft_ds, tok, LENGTHS, Details(query_truncation="drop"))
    # t2's post does not fit in 48 tokens: its row is gone; the rows that fit are the paper build's, unchanged
    assert dropped["train"]["id"][:] == ["t1"] and dropped["validation"]["id"][:] == ["t3"]
    assert dropped["train"][0] == paper["train"][0] and dropped["validation"][0] == paper["validation"][0]
    assert stats["train"]["n_rows"] == 1 and stats["train"]["n_query_truncated"] == 1
    prefs, pstats = build_preferences(pref_ds, tok, LENGTHS, Details(query_truncation="drop"))
    assert prefs["train"]["info"][:][0]["id"] == "c1" and len(prefs["train"]) == 1
    assert pstats["train"]["n_rows"] == 1 and len(prefs["validation"]) == len(prefs[CNNDM_SPLIT]) == 1


def test_query_truncation_drop_that_leaves_a_split_empty_is_a_clear_error(tok, sft_ds):
    tight = Lengths(query=8, sft_response=8, sft_total=16, pref_response=10, pref_total=18)
    with pytest.raises(
        builder.DataBuildError, match=r"split 'train': details.query_truncation=drop left none.*Lengths.query"
    ):
        build_sft(sft_ds, tok, tight, Details(query_truncation="drop"))


def test_build_sft_does_not_mutate_the_tokenizer(tok, sft_ds):
    n = len(tok)
    build_sft(sft_ds, tok, LENGTHS, Details())
    assert tok.pad_token is None and len(tok) == n


def test_build_sft_empty_split_has_the_same_columns(tok, sft_ds):
    ds = DatasetDict(train=sft_ds["train"], test=sft_ds["train"].select([]))
    out, stats = build_sft(ds, tok, LENGTHS, Details())
    assert out["test"].column_names == out["train"].column_names
    assert stats["test"] == {"n_rows": 0, "n_query_truncated": 0, "max_response_tokens": 0, "n_response_truncated": 0}


def test_build_sft_num_proc_gives_the_same_result(tok, sft_ds):
    one, stats_one = build_sft(sft_ds, tok, LENGTHS, Details())
    two, stats_two = build_sft(DatasetDict(train=sft_ds["train"]), tok, LENGTHS, Details(), num_proc=2)
    assert two["train"].to_dict() == one["train"].to_dict()
    assert stats_two["train"] == stats_one["train"]


def test_build_sft_cache_files_follow_the_code(tok, sft_ds, tmp_path, monkeypatch):
    """A dataset loaded from disk gets cached columns back only while the formatting code is unchanged
    (``datasets`` fingerprints the map function without the functions it calls)."""
    sft_ds.save_to_disk(str(tmp_path / "sft"))
    ds = load_from_disk(str(tmp_path / "sft"))
    first, _ = build_sft(ds, tok, LENGTHS, Details())
    again, _ = build_sft(ds, tok, LENGTHS, Details())
    assert again["train"].cache_files == first["train"].cache_files  # unchanged code: a cache hit
    monkeypatch.setattr(builder, "_code_version", lambda: "changed")
    changed, _ = build_sft(ds, tok, LENGTHS, Details())
    assert changed["train"].cache_files != first["train"].cache_files
    assert changed["train"].to_dict() == first["train"].to_dict()


def test_build_sft_requires_the_public_columns(tok):
    with pytest.raises(ValueError, match="summary"):
        build_sft(DatasetDict(train=Dataset.from_dict({"post": ["x"]})), tok, LENGTHS, Details())


# --------------------------------------------------------------------------------------------------
# preferences
# --------------------------------------------------------------------------------------------------


def test_build_preferences_columns_shapes_and_contents(tok, pref_ds):
    out, stats = build_preferences(pref_ds, tok, LENGTHS, Details())
    pad_id = prepare_tokenizer(tok, "distinct").pad_token_id
    for column in ("info", "split", "batch", "extra", "worker", "summaries", "choice"):
        assert column in out["train"].column_names
    row = out["train"][0]
    assert row["chosen"] == " my cat ignores me" + EOS  # summaries[choice], space already there: EOS only
    assert row["rejected"] == " cat sad" + EOS
    for name, split in out.items():
        total = LENGTHS.pref_total if name != CNNDM_SPLIT else LENGTHS.query + LENGTHS.pref_response
        for r in split:
            assert len(r["query_token"]) == LENGTHS.query
            q = r["query_token"][LENGTHS.query - r["query_token_len"] :]
            for side in ("chosen", "rejected"):
                assert len(r[f"{side}_token"]) == LENGTHS.pref_response
                assert len(r[f"query_{side}_token"]) == total
                resp = r[f"{side}_token"][: r[f"{side}_token_len"]]
                assert resp == encode(tok, r[side].removesuffix(EOS)) + [tok.eos_token_id]
                n = r["query_token_len"] + r[f"{side}_token_len"]
                assert r[f"query_{side}_token"][:n] == q + resp
                assert set(r[f"query_{side}_token"][n:]) <= {pad_id}
    assert stats["train"]["n_query_truncated"] == 1
    assert out["train"][1]["query"].endswith("\n\nTL;DR:")


def test_build_preferences_moves_cnndm_rows_to_their_own_split(tok, pref_ds):
    out, stats = build_preferences(pref_ds, tok, LENGTHS, Details())
    assert list(out) == ["train", "validation", CNNDM_SPLIT]
    assert out["validation"]["batch"][:] == ["batch10"]
    assert out[CNNDM_SPLIT]["batch"][:] == ["cnndm0"]
    # the article stands in for the missing post
    assert "POST: CNN article text.\n\nTL;DR:" in out[CNNDM_SPLIT][0]["query"]
    assert stats[CNNDM_SPLIT]["n_rows"] == 1


def test_build_preferences_without_cnndm_rows_adds_no_split(tok, pref_ds):
    out, _ = build_preferences(DatasetDict(train=pref_ds["train"]), tok, LENGTHS, Details())
    assert list(out) == ["train"]


def test_build_preferences_preference_eos_off(tok, pref_ds):
    out, _ = build_preferences(pref_ds, tok, LENGTHS, Details(preference_eos="off"))
    r = out["train"][0]
    assert r["chosen"] == " my cat ignores me"
    assert r["chosen_token"][: r["chosen_token_len"]] == encode(tok, " my cat ignores me")


def test_build_preferences_truncates_long_responses(tok, pref_ds):
    short = Lengths(query=48, sft_response=8, sft_total=56, pref_response=3, pref_total=58)
    out, stats = build_preferences(pref_ds, tok, short, Details())
    assert stats["train"]["n_response_truncated"] >= 1
    assert stats["train"]["max_response_tokens"] > 3
    assert all(len(t) == 3 for t in out["train"]["chosen_token"][:])


def test_build_preferences_rejects_totals_over_the_limit(tok, pref_ds):
    tight = Lengths(query=48, sft_response=8, sft_total=56, pref_response=10, pref_total=20)
    with pytest.raises(ValueError, match="pref_total=20"):
        build_preferences(pref_ds, tok, tight, Details())


def paper_query(subreddit, title, post, tokenizer, max_tokens):
    """The paper's truncation loop, one candidate at a time: the query text it keeps."""
    while len(encode(tokenizer, format_query(subreddit, title, post))) > max_tokens:
        cut = post.rfind("\n")
        post = post[:cut] if cut >= 0 else post[:-1]
    return format_query(subreddit, title, post)


def test_build_preferences_repeated_posts_match_the_paper_loop(tok):
    """Comparisons repeat posts within and across splits (the build's query cache): every row still gets
    exactly the paper's query, whether it is truncated at a newline or character by character."""
    flat = LONG_POST.replace("\n", " ")  # no newline: character trimming only
    posts = [LONG_POST, flat, "short post", flat + " tail \u4e2d\u6587 😀", LONG_POST]
    train = [comparison(f"t{i}", p, [" a", " b"], i % 2, "batch3", "train") for i, p in enumerate(posts * 2)]
    valid = [comparison(f"v{i}", p, [" c", " d"], 0, "batch10", "valid1") for i, p in enumerate(posts[::-1])]
    ds = DatasetDict(train=Dataset.from_list(train), validation=Dataset.from_list(valid))
    one, stats = build_preferences(ds, tok, LENGTHS, Details())
    prepared = prepare_tokenizer(tok, "distinct")
    for split, rows in (("train", posts * 2), ("validation", posts[::-1])):
        for r, post in zip(one[split], rows):
            assert r["query"] == paper_query("cats", "Help", post, prepared, LENGTHS.query)
            assert r["query_token"][LENGTHS.query - r["query_token_len"] :] == encode(prepared, r["query"])
    assert stats["train"]["n_query_truncated"] == 8 and stats["validation"]["n_query_truncated"] == 4
    # worker processes start with empty caches and give the same rows
    two, stats_two = build_preferences(ds, tok, LENGTHS, Details(), num_proc=2)
    for split in one:
        assert two[split].to_dict() == one[split].to_dict()
        assert stats_two[split] == stats[split]


# --------------------------------------------------------------------------------------------------
# options
# --------------------------------------------------------------------------------------------------


def test_options_are_frozen_and_validated():
    assert Lengths() == Lengths(query=512, sft_response=53, sft_total=562, pref_response=169, pref_total=638)
    with pytest.raises(ValueError):
        Lengths(query=0)
    with pytest.raises(ValueError):
        Lengths(sft_response=600, sft_total=562)
    with pytest.raises(ValueError, match="query_padding_side"):
        Details(query_padding_side="middle")
    with pytest.raises(AttributeError):
        Details().pad_token = "eos"


def test_data_details_are_the_registry_data_stage():
    assert DATA_DETAILS == tuple(name for name, d in REGISTRY.items() if d.stage == "data")
    assert DATA_DETAILS == (
        "query_truncation",
        "query_padding_side",
        "pad_token",
        "reference_leading_space",
        "reference_eos",
        "preference_eos",
    )
    flipped = Details(query_truncation="hard", kl_estimator="k3")
    assert data_details(flipped) == {**data_details(Details()), "query_truncation": "hard"}
