"""The byte-level BPE: exact round trips, Pythia-like space handling, distinct EOS and PAD, determinism."""

import pytest

from nplus.tasks.tokenizer import EOS_TOKEN, PAD_TOKEN, load_tokenizer, train_tokenizer

TEXTS = [
    "My boyfriend (26M) and I (24F) have been together for 2 years.\nHe cheated on me.",
    "SUBREDDIT: r/relationships\n\nTITLE: My bf cheated\n\nPOST: Should I break up with him?\n\nTL;DR:",
    " I feel hurt. Should I break up with him?",
] * 20


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(TEXTS, vocab_size=400)


@pytest.mark.parametrize(
    "text",
    [
        TEXTS[0],
        " leading space",
        "trailing space ",
        "tabs\tand\n\nnewlines",
        "ünïcödé ☕ and emoji 🙂",
        "never seen: qzxv 12345 $%^&",
        "",
        "  two  spaces  ",
    ],
)
def test_round_trip(tokenizer, text):
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == text
    assert tokenizer.unk_token_id not in ids  # byte-level: nothing falls back to UNK (which is EOS)


def test_leading_space_changes_tokens(tokenizer):
    assert tokenizer(" TL;DR")["input_ids"] != tokenizer("TL;DR")["input_ids"]
    assert tokenizer(" I feel hurt")["input_ids"][0] != tokenizer("I feel hurt")["input_ids"][0]


def test_special_tokens(tokenizer):
    assert tokenizer.eos_token == tokenizer.bos_token == tokenizer.unk_token == EOS_TOKEN
    assert tokenizer.pad_token == PAD_TOKEN
    assert tokenizer.eos_token_id != tokenizer.pad_token_id
    # like Pythia's, the tokenizer adds no BOS/EOS by itself: EOS is appended explicitly where a detail says so
    assert tokenizer("hi")["input_ids"] == tokenizer("hi", add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(tokenizer("hi" + EOS_TOKEN)["input_ids"]) == "hi" + EOS_TOKEN


def test_save_load_and_determinism(tokenizer, tmp_path):
    tokenizer.save_pretrained(str(tmp_path / "a"))
    train_tokenizer(TEXTS, vocab_size=400).save_pretrained(str(tmp_path / "b"))
    files = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert files == sorted(p.name for p in (tmp_path / "b").iterdir())
    for name in files:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    loaded = load_tokenizer(tmp_path / "a")
    assert loaded(TEXTS[1])["input_ids"] == tokenizer(TEXTS[1])["input_ids"]
    assert (loaded.eos_token_id, loaded.pad_token_id) == (tokenizer.eos_token_id, tokenizer.pad_token_id)


def test_facts_are_whole_tokens(tokenizer):
    """Ages and durations are one token each, in posts and in lower-case summaries alike (docs/tldr-synth.md)."""
    for text, fact in (
        ("My boyfriend (26M) and I", "26M"),
        (" i (24F) feel hurt", "24F"),
        ("together for 2 years.", " 2 years"),
    ):
        tokens = [tokenizer.decode([i]) for i in tokenizer(text, add_special_tokens=False)["input_ids"]]
        assert fact in tokens, (text, tokens)


@pytest.mark.parametrize(
    "text",
    [
        "SUBREDDIT: r/relationships\n\nTITLE: Me [24 F] with my bf [26 M]\n\nPOST: I'm 24, he's 26.  Don't  go\t\n",
        "12345 apples, 7 days, 2 yearly and 30 F. ünïcödé 🙂 $%^&",
    ],
)
def test_other_text_splits_like_gpt2(text):
    """Outside facts the pre-tokenizer is GPT-2's (and so Pythia's): the same pieces, the same bytes."""
    from tokenizers import pre_tokenizers

    from nplus.tasks.tokenizer import pre_tokenizer

    ours = [piece for piece, _ in pre_tokenizer().pre_tokenize_str(text)]
    gpt2 = [piece for piece, _ in pre_tokenizers.ByteLevel(add_prefix_space=False).pre_tokenize_str(text)]
    assert ours == gpt2
