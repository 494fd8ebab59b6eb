"""Where the policy-optimization stage's score comes from (config ``reward.source``).

- ``rm`` (the paper): the learned reward model's score at details.reward_token, normalized with the bias and
  gain stored with it (details.reward_normalization).
- ``gold``: tldr-synth's gold judge on the decoded summary (``finished`` = an EOS was sampled), less the mean gold
  score of the references: the upper bound that separates the reward model's error from the optimizer's. Gold
  points are not the RM's units (a wrong fact costs 3), so β means more KL per point of score here.
- ``rule``: a programmatic reward on the summary's words (``RULES``), less its mean over the references, written as
  people write rewards when they have no labels. They are hackable on purpose (issue: reward sources).

Every source gives one score per response, before details.missing_eos_penalty and details.reward_clipping, which
act the same on all of them. ppo.missing_eos_score is in the RM's units: under ``gold``, where an SFT sample sits
about 3 points below the references, replacing an unfinished sample's score by −1 rewards not finishing (seed-1
demo, 24 updates: EOS rate 1.00 → 0.90), so use details.missing_eos_penalty = off there (gold's own unfinished
penalty, −2, stays). The gold judge scores every run's evaluation samples whatever the source is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from nplus import ops
from nplus.models import by_length
from nplus.stages.common import decode_responses
from nplus.tasks.gold import words
from nplus.tasks.world import FEELINGS, SLOT_KEYS

SOURCES = ("rm", "gold", "rule")

# Words of the key-fact vocabulary (relations, events, asks, feelings), function words left out so that the rule
# rewards content words: "bf", "cheated", "break", "hurt", ...
_FUNCTION_WORDS = {
    "a",
    "an",
    "the",
    "to",
    "up",
    "of",
    "on",
    "in",
    "with",
    "me",
    "my",
    "her",
    "him",
    "his",
    "for",
    "out",
    "off",
    "about",
    "and",
    "or",
    "is",
    "be",
    "it",
    "we",
    "us",
    "do",
    "get",
    "go",
}
KEYWORDS = frozenset(
    w
    for values in SLOT_KEYS.values()
    for keys in values.values()
    for key in keys
    for w in words(key)
    if w not in _FUNCTION_WORDS
)
POSITIVE = frozenset(
    {
        "happy",
        "love",
        "loves",
        "great",
        "good",
        "glad",
        "thanks",
        "thank",
        "please",
        "kind",
        "nice",
        "sweet",
        "best",
        "amazing",
        "wonderful",
        "fun",
        "excited",
        "grateful",
        "hopeful",
        "proud",
    }
)
NEGATIVE = frozenset(
    {
        "hate",
        "hates",
        "bad",
        "awful",
        "terrible",
        "worst",
        "sad",
        "angry",
        "upset",
        "hurt",
        "mad",
        "cheated",
        "lied",
        "fight",
        "fought",
        "jealous",
        "betrayed",
        "crying",
        "cried",
        "sick",
    }
    | set(FEELINGS)
)


def keywords_rule(text: str) -> float:
    """+1 per occurrence of a key-fact word (repeats count): rewards talking about the facts, checks none of them."""
    return float(sum(w in KEYWORDS for w in words(text)))


def sentiment_rule(text: str) -> float:
    """+1 per positive or polite word, −2 per negative word (repeats count): a "be nice" reward."""
    ws = words(text)
    return float(sum(w in POSITIVE for w in ws) - 2 * sum(w in NEGATIVE for w in ws))


RULES: dict[str, Callable[[str], float]] = {"keywords": keywords_rule, "sentiment": sentiment_rule}

# (query tokens (B, Lq), responses truncated after EOS (B, T), the B posts as text) → (B,) score
ScoreFn = Callable[[torch.Tensor, torch.Tensor, Sequence[str]], torch.Tensor]


@dataclass(frozen=True)
class TrainingReward:
    """What an online loop scores its rollouts with: the training queries' posts as text (aligned with the query
    tensor; a text score reads them) and the text score of reward.source, or None for the learned RM, which the
    loop loads frozen itself (low precision, offload) and scores with ``rm_score_fn``."""

    posts: Sequence[str] = ()  # empty: no text score reads them (the RM)
    score: ScoreFn | None = None


def rm_score_fn(
    reward_model: torch.nn.Module,
    bias: float,
    gain: float,
    pad_id: int,
    reward_token: str,
    chunks: int = 1,
    suffix: bool = False,
) -> ScoreFn:
    """The learned reward model's normalized score (the paper's source); ``chunks``: models.by_length.

    ``suffix`` (ppo.last_layer = response): with a one-position reward token (eos, last_position) the head reads
    the positions from the earliest scored one on, and the trunk's last layer runs on those alone
    (models.suffix_hidden); pool_reward then reads them in place, the rest zero-filled and never read."""

    def raw(ids: torch.Tensor) -> torch.Tensor:
        if not suffix or reward_token == "mean":
            return ops.pool_reward(reward_model(ids, pad_id), ids, pad_id, reward_token)
        L = ids.size(1)
        first = int(ops.last_token_index(ids, pad_id).min()) if reward_token == "eos" else L - 1
        kept = reward_model(ids, pad_id, L - first, suffix=True)  # (B, L - first)
        scores = kept.new_zeros(ids.shape)  # (B, L)
        scores[:, first:] = kept
        return ops.pool_reward(scores, ids, pad_id, reward_token)

    def score(queries: torch.Tensor, responses: torch.Tensor, posts: Sequence[str]) -> torch.Tensor:
        return ops.normalize_score(by_length(raw, torch.cat([queries, responses], 1), pad_id, chunks), bias, gain)

    return score


def text_score_fn(
    text_score: Callable[[str, str, bool], float], tokenizer, references: Sequence[tuple[str, str]]
) -> ScoreFn:
    """A reward on decoded text, ``text_score(post, summary, finished)``, less its mean over ``references``
    ((post, reference summary) pairs), so that 0 is a reference-quality summary as for the normalized RM."""
    eos_id = tokenizer.eos_token_id
    bias = sum(text_score(p, " " + r.lstrip(), True) for p, r in references) / max(1, len(references))

    def score(queries: torch.Tensor, responses: torch.Tensor, posts: Sequence[str]) -> torch.Tensor:
        texts = decode_responses(tokenizer, responses)
        finished = (responses == eos_id).any(1).tolist()
        values = [text_score(p, t, f) - bias for p, t, f in zip(posts, texts, finished)]
        return torch.tensor(values, dtype=torch.float32, device=responses.device)

    return score


def text_source_score_fn(source: str, rule: str, gold, tokenizer, references: Sequence[tuple[str, str]]) -> ScoreFn:
    """The score function of a text ``reward.source`` (gold or rule; validated by the config before any compute;
    the RM's is ``rm_score_fn``)."""
    if source == "gold":
        return text_score_fn(lambda p, t, f: gold.score(p, t, f), tokenizer, references)
    if source == "rule":
        fn = RULES[rule]
        return text_score_fn(lambda p, t, f: fn(t), tokenizer, references)
    raise ValueError(f"reward.source={source!r} is not a text source; valid: gold, rule")
