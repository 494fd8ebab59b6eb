"""Judges: the reply parser, the gold adapter, the local hf judge, the protocol against the reference, and the
openai judge's pure helpers (cost estimate, cache, back-off)."""

import json
import random

import pytest

from nplus.evaluation import judges, openai_judge
from nplus.evaluation.judge_factory import make_judge
from nplus.evaluation.judges import Comparison, Judge, Judgment, judge_against_reference
from nplus.evaluation.parser import parse_choice

PARSE_CASES = [
    ("Preferred: A", "A"),
    ("Summary B", "B"),
    ("**A**", "A"),
    ("A", "A"),
    ("B.", "B"),
    ("Preferred: **B**", "B"),
    ("**Preferred:** A", "A"),
    ("preferred: b", "B"),
    ("Preferred: Summary B", "B"),
    ("The answer is: (B)", "B"),
    ("Summary A covers the breakup but misses the age.\nSummary B is complete.\nPreferred: B", "B"),
    # the verdict line wins over letters mentioned in the comparison
    ("Comparison: A is more concise and accurate than B.\nPreferred: B", "B"),
    ("Comparison: Both summaries are accurate, but A omits the key question.\n\nPreferred: B", "B"),
    ("Neither summary is perfect, but overall\nB", "B"),
    ("I prefer Summary A.", "A"),
    ("Summary B is better.", "B"),
    ("Both are good", None),
    ("Both summaries are equally good.", None),
    ("I cannot determine which is better.", None),
    ("As an AI, I can't decide.", None),
    ("Honestly I can't decide; Summary A is shorter.", None),
    ("A and B are similar", None),
    ("A tie.", None),
    ("Summary A is more concise than Summary B", None),
    ("Preferred: A or B", None),
    ("Preferred: Neither", None),
    ("Preferred: a summary that covers every fact", None),
    ("", None),
    # issue #16: the prompt ends with "Preferred: <A or B>", and a judge may copy the brackets
    ("Comparison: Summary A keeps the age and the question.\nPreferred: <A>", "A"),
    ("Preferred: <B>", "B"),
    ("Preferred: <A or B>", None),
    # issue #16: "similar", "tie", "both summaries are" describe content and do not veto a named winner
    ("Summary A is better as it includes the request for similar experiences.", "A"),
    ("Both summaries are accurate, but Summary B is better.", "B"),
    ("Summary B is better because it keeps the tie to her family.", "B"),
    ("I prefer Summary A; the two are similar in length.", "A"),
    # ... but still veto a bare mention, and genuine ties and refusals stay unparseable
    ("Both summaries are similar; Summary A is shorter.", None),
    ("It's a tie.", None),
    ("Neither summary is better.", None),
    ("There is no clear preference, although Summary A is better on style.", None),
    ("I can't decide. Summary B is better in places, Summary A in others.", None),
    # issue #35: real judge explanations without a verdict line ("preferable": 111 of 1,000)
    ("Summary A misses the age, while Summary B keeps every fact. Summary B is preferable.", "B"),
    ("Summary A is preferable because it keeps the question; Summary B drops it.", "A"),
    ("Summary B would be the better one; Summary A invents a sister.", "B"),
    ("Summary A is much better and more faithful than Summary B.", "A"),
    ("Summary B seems more preferable overall.", "B"),
    ("Summary A is more concise, but Summary B is preferable for accuracy.", "B"),
    ("Neither summary is preferable.", None),
    ("Summary A is preferable in tone, Summary B is preferable in content.", None),
]


@pytest.mark.parametrize("reply, expected", PARSE_CASES)
def test_parse_choice(reply, expected):
    assert parse_choice(reply) == expected


def test_judgment_status():
    assert Judgment("A", "Preferred: A").status == "ok"
    assert Judgment(None, "Both are good").status == "unparseable"
    assert Judgment(None, "", error="RateLimitError").status == "failed"


POST = "my girlfriend of two years broke up with me yesterday and i do not know what to do now"


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory):
    """A tiny tldr-synth corpus: facts.jsonl for the gold judge, plus the posts."""
    from nplus.tasks.synth import make_posts

    path = tmp_path_factory.mktemp("synth")
    posts = make_posts(8, random.Random(0), set(), set())
    with (path / "facts.jsonl").open("w") as f:
        for p in posts:
            f.write(json.dumps({"id": p.id, "post": p.text, "facts": p.facts}) + "\n")
    return path, posts


def test_gold_adapter_matches_the_gold_judge(synth_dir):
    from nplus.tasks.gold import GoldJudge
    from nplus.tasks.synth import policy_summary

    path, posts = synth_dir
    adapter, gold = make_judge("gold", data_dir=path), GoldJudge.from_dir(path)
    rng = random.Random(1)
    for p in posts:
        good, bad = " " + p.reference, " " + policy_summary(p, "wrong", rng)
        for a, b, a_fin in ((good, bad, True), (bad, good, True), (good, good, False)):
            ours, theirs = adapter.compare(p.text, a, b, a_finished=a_fin), gold.compare(p.text, a, b, a_finished=a_fin)
            assert (ours.choice, ours.raw, ours.score_a, ours.score_b) == (
                theirs.choice,
                theirs.raw,
                theirs.score_a,
                theirs.score_b,
            )
        # an unfinished copy of the same summary loses
        assert adapter.compare(p.text, good, good, a_finished=False).choice == "B"
    assert adapter.unknown_posts([posts[0].text, "not a post", posts[1].text]) == [1]
    assert adapter.name == "gold" and path.name in adapter.model


class ScriptedJudge(Judge):
    """Answers from a function of the comparison, for protocol tests."""

    name, model = "scripted", "scripted"

    def __init__(self, answer):
        self.answer = answer

    def compare(self, post, a, b, a_finished=True, b_finished=True):
        return self.answer(post, a, b)


def test_orders_are_seeded_recorded_and_mapped_back():
    posts = [f"post {i}" for i in range(40)]
    policy = [f"policy {i}" for i in range(40)]
    reference = [f"reference {i}" for i in range(40)]
    # a perfect judge that always finds the policy summary, wherever it is shown
    always_policy = ScriptedJudge(lambda p, a, b: Judgment("A" if a.startswith("policy") else "B", "ok"))
    records = judge_against_reference(always_policy, posts, policy, reference, seed=3)
    assert {r["outcome"] for r in records} == {"win"} and {r["winner"] for r in records} == {"policy"}
    orders = [r["order"] for r in records]
    assert set(orders) == {"policy_first", "reference_first"}
    assert [r["order"] for r in judge_against_reference(always_policy, posts, policy, reference, seed=3)] == orders
    assert [r["order"] for r in judge_against_reference(always_policy, posts, policy, reference, seed=4)] != orders
    assert orders == ["policy_first" if o else "reference_first" for o in judges.assign_orders(40, 3)]


def test_both_orders_expose_position_bias_as_ties():
    posts, policy, reference = ["p"] * 10, ["x"] * 10, ["y"] * 10
    first_slot = ScriptedJudge(lambda p, a, b: Judgment("A", "Preferred: A"))
    single = judge_against_reference(first_slot, posts, policy, reference, seed=0)
    assert {r["outcome"] for r in single} <= {"win", "loss"}
    both = judge_against_reference(first_slot, posts, policy, reference, seed=0, both_orders=True)
    assert {r["outcome"] for r in both} == {"tie"}
    assert all(r["swapped"]["order"] != r["order"] for r in both)


def test_unparseable_and_failed_are_never_assigned():
    def answer(post, a, b):
        if post == "refuse":
            return Judgment(None, "I cannot determine")
        if post == "fail":
            return Judgment(None, "", error="APITimeoutError")
        return Judgment("A", "Preferred: A")

    records = judge_against_reference(ScriptedJudge(answer), ["refuse", "fail", "ok"], ["x"] * 3, ["y"] * 3)
    assert [r["outcome"] for r in records[:2]] == ["unparseable", "failed"]
    assert records[0]["winner"] is None and records[1]["winner"] is None and records[1]["error"] == "APITimeoutError"
    both = judge_against_reference(ScriptedJudge(answer), ["refuse", "fail"], ["x"] * 2, ["y"] * 2, both_orders=True)
    assert [r["outcome"] for r in both] == ["unparseable", "failed"]


def test_unfinished_policy_response_reaches_the_judge():
    seen = []

    class Recorder(Judge):
        name, model = "recorder", "recorder"

        def compare(self, post, a, b, a_finished=True, b_finished=True):
            seen.append((a, a_finished, b, b_finished))
            return Judgment("A", "A")

    judge_against_reference(Recorder(), ["p"] * 8, ["resp"] * 8, ["ref"] * 8, finished=[False] * 8, seed=0)
    for a, a_fin, b, b_fin in seen:
        assert (a_fin, b_fin) == ((False, True) if a == "resp" else (True, False))


def test_prompt_strips_leading_space_and_asks_for_the_verdict_format():
    prompt = judges.build_prompt(" the post ", " summary one", "summary two")
    assert "Post:\nthe post\n" in prompt and "Summary A:\nsummary one\n" in prompt
    assert "Summary B:\nsummary two\n" in prompt and prompt.endswith("Preferred: <A or B>")
    assert "accuracy, coverage and coherence" in prompt


def test_cost_estimate_uses_the_price_table():
    est = openai_judge.estimate_cost(["x" * 4000] * 1000, "gpt-3.5-turbo-0125", max_tokens=100)
    assert est.input_tokens == 1_000_000 and est.max_output_tokens == 100_000
    assert est.usd == pytest.approx(0.5 + 0.15)
    assert openai_judge.estimate_cost(["x" * 4000], "gpt-4o-mini", 0).usd == pytest.approx(0.15 / 1000)
    assert openai_judge.estimate_cost(["x"], "my-local-model", 10).usd is None
    assert openai_judge.estimate_cost(["x" * 4], "my-local-model", 0, price_per_1m=(2.0, 0)).usd == pytest.approx(2e-6)
    assert "1 uncached requests" in openai_judge.estimate_cost(["x"], "m", 1).describe("m")


def test_cache_key_and_reply_cache(tmp_path):
    key = openai_judge.cache_key("gpt-4o-mini", "prompt", 0.0)
    assert key == openai_judge.cache_key("gpt-4o-mini", "prompt", 0.0)
    assert (
        len(
            {key, openai_judge.cache_key("gpt-4o", "prompt", 0.0), openai_judge.cache_key("gpt-4o-mini", "prompt", 0.7)}
        )
        == 3
    )
    cache = openai_judge.ReplyCache(tmp_path)
    cache.put(key, "gpt-4o-mini", "Preferred: A", {"prompt_tokens": 3, "completion_tokens": 2})
    with cache.path.open("a") as f:
        f.write('{"key": "cut short')  # a crash mid-write must not poison the cache
    reopened = openai_judge.ReplyCache(tmp_path)
    assert reopened.get(key)["reply"] == "Preferred: A" and reopened.get("other") is None


def test_backoff_grows_exponentially_with_bounded_jitter():
    rng = random.Random(0)
    for attempt in range(5):
        delay = openai_judge.backoff_delay(attempt, 0.1, 100.0, rng)
        assert 0.05 * 2**attempt <= delay <= 0.15 * 2**attempt
    assert openai_judge.backoff_delay(30, 1.0, 5.0, rng) == 5.0


def test_openai_judge_requires_the_key_variable(monkeypatch):
    monkeypatch.delenv("NPLUS_TEST_MISSING_KEY", raising=False)
    with pytest.raises(openai_judge.JudgeConfigError, match="NPLUS_TEST_MISSING_KEY"):
        openai_judge.OpenAIJudge(model="gpt-4o-mini", api_key_env="NPLUS_TEST_MISSING_KEY")


@pytest.fixture(scope="module")
def tiny_hf_model(tmp_path_factory):
    """A randomly initialised GPT-NeoX with a BPE tokenizer trained here, saved like a local checkpoint."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM, PreTrainedTokenizerFast

    path = tmp_path_factory.mktemp("hf_judge")
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    bpe.train_from_iterator([judges.JUDGE_PROMPT, POST, "Preferred: A", "Preferred: B"] * 5, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>")
    tokenizer.save_pretrained(path)
    torch.manual_seed(0)
    # a short context so that the judging prompt must be truncated from the left
    config = GPTNeoXConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    GPTNeoXForCausalLM(config).save_pretrained(path)
    return path


def test_hf_judge_returns_valid_choices(tiny_hf_model):
    judge = judges.HFJudge.from_path(tiny_hf_model, device="cpu")
    items = [Comparison(POST, " she left me", " i bought a car"), Comparison(POST, " i bought a car", " she left me")]
    results = judge.compare_many(items)
    for j in results:
        assert j.choice in ("A", "B") and j.status == "ok"
        assert j.score_a < 0 and j.score_b < 0 and "logp(A)" in j.raw
    # deterministic: the same question gets the same log-probabilities
    assert judge.compare(POST, " she left me", " i bought a car") == results[0]


def test_hf_judge_logprobs_match_an_unbatched_forward(tiny_hf_model):
    import torch

    judge = judges.HFJudge.from_path(tiny_hf_model, device="cpu")
    prompt_ids = judge.tokenizer("Post: she left me\n\nPreferred:")["input_ids"]
    batched = judge._continuation_logprobs(prompt_ids)
    for cont, value in zip(judge._continuations, batched):
        ids = torch.tensor([prompt_ids + cont])
        logprobs = torch.log_softmax(judge.lm(input_ids=ids).logits[0], dim=-1)
        expected = sum(logprobs[len(prompt_ids) + j - 1, tok].item() for j, tok in enumerate(cont))
        assert value == pytest.approx(expected, abs=1e-4)


def test_hf_judge_truncates_long_prompts_to_the_context(tiny_hf_model):
    judge = judges.HFJudge.from_path(tiny_hf_model, device="cpu")
    long_prompt = judges.build_prompt(POST * 5, " she left me", " i bought a car") + "\n\nPreferred:"
    assert len(judge.tokenizer(long_prompt)["input_ids"]) > judge.lm.config.max_position_embeddings
    assert judge.compare(POST * 5, " she left me", " i bought a car").choice in ("A", "B")
