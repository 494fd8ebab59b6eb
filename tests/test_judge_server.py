"""The openai judge against a real HTTP server on loopback that speaks the chat-completions protocol and
misbehaves on a deterministic schedule (429, 500, slow replies, invalid JSON, bodies without choices,
unparseable text)."""

import json
import random
import re
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from nplus.evaluation import openai_judge
from nplus.evaluation.evaluate_cmd import EvalConfig, JudgeOptions, run_eval
from nplus.evaluation.judges import Comparison
from nplus.tasks.gold import GoldJudge
from nplus.tasks.synth import make_posts, policy_summary

PROMPT_PARTS = re.compile(r"Post:\n(.*)\n\nSummary A:\n(.*)\n\nSummary B:\n(.*)\n\nReply with", re.DOTALL)
CLIENT_TIMEOUT_S = 0.25
SLOW_REPLY_S = 0.6  # beyond the client timeout
MAX_RETRIES = 3
SECRET = "sk-test-SECRET-4f9a1c"


def synth_questions(n: int):
    """n tldr-synth posts with a good and a bad summary each, and the gold judge that knows them."""
    rng = random.Random(0)
    posts = make_posts(n, rng, set(), set())
    gold = GoldJudge({p.text: p.facts for p in posts})
    good = [" " + policy_summary(p, "sup", rng) for p in posts]
    bad = [" " + policy_summary(p, "wrong", rng) for p in posts]
    return [p.text for p in posts], good, bad, gold


POSTS, GOOD, BAD, GOLD = synth_questions(12)


def backing_choice(post: str, a: str, b: str) -> str:
    """The verdict the server's model gives: the gold judge's."""
    return GOLD.compare(post, a, b).choice


class ChatServer:
    """A chat-completions endpoint. ``schedule[post]`` lists the behaviour of the 1st, 2nd, ... request for
    each question (post, summary A, summary B) about that post; requests beyond the list are answered normally
    with the backing judge's verdict."""

    def __init__(self, schedule: dict[str, list[str]]):
        self.schedule = schedule
        self.counts: Counter = Counter()
        self.auth_headers: set = set()
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                assert self.path == "/v1/chat/completions" and body["temperature"] == 0.0
                post, a, b = PROMPT_PARTS.search(body["messages"][-1]["content"]).groups()
                with server.lock:
                    attempt = server.counts[post, a, b]
                    server.counts[post, a, b] += 1
                    server.auth_headers.add(self.headers["Authorization"])
                plan = server.schedule.get(post, [])
                behaviour = plan[attempt] if attempt < len(plan) else "ok"
                try:
                    server.respond(self, behaviour, body["model"], post, a, b)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up on a slow reply

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def requests_for(self, post: str) -> int:
        with self.lock:
            return sum(n for (p, _, _), n in self.counts.items() if p == post)

    @property
    def total_requests(self) -> int:
        with self.lock:
            return sum(self.counts.values())

    def respond(self, handler, behaviour, model, post, a, b):
        status, content = 200, None
        if behaviour == "slow":
            time.sleep(SLOW_REPLY_S)
        if behaviour in ("401", "429", "500"):
            status, payload = int(behaviour), {"error": {"message": "injected", "type": "server_error"}}
        elif behaviour == "bad_json":
            payload = None
        elif behaviour == "no_choices":
            payload = {"id": "x", "object": "chat.completion", "created": 0, "model": model}
        else:
            verdict = backing_choice(post, a, b)
            content = (
                "I cannot determine which one is better."
                if behaviour == "unparseable"
                else (f"Comparison: Summary {verdict} keeps more of the post's key facts.\nPreferred: {verdict}")
            )
            payload = {
                "id": "chatcmpl-test",
                "object": "chat.completion",
                "created": 0,
                "model": model,
                "choices": [
                    {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}
                ],
                "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120},
            }
        data = b'{"choices": [ not json' if payload is None else json.dumps(payload).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


SCHEDULE = {
    POSTS[0]: ["429"],
    POSTS[1]: ["500", "500"],
    POSTS[2]: ["slow"],
    POSTS[3]: ["bad_json"],
    POSTS[4]: ["500"] * (MAX_RETRIES + 1),  # fails every allowed attempt
    POSTS[5]: ["unparseable"],
    POSTS[6]: ["no_choices", "429"],
}
EXPECTED_REQUESTS = {0: 2, 1: 3, 2: 2, 3: 2, 4: MAX_RETRIES + 1, 5: 1, 6: 3}


def make_judge(server, cache_dir, **kwargs):
    return openai_judge.OpenAIJudge(
        model="gpt-4o-mini",
        base_url=server.base_url,
        api_key_env="NPLUS_TEST_JUDGE_KEY",
        concurrency=4,
        max_retries=MAX_RETRIES,
        timeout_s=CLIENT_TIMEOUT_S,
        retry_base_delay_s=0.01,
        cache_dir=cache_dir,
        **kwargs,
    )


@pytest.fixture
def api_key(monkeypatch):
    monkeypatch.setenv("NPLUS_TEST_JUDGE_KEY", SECRET)


def test_retries_failures_unparseable_and_cache(tmp_path, api_key, capsys):
    # items 12 and 13 repeat item 11: the question is asked once
    items = [Comparison(p, g, b) if i % 2 else Comparison(p, b, g) for i, (p, g, b) in enumerate(zip(POSTS, GOOD, BAD))]
    items += [items[11], items[11]]
    cache = tmp_path / "cache"
    with ChatServer(SCHEDULE) as server:
        judge = make_judge(server, cache, announce_cost_above=5)
        started = time.monotonic()
        results = judge.compare_many(items)
        assert time.monotonic() - started < 10
        assert "uncached requests" in capsys.readouterr().err  # the cost estimate was printed first

        # one result per question, in order; the server saw exactly the scheduled retries
        assert len(results) == len(items)
        for i, post in enumerate(POSTS):
            assert server.requests_for(post) == EXPECTED_REQUESTS.get(i, 1), (i, server.requests_for(post))
        assert server.total_requests == sum(EXPECTED_REQUESTS.get(i, 1) for i in range(12))
        assert server.auth_headers == {f"Bearer {SECRET}"}

        # failures and unparseable replies are recorded, never assigned to a side
        assert results[4].status == "failed" and results[4].choice is None
        assert "InternalServerError" in results[4].error and f"{MAX_RETRIES + 1} attempts" in results[4].error
        assert results[5].status == "unparseable" and results[5].raw.startswith("I cannot determine")
        for i, (item, j) in enumerate(zip(items, results)):
            if i not in (4, 5):
                assert j.status == "ok" and j.choice == backing_choice(
                    item.post.strip(), item.a.strip(), item.b.strip()
                )
        stats = judge.stats()
        assert stats["requests"] == server.total_requests and stats["failed_requests"] == 1
        assert stats["retries"] == server.total_requests - 12 and stats["deduplicated"] == 2

        # a rerun asks only what failed before; a third run sends nothing at all
        before = server.total_requests
        rerun = make_judge(server, cache).compare_many(items)
        assert server.total_requests - before == 1 and server.requests_for(POSTS[4]) == MAX_RETRIES + 2
        assert rerun[4].status == "ok"
        assert [j for i, j in enumerate(rerun) if i != 4] == [j for i, j in enumerate(results) if i != 4]
        before = server.total_requests
        third = make_judge(server, cache)
        assert third.compare_many(items) == rerun
        assert server.total_requests == before and third.stats()["requests"] == 0
        assert third.stats()["cache_hits"] == len(items)


def test_api_key_is_never_written(tmp_path, api_key, capsys):
    rows = [
        {"id": f"ex{i}", "post": p, "response": g, "reference": b.strip(), "finished": True}
        for i, (p, g, b) in enumerate(zip(POSTS, GOOD, BAD))
    ]
    samples = tmp_path / "samples.jsonl"
    samples.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with ChatServer(SCHEDULE) as server:
        options = JudgeOptions(
            judge_model="gpt-4o-mini",
            judge_base_url=server.base_url,
            api_key_env="NPLUS_TEST_JUDGE_KEY",
            max_retries=MAX_RETRIES,
            timeout_s=CLIENT_TIMEOUT_S,
            retry_base_delay_s=0.01,
            concurrency=4,
            cache_dir=tmp_path / "cache",
            both_orders=True,
        )
        result = run_eval(EvalConfig(input=samples, out=tmp_path / "out", judge="openai", judge_options=options))
    assert result["n_total"] == 12 and result["n_failed"] == 1 and result["n_unparseable"] == 1
    assert result["position_consistency"] is not None
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert {p.name for p in written} >= {"eval.json", "judgments.jsonl", "replies.jsonl"}
    for path in written:
        assert SECRET not in path.read_text(errors="replace"), path
    captured = capsys.readouterr()
    assert SECRET not in captured.out + captured.err
    assert "NPLUS_TEST_JUDGE_KEY" in Path(tmp_path / "out" / "eval.json").read_text()  # the variable's name only


def test_authentication_error_stops_the_job(tmp_path, api_key):
    with ChatServer({post: ["401"] for post in POSTS}) as server:
        judge = make_judge(server, None)
        with pytest.raises(openai_judge.JudgeConfigError, match="refused"):
            judge.compare(POSTS[0], GOOD[0], BAD[0])
        assert server.total_requests == 1  # not retried
        # in a batch, queued requests are cancelled: at most the ones already in flight are sent
        with pytest.raises(openai_judge.JudgeConfigError):
            judge.compare_many([Comparison(p, g, b) for p, g, b in zip(POSTS[1:], GOOD[1:], BAD[1:])])
        assert server.total_requests - 1 <= 2 * judge.concurrency < len(POSTS) - 1


def test_eval_in_which_every_request_fails_exits_non_zero(tmp_path, api_key, capsys):
    """Issue #16: when no judgment succeeds, `nplus eval` says so in one line and exits 2, writing nothing;
    a null win rate with exit 0 would pass for a result."""
    from nplus.cli import main

    rows = [
        {"id": f"ex{i}", "post": p, "response": g, "reference": b.strip()}
        for i, (p, g, b) in enumerate(zip(POSTS[:3], GOOD, BAD))
    ]
    samples = tmp_path / "samples.jsonl"
    samples.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with ChatServer({post: ["500"] * (MAX_RETRIES + 1) for post in POSTS}) as server:
        rc = main(
            [
                "eval",
                "--input",
                str(samples),
                "--out",
                str(tmp_path / "out"),
                "--judge",
                "openai",
                "--judge-model",
                "gpt-4o-mini",
                "--judge-base-url",
                server.base_url,
                "--api-key-env",
                "NPLUS_TEST_JUDGE_KEY",
                "--max-retries",
                str(MAX_RETRIES),
                "--retry-base-delay-s",
                "0.01",
                "--timeout-s",
                str(CLIENT_TIMEOUT_S),
                "--cache-dir",
                "None",
            ]
        )
        assert server.total_requests == 3 * (MAX_RETRIES + 1)
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert rc == 2 and len(err) == 1, err
    assert err[0].startswith("error: every judgment failed (3 examples") and "InternalServerError" in err[0]
    assert not (tmp_path / "out").exists()
