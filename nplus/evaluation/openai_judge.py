"""The OpenAI API judge: a chat model behind any OpenAI-compatible ``/v1/chat/completions`` endpoint.

``OpenAIJudge`` implements the ``Judge`` interface of ``nplus.evaluation.judges``
(``nplus.evaluation.judge_factory.make_judge("openai", ...)`` builds one) with bounded concurrency, retries with
jittered exponential back-off, an append-only reply cache (``ReplyCache``, keyed by ``cache_key``) and a
pre-flight cost estimate (``estimate_cost``). Problems no retry can fix raise ``JudgeConfigError``. The API key
is read from the environment only; see docs/evaluation.md.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import openai

from nplus.evaluation.judges import Comparison, Judge, Judgment, build_prompt
from nplus.evaluation.parser import parse_choice

# ----------------------------------------------------------------------------------------------------------
# openai


# USD per 1M tokens (input, output), from OpenAI's price list; override with ``price_per_1m`` for other models.
PRICES_PER_1M: dict[str, tuple[float, float]] = {
    "gpt-3.5-turbo-0125": (0.50, 1.50),
    "gpt-4o-mini": (0.15, 0.60),
}


@dataclass(frozen=True)
class CostEstimate:
    """A pre-flight estimate of a chat-judge job. Tokens are characters / 4; output is bounded by max_tokens."""

    n_requests: int
    input_tokens: int
    max_output_tokens: int
    usd: float | None

    def describe(self, model: str) -> str:
        """One human-readable line."""
        usd = f"≈ ${self.usd:.2f}" if self.usd is not None else "price unknown (pass price_per_1m)"
        return (
            f"judge {model}: {self.n_requests} uncached requests, ≈ {self.input_tokens:,} input tokens, "
            f"≤ {self.max_output_tokens:,} output tokens, {usd}"
        )


def estimate_cost(
    prompts: Sequence[str], model: str, max_tokens: int, price_per_1m: tuple[float, float] | None = None
) -> CostEstimate:
    """Estimate tokens (len(text) / 4, the usual rule of thumb for English) and dollars for ``prompts``."""
    input_tokens = sum(math.ceil(len(p) / 4) for p in prompts)
    max_output_tokens = max_tokens * len(prompts)
    prices = price_per_1m if price_per_1m is not None else PRICES_PER_1M.get(model)
    usd = None
    if prices is not None:
        usd = (input_tokens * prices[0] + max_output_tokens * prices[1]) / 1e6
    return CostEstimate(len(prompts), input_tokens, max_output_tokens, usd)


def cache_key(model: str, prompt: str, temperature: float) -> str:
    """sha256 of (model, prompt, temperature): identical questions to the same model cost one request."""
    return hashlib.sha256(json.dumps([model, prompt, temperature]).encode()).hexdigest()


class ReplyCache:
    """Append-only JSONL cache of successful chat replies, keyed by ``cache_key``.

    Only replies are stored (never the API key or request headers). Failed requests are not cached, so a
    rerun retries them; unparseable replies are cached because asking again at temperature 0 would repeat them.
    """

    def __init__(self, directory: Path):
        self.path = Path(directory) / "replies.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._replies: dict[str, dict[str, Any]] = {}
        if self.path.exists():
            for line in self.path.read_text().splitlines():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut short by a crash mid-write; the request is simply redone
                self._replies[record["key"]] = record

    def get(self, key: str) -> dict[str, Any] | None:
        """The stored record for ``key`` (fields key, model, reply, usage), or None."""
        return self._replies.get(key)

    def put(self, key: str, model: str, reply: str, usage: dict[str, int]) -> None:
        """Store a reply, durably, before it is used."""
        record = {"key": key, "model": model, "reply": reply, "usage": usage}
        with self._lock:
            self._replies[key] = record
            with self.path.open("a") as f:
                f.write(json.dumps(record) + "\n")


class JudgeConfigError(ValueError):
    """A problem no retry can fix (missing API key, authentication, unknown model): stop the whole job."""


class _MalformedResponse(Exception):
    """The endpoint answered 200 with a body that is not a chat completion (gateway hiccup): retried."""


@dataclass
class _Counters:
    requests: int = 0
    retries: int = 0
    cache_hits: int = 0
    deduplicated: int = 0
    failed: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **amounts: int) -> None:
        with self.lock:
            for name, amount in amounts.items():
                setattr(self, name, getattr(self, name) + amount)


def backoff_delay(attempt: int, base_delay_s: float, max_delay_s: float, rng: random.Random) -> float:
    """Exponential back-off with jitter: base · 2^attempt, scaled by U(0.5, 1.5) so that concurrent workers
    hit by the same 429 do not retry in lockstep; capped at ``max_delay_s``."""
    return min(max_delay_s, base_delay_s * 2**attempt * rng.uniform(0.5, 1.5))


def _is_retryable(exc: Exception) -> bool:
    """429, 408, 409 and 5xx, timeouts, connection errors and malformed bodies are transient."""
    malformed = (_MalformedResponse, json.JSONDecodeError, openai.APIResponseValidationError)
    if isinstance(exc, (openai.APIConnectionError, *malformed)):  # APITimeoutError is a connection error
        return True
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code in (408, 409, 429) or exc.status_code >= 500
    return False


def _is_config_error(exc: Exception) -> bool:
    """Wrong key, no permission or unknown model: every further request would fail the same way."""
    return isinstance(exc, (openai.AuthenticationError, openai.PermissionDeniedError, openai.NotFoundError))


class OpenAIJudge(Judge):
    """A chat model behind any OpenAI-compatible ``/v1/chat/completions`` endpoint.

    The API key is read from the environment variable ``api_key_env`` and handed to the client only; it is
    never stored on this object, logged, cached or written anywhere.
    """

    name = "openai"

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        concurrency: int = 8,
        max_retries: int = 5,
        timeout_s: float = 60.0,
        retry_base_delay_s: float = 1.0,
        retry_max_delay_s: float = 60.0,
        temperature: float = 0.0,
        max_tokens: int = 128,
        cache_dir: Path | None = None,
        price_per_1m: tuple[float, float] | None = None,
        announce_cost_above: int = 100,
    ):
        api_key = os.environ.get(api_key_env)
        if not api_key:
            raise JudgeConfigError(f"environment variable {api_key_env} (the judge's API key) is not set")
        if concurrency < 1 or max_retries < 0:
            raise JudgeConfigError(
                f"openai judge: need concurrency >= 1 and max_retries >= 0, got concurrency="
                f"{concurrency}, max_retries={max_retries}"
            )
        # The client's own retries are disabled: retries, back-off and their counting happen here.
        self._client = openai.OpenAI(api_key=api_key, base_url=base_url, max_retries=0, timeout=timeout_s)
        self.model = model
        self.concurrency = concurrency
        self.max_retries = max_retries
        self.retry_base_delay_s = retry_base_delay_s
        self.retry_max_delay_s = retry_max_delay_s
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.cache = ReplyCache(cache_dir) if cache_dir is not None else None
        self.price_per_1m = price_per_1m
        self.announce_cost_above = announce_cost_above
        self._counters = _Counters()
        self._rng = random.Random()  # jitter only; results never depend on it
        self._rng_lock = threading.Lock()

    def compare(self, post: str, a: str, b: str, a_finished: bool = True, b_finished: bool = True) -> Judgment:
        return self.compare_many([Comparison(post, a, b, a_finished, b_finished)])[0]

    def compare_many(self, items: Sequence[Comparison]) -> list[Judgment]:
        """Judge a batch with up to ``concurrency`` requests in flight; identical prompts are asked once."""
        prompts = [build_prompt(c.post, c.a, c.b) for c in items]
        keys = [cache_key(self.model, p, self.temperature) for p in prompts]
        replies: dict[str, tuple[str | None, str | None]] = {}  # key -> (reply, error)
        for key in set(keys):
            cached = self.cache.get(key) if self.cache is not None else None
            if cached is not None:
                replies[key] = (cached["reply"], None)
        todo = {k: p for k, p in zip(keys, prompts) if k not in replies}
        self._counters.add(
            cache_hits=sum(k in replies for k in keys), deduplicated=sum(k in todo for k in keys) - len(todo)
        )
        if len(todo) >= self.announce_cost_above:
            estimate = estimate_cost(list(todo.values()), self.model, self.max_tokens, self.price_per_1m)
            print(estimate.describe(self.model), file=sys.stderr, flush=True)
        # A bad key or an interrupt sends none of the queued requests (finished replies stay cached). The stop is
        # set by the worker that fails, not when this thread reaches its future: waiting on the futures in order,
        # the workers went on sending every queued request while an earlier one was still in flight.
        stop = threading.Event()

        def ask(key: str, prompt: str) -> tuple[str | None, str | None] | None:
            if stop.is_set():
                return None  # skipped: the failure that set the stop is raised below
            try:
                return self._ask(key, prompt)
            except BaseException:
                stop.set()
                raise

        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            futures = {key: pool.submit(ask, key, prompt) for key, prompt in todo.items()}
            try:
                for key, future in futures.items():
                    replies[key] = future.result()
            except BaseException:
                stop.set()
                pool.shutdown(wait=False, cancel_futures=True)
                raise
        return [_judgment_from_reply(*replies[k]) for k in keys]

    def _ask(self, key: str, prompt: str) -> tuple[str | None, str | None]:
        """Send one prompt with bounded retries. Returns (reply, None) or (None, error message)."""
        error = ""
        for attempt in range(self.max_retries + 1):
            if attempt > 0:
                with self._rng_lock:
                    delay = backoff_delay(attempt - 1, self.retry_base_delay_s, self.retry_max_delay_s, self._rng)
                time.sleep(delay)
                self._counters.add(retries=1)
            self._counters.add(requests=1)
            try:
                reply, usage = self._request(prompt)
            except Exception as exc:  # classified below; a bug of ours (not an API error) is re-raised
                if _is_config_error(exc):
                    raise JudgeConfigError(f"judge endpoint refused the request: {exc}") from exc
                error = f"{type(exc).__name__}: {exc}"
                if _is_retryable(exc):
                    continue
                if not isinstance(exc, openai.OpenAIError):
                    raise
                break  # e.g. 400 for this prompt only: record the failure, keep judging the others
            if self.cache is not None:
                self.cache.put(key, self.model, reply, usage)
            return reply, None
        self._counters.add(failed=1)
        return None, f"{error} (after {attempt + 1} attempts)"

    def _request(self, prompt: str) -> tuple[str, dict[str, int]]:
        """One chat-completions call; returns the reply text and the token usage."""
        response = self._client.chat.completions.create(
            model=self.model,
            messages=[{"role": "user", "content": prompt}],
            temperature=self.temperature,
            max_tokens=self.max_tokens,
        )
        try:
            reply = response.choices[0].message.content or ""
        except (AttributeError, IndexError, TypeError) as exc:
            raise _MalformedResponse(f"no choices[0].message.content in {str(response)[:200]!r}") from exc
        counted = getattr(response, "usage", None)  # some compatible servers omit usage
        usage = {
            "prompt_tokens": counted.prompt_tokens if counted else 0,
            "completion_tokens": counted.completion_tokens if counted else 0,
        }
        self._counters.add(**usage)
        return reply, usage

    def stats(self) -> dict[str, Any]:
        c = self._counters
        with c.lock:
            return {
                "requests": c.requests,
                "retries": c.retries,
                "cache_hits": c.cache_hits,
                "deduplicated": c.deduplicated,
                "failed_requests": c.failed,
                "prompt_tokens": c.prompt_tokens,
                "completion_tokens": c.completion_tokens,
            }


def _judgment_from_reply(reply: str | None, error: str | None) -> Judgment:
    """A failed request keeps choice None and its error; a reply is parsed (None when unparseable)."""
    if reply is None:
        return Judgment(choice=None, raw="", error=error)
    return Judgment(choice=parse_choice(reply), raw=reply)
