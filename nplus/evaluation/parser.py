"""Parse a judge's free-text reply into a choice: "A", "B" or None.

sfd's parser counts any reply other than exactly "A"/"B" as a reference win and gives unparseable replies a
random pick (reference/DETAILS.md §5). Here an explicit verdict line wins, a few common informal styles are
understood, and everything else (refusals, ties, "A and B are similar") is ``None``: reported, never assigned.
Words such as "similar" or "both summaries are" veto only a bare mention of one summary, never a sentence that
names a winner ("Summary A is better as it includes the request for similar experiences" is A).
"""

from __future__ import annotations

import re
from typing import Literal

Choice = Literal["A", "B"]

# Markdown emphasis, code ticks, quotes and brackets around the letter ("**B**", "`A`", "[A]", "<A>": nplus's
# prompt ends with "Preferred: <A or B>", so a judge may copy the angle brackets) carry no meaning.
_DECORATION = re.compile(r"[*_`\"'\[\]{}<>]")

# "Preferred: A", "Preferred summary: B", "Answer - A", "Verdict: Summary B". The letter must stand alone and
# must not be followed by "or/and B" (a hedge, not a verdict).
_VERDICT = re.compile(
    r"\b(?:preferred|preference|prefer|answer|choice|verdict|winner|better summary|final answer)"
    r"(?:\s+summary)?\s*(?:is)?\s*[:=\-]\s*(?:summary\s+)?\(?([AB])\b\)?"
    r"(?!\s*(?:or|and|/|,|&)\s*(?:summary\s+)?[AB]\b)",
    re.IGNORECASE,
)

# A line that is nothing but the letter: "A", "B.", "(B)", "Summary B", "summary a!".
_BARE_LINE = re.compile(r"^\s*(?:summary\s+)?\(?([AB])\)?\s*[.!]?\s*$", re.IGNORECASE)

# Sentences that pick a side without a verdict line: "I prefer Summary A", "Summary B is better", "Summary B is
# preferable" (111 of 1,000 real judge explanations say it that way), "Summary A would be the better choice".
_PREFERENCE_PHRASE = re.compile(
    r"\b(?:i\s+(?:would\s+)?(?:prefer|choose|pick|select)|i'?d\s+(?:prefer|choose|pick))\s+(?:summary\s+)?([AB])\b"
    r"|\bsummary\s+([AB])\s+(?:is|would\s+be|seems|appears)\s+(?:to\s+be\s+)?"
    r"(?:(?:much|slightly|clearly|far|somewhat|the|more)\s+)*(?:better|preferred|preferable|superior)\b",
    re.IGNORECASE,
)

# Replies that decline to choose. Checked only when there is no verdict or bare-letter line, so "neither is
# perfect.\nPreferred: A" still parses as A. A refusal vetoes everything below it, even "Summary A is better".
_REFUSAL = re.compile(
    r"\b(?:cannot|can ?not|can'?t|unable to|impossible to)\s+(?:determine|decide|choose|tell|judge|pick)"
    r"|\b(?:a|it'?s a|is a) (?:tie|draw)\b|\b(?:no (?:clear )?preference|same quality)\b"
    r"|\bneither (?:summary |one )?is (?:better|preferred|preferable|superior)\b"
    r"|\b(?:equally|just as) (?:good|bad|well|accurate|valid|strong|weak|informative|concise|clear)\b",
    re.IGNORECASE,
)

# Hedging words that describe both summaries or their content ("similar", "both summaries are"): they veto a
# bare mention of one summary ("A and B are similar, Summary A is shorter" picks nobody), but not a sentence
# that names a winner.
_HEDGE = re.compile(r"\b(?:similar|tie|both (?:are|summaries are)|neither|equally|the same)\b", re.IGNORECASE)

_SUMMARY_MENTION = re.compile(r"\bsummary\s+([AB])\b", re.IGNORECASE)


def _stands_alone(match: re.Match, text: str) -> bool:
    """An uppercase verdict letter always counts; a lowercase one ("preferred: b") only at the end of its line,
    so that "Preferred: a summary that..." is not read as A."""
    if match.group(1).isupper():
        return True
    rest = text[match.end() :].split("\n", 1)[0]
    return rest.strip(" .!)") == ""


def parse_choice(reply: str) -> Choice | None:
    """Return the side a judge reply prefers ("A" or "B"), or None when it does not clearly pick one.

    Precedence, strongest first: the last explicit verdict line ("Preferred: B"); the last line consisting of
    a bare letter ("B."); then, unless the reply declines to choose ("I cannot determine", "a tie", "equally
    good"), a preference phrase ("I prefer Summary A"); then, unless the reply also hedges ("similar", "both
    are ..."), a single summary mentioned by name ("Summary B").
    """
    text = _DECORATION.sub("", reply or "")
    verdicts = [m.group(1).upper() for m in _VERDICT.finditer(text) if _stands_alone(m, text)]
    if verdicts:
        return verdicts[-1]  # type: ignore[return-value]
    for line in reversed(text.strip().splitlines()):
        bare = _BARE_LINE.match(line)
        if bare:
            return bare.group(1).upper()  # type: ignore[return-value]
    if _REFUSAL.search(text):
        return None
    phrases = {(a or b).upper() for a, b in _PREFERENCE_PHRASE.findall(text)}
    if len(phrases) == 1:
        return phrases.pop()  # type: ignore[return-value]
    mentioned = {m.upper() for m in _SUMMARY_MENTION.findall(text)}
    if len(mentioned) == 1 and not phrases and not _HEDGE.search(text):
        return mentioned.pop()  # type: ignore[return-value]
    return None
