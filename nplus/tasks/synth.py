"""``tldr-synth``: a generated TL;DR corpus in the exact schemas of the public datasets (reference/DETAILS.md §6).

Every post is rendered from latent *facts* (who: narrator and counterpart with ages, genders and relation; what
happened; for how long; how the narrator feels; what they ask) plus distractor content (backstory, filler,
``EDIT:`` lines). Reference summaries restate the facts; comparison summaries are written by named policies and
labelled by simulated annotators whose preference is the gold score plus a mild taste for length.

All phrasing comes from finite template pools so that tiny language models can learn to copy facts. The
vocabulary is also the gold judge's knowledge: ``SLOT_KEYS``, ``DISTRACTOR_MARKERS`` and
``FILLER_PHRASES`` list the surface forms it recognizes (see docs/tldr-synth.md).

The generator is split along these ideas, each module importing only the ones before it:
:mod:`nplus.tasks.world` (the vocabulary), :mod:`nplus.tasks.posts` (facts, post texts and titles),
:mod:`nplus.tasks.summaries` (references and the comparison policies) and :mod:`nplus.tasks.comparisons`
(simulated annotators and their labels). This module draws the corpus splits and writes the files; it re-exports
every name of those modules, so ``nplus.tasks.synth`` stays the generator's one import path.

Layout written by :func:`generate` (``out_dir``): ``sft/`` and ``comparisons/`` (``datasets.save_to_disk``),
``facts.jsonl``, ``tokenizer/`` and ``card.json``. The same seed and scale give byte-identical files.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from nplus.rundir import save_dataset
from nplus.tasks.comparisons import (
    LENGTH_BIAS,
    N_WORKERS,
    TAU,
    Worker,
    label,
    label_gold_agreement,
    make_comparisons,
    make_workers,
    utility,
)
from nplus.tasks.gold import GoldJudge
from nplus.tasks.posts import BONDS, FEELING_SENTENCES, INTROS, Post, draw_facts, pronouns, render_post
from nplus.tasks.summaries import (
    DURATION_PHRASES,
    FEELING_CLAUSES,
    GENERIC_VPS,
    OMITTABLE,
    POLICIES,
    POLICY_WEIGHTS,
    REFERENCE_ASK_OMIT,
    VAGUE_COUNTERPART,
    WRONG_SLOT_WEIGHTS,
    compose_summary,
    policy_summary,
    reference_summary,
)
from nplus.tasks.world import (
    ASK,
    ASKS,
    COUNTRIES,
    DISTRACTOR_MARKERS,
    DISTRACTORS,
    EDITS,
    EVENT,
    EVENTS,
    FAMILY,
    FEELINGS,
    FILLER_PHRASES,
    FILLER_SENTENCES,
    HOBBIES,
    JOBS,
    MONEY_EVENTS,
    NEUTRAL,
    OPENERS,
    PERSONAL,
    PET_NAMES,
    PETS,
    PLACES,
    RELATION,
    RELATIONS,
    ROMANTIC,
    SLOT_KEYS,
    SLOTS,
    STATES,
    SUBREDDITS,
    SUMMARY_FILLERS_PREFIX,
    SUMMARY_FILLERS_SUFFIX,
    TIFU_FEELINGS,
    Ask,
    Event,
    Relation,
    Subreddit,
)

# Bump whenever the generated files change for a given (seed, scale). POSTS_VERSION is the part a base model
# depends on (posts, titles, references, tokenizer: its pretraining corpus); VERSION also covers the comparisons,
# which only the reward model reads, so a change to them leaves the committed base models valid.
POSTS_VERSION = "tldr-synth-5"
VERSION = "tldr-synth-5"
# 5 (2026-12-04): summaries restate facts in the post's own words: a duration as "for {dur}" (every post writes
# it so), the poster's question copied from the post, every question opening with "Should I" (world.ASKS); the
# degraded comparison policies leave the question out as often as the references do. Posts change (questions).
# 4 (2026-12-02): comparisons weighted toward summaries with a wrong key fact (POLICY_WEIGHTS, WRONG_SLOT_WEIGHTS);
# posts, references and tokenizer unchanged (POSTS_VERSION 3).
# 2 (2026-12-01): facts copyable token for token. A post and its summaries write an age the same way, "(24F)"
# (summaries in lower case keep it), and a duration with a space before the number ("for 2 years"), so the
# tokens to restate are the tokens of the post; shorter ordinary posts (25-90 words); references leave the
# question out more often (see reference_summary).

Scale = Literal["default", "small", "tiny"]


@dataclass(frozen=True)
class Sizes:
    sft_train: int
    sft_validation: int
    sft_test: int
    comparisons_train: int
    comparisons_validation: int


SIZES: dict[str, Sizes] = {
    "default": Sizes(4000, 500, 500, 4000, 1000),
    "small": Sizes(400, 100, 100, 400, 200),
    "tiny": Sizes(64, 32, 32, 64, 32),
}

# ----------------------------------------------------------------------------------------------------------
# Corpus


def _post_id(rng: random.Random, taken: set[str]) -> str:
    """A Reddit-like id ("t3_1ov8fh"), unique within the corpus."""
    alphabet = "0123456789abcdefghijklmnopqrstuvwxyz"
    while True:
        pid = "t3_" + "".join(alphabet[rng.randrange(36)] for _ in range(6))
        if pid not in taken:
            taken.add(pid)
            return pid


def make_posts(n: int, rng: random.Random, ids: set[str], texts: set[str]) -> list[Post]:
    """n posts with unique ids and unique texts (the gold judge looks posts up by text)."""
    posts: list[Post] = []
    while len(posts) < n:
        subreddit, facts, gender = draw_facts(rng)
        text, title, used = render_post(facts, gender, rng)
        if text in texts:
            continue
        texts.add(text)
        reference = reference_summary(facts, gender, rng, text)
        posts.append(Post(_post_id(rng, ids), subreddit, title, text, reference, facts, gender, used))
    return posts


def build_posts(seed: int, scale: Scale) -> dict[str, list[Post]]:
    """The SFT posts per split."""
    sizes = SIZES[scale]
    rng = random.Random(seed)
    ids: set[str] = set()
    texts: set[str] = set()
    counts = (("train", sizes.sft_train), ("validation", sizes.sft_validation), ("test", sizes.sft_test))
    return {split: make_posts(n, rng, ids, texts) for split, n in counts}


def pretraining_posts(seed: int, n: int) -> list[Post]:
    """Fresh posts with their TL;DR lines for base-model pretraining (the embedded world's web text): a stream of
    their own, disjoint in text from every SFT post of the default-scale corpus with this seed."""
    taken = {p.text for split in build_posts(seed, "default").values() for p in split}
    return make_posts(n, random.Random(f"tldr-synth/pretrain/{seed}"), set(), taken)


def comparisons_count(scale: Scale, n_train: int | None) -> int:
    """The training comparisons to generate: ``n_train`` (None: the scale's), at least the scale's count."""
    floor = SIZES[scale].comparisons_train
    if n_train is not None and n_train < floor:
        raise ValueError(
            f"at least the {scale!r} scale's {floor} pairs (train on fewer with task.max_comparisons_train)"
        )
    return floor if n_train is None else n_train


def build_comparisons(
    posts: dict[str, list[Post]], seed: int, scale: Scale, judge, n_train: int | None = None
) -> dict[str, list[dict]]:
    """Comparisons on SFT train posts (split ``train``) and on SFT validation posts (split ``validation``:
    ``valid1`` on the first half of the posts, ``valid2`` on the second). ``n_train`` (at least the scale's
    count) adds training pairs drawn after the validation ones, so the scale's pairs and the validation pairs
    are the same whatever it is."""
    sizes = SIZES[scale]
    n_train = comparisons_count(scale, n_train)
    rng = random.Random(f"tldr-synth/comparisons/{seed}")  # a stream of its own, seeded from a str (stable)
    workers = make_workers(rng)
    val = posts["validation"]
    half, n_val = len(val) // 2, sizes.comparisons_validation
    batches = tuple(range(3, 11))
    train = make_comparisons(posts["train"], sizes.comparisons_train, "train", batches, judge, workers, rng)
    validation = make_comparisons(val[:half], n_val // 2, "valid1", (11, 12), judge, workers, rng) + make_comparisons(
        val[half:], n_val - n_val // 2, "valid2", (13, 14), judge, workers, rng
    )
    if n_train > len(train):
        train += make_comparisons(posts["train"], n_train - len(train), "train", batches, judge, workers, rng)
    return {"train": train, "validation": validation}


# ----------------------------------------------------------------------------------------------------------
# Files: datasets in the public schemas, facts, tokenizer, card.


def sft_features():
    """``vwxyzjn/summarize_from_feedback_tldr_3_filtered``."""
    from datasets import Features, Value

    return Features({name: Value("string") for name in ("id", "subreddit", "title", "post", "summary")})


def comparison_features():
    """``openai/summarize_from_feedback``, config ``comparisons`` (int32 and the CNN/DM ``info`` fields as there)."""
    from datasets import Features, List, Value

    text = Value("string")
    return Features(
        {
            "info": {"id": text, "post": text, "title": text, "subreddit": text, "site": text, "article": text},
            "summaries": List({"text": text, "policy": text, "note": text}),
            "choice": Value("int32"),
            "worker": text,
            "batch": text,
            "split": text,
            "extra": {"confidence": Value("int32")},
        }
    )


def _sft_dataset(posts: list[Post]):
    from datasets import Dataset

    columns = {
        "id": [p.id for p in posts],
        "subreddit": [p.subreddit for p in posts],
        "title": [p.title for p in posts],
        "post": [p.text for p in posts],
        "summary": [p.reference for p in posts],
    }
    return Dataset.from_dict(columns, features=sft_features())


def _comparison_dataset(rows: list[dict]):
    from datasets import Dataset

    names = comparison_features().keys()
    return Dataset.from_dict({k: [r[k] for r in rows] for k in names}, features=comparison_features())


def length_stats(values) -> dict[str, float]:
    """mean, p50, p90, p99, max (rounded to 2 decimals so the card is stable and readable)."""
    a = np.asarray(values, dtype=np.float64)
    if a.size == 0:
        return {k: 0.0 for k in ("mean", "p50", "p90", "p99", "max")}
    stats = {
        "mean": a.mean(),
        "p50": np.percentile(a, 50),
        "p90": np.percentile(a, 90),
        "p99": np.percentile(a, 99),
        "max": a.max(),
    }
    return {k: round(float(v), 2) for k, v in stats.items()}


def _token_lengths(tokenizer, texts: list[str]) -> list[int]:
    return [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]] if texts else []


def _card(seed: int, scale: str, posts: dict[str, list[Post]], comparisons: dict[str, list[dict]], tokenizer) -> dict:
    all_posts = [p for split in posts.values() for p in split]
    rows = [r for split in comparisons.values() for r in split]
    texts = {
        "post": [p.text for p in all_posts],
        "summary": [p.reference for p in all_posts],
        "comparison_summary": [s["text"] for r in rows for s in r["summaries"]],
    }
    tokens = {name: _token_lengths(tokenizer, t) for name, t in texts.items()}
    post_tokens = np.asarray(tokens["post"])
    policy_counts: dict[str, int] = {p: 0 for p in POLICIES}
    for r in rows:
        for s in r["summaries"]:
            policy_counts[s["policy"]] += 1
    return {
        "name": "tldr-synth",
        "version": VERSION,
        "seed": seed,
        "scale": scale,
        "rows": {
            "sft": {k: len(v) for k, v in posts.items()},
            "comparisons": {k: len(v) for k, v in comparisons.items()},
        },
        "lengths": {
            name: {"chars": length_stats([len(x) for x in t]), "tokens": length_stats(tokens[name])}
            for name, t in texts.items()
        },
        "posts_longer_than_tokens": {str(n): round(float((post_tokens > n).mean()), 4) for n in (128, 192, 512)},
        "label_gold_agreement": round(label_gold_agreement(rows), 4),
        "label_gold_agreement_by_split": {k: round(label_gold_agreement(v), 4) for k, v in comparisons.items()},
        "annotators": {"tau": TAU, "length_bias": LENGTH_BIAS, "workers": N_WORKERS},
        "policies": policy_counts,
        "tokenizer": {"vocab_size": len(tokenizer)},
    }


def generate(out_dir: Path, seed: int = 0, scale: Scale = "default", comparisons: int | None = None) -> dict:
    """Write the ``tldr-synth`` corpus to ``out_dir`` and return its card (also ``out_dir/card.json``);
    ``comparisons``: training pairs (None: the scale's; see build_comparisons)."""
    from datasets import DatasetDict

    from nplus.tasks.tokenizer import train_tokenizer  # here: tokenizers/transformers, only when a corpus is written

    if scale not in SIZES:
        raise ValueError(f"unknown scale {scale!r}; expected one of {tuple(SIZES)}")
    comparisons_count(scale, comparisons)  # before anything is written
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    # 1. posts, references and facts
    posts = build_posts(seed, scale)
    judge = GoldJudge({p.text: p.facts for split in posts.values() for p in split})
    # 2. comparisons labelled by simulated annotators
    comparisons = build_comparisons(posts, seed, scale, judge, comparisons)

    # 3. files
    save_dataset(DatasetDict({k: _sft_dataset(v) for k, v in posts.items()}), out_dir / "sft")
    save_dataset(DatasetDict({k: _comparison_dataset(v) for k, v in comparisons.items()}), out_dir / "comparisons")
    with (out_dir / "facts.jsonl").open("w", encoding="utf-8") as f:
        for p in (p for split in posts.values() for p in split):
            f.write(json.dumps({"id": p.id, "post": p.text, "facts": p.facts}, ensure_ascii=False) + "\n")
    tokenizer = train_tokenizer(x for p in posts["train"] for x in (p.title, p.text, p.reference))
    tokenizer.save_pretrained(str(out_dir / "tokenizer"))
    card = _card(seed, scale, posts, comparisons, tokenizer)
    (out_dir / "card.json").write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    return card
