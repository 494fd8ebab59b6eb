"""``tldr-synth``: a generated TL;DR corpus in the exact schemas of the public datasets (reference/DETAILS.md §6).

Every post is rendered from latent *facts* (who: narrator and counterpart with ages, genders and relation; what
happened; for how long; how the narrator feels; what they ask) plus distractor content (backstory, filler,
``EDIT:`` lines). Reference summaries restate the facts; comparison summaries are written by named policies and
labelled by simulated annotators whose preference is the gold score plus a mild taste for length.

All phrasing comes from finite template pools so that tiny language models can learn to copy facts. The
vocabulary below is also the gold judge's knowledge: ``SLOT_KEYS``, ``DISTRACTOR_MARKERS`` and
``FILLER_PHRASES`` list the surface forms it recognizes (see docs/tldr-synth.md).

Layout written by :func:`generate` (``out_dir``): ``sft/`` and ``comparisons/`` (``datasets.save_to_disk``),
``facts.jsonl``, ``tokenizer/`` and ``card.json``. The same seed and scale give byte-identical files.
"""

from __future__ import annotations

import json
import math
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

# Bump whenever the generated files change for a given (seed, scale). POSTS_VERSION is the part a base model
# depends on (posts, titles, references, tokenizer: its pretraining corpus); VERSION also covers the comparisons,
# which only the reward model reads, so a change to them leaves the committed base models valid.
POSTS_VERSION = "tldr-synth-3"
VERSION = "tldr-synth-4"
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
# The world: relations, events, asks, feelings. ``keys`` are the forms the gold judge recognizes; every
# template that expresses a fact contains one of its value's keys and no key of another value.


@dataclass(frozen=True)
class Relation:
    name: str
    kind: str  # romantic / family / friend / roommate / work / legal
    gender: str | None  # fixed by the word (boyfriend → M), else drawn per post
    keys: tuple[str, ...]
    short: str  # the form a hurried summary writer uses ("bf")


RELATIONS: tuple[Relation, ...] = (
    Relation("boyfriend", "romantic", "M", ("boyfriend", "bf"), "bf"),
    Relation("girlfriend", "romantic", "F", ("girlfriend", "gf"), "gf"),
    Relation("husband", "romantic", "M", ("husband",), "husband"),
    Relation("wife", "romantic", "F", ("wife",), "wife"),
    Relation("fiance", "romantic", "M", ("fiance",), "fiance"),
    Relation("fiancee", "romantic", "F", ("fiancee",), "fiancee"),
    Relation("mom", "family", "F", ("mom", "mother"), "mom"),
    Relation("dad", "family", "M", ("dad", "father"), "dad"),
    Relation("sister", "family", "F", ("sister",), "sister"),
    Relation("brother", "family", "M", ("brother",), "brother"),
    Relation("best friend", "friend", None, ("best friend", "bff"), "bff"),
    Relation("roommate", "roommate", None, ("roommate",), "roommate"),
    Relation("boss", "work", None, ("boss", "manager"), "boss"),
    Relation("coworker", "work", None, ("coworker",), "coworker"),
    Relation("landlord", "legal", None, ("landlord",), "landlord"),
    Relation("neighbor", "legal", None, ("neighbor",), "neighbor"),
)
RELATION = {r.name: r for r in RELATIONS}


@dataclass(frozen=True)
class Event:
    name: str
    actor: Literal["them", "me"]  # who did it: the counterpart, or the narrator (tifu)
    relations: tuple[str, ...]
    keys: tuple[str, ...]
    post: tuple[str, ...]  # narrative sentences for the post
    vp: tuple[str, ...]  # summary verb phrases (subject supplied by the summary template)
    title: str  # "TIFU by ..." gerund for narrator events, else a verb phrase


ROMANTIC = ("boyfriend", "girlfriend", "husband", "wife", "fiance", "fiancee")
FAMILY = ("mom", "dad", "sister", "brother")
PERSONAL = ROMANTIC + FAMILY + ("best friend", "roommate")

EVENTS: tuple[Event, ...] = (
    Event("cheated", "them", ROMANTIC, ("cheated", "cheating"),
          ("Last week I found out that {he} cheated on me with someone {he} met online.",
           "A few days ago {he} admitted that {he} cheated on me while I was away.",
           "I recently discovered that {he} has been cheating on me for a while."),
          ("cheated on me", "has been cheating on me"), "cheated on me"),
    Event("texting_ex", "them", ROMANTIC, ("texting his ex", "texting her ex"),
          ("Yesterday I saw that {he} has been texting {his} ex every night and hiding it.",
           "I noticed {he} keeps texting {his} ex late at night and gets defensive when I ask."),
          ("has been texting {his} ex", "keeps texting {his} ex"), "keeps texting {his} ex"),
    Event("forgot_birthday", "them", ROMANTIC + FAMILY + ("best friend",), ("birthday",),
          ("{He} completely forgot my birthday last weekend and didn't even call.",
           "My birthday was on Saturday and {he} forgot it entirely, not even a message."),
          ("forgot my birthday", "completely forgot my birthday"), "forgot my birthday"),
    Event("went_through_phone", "them", ROMANTIC + FAMILY + ("roommate",), ("through my phone",),
          ("I caught {him} going through my phone while I was in the shower.",
           "{He} has been secretly going through my phone when I'm asleep."),
          ("went through my phone", "has been going through my phone"), "went through my phone"),
    Event("another_country", "them", ROMANTIC + ("best friend",), ("another country",),
          ("{He} just told me {he} accepted a job in another country without asking me first.",
           "Out of the blue {he} announced that {he} is moving to another country."),
          ("is moving to another country", "took a job in another country"), "is moving to another country"),
    Event("hid_debt", "them", ROMANTIC, ("debt",),
          ("I found out {he} has been hiding a huge amount of debt from me.",
           "While looking at some mail I discovered {he} is deep in debt and never told me."),
          ("hid {his} debt from me", "has been hiding a lot of debt"), "hid {his} debt from me"),
    Event("open_relationship", "them", ROMANTIC, ("open relationship",),
          ("Out of nowhere {he} told me {he} wants an open relationship.",
           "Last night {he} sat me down and said {he} wants to try an open relationship."),
          ("wants an open relationship", "asked for an open relationship"), "wants an open relationship"),
    Event("ghosted", "them", ROMANTIC + ("best friend",), ("ghosted", "stopped talking to me"),
          ("{He} suddenly stopped talking to me and has basically ghosted me.",
           "A couple of weeks ago {he} ghosted me without any explanation."),
          ("ghosted me", "stopped talking to me"), "ghosted me"),
    Event("no_time", "them", ROMANTIC + FAMILY + ("best friend",), ("makes time for me", "make time for me"),
          ("{He} never makes time for me anymore and keeps cancelling our plans.",
           "Lately {he} never makes time for me, it's always something else first."),
          ("never makes time for me", "won't make time for me"), "never makes time for me"),
    Event("hates_friends", "them", ROMANTIC, ("hates my friends",),
          ("{He} keeps saying {he} hates my friends and doesn't want me to see them.",
           "Every time I go out {he} reminds me that {he} hates my friends."),
          ("hates my friends", "says {he} hates my friends"), "hates my friends"),
    Event("borrowed_money", "them", ROMANTIC + FAMILY + ("best friend", "roommate"), ("borrowed",),
          ("{He} borrowed $1,500 from me and never paid it back.",
           "A while ago {he} borrowed a lot of money from me and now acts like it never happened."),
          ("borrowed money and never paid it back", "borrowed money from me"), "borrowed money and never paid it back"),
    Event("skipped_wedding", "them", FAMILY + ("best friend",), ("wedding",),
          ("{He} skipped my wedding without telling me why.",
           "{He} didn't show up to my wedding and still hasn't explained."),
          ("skipped my wedding", "didn't come to my wedding"), "skipped my wedding"),
    Event("told_secret", "them", FAMILY + ("best friend", "coworker"), ("secret",),
          ("{He} told everyone a secret I had trusted {him} with.",
           "I found out {he} spread a secret I shared with {him} in confidence."),
          ("told everyone my secret", "spread my secret"), "told everyone my secret"),
    Event("stole", "them", FAMILY + ("roommate",), ("stole", "stealing"),
          ("I caught {him} stealing cash from my wallet.",
           "{He} stole from me and thinks I haven't noticed."),
          ("stole from me", "has been stealing from me"), "stole from me"),
    Event("never_cleans", "them", ("roommate",), ("never cleans",),
          ("{He} never cleans up after {himself} and the kitchen is disgusting.",
           "{He} never cleans anything and leaves dishes piled up for days."),
          ("never cleans", "never cleans up after {himself}"), "never cleans"),
    Event("stopped_rent", "them", ("roommate",), ("rent",),
          ("{He} stopped paying {his} share of the rent.",
           "For a while now {he} has not paid any rent and keeps making excuses."),
          ("stopped paying rent", "won't pay {his} share of the rent"), "stopped paying rent"),
    Event("loud_parties", "them", ("roommate", "neighbor"), ("parties",),
          ("{He} throws loud parties every weekend until very late.",
           "Every weekend {he} has loud parties that keep me up all night."),
          ("throws loud parties", "keeps throwing loud parties"), "throws loud parties"),
    Event("took_credit", "them", ("boss", "coworker"), ("took credit", "taking credit"),
          ("{He} took credit for a project I worked on for weeks.",
           "In a meeting {he} presented my work and took credit for all of it."),
          ("took credit for my work", "keeps taking credit for my work"), "took credit for my work"),
    Event("fired", "them", ("boss",), ("fired",),
          ("{He} fired me over a single small mistake.",
           "Yesterday {he} fired me with no warning at all."),
          ("fired me", "fired me over a small mistake"), "fired me"),
    Event("withheld_paycheck", "them", ("boss",), ("paycheck",),
          ("{He} still hasn't paid me my last paycheck.",
           "I left on good terms but {he} refuses to send my final paycheck."),
          ("won't pay my last paycheck", "is holding my final paycheck"), "won't pay my last paycheck"),
    Event("yelled", "them", ("boss", "coworker", "mom", "dad"), ("yelled", "yelling"),
          ("{He} yelled at me in front of everyone over nothing.",
           "{He} started yelling at me in front of other people for no reason."),
          ("yelled at me in front of everyone", "keeps yelling at me"), "yelled at me in front of everyone"),
    Event("kept_deposit", "them", ("landlord",), ("deposit",),
          ("{He} kept my entire security deposit after I left the place.",
           "{He} is refusing to give back my security deposit even though the place was spotless."),
          ("kept my security deposit", "won't return my deposit"), "kept my security deposit"),
    Event("without_notice", "them", ("landlord",), ("without notice",),
          ("{He} keeps coming into my place without notice.",
           "Several times now {he} has let {himself} in without notice while I was out."),
          ("enters my place without notice", "keeps coming in without notice"), "enters my place without notice"),
    Event("backed_into_car", "them", ("neighbor", "roommate"), ("backed into my car",),
          ("{He} backed into my car and refuses to pay for the damage.",
           "Last month {he} backed into my car and now pretends it wasn't {him}."),
          ("backed into my car", "backed into my car and won't pay"), "backed into my car"),
    Event("cut_tree", "them", ("neighbor",), ("tree",),
          ("{He} cut down a tree on my side of the fence without asking.",
           "While I was away {he} cut down the old tree in my yard."),
          ("cut down my tree", "cut down a tree on my side"), "cut down my tree"),
    Event("wrong_text", "me", PERSONAL + ("coworker",), ("meant for someone else", "wrong text"),
          ("I accidentally sent my {rel} a text that was meant for someone else.",
           "This morning I sent my {rel} a very private text meant for someone else."),
          ("sent my {rel} a text meant for someone else", "sent the wrong text to my {rel}"),
          "sending my {rel} a text meant for someone else"),
    Event("spilled_laptop", "me", PERSONAL + ("coworker",), ("laptop",),
          ("I knocked a full mug over and ruined my {rel}'s laptop.",
           "I spilled a drink all over my {rel}'s laptop right before {his} deadline."),
          ("ruined my {rel}'s laptop", "spilled a drink on my {rel}'s laptop"), "ruining my {rel}'s laptop"),
    Event("wrong_name", "me", ROMANTIC, ("wrong name",),
          ("In the middle of dinner I called my {rel} by the wrong name.",
           "I called my {rel} the wrong name in front of {his} whole family."),
          ("called my {rel} the wrong name", "used the wrong name with my {rel}"), "calling my {rel} the wrong name"),
    Event("locked_out", "me", PERSONAL, ("locked",),
          ("I locked my {rel} out of the house overnight by accident.",
           "Without thinking I locked the door and left my {rel} locked out all night."),
          ("locked my {rel} out of the house", "accidentally locked my {rel} out"),
          "locking my {rel} out of the house"),
)
EVENT = {e.name: e for e in EVENTS}


@dataclass(frozen=True)
class Ask:
    name: str
    kinds: tuple[str, ...]  # relation kinds it fits ("tifu" for narrator events)
    keys: tuple[str, ...]
    post: tuple[str, ...]  # questions as written in the post
    summary: tuple[str, ...]  # questions as written in a summary


ASKS: tuple[Ask, ...] = (
    Ask("break_up", ("romantic",), ("break up", "end things", "ending things"),
        ("Should I break up with {him}?", "Is it time to end things?"),
        ("should I break up with {him}?", "thinking about ending things.", "should I end things?")),
    Ask("confront", ("romantic", "family", "friend", "roommate", "work"), ("confront",),
        ("How do I confront {him} about this?", "What is the best way to confront {him}?"),
        ("how do I confront {him}?", "how should I confront {him}?")),
    Ask("forgive", ("romantic", "family", "friend"), ("forgive",),
        ("Should I forgive {him}?", "Is this something I can forgive?"),
        ("should I forgive {him}?", "can I forgive {him}?")),
    Ask("trust_again", ("romantic",), ("trust him again", "trust her again"),
        ("How can I ever trust {him} again?", "Is it possible to trust {him} again?"),
        ("how do I trust {him} again?", "can I trust {him} again?")),
    Ask("overreacting", ("romantic", "family", "friend", "work"), ("overreacting",),
        ("Am I overreacting here?", "Please tell me if I'm overreacting."),
        ("am I overreacting?", "am I overreacting here?")),
    Ask("bring_up", ("romantic", "family", "friend", "roommate", "work"), ("bring it up",),
        ("How do I bring it up without starting a fight?", "How should I bring it up with {him}?"),
        ("how do I bring it up?", "how do I bring it up with {him}?")),
    Ask("move_out", ("roommate",), ("move out",),
        ("Should I just move out?", "Would it be crazy to move out over this?"),
        ("should I move out?", "thinking about whether to move out.")),
    Ask("money_back", ("family", "friend", "roommate", "legal"), ("money back",),
        ("How do I get my money back?", "Is there any way to get my money back?"),
        ("how do I get my money back?", "how can I get my money back?")),
    Ask("quit", ("work",), ("quit",),
        ("Should I just quit?", "Would it be smart to quit over this?"),
        ("should I quit?", "thinking about whether to quit.")),
    Ask("report", ("work", "legal"), ("report him", "report her"),
        ("Should I report {him}?", "Is it worth it to report {him}?"),
        ("should I report {him}?", "is it worth it to report {him}?")),
    Ask("small_claims", ("legal",), ("small claims",),
        ("Can I take {him} to small claims court?", "Is this worth taking to small claims?"),
        ("can I take {him} to small claims?", "is small claims worth it?")),
    Ask("apologize", ("tifu",), ("apologize",),
        ("How do I even apologize for this?", "What's the best way to apologize?"),
        ("how do I apologize?", "how should I apologize?")),
)
ASK = {a.name: a for a in ASKS}
# Asks that only make sense when the event is about money.
MONEY_EVENTS = ("borrowed_money", "stole", "stopped_rent", "withheld_paycheck", "kept_deposit", "backed_into_car")

FEELINGS: tuple[str, ...] = (
    "hurt", "angry", "confused", "anxious", "betrayed", "heartbroken", "embarrassed", "guilty", "stressed",
    "frustrated", "lonely", "disrespected", "humiliated", "furious",
)
# Narrator events call for feelings about oneself.
TIFU_FEELINGS = ("embarrassed", "guilty", "humiliated", "anxious", "stressed")

# ----------------------------------------------------------------------------------------------------------
# Subreddits: which events they carry, how often a post asks something.


@dataclass(frozen=True)
class Subreddit:
    name: str
    weight: float
    events: tuple[str, ...]
    ask_rate: float


_THEM = tuple(e.name for e in EVENTS if e.actor == "them")
_ME = tuple(e.name for e in EVENTS if e.actor == "me")
_PERSONAL_THEM = tuple(n for n in _THEM if set(EVENT[n].relations) & set(PERSONAL))
SUBREDDITS: tuple[Subreddit, ...] = (
    Subreddit("relationships", 0.34, _PERSONAL_THEM, 0.9),
    Subreddit("relationship_advice", 0.12, _PERSONAL_THEM, 0.9),
    Subreddit("dating_advice", 0.04, tuple(n for n in _THEM if set(EVENT[n].relations) & set(ROMANTIC)), 0.9),
    Subreddit("AskReddit", 0.07, _PERSONAL_THEM, 0.8),
    Subreddit("tifu", 0.10, _ME, 0.3),
    Subreddit("personalfinance", 0.06,
              ("borrowed_money", "hid_debt", "stopped_rent", "stole", "withheld_paycheck"), 0.9),
    Subreddit("legaladvice", 0.07, ("kept_deposit", "without_notice", "backed_into_car", "cut_tree",
                                    "withheld_paycheck", "loud_parties", "fired"), 0.9),
    Subreddit("jobs", 0.05, ("took_credit", "fired", "withheld_paycheck", "yelled", "told_secret"), 0.9),
    Subreddit("offmychest", 0.05, _THEM, 0.0),
    Subreddit("Advice", 0.10, _THEM, 0.9),
)

# ----------------------------------------------------------------------------------------------------------
# Distractor content. Every distractor sentence carries at least one marker word (the gold judge penalizes
# markers in a summary); neutral sentences carry none and only cost length.

PETS = ("dog", "cat", "hamster", "parrot", "rabbit")
PET_NAMES = ("Max", "Luna", "Milo", "Bella", "Daisy", "Oliver")
JOBS = ("nurse", "barista", "teacher", "accountant", "mechanic", "cashier", "engineer", "chef", "plumber")
STATES = ("Ohio", "Texas", "Oregon", "Florida", "Michigan", "Arizona")
HOBBIES = ("hiking", "gaming", "painting", "climbing", "gardening", "knitting", "baking")
PLACES = ("the gym", "a concert", "college", "a barbecue")
COUNTRIES = ("Japan", "Italy", "Mexico", "Iceland", "Portugal")

DISTRACTORS: tuple[str, ...] = (
    "We met at {place} a while back.",
    "I have a {pet} named {pet_name} who is basically my whole world.",
    "For context, I work as {a_job} and my hours are all over the place.",
    "I grew up in a small town in {state} and moved away after high school.",
    "On weekends I'm usually {hobby} or just relaxing at home.",
    "The weather here has been awful lately, which doesn't help.",
    "I've been training for a marathon so I'm exhausted most evenings.",
    "We watch a lot of Netflix and order pizza most Fridays.",
    "My {pet} {pet_name} hates thunderstorms and hides under the bed every time.",
    "I started {hobby} last spring and I really love it.",
    "I'm also taking night classes at a community college.",
    "Our {pet} {pet_name} got sick recently but is doing fine now.",
    "I've been listening to a true crime podcast on my commute.",
    "Being {a_job} keeps me busy, especially around the holidays.",
    "We both love {hobby}, it's kind of our thing.",
    "I recently moved to {state} for a fresh start.",
    "I'm saving up for a trip to {country} next summer.",
    "My grandma taught me how to bake when I was little.",
    "I play guitar in a small band on weekends.",
    "We adopted a {pet} together and named it {pet_name}.",
    "My commute is long because I live on the far side of {state_city}.",
    "Most nights I cook dinner and we watch something on Netflix.",
    "I've been trying to get back into {hobby} since the holidays.",
    "Last summer I finally visited {country}, which was amazing.",
    "My {pet} {pet_name} follows me around the house all day.",
    "I used to be {a_job} before switching careers.",
)
OPENERS: tuple[str, ...] = (
    "Throwaway because {he} knows my main account.",
    "Long time lurker, first time poster.",
    "Sorry for any typos, I'm on mobile.",
    "Sorry about the formatting, I'm on mobile.",
)
EDITS: tuple[str, ...] = (
    "EDIT: formatting.",
    "EDIT: thanks for all the replies, I'm reading every one.",
    "EDIT: a lot of people asked about my {pet}, {pet_name} is fine.",
    "UPDATE: nothing has changed yet, I'll post an update when I can.",
    "EDIT: wow, this got way more replies than I expected.",
)
NEUTRAL: tuple[str, ...] = (
    "It happened pretty much out of nowhere.",
    "I only found out by accident.",
    "I keep replaying the whole thing in my head.",
    "Nothing like this has ever happened between us before.",
    "I haven't told anyone else about it yet.",
    "We talked for a long time afterwards but it went nowhere.",
    "Part of me thinks I should just wait and see.",
    "I tried to stay calm when it happened.",
    "Things were going really well until this.",
    "I want to handle this the right way.",
    "Everyone I know has a different opinion about it.",
    "It has been on my mind every single day.",
    "I don't want to make things worse than they already are.",
    "I can't really sleep because of it.",
    "I keep going back and forth on what to do.",
    "It feels like everything changed overnight.",
    "I've written and deleted this post a few times now.",
    "Maybe I'm reading too much into it, maybe not.",
    "I really don't know how to feel about any of it.",
    "There's probably more to the story that I'm missing.",
)
FILLER_SENTENCES: tuple[str, ...] = (
    "Any advice would be appreciated.",
    "Please help, I'm at a loss here.",
    "Thanks in advance.",
    "So yeah, that's where things are.",
)
DISTRACTOR_MARKERS: tuple[str, ...] = (
    *PETS, *(n.lower() for n in PET_NAMES), *JOBS, *(s.lower() for s in STATES), *HOBBIES,
    *(c.lower() for c in COUNTRIES),
    "gym", "concert", "college", "barbecue", "weather", "marathon", "netflix", "pizza", "thunderstorms", "podcast",
    "commute", "grandma", "guitar", "band", "throwaway", "lurker", "typos", "mobile", "formatting", "edit", "update",
    "replies",
)
# Phrases a summary writer adds without content; the judge charges them as irrelevant.
FILLER_PHRASES: tuple[str, ...] = (
    "long story short", "basically", "idk", "please help", "any advice", "so yeah", "thanks in advance", "honestly",
)
SUMMARY_FILLERS_PREFIX = ("long story short, ", "so basically ", "honestly ")
SUMMARY_FILLERS_SUFFIX = (" idk.", " please help.", " any advice?", " so yeah.")

# Which slot each recognized key expresses (the gold judge builds its matcher from this).
SLOT_KEYS: dict[str, dict[str, tuple[str, ...]]] = {
    "relation": {r.name: r.keys for r in RELATIONS},
    "event": {e.name: e.keys for e in EVENTS},
    "ask": {a.name: a.keys for a in ASKS},
    "feeling": {f: (f,) for f in FEELINGS},
}
SLOTS = ("event", "relation", "ask", "duration", "feeling", "narrator", "counterpart")

# ----------------------------------------------------------------------------------------------------------
# Posts


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


def _fill(template: str, fields: dict[str, str]) -> str:
    return template.format(**fields)


def _pick(rng: random.Random, options):
    return options[rng.randrange(len(options))]


def _age_token(age: int, gender: str) -> str:
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
    event = EVENT[_pick(rng, sub.events)]
    if sub.name == "legaladvice":
        candidates = [r for r in event.relations if RELATION[r].kind in ("legal", "work")] or list(event.relations)
    else:
        candidates = [r for r in event.relations if RELATION[r].kind != "legal"] or list(event.relations)
    rel = RELATION[_pick(rng, candidates)]
    gender = rel.gender or _pick(rng, ("M", "F"))
    narrator_gender = _pick(rng, ("M", "F"))
    narrator_age = rng.randint(18, 45)
    kind = "tifu" if event.actor == "me" else rel.kind
    asks = [a.name for a in ASKS if kind in a.kinds and (a.name != "money_back" or event.name in MONEY_EVENTS)]
    feelings = TIFU_FEELINGS if event.actor == "me" else FEELINGS
    facts = {
        "event": event.name,
        "relation": rel.name,
        "ask": _pick(rng, asks) if asks and rng.random() < sub.ask_rate else None,
        "duration": _duration(rng) if rng.random() < 0.85 else None,
        "feeling": _pick(rng, feelings) if rng.random() < 0.85 else None,
        "narrator": _age_token(narrator_age, narrator_gender),
        "counterpart": _age_token(_counterpart_age(rng, rel, narrator_age), gender),
    }
    return sub.name, facts, gender


# How each relation kind says "for how long" in a post's intro: (with a duration, without one).
BONDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "romantic": (("have been together for {dur}", "have been dating for {dur}"),
                 ("have been together for a while", "have been dating for some time")),
    "family": (("haven't been getting along for {dur}", "have been arguing a lot for {dur}"),
               ("have always been close", "usually get along fine")),
    "friend": (("have been friends for {dur}", "have been close friends for {dur}"),
               ("have been friends for a long time", "have always been close")),
    "roommate": (("have lived together for {dur}", "have shared a place for {dur}"),
                 ("live together", "share a place downtown")),
    "work": (("have worked together for {dur}", "have been on the same team for {dur}"),
             ("work together", "are on the same team")),
    "legal": (("have known each other for {dur}", "have dealt with each other for {dur}"),
              ("don't really know each other", "barely talk")),
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
    state = _pick(rng, STATES)
    job = _pick(rng, JOBS)
    return {
        **pronouns(gender),
        "rel": facts["relation"],
        "na": facts["narrator"].upper(),
        "ca": facts["counterpart"].upper(),
        "dur": facts["duration"] or "",
        "feeling": facts["feeling"] or "",
        "pet": _pick(rng, PETS),
        "pet_name": _pick(rng, PET_NAMES),
        "a_job": ("an " if job[0] in "aeiou" else "a ") + job,
        "state": state,
        "state_city": f"town here in {state}",
        "hobby": _pick(rng, HOBBIES),
        "place": _pick(rng, PLACES),
        "country": _pick(rng, COUNTRIES),
    }


def _title(facts: dict, fields: dict[str, str], rng: random.Random) -> str:
    """A short question or statement derived from the facts, as Reddit titles are."""
    event = EVENT[facts["event"]]
    vp = _fill(event.title, fields)
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
        q = _fill(_pick(rng, ASK[facts["ask"]].summary), fields)
        options.append(f"My {fields['rel']} {vp}, {q}")
    return _pick(rng, options)


def _target_words(rng: random.Random) -> tuple[int, bool]:
    """(target word count, long) — about 15 % of posts are long enough to need query truncation."""
    if rng.random() < 0.15:
        return rng.randint(250, 450), True
    return int(rng.triangular(25, 90, 35)), False


def _words(paragraphs: list[list[str]]) -> int:
    return sum(len(s.split()) for p in paragraphs for s in p)


def _distractor_pool(fields: dict[str, str], rng: random.Random) -> list[str]:
    """All distractor sentences in a random order (each template once, so long posts stay varied)."""
    pool = [_fill(t, fields) for t in DISTRACTORS]
    rng.shuffle(pool)
    return pool


def render_post(facts: dict, gender: str, rng: random.Random) -> tuple[str, str, tuple[str, ...]]:
    """(post text, title, distractor sentences used) for the facts."""
    fields = _fields(facts, gender, rng)
    event = EVENT[facts["event"]]
    rel = RELATION[facts["relation"]]
    with_dur, without_dur = BONDS[rel.kind]
    bond = _fill(_pick(rng, with_dur if facts["duration"] else without_dur), fields)
    intro = _fill(_pick(rng, INTROS), {**fields, "bond": bond})
    core: list[list[str]] = [[intro], [_fill(_pick(rng, event.post), fields)]]
    if facts["feeling"]:
        core.append([_fill(_pick(rng, FEELING_SENTENCES), fields)])
    if facts["ask"]:
        core.append([_fill(_pick(rng, ASK[facts["ask"]].post), fields)])
    target, long = _target_words(rng)

    opener = [_fill(_pick(rng, OPENERS), fields)] if rng.random() < 0.3 else []
    edits = [_fill(_pick(rng, EDITS), fields)] if rng.random() < 0.3 else []
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
            _pick(rng, core[1:]).append(sentence)
        words += len(sentence.split())
    if facts["ask"] and rng.random() < 0.3:
        core[-1].append(_pick(rng, FILLER_SENTENCES))
    blocks = [" ".join(p) for p in (opener, core[0], *backstory, *core[1:], edits) if p]
    # A few long posts come as one wall of text: newline truncation cannot help there.
    sep = " " if long and rng.random() < 0.2 else "\n"
    return sep.join(blocks), _title(facts, fields, rng), tuple(used)


# ----------------------------------------------------------------------------------------------------------
# Summaries. One composer writes every policy's text from (possibly altered) facts.

FEELING_CLAUSES = ("I feel {feeling}", "feeling {feeling}", "I'm {feeling}", "now I'm {feeling}", "I'm so {feeling}")
GENERIC_VPS = ("did something that upset me", "messed up badly", "crossed a line")
# "for how long", attached to the counterpart ("my bf of 2 years") or as its own clause.
DURATION_PHRASES: dict[str, tuple[str, ...]] = {
    "romantic": ("of {dur}", "(together for {dur})"), "friend": ("of {dur}", "(friends for {dur})"),
    "roommate": ("of {dur}", "(living together for {dur})"), "family": ("(going on {dur})",),
    "work": ("(working together for {dur})",), "legal": ("(for {dur})",),
}
# A word for the counterpart that names no relation (used when the relation is left out).
VAGUE_COUNTERPART = "partner"


def _counterpart_phrase(facts: dict, fields: dict[str, str], rng: random.Random) -> str:
    """"my bf (26M) of 2 years": relation, counterpart age and duration, whichever facts are present."""
    rel = RELATION[facts["relation"]] if facts["relation"] else None
    if rel is None:
        head = fields["he"]
    else:
        head = "my " + (rel.short if rng.random() < 0.3 else rel.name)
    if facts["counterpart"]:
        head += f" ({facts['counterpart'].upper()})"
    if facts["duration"]:
        head += " " + _pick(rng, DURATION_PHRASES[rel.kind if rel else "legal"]).format(dur=facts["duration"])
    return head


def _narrator_event_clauses(facts: dict, event: Event, fields: dict[str, str], rng: random.Random) -> list[str]:
    """"I (24F) locked my bf out of the house. He is 26M, 2 years together." (tifu-style posts)."""
    rel = RELATION[facts["relation"]] if facts["relation"] else None
    word = (rel.short if rng.random() < 0.3 else rel.name) if rel else VAGUE_COUNTERPART
    subject = f"I ({facts['narrator'].upper()})" if facts["narrator"] else "I"
    clauses = [f"{subject} {_fill(_pick(rng, event.vp), {**fields, 'rel': word})}."]
    context = []
    if facts["counterpart"]:
        context.append(f"{fields['he']} ({facts['counterpart'].upper()})")
    if facts["duration"]:
        romantic = rel is not None and rel.kind == "romantic"
        context.append(f"together for {facts['duration']}" if romantic else f"known {fields['him']} for {facts['duration']}")
    if context:
        clauses.append(", ".join(context) + ".")
    return clauses


def _counterpart_event_clauses(facts: dict, event: Event | None, fields: dict[str, str],
                               rng: random.Random) -> list[str]:
    """"I (24F) found out my bf (26M) of 2 years cheated on me." and variants."""
    who = _counterpart_phrase(facts, fields, rng)
    vp = _fill(_pick(rng, event.vp), fields) if event else _pick(rng, GENERIC_VPS)
    narrator = facts["narrator"].upper() if facts["narrator"] else None
    style = rng.randrange(3) if narrator else 3
    if style == 0:
        return [f"I ({narrator}) found out {who} {vp}."]
    if style == 1:
        return [f"Me ({narrator}): {who} {vp}."]
    if style == 2:
        return [f"{who} {vp}.", f"Me ({narrator})."]
    return [f"{who} {vp}."]


def compose_summary(facts: dict, gender: str, rng: random.Random) -> list[str]:
    """The clauses of a concise summary of ``facts`` (a slot whose value is None is left out).

    Returned as clauses so that policies can repeat or cut them; the summary is ``" ".join(clauses)``.
    """
    fields = pronouns(gender)
    event = EVENT[facts["event"]] if facts["event"] else None
    if event is not None and event.actor == "me":
        clauses = _narrator_event_clauses(facts, event, fields, rng)
    else:
        clauses = _counterpart_event_clauses(facts, event, fields, rng)
    if facts["feeling"]:
        clauses.append(_pick(rng, FEELING_CLAUSES).format(feeling=facts["feeling"]) + ".")
    if facts["ask"]:
        clauses.append(_fill(_pick(rng, ASK[facts["ask"]].summary), fields))
    if rng.random() < 0.3:  # many real TL;DRs are written all lowercase (ages stay as written in the post)
        return [_AGE.sub(lambda m: m.group(0).upper(), c.lower()) for c in clauses]
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


def reference_summary(facts: dict, gender: str, rng: random.Random) -> str:
    """A human-like reference: concise, but most leave the question out, a quarter omit a lower-priority fact
    and some add a filler phrase."""
    if facts["ask"] and rng.random() < REFERENCE_ASK_OMIT:
        facts = _drop(facts, "ask")
    optional = _present(facts, ("duration", "feeling", "narrator", "counterpart"))
    if optional and rng.random() < 0.25:
        facts = _drop(facts, _pick(rng, optional))
    text = " ".join(compose_summary(facts, gender, rng))
    if rng.random() < 0.15:
        if rng.random() < 0.5:
            text = _pick(rng, SUMMARY_FILLERS_PREFIX) + text[0].lower() + text[1:]
        else:
            text += _pick(rng, SUMMARY_FILLERS_SUFFIX)
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
        options = [_age_token(age + d, g) for d in (-4, -3, -2, 2, 3, 5) if 10 <= age + d <= 99]
    return _pick(rng, options)


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
WRONG_SLOT_WEIGHTS = {"event": 3.0, "relation": 2.0, "ask": 2.0, "duration": 1.0, "feeling": 1.0, "narrator": 0.5,
                      "counterpart": 0.5}


def policy_summary(post: Post, policy: str, rng: random.Random) -> str:
    """The summary (no leading space) that a named policy writes for the post.

    ref: the post's reference · sup: a fresh reference-like sample · omit: one key fact left out ·
    wrong: one fact replaced by another value of its category · verbose: plus 1–3 distractor sentences ·
    repeat: a clause repeated · truncated: cut mid-sentence · title: the title copied · short: too terse.
    """
    facts, gender = post.facts, post.gender
    if policy == "ref":
        return post.reference
    if policy == "sup":
        return reference_summary(facts, gender, rng)
    if policy == "omit":
        return " ".join(compose_summary(_drop(facts, _pick(rng, _present(facts, OMITTABLE))), gender, rng))
    if policy == "wrong":
        slots = _present(facts, SLOTS)
        slot = rng.choices(slots, weights=[WRONG_SLOT_WEIGHTS[s] for s in slots])[0]
        return " ".join(compose_summary({**facts, slot: _wrong_value(facts, slot, rng)}, gender, rng))
    if policy == "verbose":
        clauses = compose_summary(facts, gender, rng)
        extra = rng.sample(post.distractors, k=min(len(post.distractors), rng.randint(1, 3)))
        for sentence in extra:
            clauses.insert(rng.randint(0, len(clauses)), sentence)
        return " ".join(clauses)
    if policy == "repeat":
        clauses = compose_summary(facts, gender, rng)
        i = rng.randrange(len(clauses))
        clauses[i + 1:i + 1] = [clauses[i]] * rng.randint(1, 2)
        return " ".join(clauses)
    if policy == "truncated":
        words = " ".join(compose_summary(facts, gender, rng)).split()
        return " ".join(words[: max(2, int(len(words) * rng.uniform(0.35, 0.65)))])
    if policy == "title":
        return post.title
    if policy == "short":
        event = EVENT[facts["event"]]
        rel = RELATION[facts["relation"]]
        vp = _fill(event.vp[0], {**pronouns(gender), "rel": rel.short})
        options = (vp, f"{rel.short} drama") + ((f"{rel.short} {vp}",) if event.actor == "them" else ())
        return _pick(rng, options)
    raise ValueError(f"unknown policy {policy!r}; expected one of {POLICIES}")


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
        reference = reference_summary(facts, gender, rng)
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


# ----------------------------------------------------------------------------------------------------------
# Comparisons: two policies' summaries of one post, labelled by a simulated annotator.

# Annotators prefer u = gold score + length_bias · ln(words); P(A ≻ B) = σ((u_A − u_B) / τ). τ is set so that
# labels agree with the gold ranking about as often as human labelers agree with each other (≈ 0.75).
TAU = 2.0
LENGTH_BIAS = 1.0
N_WORKERS = 16


@dataclass(frozen=True)
class Worker:
    id: str
    length_bias: float
    tau: float
    weight: float  # share of the labelling work


def make_workers(rng: random.Random) -> list[Worker]:
    """Annotators with their own taste for length and their own noise level."""
    alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
    return [Worker(id="".join(alphabet[rng.randrange(62)] for _ in range(30)),
                   length_bias=LENGTH_BIAS * math.exp(rng.gauss(0.0, 0.3)),
                   tau=TAU * math.exp(rng.gauss(0.0, 0.15)),
                   weight=rng.uniform(0.5, 2.0))
            for _ in range(N_WORKERS)]


def utility(gold_score: float, text: str, worker: Worker) -> float:
    return gold_score + worker.length_bias * math.log(max(1, len(text.split())))


def label(u_a: float, u_b: float, worker: Worker, rng: random.Random) -> tuple[int, int]:
    """(choice, confidence): choice 0 picks the first summary; confidence 1–9 grows with the margin."""
    margin = (u_a - u_b) / worker.tau
    p_a = 1.0 / (1.0 + math.exp(-margin))
    choice = 0 if rng.random() < p_a else 1
    confidence = round(1 + 8 * (1 - math.exp(-abs(margin))) + rng.gauss(0.0, 0.75))
    return choice, min(9, max(1, confidence))


def make_comparisons(posts: list[Post], n: int, split: str, batches: tuple[int, ...], judge,
                     workers: list[Worker], rng: random.Random) -> list[dict]:
    """n comparison rows on posts drawn with replacement; ``batches`` are spread evenly over the rows."""
    rows = []
    worker_weights = [w.weight for w in workers]
    for i in range(n):
        post = _pick(rng, posts)
        first, second = rng.choices(POLICIES, weights=POLICY_WEIGHTS, k=2)
        while second == first == "ref":  # the reference exists once; a ref–ref pair would be identical
            second = rng.choices(POLICIES, weights=POLICY_WEIGHTS)[0]
        texts = [" " + policy_summary(post, p, rng) for p in (first, second)]
        worker = rng.choices(workers, weights=worker_weights)[0]
        gold = [judge.score(post.text, t) for t in texts]
        choice, confidence = label(*(utility(g, t, worker) for g, t in zip(gold, texts)), worker, rng)
        rows.append({
            # site/article are CNN/DM fields of the public schema, null for Reddit posts as there
            "info": {"id": post.id, "post": post.text, "title": post.title, "subreddit": post.subreddit,
                     "site": None, "article": None},
            "summaries": [{"text": t, "policy": p, "note": ""} for t, p in zip(texts, (first, second))],
            "choice": choice,
            "worker": worker.id,
            "batch": f"batch{batches[i * len(batches) // n]}",
            "split": split,
            "extra": {"confidence": confidence},
            "_gold": gold,  # for the card; dropped before saving
        })
    return rows


def build_comparisons(posts: dict[str, list[Post]], seed: int, scale: Scale, judge) -> dict[str, list[dict]]:
    """Comparisons on SFT train posts (split ``train``) and on SFT validation posts (split ``validation``:
    ``valid1`` on the first half of the posts, ``valid2`` on the second)."""
    sizes = SIZES[scale]
    rng = random.Random(f"tldr-synth/comparisons/{seed}")  # a stream of its own, seeded from a str (stable)
    workers = make_workers(rng)
    val = posts["validation"]
    half, n_val = len(val) // 2, sizes.comparisons_validation
    return {
        "train": make_comparisons(posts["train"], sizes.comparisons_train, "train", tuple(range(3, 11)),
                                  judge, workers, rng),
        "validation": make_comparisons(val[:half], n_val // 2, "valid1", (11, 12), judge, workers, rng)
        + make_comparisons(val[half:], n_val - n_val // 2, "valid2", (13, 14), judge, workers, rng),
    }


def label_gold_agreement(rows: list[dict]) -> float:
    """Fraction of labels that pick the summary the gold judge strictly prefers (ties excluded)."""
    decided = [(r["choice"], r["_gold"]) for r in rows if r["_gold"][0] != r["_gold"][1]]
    return sum(c == (0 if g[0] > g[1] else 1) for c, g in decided) / max(1, len(decided))


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
    return Features({
        "info": {"id": text, "post": text, "title": text, "subreddit": text, "site": text, "article": text},
        "summaries": List({"text": text, "policy": text, "note": text}),
        "choice": Value("int32"),
        "worker": text,
        "batch": text,
        "split": text,
        "extra": {"confidence": Value("int32")},
    })


def _sft_dataset(posts: list[Post]):
    from datasets import Dataset

    columns = {"id": [p.id for p in posts], "subreddit": [p.subreddit for p in posts],
               "title": [p.title for p in posts], "post": [p.text for p in posts],
               "summary": [p.reference for p in posts]}
    return Dataset.from_dict(columns, features=sft_features())


def _comparison_dataset(rows: list[dict]):
    from datasets import Dataset

    names = comparison_features().keys()
    return Dataset.from_dict({k: [r[k] for r in rows] for k in names}, features=comparison_features())


def _save(dataset_dict, path: Path) -> None:
    """``save_to_disk`` without progress bars (restoring the caller's setting)."""
    from datasets.utils import disable_progress_bars, enable_progress_bars, are_progress_bars_disabled

    was_disabled = are_progress_bars_disabled()
    disable_progress_bars()
    try:
        dataset_dict.save_to_disk(str(path))
    finally:
        if not was_disabled:
            enable_progress_bars()


def length_stats(values) -> dict[str, float]:
    """mean, p50, p90, p99, max (rounded to 2 decimals so the card is stable and readable)."""
    a = np.asarray(values, dtype=np.float64)
    if a.size == 0:
        return {k: 0.0 for k in ("mean", "p50", "p90", "p99", "max")}
    stats = {"mean": a.mean(), "p50": np.percentile(a, 50), "p90": np.percentile(a, 90),
             "p99": np.percentile(a, 99), "max": a.max()}
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
        "rows": {"sft": {k: len(v) for k, v in posts.items()},
                 "comparisons": {k: len(v) for k, v in comparisons.items()}},
        "lengths": {name: {"chars": length_stats([len(x) for x in t]), "tokens": length_stats(tokens[name])}
                    for name, t in texts.items()},
        "posts_longer_than_tokens": {str(n): round(float((post_tokens > n).mean()), 4) for n in (128, 192, 512)},
        "label_gold_agreement": round(label_gold_agreement(rows), 4),
        "label_gold_agreement_by_split": {k: round(label_gold_agreement(v), 4) for k, v in comparisons.items()},
        "annotators": {"tau": TAU, "length_bias": LENGTH_BIAS, "workers": N_WORKERS},
        "policies": policy_counts,
        "tokenizer": {"vocab_size": len(tokenizer)},
    }


def generate(out_dir: Path, seed: int = 0, scale: Scale = "default") -> dict:
    """Write the ``tldr-synth`` corpus to ``out_dir`` and return its card (also ``out_dir/card.json``)."""
    from datasets import DatasetDict

    from nplus.tasks.gold import GoldJudge  # gold imports this module's vocabulary, so import it late
    from nplus.tasks.tokenizer import train_tokenizer

    if scale not in SIZES:
        raise ValueError(f"unknown scale {scale!r}; expected one of {tuple(SIZES)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    # 1. posts, references and facts
    posts = build_posts(seed, scale)
    judge = GoldJudge({p.text: p.facts for split in posts.values() for p in split})
    # 2. comparisons labelled by simulated annotators
    comparisons = build_comparisons(posts, seed, scale, judge)

    # 3. files
    _save(DatasetDict({k: _sft_dataset(v) for k, v in posts.items()}), out_dir / "sft")
    _save(DatasetDict({k: _comparison_dataset(v) for k, v in comparisons.items()}), out_dir / "comparisons")
    with (out_dir / "facts.jsonl").open("w", encoding="utf-8") as f:
        for p in (p for split in posts.values() for p in split):
            f.write(json.dumps({"id": p.id, "post": p.text, "facts": p.facts}, ensure_ascii=False) + "\n")
    tokenizer = train_tokenizer(x for p in posts["train"] for x in (p.title, p.text, p.reference))
    tokenizer.save_pretrained(str(out_dir / "tokenizer"))
    card = _card(seed, scale, posts, comparisons, tokenizer)
    (out_dir / "card.json").write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    return card
