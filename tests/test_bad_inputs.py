"""The bad-input catalogue (issue #16; docs/bad-inputs.md): one row per class of bad input across the CLI, study
files, configs, datasets, judge replies and the environment.

Every row runs `nplus` in-process (``nplus.cli.main``, as `python -m nplus.cli` does; two rows also run it as a
subprocess) and must give one clear message that names the field and, where there are choices, the valid ones;
a non-zero exit; no traceback; and no output or cache directory. Rows fail before any compute: none may take
more than a few seconds, and none may create the cache where data or models would be built.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pickle
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from nplus.cli import main
from nplus.data.loader import load_comparisons, load_sft
from nplus.tasks.synth import generate

ROOT = Path(__file__).resolve().parent.parent
# the datasets progress bars are not messages
_PROGRESS = re.compile(r"examples/s\]|^\s*$")


@dataclass(frozen=True)
class Case:
    """argv with {placeholders} from the `inputs` fixture; every string of `says` must be in the message."""

    id: str
    argv: tuple[str, ...]
    says: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    tyro: bool = False  # a parse error: tyro's boxed message (several lines) instead of one "error:" line
    unless_installed: str | None = None  # the class exists only while this package is not installed
    hub_unreachable: bool = False  # point the Hugging Face hub at a closed port (environment variables are read
    # when huggingface_hub is imported, so an in-process run patches its constant)


def _jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


class _CreatesSentinel:
    """Unpickling this object creates a directory: proof that a checkpoint was (or was not) unpickled."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (os.mkdir, (str(self.path),))


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, str]:
    """Every file the catalogue points at: a tiny tldr-synth corpus and broken copies of its parts."""
    root = tmp_path_factory.mktemp("bad")
    synth = root / "synth"
    generate(synth, 0, "tiny")
    sft = [dict(r) for r in load_sft(str(synth / "sft"))["train"].select(range(4))]
    cmp = [dict(r) for r in load_comparisons(str(synth / "comparisons"))["train"].select(range(4))]
    p: dict[str, str] = {"synth": str(synth), "tokenizer": str(synth / "tokenizer"), "root": str(root)}
    # datasets in the public schemas, each broken in one way
    p["sft_no_summary"] = _jsonl(root / "sft_no_summary.jsonl", [{k: v for k, v in r.items() if k != "summary"} for r in sft])
    p["sft_int_post"] = _jsonl(root / "sft_int_post.jsonl", [{**r, "post": 7} for r in sft])
    p["sft_empty_post"] = _jsonl(root / "sft_empty_post.jsonl", [*sft[:2], {**sft[2], "post": "   "}, sft[3]])
    p["sft_long_title"] = _jsonl(root / "sft_long_title.jsonl", [{**r, "title": "why " * 700} for r in sft])
    p["cmp_choice_2"] = _jsonl(root / "cmp_choice_2.jsonl", [*cmp[:1], {**cmp[1], "choice": 2}, *cmp[2:]])
    p["cmp_no_choice"] = _jsonl(root / "cmp_no_choice.jsonl", [{k: v for k, v in r.items() if k != "choice"} for r in cmp])
    p["data_file"] = str(root / "posts.txt")
    Path(p["data_file"]).write_text("not a dataset\n")
    # a byte-level BPE saved without any EOS token
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.train_from_iterator([r["post"] for r in sft], trainers.BpeTrainer(
        vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    PreTrainedTokenizerFast(tokenizer_object=bpe).save_pretrained(str(root / "tok_no_eos"))
    p["tok_no_eos"] = str(root / "tok_no_eos")
    # model directories: only a pickle checkpoint (which would create `sentinel` if unpickled), no weights at all
    pickled = root / "pickle_only"
    pickled.mkdir()
    (pickled / "config.json").write_text(json.dumps({"model_type": "gpt_neox"}))
    p["sentinel"] = str(root / "unpickled")
    (pickled / "pytorch_model.bin").write_bytes(pickle.dumps(_CreatesSentinel(Path(p["sentinel"]))))
    p["pickle_only"] = str(pickled)
    (root / "no_config").mkdir()
    p["no_config"] = str(root / "no_config")
    # hub-layout model directories (safetensors, tokenizer files) for the real task: one with the synth tokenizer,
    # one whose tokenizer has no EOS
    from transformers import AutoTokenizer, GPTNeoXForCausalLM

    from nplus.models import ladder_config

    for name, tok_dir in (("model", synth / "tokenizer"), ("model_no_eos", root / "tok_no_eos")):
        tok = AutoTokenizer.from_pretrained(str(tok_dir))
        GPTNeoXForCausalLM(ladder_config("nano", len(tok) + 1, 1024, tok.eos_token_id or 0, 0)).save_pretrained(
            str(root / name))
        tok.save_pretrained(str(root / name))
        p[name] = str(root / name)
    # eval inputs
    good = {"id": "0", "post": sft[0]["post"], "response": " a summary", "reference": sft[0]["summary"]}
    p["samples"] = _jsonl(root / "samples.jsonl", [good])
    p["samples_no_response"] = _jsonl(root / "samples_no_response.jsonl", [{k: v for k, v in good.items() if k != "response"}])
    p["samples_bad_finished"] = _jsonl(root / "samples_bad_finished.jsonl", [{**good, "finished": "maybe"}])
    (root / "samples_bad_json.jsonl").write_text(json.dumps(good) + "\n{not json\n")
    p["samples_bad_json"] = str(root / "samples_bad_json.jsonl")
    # study files
    studies = {
        "malformed": 'name = "x"\npreset = "smoke\n',
        "unknown_key": 'name = "x"\npreset = "smoke"\nseeds = "smoke"\nrepeats = 3\n',
        "unknown_detail": 'name = "x"\npreset = "smoke"\nseeds = "smoke"\n[[variants]]\nname = "v"\n'
                          'details = { no_such_detail = "on" }\n',
        "bad_value": 'name = "x"\npreset = "smoke"\nseeds = "smoke"\n[[variants]]\nname = "v"\n'
                     'details = { reward_whitening = "sometimes" }\n',
        "unknown_preset": 'name = "x"\npreset = "huge"\nseeds = "smoke"\n',
        "unknown_seeds": 'name = "x"\npreset = "smoke"\nseeds = "lucky"\n',
    }
    for name, text in studies.items():
        (root / f"study_{name}.toml").write_text(text)
        p[f"study_{name}"] = str(root / f"study_{name}.toml")
    return p


SMOKE = ("pipeline", "--preset", "smoke", "--out", "{out}", "--cache", "{cache}")
BUILD = ("data-build", "--out", "{out}", "--tokenizer", "{tokenizer}")
EVAL_GOLD = ("eval", "--out", "{out}", "--judge", "gold", "--data-dir", "{synth}")
UNREACHABLE = "http://127.0.0.1:9/v1"  # the discard port: connection refused at once

CASES = [
    # ---- the command line
    Case("unknown-subcommand", ("trian",), ("Unrecognized options: trian", "pipeline", "eval", "ablate"), tyro=True),
    Case("unknown-preset", (*SMOKE, "--preset", "huge"), ("unknown preset 'huge'", "smoke, demo, paper-1b")),
    Case("unknown-detail", (*SMOKE, "--details.no-such-detail", "on"),
         ("--details.no_such_detail: unknown detail", "valid details: query_truncation, query_padding_side")),
    Case("unknown-detail-value", (*SMOKE, "--details.query-truncation", "sometimes"),
         ("--details.query-truncation", "sometimes", "'newline'", "'hard'"), tyro=True),
    Case("unknown-framework", (*SMOKE, "--framework", "trl"), ("unknown framework 'trl'", "trl-ppo, openrlhf")),
    Case("bad-flag-type", (*SMOKE, "--seed", "one"), ("--seed", "one"), tyro=True),
    Case("unknown-set-field", (*SMOKE, "--set", "ppo.learning_rate=1e-4"),
         ("--set ppo.learning_rate", "unknown field 'learning_rate' in ppo", "valid fields: lr, total_episodes")),
    Case("set-value-not-a-choice", (*SMOKE, "--set", "model.dtype=float16"), ("model.dtype='float16'", "float32, bfloat16")),
    Case("bad-set-type", (*SMOKE, "--set", "ppo.lr=fast"), ("--set ppo.lr", "cannot read 'fast' as float")),
    Case("synth-comparisons-below-the-scale", (*SMOKE, "--set", "task.synth_comparisons=3"),
         ("task.synth_comparisons=3: at least the", "task.max_comparisons_train")),
    Case("set-without-value", (*SMOKE, "--set", "ppo.lr"), ("--set expects KEY=VALUE", "'ppo.lr'")),
    Case("set-on-a-detail", (*SMOKE, "--set", "details.dropout=disabled"), ("--set details.dropout", "--details.dropout")),
    Case("base-build-unknown-rung", ("base", "build", "--rung", "huge", "--out", "{out}", "--cache", "{cache}"),
         ("--rung 'huge'", "valid rungs: nano, nano2, micro, tiny, mini, micro4, xs")),
    Case("unknown-reward-source", (*SMOKE, "--reward.source", "oracle"),
         ("reward.source='oracle'", "valid choices: rm, gold, rule")),
    Case("unknown-reward-rule", (*SMOKE, "--reward.source", "rule", "--reward.rule", "polite"),
         ("reward.rule='polite'", "valid choices: keywords, sentiment")),
    Case("label-missing-input", ("label", "--out", "{out}", "--input", "{root}/none", "--cache", "{cache}"),
         ("--input", "expected tldr-synth or an existing comparisons directory")),
    # ---- configurations
    Case("indivisible-batch", (*SMOKE, "--set", "ppo.batch_size=7"), ("ppo.batch_size=7", "divisible by ppo.micro_batch")),
    Case("indivisible-minibatches", (*SMOKE, "--set", "ppo.num_minibatches=3"),
         ("ppo.batch_size=", "divisible by ppo.num_minibatches=3")),
    Case("response-longer-than-limit", (*SMOKE, "--set", "ppo.response_length=99"),
         ("ppo.response_length=99", "lengths.sft_response")),
    Case("processes-not-launched", (*SMOKE, "--set", "processes=2", "sft.micro_batch=8", "rm.micro_batch=8",
                                    "ppo.micro_batch=8"), ("processes=2", "launched with 1 processes")),
    Case("bad-lengths", (*BUILD, "--sft-source", "{synth}", "--comparisons-source", "{synth}", "--lengths.query", "0"),
         ("Lengths.query must be a positive int, got 0",), tyro=True),
    Case("non-data-detail-in-data-build", (*BUILD, "--sft-source", "{synth}", "--comparisons-source", "{synth}",
                                           "--details.kl-estimator", "k3"),
         ("details.kl_estimator=k3 does not affect the built datasets", "query_truncation")),
    # ---- study files
    Case("study-missing", ("ablate", "{root}/none.toml", "--out", "{out}", "--cache", "{cache}"), ("no such study file",)),
    Case("study-malformed-toml", ("ablate", "{study_malformed}", "--out", "{out}", "--cache", "{cache}"),
         ("not valid TOML",)),
    Case("study-unknown-key", ("ablate", "{study_unknown_key}", "--out", "{out}", "--cache", "{cache}"),
         ("repeats", "name, description, preset, seeds")),
    Case("study-unknown-detail", ("ablate", "{study_unknown_detail}", "--out", "{out}", "--cache", "{cache}"),
         ("no_such_detail",)),
    Case("study-bad-detail-value", ("ablate", "{study_bad_value}", "--out", "{out}", "--cache", "{cache}"),
         ("reward_whitening", "sometimes", "on", "off")),
    Case("study-unknown-preset", ("ablate", "{study_unknown_preset}", "--out", "{out}", "--cache", "{cache}"),
         ("preset", "unknown preset 'huge'", "smoke")),
    Case("study-unknown-seed-list", ("ablate", "{study_unknown_seeds}", "--out", "{out}", "--cache", "{cache}"),
         ("no seed list 'lucky'", "smoke")),
    # ---- datasets
    Case("dataset-missing-column", (*BUILD, "--sft-source", "{sft_no_summary}", "--comparisons-source", "{synth}"),
         ("sft[train]", "missing column 'summary'")),
    Case("dataset-wrong-type", (*BUILD, "--sft-source", "{sft_int_post}", "--comparisons-source", "{synth}"),
         ("sft[train]", "field 'post' must be a string")),
    Case("dataset-empty-post", (*BUILD, "--sft-source", "{sft_empty_post}", "--comparisons-source", "{synth}"),
         ("sft[train] row id=", "field 'post' must be a non-empty string")),
    Case("dataset-choice-out-of-range", (*BUILD, "--sft-source", "{synth}", "--comparisons-source", "{cmp_choice_2}"),
         ("comparisons[train] row id=", "field 'choice' must be 0 or 1, got 2")),
    Case("dataset-missing-choice", (*BUILD, "--sft-source", "{synth}", "--comparisons-source", "{cmp_no_choice}"),
         ("comparisons[train]", "missing column 'choice'")),
    Case("dataset-unsupported-file", (*BUILD, "--sft-source", "{data_file}", "--comparisons-source", "{synth}"),
         ("unsupported file type '.txt'", ".parquet")),
    Case("dataset-unknown-source", (*BUILD, "--sft-source", "no_such_dir", "--comparisons-source", "{synth}"),
         ("unknown data source 'no_such_dir'", "tldr-synth")),
    Case("query-cannot-fit", (*BUILD, "--sft-source", "{sft_long_title}", "--comparisons-source", "{synth}"),
         ("could not truncate the query to 512 tokens", "even with an empty post")),
    # ---- the environment: tokenizers, models, the hub, API keys
    Case("tokenizer-without-eos", ("data-build", "--out", "{out}", "--tokenizer", "{tok_no_eos}", "--sft-source",
                                   "{synth}", "--comparisons-source", "{synth}"),
         ("--tokenizer", "tok_no_eos: the tokenizer has no eos_token")),
    Case("hub-tokenizer-offline", ("data-build", "--out", "{out}", "--tokenizer", "EleutherAI/pythia-1b-deduped",
                                   "--sft-source", "{synth}", "--comparisons-source", "{synth}"),
         ("cannot load tokenizer 'EleutherAI/pythia-1b-deduped'", "unreachable", "hf download", "--tokenizer DIR"),
         hub_unreachable=True),
    Case("model-path-missing", (*SMOKE, "--set", "model.name=./no/such/model"),
         ("model.name='./no/such/model'", "nano, nano2, micro, tiny, mini, micro4, xs")),
    Case("model-dir-without-config", (*SMOKE, "--set", "model.name={no_config}"), ("model.name=", "config.json")),
    Case("pickle-only-checkpoint", (*SMOKE, "--set", "model.name={pickle_only}"),
         ("only pickle weights (pytorch_model.bin)", "safetensors", "never unpickles")),
    Case("openai-key-missing", ("eval", "--input", "{samples}", "--out", "{out}", "--judge", "openai",
                                "--cache-dir", "None"), ("environment variable OPENAI_API_KEY",),
         env={"OPENAI_API_KEY": ""}),
    Case("real-task-key-missing", (*SMOKE, "--set", "task.name=tldr", "task.sft_source={synth}",
                                   "task.comparisons_source={synth}", "model.name={model}"),
         ("environment variable OPENAI_API_KEY",), env={"OPENAI_API_KEY": ""}),
    Case("real-task-tokenizer-without-eos", (*SMOKE, "--set", "task.name=tldr", "task.sft_source={synth}",
                                             "task.comparisons_source={synth}", "model.name={model_no_eos}"),
         ("model.name=", "its tokenizer has no eos_token"), env={"OPENAI_API_KEY": "sk-test"}),
    Case("real-task-bad-dataset", (*SMOKE, "--set", "task.name=tldr", "task.sft_source={sft_int_post}",
                                   "task.comparisons_source={synth}", "model.name={model}"),
         ("sft[train]", "field 'post' must be a string"), env={"OPENAI_API_KEY": "sk-test"}),
    Case("synth-task-with-other-sources", (*SMOKE, "--set", "task.sft_source={synth}"),
         ("task.name=tldr-synth requires task.sft_source",)),
    Case("frozen-offload-without-deepspeed", (*SMOKE, "--set", "ppo.frozen_offload=true"),
         ("ppo.frozen_offload=true", "pip install deepspeed"), unless_installed="deepspeed"),
    # ---- evaluation inputs and judge replies
    Case("unknown-judge", ("eval", "--input", "{samples}", "--out", "{out}", "--judge", "gpt4"),
         ("--judge", "gpt4", "'gold'", "'openai'", "'hf'"), tyro=True),
    Case("eval-input-missing", (*EVAL_GOLD, "--input", "{root}/none.jsonl"), ("input file", "none.jsonl does not exist")),
    Case("eval-input-bad-json", (*EVAL_GOLD, "--input", "{samples_bad_json}"), ("line 2: not valid JSON",)),
    Case("eval-input-missing-column", (*EVAL_GOLD, "--input", "{samples_no_response}"),
         ("no column 'response'", "columns: ")),
    Case("eval-input-bad-finished", (*EVAL_GOLD, "--input", "{samples_bad_finished}"),
         ("column 'finished' must be true/false", "'maybe'")),
    Case("eval-gold-without-data", ("eval", "--input", "{samples}", "--out", "{out}", "--judge", "gold"),
         ("judge gold needs --data-dir",)),
    Case("eval-bad-limit", (*EVAL_GOLD, "--input", "{samples}", "--limit", "0"), ("--limit must be positive",)),
    Case("eval-bad-concurrency", ("eval", "--input", "{samples}", "--out", "{out}", "--judge", "openai",
                                  "--cache-dir", "None", "--concurrency", "0"),
         ("concurrency >= 1", "concurrency=0"), env={"OPENAI_API_KEY": "sk-test"}),
    Case("judge-every-request-fails", ("eval", "--input", "{samples}", "--out", "{out}", "--judge", "openai",
                                       "--judge-base-url", UNREACHABLE, "--max-retries", "0", "--cache-dir", "None"),
         ("every judgment failed (1 example;", "APIConnectionError"), env={"OPENAI_API_KEY": "sk-test"}),
]


def _run(argv: list[str], capsys) -> tuple[int, str]:
    try:
        rc = main(argv)
    except SystemExit as e:  # tyro's parse errors
        rc = e.code if isinstance(e.code, int) else 1
    captured = capsys.readouterr()
    return rc, captured.err


def _flat(text: str) -> str:
    """tyro draws its message in a box and wraps it: compare without the box and the line breaks."""
    return " ".join(re.sub(r"[│╭╮╰╯─|]", " ", text).split())


def test_the_catalogue_has_enough_distinct_classes():
    assert len({c.id for c in CASES}) == len(CASES) >= 25


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_fails_clearly_before_any_work(case, inputs, tmp_path, capsys, monkeypatch):
    if case.unless_installed and importlib.util.find_spec(case.unless_installed) is not None:
        pytest.skip(f"{case.unless_installed} is installed")
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.delenv("NPLUS_CACHE", raising=False)
    for key, value in case.env.items():
        monkeypatch.setenv(key, value)
    if case.hub_unreachable:
        from huggingface_hub import constants

        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    paths = {**inputs, "out": str(tmp_path / "out"), "cache": str(tmp_path / "cache")}
    argv = [a.format(**paths) for a in case.argv]
    monkeypatch.chdir(tmp_path)  # anything written relative to the working directory would show up below
    started = time.monotonic()
    rc, err = _run(argv, capsys)
    assert time.monotonic() - started < 20, "a bad input must fail before any compute"
    assert rc != 0 and "Traceback" not in err, err
    lines = [line for line in err.splitlines() if not _PROGRESS.search(line)]
    if not case.tyro:
        assert len(lines) == 1 and lines[0].startswith("error: "), lines
    for expected in case.says:
        assert expected in _flat(err), (expected, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == [], "a refused command leaves nothing behind"
    assert not Path(inputs["sentinel"]).exists(), "a pickle checkpoint was unpickled"


@pytest.mark.parametrize("case", [c for c in CASES if c.id in ("unknown-detail-value", "indivisible-batch")],
                         ids=lambda c: c.id)
def test_the_real_command_line_exits_non_zero_without_traceback(case, inputs, tmp_path):
    paths = {**inputs, "out": str(tmp_path / "out"), "cache": str(tmp_path / "cache")}
    env = {**os.environ, "COLUMNS": "200", "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-m", "nplus.cli", *[a.format(**paths) for a in case.argv]], cwd=ROOT,
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert all(expected in _flat(r.stderr) for expected in case.says), r.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()


def test_repeated_set_flags_all_apply(capsys):
    """tyro alone keeps only the last `--set`: `--set A --set B` silently dropped A. Both forms now mean the same."""
    configs = []
    for argv in (["--set", "ppo.lr=0.5", "--set", "ppo.kl_coef=0.25", "rm.lr=0.125"],
                 ["--set", "ppo.lr=0.5", "ppo.kl_coef=0.25", "rm.lr=0.125"],
                 ["--set=ppo.lr=0.5", "--seed", "1", "--set", "ppo.kl_coef=0.25", "--set=rm.lr=0.125"]):
        assert main(["pipeline", "--preset", "smoke", "--dry-run", *argv]) == 0
        configs.append(json.loads(capsys.readouterr().out))
    assert configs[0] == configs[1] == configs[2]
    assert (configs[0]["ppo"]["lr"], configs[0]["ppo"]["kl_coef"], configs[0]["rm"]["lr"]) == (0.5, 0.25, 0.125)
