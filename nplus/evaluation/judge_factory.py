"""Building a judge by name (``nplus eval``, ``nplus label``, the public task's pipeline).

Its own module so that the judges (nplus/evaluation/judges.py) and the OpenAI judge, which implements their
interface (nplus/evaluation/openai_judge.py), import in one direction only.
"""

from __future__ import annotations

from typing import Any, Literal

from nplus.evaluation.judges import GoldJudgeAdapter, HFJudge, Judge


def make_judge(kind: Literal["gold", "openai", "hf"], **options: Any) -> Judge:
    """Build a judge by name: ``gold`` takes ``data_dir``; ``openai`` takes ``OpenAIJudge``'s arguments
    (``model`` defaults to gpt-3.5-turbo-0125, the paper's judge); ``hf`` takes ``model`` (a local directory)
    and ``device``."""
    if kind == "gold":
        return GoldJudgeAdapter.from_dir(options["data_dir"])
    if kind == "openai":
        from nplus.evaluation.openai_judge import OpenAIJudge  # here: the openai package takes ~2 s to import

        return OpenAIJudge(**{"model": "gpt-3.5-turbo-0125", **options})
    if kind == "hf":
        return HFJudge.from_path(options["model"], device=options.get("device"))
    raise ValueError(f"unknown judge {kind!r}; expected gold, openai or hf")
