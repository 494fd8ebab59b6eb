"""Posts of ``tldr-synth``: drawing a post's latent facts, rendering its text and title (:class:`Post`)."""

from __future__ import annotations

import random
from dataclasses import dataclass

from nplus.tasks.world import (
    ASK,
    ASKS,
    COUNTRIES,
    DISTRACTORS,
    EDITS,
    EVENT,
    FEELINGS,
    FILLER_SENTENCES,
    HOBBIES,
    JOBS,
    MONEY_EVENTS,
    NEUTRAL,
    OPENERS,
    PET_NAMES,
    PETS,
    PLACES,
    RELATION,
    STATES,
    SUBREDDITS,
    TIFU_FEELINGS,
    Relation,
)


@dataclass(frozen=True)
class Post:
    id: str
    subreddit: str
    title: str
    text: str
    reference: str
    facts: dict  # slot → canonical value or None (see SLOTS)
    gender: str  # the counterpart's, for pronouns
    distractors: tuple[str, ...]  # the distractor sentences used in the post (for the verbose policy)


def pronouns(gender: str) -> dict[str, str]:
    """Template fields for a counterpart of this gender."""
    he, him, his, himself = ("he", "him", "his", "himself") if gender == "M" else ("she", "her", "her", "herself")
    return {"he": he, "him": him, "his": his, "himself": himself, "He": he.capitalize(), "His": his.capitalize()}


def fill(template: str, fields: dict[str, str]) -> str:
    return template.format(**fields)


def pick(rng: random.Random, options):
    return options[rng.randrange(len(options))]


def age_token(age: int, gender: str) -> str:
    return f"{age}{gender}"


def _duration(rng: random.Random) -> str:
    unit = rng.choices(("year", "month", "week"), weights=(0.5, 0.35, 0.15))[0]
    n = {"year": rng.randint(1, 12), "month": rng.randint(2, 11), "week": rng.randint(2, 8)}[unit]
    return f"{n} {unit}" + ("s" if n > 1 else "")


def _counterpart_age(rng: random.Random, rel: Relation, narrator_age: int) -> int:
    if rel.name in ("mom", "dad"):
        return narrator_age + rng.randint(20, 34)
    if rel.name in ("sister", "brother"):
        return max(14, narrator_age + rng.randint(-8, 8))
    if rel.kind in ("romantic", "friend", "roommate"):
        return max(18, narrator_age + rng.randint(-3, 6))
    return rng.randint(24, 68)


def draw_facts(rng: random.Random) -> tuple[str, dict, str]:
    """(subreddit, facts, counterpart gender) of a new post."""
    sub = rng.choices(SUBREDDITS, weights=[s.weight for s in SUBREDDITS])[0]
    event = EVENT[pick(rng, sub.events)]
    if sub.name == "legaladvice":
        candidates = [r for r in event.relations if RELATION[r].kind in ("legal", "work")] or list(event.relations)
    else:
        candidates = [r for r in event.relations if RELATION[r].kind != "legal"] or list(event.relations)
    rel = RELATION[pick(rng, candidates)]
    gender = rel.gender or pick(rng, ("M", "F"))
    narrator_gender = pick(rng, ("M", "F"))
    narrator_age = rng.randint(18, 45)
    kind = "tifu" if event.actor == "me" else rel.kind
    asks = [a.name for a in ASKS if kind in a.kinds and (a.name != "money_back" or event.name in MONEY_EVENTS)]
    feelings = TIFU_FEELINGS if event.actor == "me" else FEELINGS
    facts = {
        "event": event.name,
        "relation": rel.name,
        "ask": pick(rng, asks) if asks and rng.random() < sub.ask_rate else None,
        "duration": _duration(rng) if rng.random() < 0.85 else None,
        "feeling": pick(rng, feelings) if rng.random() < 0.85 else None,
        "narrator": age_token(narrator_age, narrator_gender),
        "counterpart": age_token(_counterpart_age(rng, rel, narrator_age), gender),
    }
    return sub.name, facts, gender


# How each relation kind says "for how long" in a post's intro: (with a duration, without one).
BONDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "romantic": (
        ("have been together for {dur}", "have been dating for {dur}"),
        ("have been together for a while", "have been dating for some time"),
    ),
    "family": (
        ("haven't been getting along for {dur}", "have been arguing a lot for {dur}"),
        ("have always been close", "usually get along fine"),
    ),
    "friend": (
        ("have been friends for {dur}", "have been close friends for {dur}"),
        ("have been friends for a long time", "have always been close"),
    ),
    "roommate": (
        ("have lived together for {dur}", "have shared a place for {dur}"),
        ("live together", "share a place downtown"),
    ),
    "work": (
        ("have worked together for {dur}", "have been on the same team for {dur}"),
        ("work together", "are on the same team"),
    ),
    "legal": (
        ("have known each other for {dur}", "have dealt with each other for {dur}"),
        ("don't really know each other", "barely talk"),
    ),
}
INTROS: tuple[str, ...] = (
    "My {rel} ({ca}) and I ({na}) {bond}.",
    "I ({na}) and my {rel} ({ca}) {bond}.",
    "Some background: me ({na}), my {rel} ({ca}). We {bond}.",
    "Me ({na}) and my {rel} ({ca}) {bond}.",
)
FEELING_SENTENCES: tuple[str, ...] = (
    "I feel so {feeling} right now.",
    "Honestly I'm {feeling} and I can't focus on anything else.",
    "I've been feeling really {feeling} since it happened.",
    "I don't think I've ever been this {feeling}.",
)


def _fields(facts: dict, gender: str, rng: random.Random) -> dict[str, str]:
    """Template fields of a post: pronouns, relation, ages, duration, and one draw of each distractor slot."""
    state = pick(rng, STATES)
    job = pick(rng, JOBS)
    return {
        **pronouns(gender),
        "rel": facts["relation"],
        "na": facts["narrator"].upper(),
        "ca": facts["counterpart"].upper(),
        "dur": facts["duration"] or "",
        "feeling": facts["feeling"] or "",
        "pet": pick(rng, PETS),
        "pet_name": pick(rng, PET_NAMES),
        "a_job": ("an " if job[0] in "aeiou" else "a ") + job,
        "state": state,
        "state_city": f"town here in {state}",
        "hobby": pick(rng, HOBBIES),
        "place": pick(rng, PLACES),
        "country": pick(rng, COUNTRIES),
    }


def _title(facts: dict, fields: dict[str, str], rng: random.Random) -> str:
    """A short question or statement derived from the facts, as Reddit titles are."""
    event = EVENT[facts["event"]]
    vp = fill(event.title, fields)
    if event.actor == "me":
        return f"TIFU by {vp}"
    options = [
        f"My {fields['rel']} {vp}",
        # r/relationships style: "Me [24 F] with my boyfriend [26 M], ..."
        f"Me [{fields['na'][:-1]} {fields['na'][-1]}] with my {fields['rel']} "
        f"[{fields['ca'][:-1]} {fields['ca'][-1]}], {fields['he']} {vp}",
        f"Need advice: my {fields['rel']} {vp}",
    ]
    if facts["ask"]:
        q = fill(pick(rng, ASK[facts["ask"]].summary), fields)
        options.append(f"My {fields['rel']} {vp}, {q}")
    return pick(rng, options)


def _target_words(rng: random.Random) -> tuple[int, bool]:
    """(target word count, long) — about 15 % of posts are long enough to need query truncation."""
    if rng.random() < 0.15:
        return rng.randint(250, 450), True
    return int(rng.triangular(25, 90, 35)), False


def _words(paragraphs: list[list[str]]) -> int:
    return sum(len(s.split()) for p in paragraphs for s in p)


def _distractor_pool(fields: dict[str, str], rng: random.Random) -> list[str]:
    """All distractor sentences in a random order (each template once, so long posts stay varied)."""
    pool = [fill(t, fields) for t in DISTRACTORS]
    rng.shuffle(pool)
    return pool


def render_post(facts: dict, gender: str, rng: random.Random) -> tuple[str, str, tuple[str, ...]]:
    """(post text, title, distractor sentences used) for the facts."""
    fields = _fields(facts, gender, rng)
    event = EVENT[facts["event"]]
    rel = RELATION[facts["relation"]]
    with_dur, without_dur = BONDS[rel.kind]
    bond = fill(pick(rng, with_dur if facts["duration"] else without_dur), fields)
    intro = fill(pick(rng, INTROS), {**fields, "bond": bond})
    core: list[list[str]] = [[intro], [fill(pick(rng, event.post), fields)]]
    if facts["feeling"]:
        core.append([fill(pick(rng, FEELING_SENTENCES), fields)])
    if facts["ask"]:
        core.append([fill(pick(rng, ASK[facts["ask"]].post), fields)])
    target, long = _target_words(rng)

    opener = [fill(pick(rng, OPENERS), fields)] if rng.random() < 0.3 else []
    edits = [fill(pick(rng, EDITS), fields)] if rng.random() < 0.3 else []
    used = opener + edits
    pool = _distractor_pool(fields, rng)
    neutral = list(NEUTRAL)
    rng.shuffle(neutral)
    # Backstory goes between the intro and the event; neutral sentences pad the event and later paragraphs.
    backstory: list[list[str]] = [[]]
    words = _words([opener, edits, *core])
    # Every post carries at least one distractor so that the verbose policy always has material.
    while (words < target or len(used) < 1) and (pool or neutral):
        if pool and (rng.random() < 0.6 or not neutral):
            sentence = pool.pop()
            used.append(sentence)
            if len(backstory[-1]) >= rng.randint(2, 4):
                backstory.append([])
            backstory[-1].append(sentence)
        else:
            sentence = neutral.pop()
            pick(rng, core[1:]).append(sentence)
        words += len(sentence.split())
    if facts["ask"] and rng.random() < 0.3:
        core[-1].append(pick(rng, FILLER_SENTENCES))
    blocks = [" ".join(p) for p in (opener, core[0], *backstory, *core[1:], edits) if p]
    # A few long posts come as one wall of text: newline truncation cannot help there.
    sep = " " if long and rng.random() < 0.2 else "\n"
    return sep.join(blocks), _title(facts, fields, rng), tuple(used)
