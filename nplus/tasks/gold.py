"""The gold judge of ``tldr-synth``: scores a summary against the post's latent facts.

The judge knows each post's facts (``facts.jsonl``, written by the generator) and the closed vocabulary of
the generator (``nplus.tasks.world.SLOT_KEYS``, ``DISTRACTOR_MARKERS``, ``FILLER_PHRASES``). A summary is
lower-cased and split into words ``[a-z0-9]+``; the judge then reads, left to right, the *mentions* it contains:

- a key of a slot value (longest key first), e.g. ``bf`` → relation ``boyfriend``, ``cheated`` → event
  ``cheated``, ``break up`` → ask ``break_up``, ``hurt`` → feeling ``hurt``;
- an age: a word ``24f`` / ``26m`` or a number of one or two digits followed by the word ``f`` / ``m``;
- a duration: a number followed by ``year(s)``, ``month(s)`` or ``week(s)``;
- a distractor marker (``dog``, ``gym``, ``edit``, ...) or a filler phrase (``idk``, ``long story short``, ...).

score = coverage + wrong + invented + irrelevant + length + repetition + unfinished, where

- coverage   = 10 × (weight of the post's facts mentioned correctly) / (weight of the post's facts). Weights:
  event 3, relation 2, ask 2, duration 1, feeling 1, narrator age 0.5, counterpart age 0.5; a post may lack
  ask, duration or feeling, and then they are not counted.
- wrong      = −3 per slot mentioned with a value that is not the post's (event, relation, ask, feeling,
  duration; all ages that are neither the narrator's nor the counterpart's count as one wrong slot).
- invented   = −2 per slot the post lacks (ask, duration, feeling) but the summary fills.
- irrelevant = −1 per distinct distractor marker, −0.5 per distinct filler phrase.
- length     = −0.02 per word (whitespace-separated) − 0.15 per word beyond a budget of 30 words.
- repetition = −0.5 per repeated word trigram (occurrences beyond the first), at most 10 counted.
- unfinished = −2 if the summary did not end (``finished=False``: no EOS within the response budget).

``compare`` prefers the higher score; equal scores (to 1e-9) are broken by a stable hash of the two texts, so
ties go either way about half the time. Summaries may start with a space (the model-sample convention).
docs/tldr-synth.md walks through worked examples.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Literal, Sequence

from nplus.tasks.world import DISTRACTOR_MARKERS, FILLER_PHRASES, SLOT_KEYS

WEIGHTS: dict[str, float] = {
    "event": 3.0,
    "relation": 2.0,
    "ask": 2.0,
    "duration": 1.0,
    "feeling": 1.0,
    "narrator": 0.5,
    "counterpart": 0.5,
}
COVERAGE_POINTS = 10.0
WRONG_PENALTY = 3.0
INVENTED_PENALTY = 2.0
DISTRACTOR_PENALTY = 1.0
FILLER_PENALTY = 0.5
WORD_COST = 0.02
LENGTH_BUDGET = 30
EXCESS_WORD_COST = 0.15
REPEAT_PENALTY = 0.5
MAX_REPEATS = 10
UNFINISHED_PENALTY = 2.0
TIE_EPS = 1e-9
COMPONENTS = ("coverage", "wrong", "invented", "irrelevant", "length", "repetition", "unfinished")
# Slots whose values are words of the vocabulary (ages and durations are numbers, parsed separately).
WORD_SLOTS = ("event", "relation", "ask", "feeling")
# Slots a post may lack; the others are always present.
OPTIONAL_SLOTS = ("ask", "duration", "feeling")

_WORD = re.compile(r"[a-z0-9]+")
_AGE = re.compile(r"(\d{1,2})([mf])")
_UNITS = {"year": "year", "years": "year", "month": "month", "months": "month", "week": "week", "weeks": "week"}


def words(text: str) -> list[str]:
    """The judge's view of a text: lower-cased alphanumeric words."""
    return _WORD.findall(text.lower())


def _phrase_index() -> dict[str, list[tuple[tuple[str, ...], str, str]]]:
    """first word → [(words of the phrase, slot, value)], longest phrase first."""
    entries = [
        (slot, value, key) for slot, values in SLOT_KEYS.items() for value, keys in values.items() for key in keys
    ]
    entries += [("distractor", m, m) for m in DISTRACTOR_MARKERS] + [("filler", f, f) for f in FILLER_PHRASES]
    index: dict[str, list[tuple[tuple[str, ...], str, str]]] = {}
    for slot, value, key in entries:
        w = tuple(words(key))
        index.setdefault(w[0], []).append((w, slot, value))
    for candidates in index.values():
        candidates.sort(key=lambda c: -len(c[0]))
    return index


_INDEX = _phrase_index()


def _duration_value(text: str) -> str:
    """Canonical form of a duration fact ("2 years" → "2 year")."""
    n, unit = text.split()
    return f"{int(n)} {_UNITS[unit]}"


def mentions(tokens: Sequence[str]) -> dict[str, set[str]]:
    """slot → the values the words mention (slots: WORD_SLOTS, "age", "duration", "distractor", "filler")."""
    found: dict[str, set[str]] = {s: set() for s in (*WORD_SLOTS, "age", "duration", "distractor", "filler")}
    i, n = 0, len(tokens)
    while i < n:
        tok = tokens[i]
        nxt = tokens[i + 1] if i + 1 < n else ""
        if tok[0].isdigit():
            age = _AGE.fullmatch(tok)
            if age:
                found["age"].add(tok)
            elif len(tok) <= 2 and tok.isdigit() and nxt in ("m", "f"):
                found["age"].add(tok + nxt)
                i += 1
            elif tok.isdigit() and nxt in _UNITS:
                found["duration"].add(f"{int(tok)} {_UNITS[nxt]}")
                i += 1
            i += 1
            continue
        for phrase, slot, value in _INDEX.get(tok, ()):
            if tuple(tokens[i : i + len(phrase)]) == phrase:
                found[slot].add(value)
                i += len(phrase) - 1
                break
        i += 1
    return found


@dataclass(frozen=True)
class _Expected:
    """A post's facts in the judge's canonical forms."""

    values: dict[str, str | None]  # WORD_SLOTS and "duration" → value or None
    ages: tuple[str, str]  # (narrator, counterpart), lower-case "24f"
    total_weight: float

    @classmethod
    def from_facts(cls, facts: dict) -> "_Expected":
        values = {s: facts.get(s) for s in WORD_SLOTS}
        values["duration"] = _duration_value(facts["duration"]) if facts.get("duration") else None
        ages = (facts["narrator"].lower(), facts["counterpart"].lower())
        total = sum(w for s, w in WEIGHTS.items() if s in ("narrator", "counterpart") or values[s])
        return cls(values, ages, total)


@dataclass(frozen=True)
class _Analysis:
    components: dict[str, float]
    covered: tuple[str, ...]
    present: tuple[str, ...]

    @property
    def total(self) -> float:
        return sum(self.components.values())


def _repeated_trigrams(tokens: Sequence[str]) -> int:
    trigrams = list(zip(tokens, tokens[1:], tokens[2:]))
    return len(trigrams) - len(set(trigrams))


def analyze(expected: _Expected, summary: str, finished: bool) -> _Analysis:
    """Every component of the score (see the module docstring)."""
    tokens = words(summary)
    found = mentions(tokens)
    present, covered, wrong, invented = [], [], 0, 0
    for slot in (*WORD_SLOTS, "duration"):
        value, said = expected.values[slot], found[slot]
        if value is None:
            invented += bool(said)
            continue
        present.append(slot)
        if value in said:
            covered.append(slot)
        wrong += bool(said - {value})
    for slot, age in zip(("narrator", "counterpart"), expected.ages):
        present.append(slot)
        if age in found["age"]:
            covered.append(slot)
    wrong += bool(found["age"] - set(expected.ages))
    n_words = len(summary.split())
    components = {
        "coverage": COVERAGE_POINTS * sum(WEIGHTS[s] for s in covered) / expected.total_weight,
        "wrong": -WRONG_PENALTY * wrong,
        "invented": -INVENTED_PENALTY * invented,
        "irrelevant": -DISTRACTOR_PENALTY * len(found["distractor"]) - FILLER_PENALTY * len(found["filler"]),
        "length": -WORD_COST * n_words - EXCESS_WORD_COST * max(0, n_words - LENGTH_BUDGET),
        "repetition": -REPEAT_PENALTY * min(MAX_REPEATS, _repeated_trigrams(tokens)),
        "unfinished": 0.0 if finished else -UNFINISHED_PENALTY,
    }
    return _Analysis(components, tuple(covered), tuple(present))


@dataclass(frozen=True)
class Judgment:
    choice: Literal["A", "B"]
    raw: str
    score_a: float
    score_b: float


def tie_break(a: str, b: str) -> Literal["A", "B"]:
    """A stable coin flip for equal scores (sha256 of the two texts; Python's ``hash`` is salted per process)."""
    return "A" if hashlib.sha256(f"{a}\x1f{b}".encode()).digest()[0] % 2 == 0 else "B"


class GoldJudge:
    """Deterministic judge over the posts of one ``tldr-synth`` corpus (looked up by exact post text)."""

    def __init__(self, facts_by_post: dict[str, dict], source: str = "<memory>"):
        self._expected = {post: _Expected.from_facts(facts) for post, facts in facts_by_post.items()}
        self._facts = facts_by_post
        self._source = source

    @classmethod
    def from_dir(cls, data_dir: Path | str) -> "GoldJudge":
        """Read ``DATA_DIR/facts.jsonl`` (one ``{"id", "post", "facts"}`` object per line)."""
        path = Path(data_dir) / "facts.jsonl"
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} not found: the gold judge needs a tldr-synth data directory "
                "(nplus.tasks.synth.generate writes facts.jsonl there)"
            )
        with path.open(encoding="utf-8") as f:
            records = [json.loads(line) for line in f if line.strip()]
        return cls({r["post"]: r["facts"] for r in records}, source=str(path))

    def _lookup(self, post: str) -> _Expected:
        try:
            return self._expected[post]
        except KeyError:
            raise KeyError(
                f"post not found among the {len(self._expected)} posts of {self._source} "
                f"(looked up by exact text; starts {post[:60]!r}). The gold judge only scores "
                "tldr-synth posts: pass the dataset's `post` column unchanged, "
                "not the formatted query."
            ) from None

    def facts_for(self, post: str) -> dict:
        """The latent facts of a post (slot → value or None)."""
        self._lookup(post)
        return dict(self._facts[post])

    def stated(self, post: str, text: str) -> set[str]:
        """The slots of the post's facts that ``text`` states with the post's value (the judge's coverage)."""
        return set(analyze(self._lookup(post), text, True).covered)

    def score(self, post: str, summary: str, finished: bool = True) -> float:
        return analyze(self._lookup(post), summary, finished).total

    def score_batch(
        self, posts: Iterable[str], summaries: Iterable[str], finished: Iterable[bool] | None = None
    ) -> list[float]:
        """Scores of aligned (post, summary, finished) triples; ``finished`` defaults to all True."""
        posts, summaries = list(posts), list(summaries)
        flags = [True] * len(posts) if finished is None else list(finished)
        if not len(posts) == len(summaries) == len(flags):
            raise ValueError(f"lengths differ: {len(posts)} posts, {len(summaries)} summaries, {len(flags)} flags")
        return [self.score(p, s, f) for p, s, f in zip(posts, summaries, flags)]

    def breakdown(self, post: str, summary: str, finished: bool = True) -> dict[str, float]:
        """The score's components by name (COMPONENTS) plus their sum under ``"total"``."""
        analysis = analyze(self._lookup(post), summary, finished)
        return {**analysis.components, "total": analysis.total}

    def compare(self, post: str, a: str, b: str, a_finished: bool = True, b_finished: bool = True) -> Judgment:
        """Which summary better conveys the post's key facts, answered like the LLM judge ("Preferred: A")."""
        expected = self._lookup(post)
        ra, rb = analyze(expected, a, a_finished), analyze(expected, b, b_finished)
        sa, sb = ra.total, rb.total
        if abs(sa - sb) <= TIE_EPS:
            choice, why = tie_break(a, b), "equal scores, tie broken by a stable hash"
        else:
            choice, why = ("A" if sa > sb else "B"), "higher score preferred"
        raw = (
            f"Comparison: A covers {len(ra.covered)}/{len(ra.present)} key facts (score {sa:.2f}), "
            f"B covers {len(rb.covered)}/{len(rb.present)} (score {sb:.2f}); {why}.\nPreferred: {choice}"
        )
        return Judgment(choice=choice, raw=raw, score_a=sa, score_b=sb)
