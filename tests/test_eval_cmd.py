"""``nplus eval`` (run_eval): inputs, validation before any work, outputs, against the real gold judge on a
small tldr-synth corpus."""

import csv
import json
import random

import pytest
import tyro

from nplus.evaluation.evaluate_cmd import EvalConfig, EvalInputError, JudgeOptions, post_from_query, run_eval
from nplus.evaluation.metrics import METRICS
from nplus.tasks.gold import GoldJudge
from nplus.tasks.synth import POLICIES, make_posts, policy_summary

# "ref" copies the reference, a tie that the gold judge breaks by hashing the texts (order-dependent)
JUDGED_POLICIES = [p for p in POLICIES if p != "ref"]


def query_of(post) -> str:
    return f"SUBREDDIT: r/{post.subreddit}\n\nTITLE: {post.title}\n\nPOST: {post.text}\n\nTL;DR:"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A small tldr-synth corpus: data dir with facts.jsonl, and one policy summary per post."""
    data_dir = tmp_path_factory.mktemp("synth")
    rng = random.Random(0)
    posts = make_posts(40, rng, set(), set())
    with (data_dir / "facts.jsonl").open("w") as f:
        for p in posts:
            f.write(json.dumps({"id": p.id, "post": p.text, "facts": p.facts}) + "\n")
    rows = []
    for i, p in enumerate(posts):
        policy = JUDGED_POLICIES[i % len(JUDGED_POLICIES)]
        rows.append(
            {
                "id": p.id,
                "post": p.text,
                "query": query_of(p),
                "reference": p.reference,
                "response": " " + policy_summary(p, policy, rng),
                "finished": policy != "truncated",
            }
        )
    return data_dir, rows


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def gold_config(input_path, data_dir, **kwargs):
    return EvalConfig(
        input=input_path, judge="gold", judge_options=JudgeOptions(data_dir=data_dir), n_bootstrap=200, **kwargs
    )


def test_post_from_query():
    query = "SUBREDDIT: r/relationships\n\nTITLE: Help\n\nPOST: first line\nsecond line\n\nTL;DR:"
    assert post_from_query(query) == "first line\nsecond line"
    assert post_from_query("no template here") is None


def test_run_directory_end_to_end(tmp_path, corpus):
    data_dir, rows = corpus
    run_dir = tmp_path / "runs" / "study" / "baseline" / "seed=1"
    run_dir.mkdir(parents=True)
    sft_rows = [{**r, "stage": "sft", "response": " i do not know"} for r in rows]
    write_jsonl(run_dir / "samples.jsonl", sft_rows + [{**r, "stage": "ppo"} for r in rows])
    (run_dir / "eval.json").write_text('{"the pipeline": "wrote this"}\n')
    # without --out a run directory is refused: its eval.json is the pipeline's (its DONE vouches for it)
    with pytest.raises(EvalInputError, match="is a run directory: pass --out DIR"):
        run_eval(gold_config(run_dir, data_dir))
    assert json.loads((run_dir / "eval.json").read_text()) == {"the pipeline": "wrote this"}
    assert not (run_dir / "judgments.jsonl").exists()
    result = run_eval(gold_config(run_dir, data_dir, out=run_dir))  # told to: written there

    assert result["stage"] == "ppo" and result["n_total"] == len(rows) == result["n"]
    assert result["n_unparseable"] == result["n_failed"] == result["n_ties"] == 0
    for key in (
        "win_rate",
        "win_rate_ci_wilson",
        "win_rate_ci_bootstrap",
        "lc_win_rate",
        "lc_win_rate_ci",
        "lc_slope",
        "lc_slope_ci",
        "lc_method",
        "length_bins",
        "rouge1",
        "rouge2",
        "rougeL",
        "rouge1_ci",
        "mean_length",
        "position_bias",
        "judge",
        "judge_model",
        "judge_seed",
        "seed",
    ):
        assert key in result, key
    assert {"win_rate", "lc_win_rate", "rouge1", "position_bias", "mean_length"} <= set(METRICS)
    on_disk = json.loads((run_dir / "eval.json").read_text())
    assert on_disk["win_rate"] == result["win_rate"] and on_disk["judge"] == "gold"

    # every verdict agrees with scoring policy and reference directly with the gold judge
    gold = GoldJudge.from_dir(data_dir)
    judged = [json.loads(line) for line in (run_dir / "judgments.jsonl").read_text().splitlines()]
    assert [j["id"] for j in judged] == [r["id"] for r in rows]
    for j, r in zip(judged, rows):
        s_policy, s_ref = gold.score(r["post"], r["response"], r["finished"]), gold.score(r["post"], r["reference"])
        if abs(s_policy - s_ref) <= 1e-9:  # a tie: the judge's stable hash decides (tested in test_gold.py)
            continue
        assert j["winner"] == ("policy" if s_policy > s_ref else "reference")
        assert j["order"] in ("policy_first", "reference_first") and j["choice"] in ("A", "B")
        assert j["raw"].endswith(f"Preferred: {j['choice']}") and j["response_length"] > 0
    wins = sum(j["winner"] == "policy" for j in judged)
    assert result["win_rate"] == pytest.approx(wins / len(rows))

    # the SFT rows are evaluated on request, into another directory
    sft = run_eval(gold_config(run_dir, data_dir, stage="sft", out=tmp_path / "sft_eval"))
    assert sft["stage"] == "sft" and sft["win_rate"] < result["win_rate"]


def test_csv_with_query_column_and_text_flags(tmp_path, corpus):
    data_dir, rows = corpus
    path = tmp_path / "samples.csv"
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["query", "response", "reference", "finished"])
        writer.writeheader()
        for r in rows:
            writer.writerow(
                {
                    "query": r["query"],
                    "response": r["response"],
                    "reference": r["reference"],
                    "finished": str(r["finished"]),
                }
            )
    result = run_eval(gold_config(path, data_dir))
    out = tmp_path / "samples_eval"
    judged = [json.loads(line) for line in (out / "judgments.jsonl").read_text().splitlines()]
    assert [j["id"] for j in judged] == [str(i) for i in range(len(rows))]
    assert [j["finished"] for j in judged] == [r["finished"] for r in rows]
    # same verdicts as with the post column
    by_post = run_eval(gold_config(write_jsonl(tmp_path / "s.jsonl", rows), data_dir, out=tmp_path / "o"))
    assert result["win_rate"] == by_post["win_rate"]


def test_both_orders_and_order_seed(tmp_path, corpus):
    data_dir, rows = corpus
    # equal gold scores are broken by a hash of the pair in each order, so position consistency is only exact
    # without them: keep the rows whose summary and reference score differently
    gold = GoldJudge.from_dir(data_dir)
    rows = [
        r
        for r in rows
        if gold.score(r["post"], r["response"], r["finished"]) != gold.score(r["post"], " " + r["reference"])
    ]
    path = write_jsonl(tmp_path / "s.jsonl", rows)
    one = run_eval(gold_config(path, data_dir, out=tmp_path / "one"))
    opts = JudgeOptions(data_dir=data_dir, judge_seed=7, both_orders=True)
    both = run_eval(EvalConfig(input=path, judge="gold", judge_options=opts, out=tmp_path / "both", n_bootstrap=200))
    # the gold judge reads content, not position: same win rate, fully consistent
    assert both["win_rate"] == one["win_rate"] and both["position_consistency"] == 1.0 and both["n_ties"] == 0
    orders = [json.loads(x)["order"] for x in (tmp_path / "one" / "judgments.jsonl").read_text().splitlines()]
    reseeded = [json.loads(x)["order"] for x in (tmp_path / "both" / "judgments.jsonl").read_text().splitlines()]
    assert orders != reseeded
    assert one["judge_seed"] == 0 and both["judge_seed"] == 7


def test_limit(tmp_path, corpus):
    data_dir, rows = corpus
    result = run_eval(gold_config(write_jsonl(tmp_path / "s.jsonl", rows), data_dir, limit=5))
    assert result["n_total"] == 5


def _drop(rows, column):
    return [{k: v for k, v in r.items() if k != column} for r in rows]


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda rows: _drop(rows, "response"), "no column 'response'"),
        (lambda rows: _drop(rows, "reference"), "no column 'reference'"),
        (lambda rows: _drop(_drop(rows, "post"), "query"), "neither a 'post' nor a 'query' column"),
        (lambda rows: rows[:2] + [{**rows[2], "reference": None}] + rows[3:], "row 3: column 'reference' is empty"),
        (lambda rows: [{**r, "finished": "maybe"} for r in rows], "column 'finished' must be true/false"),
        (lambda rows: _drop(rows, "post")[:1] + [{**_drop(rows, "post")[1], "query": "bad"}], "row 2: column 'query'"),
        (lambda rows: rows[:3] + [{**rows[3], "post": "a post the corpus does not have"}], "not in"),
        (
            lambda rows: [{**r, "stage": "sft"} for r in rows] + [{**r, "stage": "rm"} for r in rows],
            "choose one with --stage",
        ),
    ],
)
def test_input_errors_come_before_any_work(tmp_path, corpus, mutate, message):
    data_dir, rows = corpus
    path = write_jsonl(tmp_path / "bad.jsonl", mutate(rows))
    with pytest.raises(EvalInputError, match=message) as info:
        run_eval(gold_config(path, data_dir))
    assert "bad.jsonl" in str(info.value)
    assert not (tmp_path / "bad_eval").exists()  # issue #16: a refused eval leaves no (empty) output folder


def test_configuration_errors(tmp_path, corpus):
    data_dir, rows = corpus
    path = write_jsonl(tmp_path / "s.jsonl", rows)
    with pytest.raises(EvalInputError, match="does not exist"):
        run_eval(gold_config(tmp_path / "missing.jsonl", data_dir))
    (tmp_path / "empty_run").mkdir()
    with pytest.raises(EvalInputError, match="without samples.jsonl"):
        run_eval(gold_config(tmp_path / "empty_run", data_dir))
    with pytest.raises(EvalInputError, match="--data-dir"):
        run_eval(EvalConfig(input=path))
    with pytest.raises(EvalInputError, match="no rows of stage 'ppo'"):
        run_eval(
            gold_config(
                write_jsonl(tmp_path / "sft.jsonl", [{**r, "stage": "sft"} for r in rows]), data_dir, stage="ppo"
            )
        )
    with pytest.raises(EvalInputError, match="--tokenizer"):
        run_eval(gold_config(path, data_dir, length_unit="tokens"))
    with pytest.raises(EvalInputError, match="--judge-model"):
        run_eval(EvalConfig(input=path, judge="hf"))


def test_hf_judge_and_token_lengths(tmp_path, corpus):
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM, PreTrainedTokenizerFast

    _, rows = corpus
    model_dir = tmp_path / "judge_model"
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(
        [r["post"] for r in rows],
        trainers.BpeTrainer(
            vocab_size=500, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
        ),
    )
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>")
    tokenizer.save_pretrained(model_dir)
    torch.manual_seed(0)
    GPTNeoXForCausalLM(
        GPTNeoXConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=4,
            intermediate_size=64,
            max_position_embeddings=1024,
        )
    ).save_pretrained(model_dir)
    path = write_jsonl(tmp_path / "s.jsonl", rows[:6])
    opts = JudgeOptions(judge_model=str(model_dir), device="cpu")
    result = run_eval(
        EvalConfig(
            input=path, judge="hf", judge_options=opts, length_unit="tokens", tokenizer=model_dir, n_bootstrap=50
        )
    )
    assert result["judge"] == "hf" and result["n"] == 6 and result["length_unit"] == "tokens"
    judged = [json.loads(x) for x in (tmp_path / "s_eval" / "judgments.jsonl").read_text().splitlines()]
    expected = [len(tokenizer(" " + r["response"].strip())["input_ids"]) for r in rows[:6]]
    assert [j["response_length"] for j in judged] == expected


def test_help_shows_field_docs():
    # in a subprocess: tyro's --help binds a console to the streams of the moment, which pytest closes afterwards
    import subprocess
    import sys

    text = subprocess.run(
        [sys.executable, "-m", "nplus.cli", "eval", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**__import__("os").environ, "COLUMNS": "200"},
    ).stdout
    for flag in ("--input", "--judge", "--judge-model", "--both-orders", "--api-key-env", "--data-dir", "--cache-dir"):
        assert flag in text, flag
    assert "Seed of the per-example A/B order" in text
    cfg = tyro.cli(
        EvalConfig,
        args=[
            "--input",
            "x.jsonl",
            "--judge",
            "openai",
            "--judge-model",
            "gpt-4o-mini",
            "--both-orders",
            "--concurrency",
            "2",
        ],
    )
    assert cfg.judge_options.both_orders and cfg.judge_options.concurrency == 2
