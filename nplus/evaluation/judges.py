"""Pairwise summary judges behind one interface: the programmatic gold judge, an OpenAI-compatible chat model
(``nplus.evaluation.openai_judge``), and a local causal LM.

Every judge answers ``compare(post, a, b) -> Judgment``. A judgment whose ``choice`` is None was either
unparseable (the judge answered but picked no side) or failed (no answer; ``error`` says why); neither is ever
assigned to a side. ``judge_against_reference`` adds the protocol of reference/DETAILS.md §5 on top: the A/B
order is drawn per example from a recorded seed, optionally both orders are judged.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np

from nplus.evaluation.parser import Choice
from nplus.tasks.gold import GoldJudge

Status = Literal["ok", "unparseable", "failed"]
Outcome = Literal["win", "loss", "tie", "unparseable", "failed"]
Winner = Literal["policy", "reference"]


@dataclass(frozen=True)
class Judgment:
    """One pairwise verdict. ``choice`` None means unparseable (``error`` None) or failed (``error`` set)."""

    choice: Choice | None
    raw: str
    score_a: float | None = None
    score_b: float | None = None
    error: str | None = None

    @property
    def status(self) -> Status:
        """ "ok" when a side was chosen, "failed" when no reply was obtained, else "unparseable"."""
        if self.choice is not None:
            return "ok"
        return "failed" if self.error is not None else "unparseable"


@dataclass(frozen=True)
class Comparison:
    """One question for a judge: which of ``a`` and ``b`` better summarizes ``post``."""

    post: str
    a: str
    b: str
    a_finished: bool = True
    b_finished: bool = True


class Judge(ABC):
    """A pairwise judge. Subclasses implement ``compare``; batch judges also override ``compare_many``."""

    name: str
    model: str

    @abstractmethod
    def compare(self, post: str, a: str, b: str, a_finished: bool = True, b_finished: bool = True) -> Judgment:
        """Judge which summary of ``post`` is better; ``*_finished`` says whether a summary ended with EOS."""

    def compare_many(self, items: Sequence[Comparison]) -> list[Judgment]:
        """Judge a batch, in order. The default judges one at a time."""
        return [self.compare(c.post, c.a, c.b, c.a_finished, c.b_finished) for c in items]

    def stats(self) -> dict[str, Any]:
        """Counters worth reporting next to the results (requests, retries, cache hits, tokens)."""
        return {}


# ----------------------------------------------------------------------------------------------------------
# The judging prompt (shared by the chat and the local judge)

JUDGE_PROMPT = """\
Two summaries of the same Reddit post are shown below. Which one better conveys the most important points \
of the post, without unimportant or irrelevant details? Judge accuracy, coverage and coherence.

Post:
{post}

Summary A:
{a}

Summary B:
{b}

Reply with exactly two lines. First line: a one-sentence comparison of the two summaries that says which \
is better and why. Second line: "Preferred: A" or "Preferred: B", nothing else.
Comparison: <one sentence>
Preferred: <A or B>"""


def build_prompt(post: str, a: str, b: str) -> str:
    """Fill the judging prompt. Surrounding whitespace is dropped: the leading space of a generated summary
    is a tokenization convention (reference/DETAILS.md §5, detail 5), not content the judge should see."""
    return JUDGE_PROMPT.format(post=post.strip(), a=a.strip(), b=b.strip())


# ----------------------------------------------------------------------------------------------------------
# gold


class GoldJudgeAdapter(Judge):
    """The programmatic gold judge of ``tldr-synth`` (``nplus.tasks.gold.GoldJudge``) behind the Judge API."""

    name = "gold"

    def __init__(self, gold: Any, model: str = "tldr-synth-gold"):
        self.gold = gold
        self.model = model

    @classmethod
    def from_dir(cls, data_dir: Path) -> "GoldJudgeAdapter":
        """Load the gold judge from a ``tldr-synth`` data directory (its ``facts.jsonl``)."""
        return cls(GoldJudge.from_dir(data_dir), model=f"tldr-synth-gold:{Path(data_dir).name}")

    def unknown_posts(self, posts: Sequence[str]) -> list[int]:
        """Indices of posts the gold judge cannot score (it looks posts up by exact text)."""
        unknown = []
        for i, post in enumerate(posts):
            try:
                self.gold.facts_for(post)
            except KeyError:
                unknown.append(i)
        return unknown

    def compare(self, post: str, a: str, b: str, a_finished: bool = True, b_finished: bool = True) -> Judgment:
        g = self.gold.compare(post, a, b, a_finished=a_finished, b_finished=b_finished)
        return Judgment(choice=g.choice, raw=g.raw, score_a=float(g.score_a), score_b=float(g.score_b))


class SimulatedAIJudge(Judge):
    """A simulated AI labeller for ``tldr-synth`` (``nplus label --judge simulated-ai``): the gold score plus
    ``length_preference`` points per word (LLM judges favour longer answers), and a position bias: when the two
    scores differ by less than ``position_margin`` it picks the first summary, A. Deterministic. Its biases are
    not the simulated human annotators' (nplus.tasks.comparisons: Bradley–Terry noise, a small length bias, no
    position bias), so an RM trained on its labels shows what AI feedback with other biases does."""

    name = "simulated-ai"

    def __init__(self, gold: Any, length_preference: float = 0.15, position_margin: float = 0.5):
        self.gold = gold
        self.length_preference = length_preference
        self.position_margin = position_margin
        self.model = f"simulated-ai(length={length_preference:g},position={position_margin:g})"

    def compare(self, post: str, a: str, b: str, a_finished: bool = True, b_finished: bool = True) -> Judgment:
        sa = self.gold.score(post, a, a_finished) + self.length_preference * len(a.split())
        sb = self.gold.score(post, b, b_finished) + self.length_preference * len(b.split())
        choice: Choice = "A" if sa - sb > -self.position_margin else "B"
        return Judgment(choice=choice, raw=f"A {sa:.2f}, B {sb:.2f}\nPreferred: {choice}", score_a=sa, score_b=sb)


# ----------------------------------------------------------------------------------------------------------
# hf


class HFJudge(Judge):
    """A local causal LM that picks the continuation, " A" or " B", with the higher log-probability after the
    judging prompt and "Preferred:". ``score_a``/``score_b`` are those log-probabilities."""

    name = "hf"

    def __init__(self, model: Any, tokenizer: Any, name_or_path: str, device: str = "cpu"):
        self.lm = model.to(device).eval()
        self.tokenizer = tokenizer
        self.model = name_or_path
        self.device = device
        self._continuations = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in (" A", " B")]

    @classmethod
    def from_path(cls, path: Path | str, device: str | None = None) -> "HFJudge":
        """Load model and tokenizer from a local directory (never the hub)."""
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True)
        return cls(model, tokenizer, name_or_path=str(path), device=device)

    def compare(self, post: str, a: str, b: str, a_finished: bool = True, b_finished: bool = True) -> Judgment:
        prompt = build_prompt(post, a, b) + "\n\nPreferred:"
        logp_a, logp_b = self._continuation_logprobs(self.tokenizer(prompt)["input_ids"])
        choice: Choice | None = "A" if logp_a > logp_b else "B" if logp_b > logp_a else None
        return Judgment(choice=choice, raw=f"logp(A)={logp_a:.4f} logp(B)={logp_b:.4f}", score_a=logp_a, score_b=logp_b)

    def _continuation_logprobs(self, prompt_ids: list[int]) -> tuple[float, float]:
        """Sum of token log-probs of each continuation after ``prompt_ids``, both in one right-padded batch.

        Prompts longer than the context keep their last tokens: the summaries and the question sit at the end.
        """
        import torch

        conts = self._continuations
        longest = max(len(c) for c in conts)
        limit = getattr(self.lm.config, "max_position_embeddings", None)
        if limit is not None and len(prompt_ids) + longest > limit:
            prompt_ids = prompt_ids[len(prompt_ids) + longest - limit :]
        seqs = [prompt_ids + c + [0] * (longest - len(c)) for c in conts]  # (2, T); pad id irrelevant, masked
        mask = [[1] * (len(prompt_ids) + len(c)) + [0] * (longest - len(c)) for c in conts]
        ids = torch.tensor(seqs, device=self.device)
        with torch.inference_mode():
            logits = self.lm(input_ids=ids, attention_mask=torch.tensor(mask, device=self.device)).logits
        logprobs = torch.log_softmax(logits.float(), dim=-1)  # (2, T, V)
        start = len(prompt_ids)
        totals = []
        for row, cont in enumerate(conts):
            # the token at position start + j is predicted by the logits at start + j - 1
            totals.append(sum(logprobs[row, start + j - 1, tok].item() for j, tok in enumerate(cont)))
        return totals[0], totals[1]


# ----------------------------------------------------------------------------------------------------------
# the protocol: policy against reference with a recorded random order


def assign_orders(n: int, seed: int) -> list[bool]:
    """Per example, whether the policy summary is shown as A. Drawn from ``seed`` so a rerun shows the same
    order, and recorded in every judgment row."""
    return [bool(x) for x in np.random.default_rng(seed).integers(0, 2, size=n)]


def winner_of(choice: Choice | None, policy_first: bool) -> Winner | None:
    """Map a slot choice back to the summary it names."""
    if choice is None:
        return None
    return "policy" if (choice == "A") == policy_first else "reference"


def combine_outcome(judgments: Sequence[tuple[Judgment, bool]]) -> Outcome:
    """One example's outcome from its one or two (judgment, policy_first) pairs.

    With both orders, agreeing verdicts decide and disagreeing ones are a tie (the judge followed the position,
    not the content). If either order failed or was unparseable the example is reported as such rather than
    decided by the other order alone, which would bring position bias back in for exactly those examples.
    """
    statuses = [j.status for j, _ in judgments]
    if "failed" in statuses:
        return "failed"
    if "unparseable" in statuses:
        return "unparseable"
    winners = {winner_of(j.choice, first) for j, first in judgments}
    if len(winners) > 1:
        return "tie"
    return "win" if winners.pop() == "policy" else "loss"


def _side_record(judgment: Judgment, policy_first: bool) -> dict[str, Any]:
    """The per-order fields of a judgments.jsonl row."""
    record = asdict(judgment)
    record["order"] = "policy_first" if policy_first else "reference_first"
    record["status"] = judgment.status
    record["winner"] = winner_of(judgment.choice, policy_first)
    return record


def judge_against_reference(
    judge: Judge,
    posts: Sequence[str],
    responses: Sequence[str],
    references: Sequence[str],
    finished: Sequence[bool] | None = None,
    seed: int = 0,
    both_orders: bool = False,
) -> list[dict[str, Any]]:
    """Judge each policy response against its reference, in a seeded random A/B order.

    Returns one record per example: the shown order, raw reply, choice, winner, status and error of the
    judgment (``swapped`` holds the same for the opposite order when ``both_orders``), and ``outcome``
    (win / loss / tie / unparseable / failed, from the policy's side).
    """
    n = len(posts)
    if not (len(responses) == len(references) == n):
        raise ValueError(f"posts, responses, references differ in length: {n}, {len(responses)}, {len(references)}")
    finished = list(finished) if finished is not None else [True] * n
    orders = assign_orders(n, seed)
    plans = [orders] + ([[not o for o in orders]] if both_orders else [])
    items = [
        _comparison(post, resp, ref, fin, first)
        for plan in plans
        for post, resp, ref, fin, first in zip(posts, responses, references, finished, plan)
    ]
    judgments = judge.compare_many(items)
    records = []
    for i in range(n):
        pairs = [(judgments[k * n + i], plan[i]) for k, plan in enumerate(plans)]
        record = _side_record(*pairs[0])
        if both_orders:
            record["swapped"] = _side_record(*pairs[1])
        record["outcome"] = combine_outcome(pairs)
        records.append(record)
    return records


def _comparison(post: str, response: str, reference: str, finished: bool, policy_first: bool) -> Comparison:
    """Place the policy response in slot A or B; references always count as finished."""
    if policy_first:
        return Comparison(post, response, reference, a_finished=finished, b_finished=True)
    return Comparison(post, reference, response, a_finished=True, b_finished=finished)
