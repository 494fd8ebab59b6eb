"""The vocabulary of ``tldr-synth``: relations, events, asks, feelings, subreddits, distractor content, filler.

Every surface form a post or a summary can contain comes from these finite pools. ``keys`` are the forms the gold
judge recognizes; every template that expresses a fact contains one of its value's keys and no key of another
value. ``SLOT_KEYS``, ``DISTRACTOR_MARKERS`` and ``FILLER_PHRASES`` are the judge's knowledge
(:mod:`nplus.tasks.gold` imports them from here, the lowest module of the generator, so that nothing imports
back).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


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
    Event(
        "cheated",
        "them",
        ROMANTIC,
        ("cheated", "cheating"),
        (
            "Last week I found out that {he} cheated on me with someone {he} met online.",
            "A few days ago {he} admitted that {he} cheated on me while I was away.",
            "I recently discovered that {he} has been cheating on me for a while.",
        ),
        ("cheated on me", "has been cheating on me"),
        "cheated on me",
    ),
    Event(
        "texting_ex",
        "them",
        ROMANTIC,
        ("texting his ex", "texting her ex"),
        (
            "Yesterday I saw that {he} has been texting {his} ex every night and hiding it.",
            "I noticed {he} keeps texting {his} ex late at night and gets defensive when I ask.",
        ),
        ("has been texting {his} ex", "keeps texting {his} ex"),
        "keeps texting {his} ex",
    ),
    Event(
        "forgot_birthday",
        "them",
        ROMANTIC + FAMILY + ("best friend",),
        ("birthday",),
        (
            "{He} completely forgot my birthday last weekend and didn't even call.",
            "My birthday was on Saturday and {he} forgot it entirely, not even a message.",
        ),
        ("forgot my birthday", "completely forgot my birthday"),
        "forgot my birthday",
    ),
    Event(
        "went_through_phone",
        "them",
        ROMANTIC + FAMILY + ("roommate",),
        ("through my phone",),
        (
            "I caught {him} going through my phone while I was in the shower.",
            "{He} has been secretly going through my phone when I'm asleep.",
        ),
        ("went through my phone", "has been going through my phone"),
        "went through my phone",
    ),
    Event(
        "another_country",
        "them",
        ROMANTIC + ("best friend",),
        ("another country",),
        (
            "{He} just told me {he} accepted a job in another country without asking me first.",
            "Out of the blue {he} announced that {he} is moving to another country.",
        ),
        ("is moving to another country", "took a job in another country"),
        "is moving to another country",
    ),
    Event(
        "hid_debt",
        "them",
        ROMANTIC,
        ("debt",),
        (
            "I found out {he} has been hiding a huge amount of debt from me.",
            "While looking at some mail I discovered {he} is deep in debt and never told me.",
        ),
        ("hid {his} debt from me", "has been hiding a lot of debt"),
        "hid {his} debt from me",
    ),
    Event(
        "open_relationship",
        "them",
        ROMANTIC,
        ("open relationship",),
        (
            "Out of nowhere {he} told me {he} wants an open relationship.",
            "Last night {he} sat me down and said {he} wants to try an open relationship.",
        ),
        ("wants an open relationship", "asked for an open relationship"),
        "wants an open relationship",
    ),
    Event(
        "ghosted",
        "them",
        ROMANTIC + ("best friend",),
        ("ghosted", "stopped talking to me"),
        (
            "{He} suddenly stopped talking to me and has basically ghosted me.",
            "A couple of weeks ago {he} ghosted me without any explanation.",
        ),
        ("ghosted me", "stopped talking to me"),
        "ghosted me",
    ),
    Event(
        "no_time",
        "them",
        ROMANTIC + FAMILY + ("best friend",),
        ("makes time for me", "make time for me"),
        (
            "{He} never makes time for me anymore and keeps cancelling our plans.",
            "Lately {he} never makes time for me, it's always something else first.",
        ),
        ("never makes time for me", "won't make time for me"),
        "never makes time for me",
    ),
    Event(
        "hates_friends",
        "them",
        ROMANTIC,
        ("hates my friends",),
        (
            "{He} keeps saying {he} hates my friends and doesn't want me to see them.",
            "Every time I go out {he} reminds me that {he} hates my friends.",
        ),
        ("hates my friends", "says {he} hates my friends"),
        "hates my friends",
    ),
    Event(
        "borrowed_money",
        "them",
        ROMANTIC + FAMILY + ("best friend", "roommate"),
        ("borrowed",),
        (
            "{He} borrowed $1,500 from me and never paid it back.",
            "A while ago {he} borrowed a lot of money from me and now acts like it never happened.",
        ),
        ("borrowed money and never paid it back", "borrowed money from me"),
        "borrowed money and never paid it back",
    ),
    Event(
        "skipped_wedding",
        "them",
        FAMILY + ("best friend",),
        ("wedding",),
        (
            "{He} skipped my wedding without telling me why.",
            "{He} didn't show up to my wedding and still hasn't explained.",
        ),
        ("skipped my wedding", "didn't come to my wedding"),
        "skipped my wedding",
    ),
    Event(
        "told_secret",
        "them",
        FAMILY + ("best friend", "coworker"),
        ("secret",),
        (
            "{He} told everyone a secret I had trusted {him} with.",
            "I found out {he} spread a secret I shared with {him} in confidence.",
        ),
        ("told everyone my secret", "spread my secret"),
        "told everyone my secret",
    ),
    Event(
        "stole",
        "them",
        FAMILY + ("roommate",),
        ("stole", "stealing"),
        ("I caught {him} stealing cash from my wallet.", "{He} stole from me and thinks I haven't noticed."),
        ("stole from me", "has been stealing from me"),
        "stole from me",
    ),
    Event(
        "never_cleans",
        "them",
        ("roommate",),
        ("never cleans",),
        (
            "{He} never cleans up after {himself} and the kitchen is disgusting.",
            "{He} never cleans anything and leaves dishes piled up for days.",
        ),
        ("never cleans", "never cleans up after {himself}"),
        "never cleans",
    ),
    Event(
        "stopped_rent",
        "them",
        ("roommate",),
        ("rent",),
        (
            "{He} stopped paying {his} share of the rent.",
            "For a while now {he} has not paid any rent and keeps making excuses.",
        ),
        ("stopped paying rent", "won't pay {his} share of the rent"),
        "stopped paying rent",
    ),
    Event(
        "loud_parties",
        "them",
        ("roommate", "neighbor"),
        ("parties",),
        (
            "{He} throws loud parties every weekend until very late.",
            "Every weekend {he} has loud parties that keep me up all night.",
        ),
        ("throws loud parties", "keeps throwing loud parties"),
        "throws loud parties",
    ),
    Event(
        "took_credit",
        "them",
        ("boss", "coworker"),
        ("took credit", "taking credit"),
        (
            "{He} took credit for a project I worked on for weeks.",
            "In a meeting {he} presented my work and took credit for all of it.",
        ),
        ("took credit for my work", "keeps taking credit for my work"),
        "took credit for my work",
    ),
    Event(
        "fired",
        "them",
        ("boss",),
        ("fired",),
        ("{He} fired me over a single small mistake.", "Yesterday {he} fired me with no warning at all."),
        ("fired me", "fired me over a small mistake"),
        "fired me",
    ),
    Event(
        "withheld_paycheck",
        "them",
        ("boss",),
        ("paycheck",),
        (
            "{He} still hasn't paid me my last paycheck.",
            "I left on good terms but {he} refuses to send my final paycheck.",
        ),
        ("won't pay my last paycheck", "is holding my final paycheck"),
        "won't pay my last paycheck",
    ),
    Event(
        "yelled",
        "them",
        ("boss", "coworker", "mom", "dad"),
        ("yelled", "yelling"),
        (
            "{He} yelled at me in front of everyone over nothing.",
            "{He} started yelling at me in front of other people for no reason.",
        ),
        ("yelled at me in front of everyone", "keeps yelling at me"),
        "yelled at me in front of everyone",
    ),
    Event(
        "kept_deposit",
        "them",
        ("landlord",),
        ("deposit",),
        (
            "{He} kept my entire security deposit after I left the place.",
            "{He} is refusing to give back my security deposit even though the place was spotless.",
        ),
        ("kept my security deposit", "won't return my deposit"),
        "kept my security deposit",
    ),
    Event(
        "without_notice",
        "them",
        ("landlord",),
        ("without notice",),
        (
            "{He} keeps coming into my place without notice.",
            "Several times now {he} has let {himself} in without notice while I was out.",
        ),
        ("enters my place without notice", "keeps coming in without notice"),
        "enters my place without notice",
    ),
    Event(
        "backed_into_car",
        "them",
        ("neighbor", "roommate"),
        ("backed into my car",),
        (
            "{He} backed into my car and refuses to pay for the damage.",
            "Last month {he} backed into my car and now pretends it wasn't {him}.",
        ),
        ("backed into my car", "backed into my car and won't pay"),
        "backed into my car",
    ),
    Event(
        "cut_tree",
        "them",
        ("neighbor",),
        ("tree",),
        (
            "{He} cut down a tree on my side of the fence without asking.",
            "While I was away {he} cut down the old tree in my yard.",
        ),
        ("cut down my tree", "cut down a tree on my side"),
        "cut down my tree",
    ),
    Event(
        "wrong_text",
        "me",
        PERSONAL + ("coworker",),
        ("meant for someone else", "wrong text"),
        (
            "I accidentally sent my {rel} a text that was meant for someone else.",
            "This morning I sent my {rel} a very private text meant for someone else.",
        ),
        ("sent my {rel} a text meant for someone else", "sent the wrong text to my {rel}"),
        "sending my {rel} a text meant for someone else",
    ),
    Event(
        "spilled_laptop",
        "me",
        PERSONAL + ("coworker",),
        ("laptop",),
        (
            "I knocked a full mug over and ruined my {rel}'s laptop.",
            "I spilled a drink all over my {rel}'s laptop right before {his} deadline.",
        ),
        ("ruined my {rel}'s laptop", "spilled a drink on my {rel}'s laptop"),
        "ruining my {rel}'s laptop",
    ),
    Event(
        "wrong_name",
        "me",
        ROMANTIC,
        ("wrong name",),
        (
            "In the middle of dinner I called my {rel} by the wrong name.",
            "I called my {rel} the wrong name in front of {his} whole family.",
        ),
        ("called my {rel} the wrong name", "used the wrong name with my {rel}"),
        "calling my {rel} the wrong name",
    ),
    Event(
        "locked_out",
        "me",
        PERSONAL,
        ("locked",),
        (
            "I locked my {rel} out of the house overnight by accident.",
            "Without thinking I locked the door and left my {rel} locked out all night.",
        ),
        ("locked my {rel} out of the house", "accidentally locked my {rel} out"),
        "locking my {rel} out of the house",
    ),
)
EVENT = {e.name: e for e in EVENTS}


@dataclass(frozen=True)
class Ask:
    name: str
    kinds: tuple[str, ...]  # relation kinds it fits ("tifu" for narrator events)
    keys: tuple[str, ...]
    post: tuple[str, ...]  # questions as written in the post
    summary: tuple[str, ...]  # questions as written in a summary


# Every question opens with "Should I" in the post and in a summary, as most of r/relationships' questions do. A
# TL;DR copies the post's question (summaries.ask_clause), and one shared opening makes that one in-context copy:
# after "Should I" the rest follows the post's own words, whichever question it asks. With openings that differ
# by question ("How do I ...", "Am I ...", "Is it ..."), the tiny ladder models picked the opening, and with it
# the question, at random (tldr-synth-4: 33-47 % of the questions sampled SFT policies stated were the post's).
ASKS: tuple[Ask, ...] = (
    Ask(
        "break_up",
        ("romantic",),
        ("break up", "end things", "ending things"),
        ("Should I break up with {him}?", "Should I end things with {him}?"),
        ("should I break up with {him}?", "should I end things?"),
    ),
    Ask(
        "confront",
        ("romantic", "family", "friend", "roommate", "work"),
        ("confront",),
        ("Should I confront {him} about this?", "Should I confront {him}?"),
        ("should I confront {him}?", "should I confront {him} about it?"),
    ),
    Ask(
        "forgive",
        ("romantic", "family", "friend"),
        ("forgive",),
        ("Should I forgive {him}?", "Should I forgive {him} for this?"),
        ("should I forgive {him}?", "should I just forgive {him}?"),
    ),
    Ask(
        "trust_again",
        ("romantic",),
        ("trust him again", "trust her again"),
        ("Should I trust {him} again?", "Should I ever trust {him} again?"),
        ("should I trust {him} again?", "should I ever trust {him} again?"),
    ),
    Ask(
        "overreacting",
        ("romantic", "family", "friend", "work"),
        ("overreacting",),
        ("Should I let it go or am I overreacting?", "Should I drop it, or am I overreacting?"),
        ("should I let it go or am I overreacting?", "am I overreacting?"),
    ),
    Ask(
        "bring_up",
        ("romantic", "family", "friend", "roommate", "work"),
        ("bring it up",),
        ("Should I bring it up with {him}?", "Should I bring it up without starting a fight?"),
        ("should I bring it up?", "should I bring it up with {him}?"),
    ),
    Ask(
        "move_out",
        ("roommate",),
        ("move out",),
        ("Should I just move out?", "Should I move out over this?"),
        ("should I move out?", "should I just move out?"),
    ),
    Ask(
        "money_back",
        ("family", "friend", "roommate", "legal"),
        ("money back",),
        ("Should I ask for my money back?", "Should I try to get my money back?"),
        ("should I ask for my money back?", "should I get my money back?"),
    ),
    Ask(
        "quit",
        ("work",),
        ("quit",),
        ("Should I just quit?", "Should I quit over this?"),
        ("should I quit?", "should I just quit?"),
    ),
    Ask(
        "report",
        ("work", "legal"),
        ("report him", "report her"),
        ("Should I report {him}?", "Should I report {him} to someone?"),
        ("should I report {him}?", "should I report {him} to someone?"),
    ),
    Ask(
        "small_claims",
        ("legal",),
        ("small claims",),
        ("Should I take {him} to small claims court?", "Should I file in small claims?"),
        ("should I take {him} to small claims?", "should I go to small claims?"),
    ),
    Ask(
        "apologize",
        ("tifu",),
        ("apologize",),
        ("Should I apologize to {him}?", "Should I apologize again?"),
        ("should I apologize?", "should I apologize to {him}?"),
    ),
)
ASK = {a.name: a for a in ASKS}
# Asks that only make sense when the event is about money.
MONEY_EVENTS = ("borrowed_money", "stole", "stopped_rent", "withheld_paycheck", "kept_deposit", "backed_into_car")

FEELINGS: tuple[str, ...] = (
    "hurt",
    "angry",
    "confused",
    "anxious",
    "betrayed",
    "heartbroken",
    "embarrassed",
    "guilty",
    "stressed",
    "frustrated",
    "lonely",
    "disrespected",
    "humiliated",
    "furious",
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
    Subreddit(
        "personalfinance", 0.06, ("borrowed_money", "hid_debt", "stopped_rent", "stole", "withheld_paycheck"), 0.9
    ),
    Subreddit(
        "legaladvice",
        0.07,
        ("kept_deposit", "without_notice", "backed_into_car", "cut_tree", "withheld_paycheck", "loud_parties", "fired"),
        0.9,
    ),
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
    "Part of me wants to just wait and see.",
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
    *PETS,
    *(n.lower() for n in PET_NAMES),
    *JOBS,
    *(s.lower() for s in STATES),
    *HOBBIES,
    *(c.lower() for c in COUNTRIES),
    "gym",
    "concert",
    "college",
    "barbecue",
    "weather",
    "marathon",
    "netflix",
    "pizza",
    "thunderstorms",
    "podcast",
    "commute",
    "grandma",
    "guitar",
    "band",
    "throwaway",
    "lurker",
    "typos",
    "mobile",
    "formatting",
    "edit",
    "update",
    "replies",
)
# Phrases a summary writer adds without content; the judge charges them as irrelevant.
FILLER_PHRASES: tuple[str, ...] = (
    "long story short",
    "basically",
    "idk",
    "please help",
    "any advice",
    "so yeah",
    "thanks in advance",
    "honestly",
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
