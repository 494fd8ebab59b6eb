"""Summaries of ``tldr-synth``: one composer writes every text from (possibly altered) facts, the human-like
reference and the named comparison policies (``POLICIES``, drawn with ``POLICY_WEIGHTS``)."""

from __future__ import annotations

import random
import re

from nplus.tasks.posts import Post, age_token, fill, pick, pronouns
from nplus.tasks.world import (
    ASK,
    ASKS,
    EVENT,
    EVENTS,
    FEELINGS,
    RELATION,
    RELATIONS,
    SLOTS,
    SUMMARY_FILLERS_PREFIX,
    SUMMARY_FILLERS_SUFFIX,
    Event,
)

FEELING_CLAUSES = ("I feel {feeling}", "feeling {feeling}", "I'm {feeling}", "now I'm {feeling}", "I'm so {feeling}")
GENERIC_VPS = ("did something that upset me", "messed up badly", "crossed a line")
# "for how long", attached to the counterpart ("my bf of 2 years") or as its own clause.
# Always "for {dur}", the words every post uses ("have been dating for 2 years"): a TL;DR restates the duration in
# the post's own surface form, so restating it is one in-context copy after "for".
DURATION_PHRASES: dict[str, tuple[str, ...]] = {
    "romantic": ("(together for {dur})", "(dating for {dur})"),
    "friend": ("(friends for {dur})",),
    "roommate": ("(living together for {dur})",),
    "family": ("(not getting along for {dur})", "(arguing for {dur})"),
    "work": ("(working together for {dur})",),
    "legal": ("(for {dur})",),
}
# A word for the counterpart that names no relation (used when the relation is left out).
VAGUE_COUNTERPART = "partner"


def _counterpart_phrase(facts: dict, fields: dict[str, str], rng: random.Random) -> str:
    """ "my bf (26M) of 2 years": relation, counterpart age and duration, whichever facts are present."""
    rel = RELATION[facts["relation"]] if facts["relation"] else None
    if rel is None:
        head = fields["he"]
    else:
        head = "my " + (rel.short if rng.random() < 0.3 else rel.name)
    if facts["counterpart"]:
        head += f" ({facts['counterpart'].upper()})"
    if facts["duration"]:
        head += " " + pick(rng, DURATION_PHRASES[rel.kind if rel else "legal"]).format(dur=facts["duration"])
    return head


def _narrator_event_clauses(facts: dict, event: Event, fields: dict[str, str], rng: random.Random) -> list[str]:
    """ "I (24F) locked my bf out of the house. He is 26M, 2 years together." (tifu-style posts)."""
    rel = RELATION[facts["relation"]] if facts["relation"] else None
    word = (rel.short if rng.random() < 0.3 else rel.name) if rel else VAGUE_COUNTERPART
    subject = f"I ({facts['narrator'].upper()})" if facts["narrator"] else "I"
    clauses = [f"{subject} {fill(pick(rng, event.vp), {**fields, 'rel': word})}."]
    context = []
    if facts["counterpart"]:
        context.append(f"{fields['he']} ({facts['counterpart'].upper()})")
    if facts["duration"]:
        romantic = rel is not None and rel.kind == "romantic"
        context.append(
            f"together for {facts['duration']}" if romantic else f"known {fields['him']} for {facts['duration']}"
        )
    if context:
        clauses.append(", ".join(context) + ".")
    return clauses


def _counterpart_event_clauses(
    facts: dict, event: Event | None, fields: dict[str, str], rng: random.Random
) -> list[str]:
    """ "I (24F) found out my bf (26M) of 2 years cheated on me." and variants."""
    who = _counterpart_phrase(facts, fields, rng)
    vp = fill(pick(rng, event.vp), fields) if event else pick(rng, GENERIC_VPS)
    narrator = facts["narrator"].upper() if facts["narrator"] else None
    style = rng.randrange(3) if narrator else 3
    if style == 0:
        return [f"I ({narrator}) found out {who} {vp}."]
    if style == 1:
        return [f"Me ({narrator}): {who} {vp}."]
    if style == 2:
        return [f"{who} {vp}.", f"Me ({narrator})."]
    return [f"{who} {vp}."]


def ask_clause(facts: dict, fields: dict[str, str], rng: random.Random, post: str | None) -> tuple[str, bool]:
    """The poster's question as a TL;DR restates it, and whether it was copied: in the post's own words when
    ``post`` states this ask (a summary copies the question), else a summary phrasing of it. The draw is made
    either way, so the rest of the summary's template draws do not depend on whether the post is given."""
    ask = ASK[facts["ask"]]
    phrased = fill(pick(rng, ask.summary), fields)
    for question in (fill(q, fields) for q in ask.post):
        if post is not None and question in post:
            return question, True
    return phrased, False


def compose_summary(facts: dict, gender: str, rng: random.Random, post: str | None = None) -> list[str]:
    """The clauses of a concise summary of ``facts`` (a slot whose value is None is left out); ``post``, when
    given, is the text the summary restates (its question is copied, :func:`ask_clause`).

    Returned as clauses so that policies can repeat or cut them; the summary is ``" ".join(clauses)``.
    """
    fields = pronouns(gender)
    event = EVENT[facts["event"]] if facts["event"] else None
    if event is not None and event.actor == "me":
        clauses = _narrator_event_clauses(facts, event, fields, rng)
    else:
        clauses = _counterpart_event_clauses(facts, event, fields, rng)
    if facts["feeling"]:
        clauses.append(pick(rng, FEELING_CLAUSES).format(feeling=facts["feeling"]) + ".")
    copied = None
    if facts["ask"]:
        clause, was_copied = ask_clause(facts, fields, rng, post)
        clauses.append(clause)
        copied = len(clauses) - 1 if was_copied else None
    if rng.random() < 0.3:  # many real TL;DRs are written all lowercase (ages, and a question copied from the post,
        # stay as the post writes them: copying keeps the post's tokens)
        return [c if i == copied else _AGE.sub(lambda m: m.group(0).upper(), c.lower()) for i, c in enumerate(clauses)]
    return [c[0].upper() + c[1:] for c in clauses]


_AGE = re.compile(r"\(\d+[fm]\)")


def _drop(facts: dict, slot: str) -> dict:
    return {**facts, slot: None}


def _present(facts: dict, slots) -> list[str]:
    return [s for s in slots if facts[s]]


# Share of reference writers who leave the post's question out of their TL;DR. The summary then reports what
# happened and not what the poster asks; the gold judge still counts the ask (weight 2), so a policy that
# restates it beats such a reference. Above one half, so that imitation (SFT, decoded near-greedily) learns to
# leave it out too and there is something for a reward model trained on preferences to teach (DETAILS.md §4:
# SFT is below the references, PPO above them).
REFERENCE_ASK_OMIT = 0.6


def reference_summary(facts: dict, gender: str, rng: random.Random, post: str | None = None) -> str:
    """A human-like reference: concise, but most leave the question out, a quarter omit a lower-priority fact
    and some add a filler phrase."""
    if facts["ask"] and rng.random() < REFERENCE_ASK_OMIT:
        facts = _drop(facts, "ask")
    optional = _present(facts, ("duration", "feeling", "narrator", "counterpart"))
    if optional and rng.random() < 0.25:
        facts = _drop(facts, pick(rng, optional))
    text = " ".join(compose_summary(facts, gender, rng, post))
    if rng.random() < 0.15:
        if rng.random() < 0.5:
            text = pick(rng, SUMMARY_FILLERS_PREFIX) + text[0].lower() + text[1:]
        else:
            text += pick(rng, SUMMARY_FILLERS_SUFFIX)
    return text


def _wrong_value(facts: dict, slot: str, rng: random.Random) -> str:
    """A value of the slot's category that is not the post's (the judge's "wrong fact")."""
    value = facts[slot]
    if slot == "event":
        actor = EVENT[value].actor
        options = [e.name for e in EVENTS if e.actor == actor and e.name != value]
    elif slot == "relation":
        gender = RELATION[value].gender
        options = [r.name for r in RELATIONS if r.name != value and r.gender in (gender, None)]
    elif slot == "ask":
        options = [a.name for a in ASKS if a.name != value]
    elif slot == "feeling":
        options = [f for f in FEELINGS if f != value]
    elif slot == "duration":
        options = [d for d in ("1 year", "3 years", "5 years", "6 months", "8 months", "3 weeks") if d != value]
    else:  # an age token: shift the age
        age, g = int(value[:-1]), value[-1]
        options = [age_token(age + d, g) for d in (-4, -3, -2, 2, 3, 5) if 10 <= age + d <= 99]
    return pick(rng, options)


POLICIES = ("ref", "sup", "omit", "wrong", "verbose", "repeat", "truncated", "title", "short")
# The facts the omit policy may leave out (ages are too cheap for an omission to matter).
OMITTABLE = ("event", "relation", "ask", "duration", "feeling")
# A policy model's commonest failure is a wrong key fact (an SFT policy on this task gets the event wrong in 10-65 %
# of its summaries), and comparing such summaries is what teaches a reward model to check a summary against its
# post. With a wrong fact in 10 % of summaries, spread evenly over seven slots, 4,000 comparisons held ~110 pairs
# with a wrong event, and the reward model trained on them could not rank an SFT policy's own samples (Spearman
# with the gold score 0.00 within a post; docs/tldr-synth.md, "Capability"). So `wrong` is the commonest policy
# and its slot is drawn in proportion to the judge's weight of the fact (WRONG_SLOT_WEIGHTS).
POLICY_WEIGHTS = (0.15, 0.15, 0.1, 0.28, 0.08, 0.07, 0.06, 0.06, 0.05)
WRONG_SLOT_WEIGHTS = {
    "event": 3.0,
    "relation": 2.0,
    "ask": 2.0,
    "duration": 1.0,
    "feeling": 1.0,
    "narrator": 0.5,
    "counterpart": 0.5,
}


def fact_check_pairs(post: Post, seed: int) -> list[tuple[str, str, str]]:
    """Minimal pairs that probe a reward model's fact checking: ``(slot, right, wrong)`` for each slot the post
    has, where ``right`` states every fact and ``wrong`` is the same summary with that slot's value replaced by
    another of its category (the template draws are replayed from ``seed``, so the wording differs only where
    the slot does). A reward model that checks a summary against its post ranks ``right`` first; one that reads
    only the summary's surface is at chance (0.5)."""
    right = " ".join(compose_summary(post.facts, post.gender, random.Random(seed), post.text))
    pairs = []
    for slot in SLOTS:
        if post.facts[slot]:
            value = _wrong_value(post.facts, slot, random.Random(f"{seed}/{slot}"))
            wrong = " ".join(compose_summary({**post.facts, slot: value}, post.gender, random.Random(seed), post.text))
            pairs.append((slot, right, wrong))
    return pairs


def policy_summary(post: Post, policy: str, rng: random.Random) -> str:
    """The summary (no leading space) that a named policy writes for the post.

    ref: the post's reference · sup: a fresh reference-like sample · omit: one key fact left out ·
    wrong: one fact replaced by another value of its category · verbose: plus 1–3 distractor sentences ·
    repeat: a clause repeated · truncated: cut mid-sentence · title: the title copied · short: too terse.
    """
    facts, gender, text = post.facts, post.gender, post.text
    if policy == "ref":
        return post.reference
    if policy == "sup":
        return reference_summary(facts, gender, rng, text)
    # The degraded policies leave the question out as often as the references do: were it always there, stating
    # the question would mark a degraded summary and a reward model would learn to penalize it (measured on
    # tldr-synth-4: minimal pairs with vs without the right question, reward model prefers "without" in 91 %).
    if facts["ask"] and rng.random() < REFERENCE_ASK_OMIT:
        facts = _drop(facts, "ask")
    if policy == "omit":
        return " ".join(compose_summary(_drop(facts, pick(rng, _present(facts, OMITTABLE))), gender, rng, text))
    if policy == "wrong":
        slots = _present(facts, SLOTS)
        slot = rng.choices(slots, weights=[WRONG_SLOT_WEIGHTS[s] for s in slots])[0]
        return " ".join(compose_summary({**facts, slot: _wrong_value(facts, slot, rng)}, gender, rng, text))
    if policy == "verbose":
        clauses = compose_summary(facts, gender, rng, text)
        extra = rng.sample(post.distractors, k=min(len(post.distractors), rng.randint(1, 3)))
        for sentence in extra:
            clauses.insert(rng.randint(0, len(clauses)), sentence)
        return " ".join(clauses)
    if policy == "repeat":
        clauses = compose_summary(facts, gender, rng, text)
        i = rng.randrange(len(clauses))
        clauses[i + 1 : i + 1] = [clauses[i]] * rng.randint(1, 2)
        return " ".join(clauses)
    if policy == "truncated":
        words = " ".join(compose_summary(facts, gender, rng, text)).split()
        return " ".join(words[: max(2, int(len(words) * rng.uniform(0.35, 0.65)))])
    if policy == "title":
        return post.title
    if policy == "short":
        event = EVENT[facts["event"]]
        rel = RELATION[facts["relation"]]
        vp = fill(event.vp[0], {**pronouns(gender), "rel": rel.short})
        options = (vp, f"{rel.short} drama") + ((f"{rel.short} {vp}",) if event.actor == "them" else ())
        return pick(rng, options)
    raise ValueError(f"unknown policy {policy!r}; expected one of {POLICIES}")
