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


# Holds an flock on argv[1] until killed: "another nplus process" writing that run directory.
_HOLD_LOCK = (
    "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644); "
    "fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); time.sleep(900)"
)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Every file the catalogue points at: a tiny tldr-synth corpus and broken copies of its parts, finished and
    locked run directories, and study files."""
    root = tmp_path_factory.mktemp("bad")
    synth = root / "synth"
    generate(synth, 0, "tiny")
    sft = [dict(r) for r in load_sft(str(synth / "sft"))["train"].select(range(4))]
    cmp = [dict(r) for r in load_comparisons(str(synth / "comparisons"))["train"].select(range(4))]
    p: dict[str, str] = {"synth": str(synth), "tokenizer": str(synth / "tokenizer"), "root": str(root)}
    # datasets in the public schemas, each broken in one way
    p["sft_no_summary"] = _jsonl(
        root / "sft_no_summary.jsonl", [{k: v for k, v in r.items() if k != "summary"} for r in sft]
    )
    p["sft_int_post"] = _jsonl(root / "sft_int_post.jsonl", [{**r, "post": 7} for r in sft])
    p["sft_empty_post"] = _jsonl(root / "sft_empty_post.jsonl", [*sft[:2], {**sft[2], "post": "   "}, sft[3]])
    p["sft_long_title"] = _jsonl(root / "sft_long_title.jsonl", [{**r, "title": "why " * 700} for r in sft])
    p["cmp_choice_2"] = _jsonl(root / "cmp_choice_2.jsonl", [*cmp[:1], {**cmp[1], "choice": 2}, *cmp[2:]])
    p["cmp_no_choice"] = _jsonl(
        root / "cmp_no_choice.jsonl", [{k: v for k, v in r.items() if k != "choice"} for r in cmp]
    )
    p["data_file"] = str(root / "posts.txt")
    Path(p["data_file"]).write_text("not a dataset\n")
    # a byte-level BPE saved without any EOS token
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.train_from_iterator(
        [r["post"] for r in sft],
        trainers.BpeTrainer(vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False),
    )
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
            str(root / name)
        )
        tok.save_pretrained(str(root / name))
        p[name] = str(root / name)
    # eval inputs
    good = {"id": "0", "post": sft[0]["post"], "response": " a summary", "reference": sft[0]["summary"]}
    p["samples"] = _jsonl(root / "samples.jsonl", [good])
    p["samples_no_response"] = _jsonl(
        root / "samples_no_response.jsonl", [{k: v for k, v in good.items() if k != "response"}]
    )
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
        "long_variant": 'name = "x"\npreset = "smoke"\nseeds = "smoke"\n[[variants]]\nname = "' + "v" * 300 + '"\n',
        "variant_newline": 'name = "x"\npreset = "smoke"\nseeds = "smoke"\n[[variants]]\nname = "a\\nb"\n',
        "study_slash": 'name = "../x"\npreset = "smoke"\nseeds = "smoke"\n',
        "ineffective": 'name = "x"\npreset = "smoke"\nseeds = "smoke"\n[[variants]]\nname = "v"\n'
        'hparams = { "ppo.lr" = 2e-4 }\n',
    }
    for name, text in studies.items():
        (root / f"study_{name}.toml").write_text(text)
        p[f"study_{name}"] = str(root / f"study_{name}.toml")
    p["ablations"] = str(ROOT / "ablations")
    # a finished run (its DONE vouches for its files) and a run directory another process is writing (holds its lock)
    from nplus.rundir import RUN_OUTPUTS, mark_done

    finished = root / "finished_run"
    finished.mkdir()
    (finished / "config.json").write_text(json.dumps({"seed": 1}))
    (finished / "summary.json").write_text(json.dumps({"seed": 1, "ppo.win_rate": 0.5}))
    (finished / "eval.json").write_text(json.dumps({"ppo": {"win_rate": 0.5}}))
    (finished / "metrics.jsonl").write_text("")
    _jsonl(finished / "samples.jsonl", [{**good, "stage": "ppo"}])
    mark_done(finished, {"hash": "0"}, RUN_OUTPUTS)
    p["finished_run"] = str(finished)
    locked = root / "locked_run"
    locked.mkdir()
    (locked / "config.json").write_text(json.dumps({"seed": 1}))
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_LOCK, str(locked / ".lock")], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout.readline().strip() == "held"
    p["locked_run"] = str(locked)
    yield p
    holder.kill()
    holder.wait()


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``root`` with its size and modification time: what a refused command must not change."""
    return {str(f.relative_to(root)): (f.stat().st_size, f.stat().st_mtime_ns) for f in root.rglob("*") if f.is_file()}


SMOKE = ("pipeline", "--preset", "smoke", "--out", "{out}", "--cache", "{cache}")
BUILD = ("data-build", "--out", "{out}", "--tokenizer", "{tokenizer}")
EVAL_GOLD = ("eval", "--out", "{out}", "--judge", "gold", "--data-dir", "{synth}")
UNREACHABLE = "http://127.0.0.1:9/v1"  # the discard port: connection refused at once

CASES = [
    # ---- the command line
    Case("unknown-subcommand", ("trian",), ("Unrecognized options: trian", "pipeline", "eval", "ablate"), tyro=True),
    Case("unknown-preset", (*SMOKE, "--preset", "huge"), ("unknown preset 'huge'", "smoke, demo", "paper-1b")),
    Case(
        "unknown-detail",
        (*SMOKE, "--details.no-such-detail", "on"),
        ("--details.no_such_detail: unknown detail", "valid details: query_truncation, query_padding_side"),
    ),
    Case(
        "unknown-detail-value",
        (*SMOKE, "--details.query-truncation", "sometimes"),
        ("--details.query-truncation", "sometimes", "'newline'", "'hard'"),
        tyro=True,
    ),
    Case("unknown-framework", (*SMOKE, "--framework", "trl"), ("unknown framework 'trl'", "trl-ppo, openrlhf")),
    Case("bad-flag-type", (*SMOKE, "--seed", "one"), ("--seed", "one"), tyro=True),
    Case(
        "unknown-set-field",
        (*SMOKE, "--set", "ppo.learning_rate=1e-4"),
        ("--set ppo.learning_rate", "unknown field 'learning_rate' in ppo", "valid fields: lr, total_episodes"),
    ),
    Case(
        "set-value-not-a-choice",
        (*SMOKE, "--set", "model.dtype=float16"),
        ("model.dtype='float16'", "float32, bfloat16"),
    ),
    Case("bad-set-type", (*SMOKE, "--set", "ppo.lr=fast"), ("--set ppo.lr", "cannot read 'fast' as float")),
    Case(
        "synth-comparisons-below-the-scale",
        (*SMOKE, "--set", "task.synth_comparisons=3"),
        ("task.synth_comparisons=3: at least the", "task.max_comparisons_train"),
    ),
    Case("set-without-value", (*SMOKE, "--set", "ppo.lr"), ("--set expects KEY=VALUE", "'ppo.lr'")),
    Case(
        "set-on-a-detail", (*SMOKE, "--set", "details.dropout=disabled"), ("--set details.dropout", "--details.dropout")
    ),
    Case(
        "base-build-unknown-rung",
        ("base", "build", "--rung", "huge", "--out", "{out}", "--cache", "{cache}"),
        ("--rung 'huge'", "valid rungs: nano, nano2, micro, tiny, mini, micro4,", "xs, s, m, l"),
    ),
    Case(
        "unknown-reward-source",
        (*SMOKE, "--reward.source", "oracle"),
        ("reward.source='oracle'", "valid choices: rm, gold, rule"),
    ),
    Case(
        "unknown-reward-rule",
        (*SMOKE, "--reward.source", "rule", "--reward.rule", "polite"),
        ("reward.rule='polite'", "valid choices: keywords, sentiment"),
    ),
    Case(
        "label-missing-input",
        ("label", "--out", "{out}", "--input", "{root}/none", "--cache", "{cache}"),
        ("--input", "expected tldr-synth or an existing comparisons directory"),
    ),
    # ---- configurations
    Case(
        "indivisible-batch", (*SMOKE, "--set", "ppo.batch_size=7"), ("ppo.batch_size=7", "divisible by ppo.micro_batch")
    ),
    Case(
        "indivisible-minibatches",
        (*SMOKE, "--set", "ppo.num_minibatches=3"),
        ("ppo.batch_size=", "divisible by ppo.num_minibatches=3"),
    ),
    Case(
        "response-longer-than-limit",
        (*SMOKE, "--set", "ppo.response_length=99"),
        ("ppo.response_length=99", "lengths.sft_response"),
    ),
    Case(
        "processes-not-launched",
        (*SMOKE, "--set", "processes=2", "sft.micro_batch=8", "rm.micro_batch=8", "ppo.micro_batch=8"),
        ("processes=2", "launched with 1 processes"),
    ),
    Case(
        "bad-lengths",
        (*BUILD, "--sft-source", "{synth}", "--comparisons-source", "{synth}", "--lengths.query", "0"),
        ("lengths.query=0", "must be an integer in 1.."),
        tyro=True,
    ),
    Case(
        "non-data-detail-in-data-build",
        (*BUILD, "--sft-source", "{synth}", "--comparisons-source", "{synth}", "--details.kl-estimator", "k3"),
        ("details.kl_estimator=k3 does not affect the built datasets", "query_truncation"),
    ),
    # ---- study files
    Case(
        "study-missing", ("ablate", "{root}/none.toml", "--out", "{out}", "--cache", "{cache}"), ("no such study file",)
    ),
    Case(
        "study-malformed-toml",
        ("ablate", "{study_malformed}", "--out", "{out}", "--cache", "{cache}"),
        ("not valid TOML",),
    ),
    Case(
        "study-unknown-key",
        ("ablate", "{study_unknown_key}", "--out", "{out}", "--cache", "{cache}"),
        ("repeats", "name, description, preset, seeds"),
    ),
    Case(
        "study-unknown-detail",
        ("ablate", "{study_unknown_detail}", "--out", "{out}", "--cache", "{cache}"),
        ("no_such_detail",),
    ),
    Case(
        "study-bad-detail-value",
        ("ablate", "{study_bad_value}", "--out", "{out}", "--cache", "{cache}"),
        ("reward_whitening", "sometimes", "on", "off"),
    ),
    Case(
        "study-unknown-preset",
        ("ablate", "{study_unknown_preset}", "--out", "{out}", "--cache", "{cache}"),
        ("preset", "unknown preset 'huge'", "smoke"),
    ),
    Case(
        "study-unknown-seed-list",
        ("ablate", "{study_unknown_seeds}", "--out", "{out}", "--cache", "{cache}"),
        ("no seed list 'lucky'", "smoke"),
    ),
    # ---- datasets
    Case(
        "dataset-missing-column",
        (*BUILD, "--sft-source", "{sft_no_summary}", "--comparisons-source", "{synth}"),
        ("sft[train]", "missing column 'summary'"),
    ),
    Case(
        "dataset-wrong-type",
        (*BUILD, "--sft-source", "{sft_int_post}", "--comparisons-source", "{synth}"),
        ("sft[train]", "field 'post' must be a string"),
    ),
    Case(
        "dataset-empty-post",
        (*BUILD, "--sft-source", "{sft_empty_post}", "--comparisons-source", "{synth}"),
        ("sft[train] row id=", "field 'post' must be a non-empty string"),
    ),
    Case(
        "dataset-choice-out-of-range",
        (*BUILD, "--sft-source", "{synth}", "--comparisons-source", "{cmp_choice_2}"),
        ("comparisons[train] row id=", "field 'choice' must be 0 or 1, got 2"),
    ),
    Case(
        "dataset-missing-choice",
        (*BUILD, "--sft-source", "{synth}", "--comparisons-source", "{cmp_no_choice}"),
        ("comparisons[train]", "missing column 'choice'"),
    ),
    Case(
        "dataset-unsupported-file",
        (*BUILD, "--sft-source", "{data_file}", "--comparisons-source", "{synth}"),
        ("unsupported file type '.txt'", ".parquet"),
    ),
    Case(
        "dataset-unknown-source",
        (*BUILD, "--sft-source", "no_such_dir", "--comparisons-source", "{synth}"),
        ("unknown data source 'no_such_dir'", "tldr-synth"),
    ),
    Case(
        "query-cannot-fit",
        (*BUILD, "--sft-source", "{sft_long_title}", "--comparisons-source", "{synth}"),
        ("could not truncate the query to 512 tokens", "even with an empty post"),
    ),
    # ---- the environment: tokenizers, models, the hub, API keys
    Case(
        "tokenizer-without-eos",
        (
            "data-build",
            "--out",
            "{out}",
            "--tokenizer",
            "{tok_no_eos}",
            "--sft-source",
            "{synth}",
            "--comparisons-source",
            "{synth}",
        ),
        ("--tokenizer", "tok_no_eos: the tokenizer has no eos_token"),
    ),
    Case(
        "hub-tokenizer-offline",
        (
            "data-build",
            "--out",
            "{out}",
            "--tokenizer",
            "EleutherAI/pythia-1b-deduped",
            "--sft-source",
            "{synth}",
            "--comparisons-source",
            "{synth}",
        ),
        ("cannot load tokenizer 'EleutherAI/pythia-1b-deduped'", "unreachable", "hf download", "--tokenizer DIR"),
        hub_unreachable=True,
    ),
    Case(
        "model-path-missing",
        (*SMOKE, "--set", "model.name=./no/such/model"),
        ("model.name='./no/such/model'", "nano, nano2, micro, tiny, mini, micro4,", "xs, s, m, l"),
    ),
    Case("model-dir-without-config", (*SMOKE, "--set", "model.name={no_config}"), ("model.name=", "config.json")),
    Case(
        "pickle-only-checkpoint",
        (*SMOKE, "--set", "model.name={pickle_only}"),
        ("only pickle weights (pytorch_model.bin)", "safetensors", "never unpickles"),
    ),
    Case(
        "openai-key-missing",
        ("eval", "--input", "{samples}", "--out", "{out}", "--judge", "openai", "--cache-dir", "None"),
        ("environment variable OPENAI_API_KEY",),
        env={"OPENAI_API_KEY": ""},
    ),
    Case(
        "real-task-key-missing",
        (
            *SMOKE,
            "--set",
            "task.name=tldr",
            "task.sft_source={synth}",
            "task.comparisons_source={synth}",
            "model.name={model}",
        ),
        ("environment variable OPENAI_API_KEY",),
        env={"OPENAI_API_KEY": ""},
    ),
    Case(
        "real-task-tokenizer-without-eos",
        (
            *SMOKE,
            "--set",
            "task.name=tldr",
            "task.sft_source={synth}",
            "task.comparisons_source={synth}",
            "model.name={model_no_eos}",
        ),
        ("model.name=", "its tokenizer has no eos_token"),
        env={"OPENAI_API_KEY": "sk-test"},
    ),
    Case(
        "real-task-bad-dataset",
        (
            *SMOKE,
            "--set",
            "task.name=tldr",
            "task.sft_source={sft_int_post}",
            "task.comparisons_source={synth}",
            "model.name={model}",
        ),
        ("sft[train]", "field 'post' must be a string"),
        env={"OPENAI_API_KEY": "sk-test"},
    ),
    Case(
        "synth-task-with-other-sources",
        (*SMOKE, "--set", "task.sft_source={synth}"),
        ("task.name=tldr-synth requires task.sft_source",),
    ),
    Case(
        "frozen-offload-without-deepspeed",
        (*SMOKE, "--set", "ppo.frozen_offload=true"),
        ("ppo.frozen_offload=true", "pip install deepspeed"),
        unless_installed="deepspeed",
    ),
    # ---- evaluation inputs and judge replies
    Case(
        "unknown-judge",
        ("eval", "--input", "{samples}", "--out", "{out}", "--judge", "gpt4"),
        ("--judge", "gpt4", "'gold'", "'openai'", "'hf'"),
        tyro=True,
    ),
    Case(
        "eval-input-missing", (*EVAL_GOLD, "--input", "{root}/none.jsonl"), ("input file", "none.jsonl does not exist")
    ),
    Case("eval-input-bad-json", (*EVAL_GOLD, "--input", "{samples_bad_json}"), ("line 2: not valid JSON",)),
    Case(
        "eval-input-missing-column",
        (*EVAL_GOLD, "--input", "{samples_no_response}"),
        ("no column 'response'", "columns: "),
    ),
    Case(
        "eval-input-bad-finished",
        (*EVAL_GOLD, "--input", "{samples_bad_finished}"),
        ("column 'finished' must be true/false", "'maybe'"),
    ),
    Case(
        "eval-gold-without-data",
        ("eval", "--input", "{samples}", "--out", "{out}", "--judge", "gold"),
        ("judge gold needs --data-dir",),
    ),
    Case("eval-bad-limit", (*EVAL_GOLD, "--input", "{samples}", "--limit", "0"), ("--limit must be positive",)),
    Case(
        "eval-bad-concurrency",
        (
            "eval",
            "--input",
            "{samples}",
            "--out",
            "{out}",
            "--judge",
            "openai",
            "--cache-dir",
            "None",
            "--concurrency",
            "0",
        ),
        ("concurrency >= 1", "concurrency=0"),
        env={"OPENAI_API_KEY": "sk-test"},
    ),
    Case(
        "judge-every-request-fails",
        (
            "eval",
            "--input",
            "{samples}",
            "--out",
            "{out}",
            "--judge",
            "openai",
            "--judge-base-url",
            UNREACHABLE,
            "--max-retries",
            "0",
            "--cache-dir",
            "None",
        ),
        ("every judgment failed (1 example;", "APIConnectionError"),
        env={"OPENAI_API_KEY": "sk-test"},
    ),
    # ---- run directories (issue #35): never two writers, never a finished run overwritten unasked
    Case(
        "out-locked-by-another-run",
        (*SMOKE, "--out", "{locked_run}"),
        ("locked_run is locked", "another nplus process", "choose another --out"),
    ),
    Case(
        "out-holds-a-finished-run",
        (*SMOKE, "--out", "{finished_run}"),
        ("finished_run holds a finished run (DONE present)", "--overwrite"),
    ),
    Case("out-is-not-a-run-directory", (*SMOKE, "--out", "{synth}"), ("is a non-empty directory that is not a run",)),
    Case(
        "eval-into-a-run-directory",
        ("eval", "--input", "{finished_run}", "--judge", "gold", "--data-dir", "{synth}"),
        ("finished_run is a run directory: pass --out DIR",),
    ),
    # ---- paths the operating system refuses: checked before anything is written
    Case("out-is-a-file", (*SMOKE, "--out", "{data_file}"), ("--out", "posts.txt: exists and is not a directory")),
    Case("out-parent-is-a-file", (*SMOKE, "--out", "{data_file}/run"), ("posts.txt is a file, not a directory",)),
    Case(
        "cache-is-a-file", (*SMOKE, "--cache", "{data_file}"), ("--cache", "posts.txt: exists and is not a directory")
    ),
    Case(
        "cache-env-is-a-file",
        ("pipeline", "--preset", "smoke", "--out", "{out}"),
        ("--cache", "posts.txt: exists and is not a directory"),
        env={"NPLUS_CACHE": "{data_file}"},
    ),
    Case("out-name-too-long", (*SMOKE, "--out", "{out}/" + "x" * 300), ("longer than the file system's",)),
    Case(
        "out-name-too-long-in-an-existing-folder",
        (*SMOKE, "--out", "{root}/" + "x" * 300),
        ("--out", "is longer than the file system's 255 bytes"),
    ),
    Case(
        "study-file-is-a-directory", ("ablate", "{root}", "--out", "{out}", "--cache", "{cache}"), ("Is a directory",)
    ),
    Case(
        "report-out-is-a-file",
        ("report", "{finished_run}", "--out", "{data_file}"),
        ("--out", "exists and is not a directory"),
    ),
    Case(
        "eval-out-is-a-file",
        (*EVAL_GOLD, "--input", "{samples}", "--out", "{data_file}"),
        ("--out", "exists and is not a directory"),
    ),
    # ---- numbers out of range, booleans that are not, settings that do nothing
    Case("zero-micro-batch", (*SMOKE, "--set", "ppo.micro_batch=0"), ("ppo.micro_batch=0", "an integer in 1..")),
    Case("zero-minibatches", (*SMOKE, "--set", "ppo.num_minibatches=0"), ("ppo.num_minibatches=0", "integer in 1..")),
    Case("zero-processes", (*SMOKE, "--set", "processes=0"), ("processes=0", "an integer in 1..")),
    Case(
        "zero-batch-and-episodes",
        (*SMOKE, "--set", "ppo.batch_size=0", "ppo.total_episodes=0"),
        ("=0: must be an integer in 1..",),
    ),
    Case("negative-response-length", (*SMOKE, "--set", "ppo.response_length=-5"), ("ppo.response_length=-5",)),
    Case("infinite-kl-coef", (*SMOKE, "--set", "ppo.kl_coef=inf"), ("ppo.kl_coef=inf", "a finite number ≥ 0")),
    Case("negative-kl-coef", (*SMOKE, "--set", "ppo.kl_coef=-0.1"), ("ppo.kl_coef=-0.1", "≥ 0")),
    Case("nan-learning-rate", (*SMOKE, "--set", "lr=nan"), ("lr=nan", "a finite number ≥ 0")),
    Case("negative-learning-rate", (*SMOKE, "--set", "lr=-1e-3"), ("lr=-0.001", "≥ 0")),
    Case("infinite-temperature", (*SMOKE, "--set", "ppo.temperature=inf"), ("ppo.temperature=inf", "> 0")),
    Case(
        "seed-beyond-64-bits", (*SMOKE, "--seed", str(2**64)), ("seed=18446744073709551616", "0..9223372036854775807")
    ),
    Case("negative-seed", (*SMOKE, "--seed", "-1"), ("seed=-1", "0..9223372036854775807")),
    Case("fraction-above-one", (*SMOKE, "--set", "ppo.gamma=1.5"), ("ppo.gamma=1.5", "≤ 1")),
    Case("boolean-typo", (*SMOKE, "--set", "ppo.frozen_offload=ture"), ("ppo.frozen_offload='ture'", "true, false")),
    Case(
        "stage-rate-under-single-rate",
        (*SMOKE, "--set", "ppo.lr=2e-4"),
        ("ppo.lr=0.0002 has no effect", "details.learning_rate=single", "set lr", "per_stage"),
    ),
    Case(
        "single-rate-under-per-stage",
        ("pipeline", "--preset", "demo", "--out", "{out}", "--cache", "{cache}", "--set", "lr=1e-4"),
        ("lr=0.0001 has no effect", "sft.lr, rm.lr, ppo.lr"),
    ),
    Case(
        "rule-without-rule-source",
        (*SMOKE, "--reward.rule", "sentiment"),
        ("reward.rule='sentiment' has no effect", "reward.source=rule"),
    ),
    Case(
        "study-ineffective-hparam",
        ("ablate", "{study_ineffective}", "--out", "{out}", "--cache", "{cache}"),
        ("variant 'v'", "ppo.lr", "has no effect", "details.learning_rate=single"),
    ),
    # ---- study and variant names the file system refuses: checked when the study loads, before any training
    Case(
        "study-variant-name-too-long",
        ("ablate", "{study_long_variant}", "--out", "{out}", "--cache", "{cache}"),
        ("variants[0].name", "cannot be a directory name", "300 bytes long, more than the 200 allowed"),
    ),
    Case(
        "study-variant-name-control-character",
        ("ablate", "{study_variant_newline}", "--out", "{out}", "--cache", "{cache}"),
        ("variants[0].name", "a control character"),
    ),
    Case(
        "study-name-with-a-separator",
        ("ablate", "{study_study_slash}", "--out", "{out}", "--cache", "{cache}"),
        ("name: '../x' cannot be a directory name", "path separator"),
    ),
    Case("negative-threads", (*SMOKE, "--threads", "-3"), ("--threads=-3", "an integer in 1..")),
    Case(
        "zero-workers",
        ("ablate", "{ablations}/smoke.toml", "--workers", "0", "--out", "{out}", "--cache", "{cache}"),
        ("--workers=0", "an integer in 1.."),
    ),
    Case("data-negative-seed", ("data", "tldr-synth", "--out", "{out}", "--seed", "-1"), ("--seed=-1", "0..")),
    Case(
        "label-nan-length-preference",
        (
            "label",
            "--input",
            "tldr-synth",
            "--data-dir",
            "{synth}",
            "--out",
            "{out}",
            "--cache",
            "{cache}",
            "--length-preference",
            "nan",
        ),
        ("--length-preference=nan", "a finite number"),
    ),
    Case(
        "data-build-zero-processes",
        (*BUILD, "--sft-source", "{synth}", "--comparisons-source", "{synth}", "--num-proc", "0"),
        ("--num-proc=0", "an integer in 1.."),
    ),
    Case(
        "base-build-nan-copy-bar",
        ("base", "build", "--rung", "nano", "--copy-bar", "nan", "--out", "{out}", "--cache", "{cache}"),
        ("--copy-bar=nan", "≥ 0"),
    ),
    Case(
        "report-negative-samples",
        ("report", "{finished_run}", "--samples", "-1", "--out", "{out}"),
        ("--samples=-1", "an integer in 0.."),
    ),
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
    paths = {**inputs, "out": str(tmp_path / "out"), "cache": str(tmp_path / "cache")}
    for key, value in case.env.items():
        monkeypatch.setenv(key, value.format(**paths))
    if case.hub_unreachable:
        from huggingface_hub import constants

        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    argv = [a.format(**paths) for a in case.argv]
    before = _snapshot(Path(inputs["root"]))
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
    assert _snapshot(Path(inputs["root"])) == before, "a refused command changed an input (a run directory?)"
    assert not Path(inputs["sentinel"]).exists(), "a pickle checkpoint was unpickled"


@pytest.mark.parametrize(
    "case", [c for c in CASES if c.id in ("unknown-detail-value", "indivisible-batch")], ids=lambda c: c.id
)
def test_the_real_command_line_exits_non_zero_without_traceback(case, inputs, tmp_path):
    paths = {**inputs, "out": str(tmp_path / "out"), "cache": str(tmp_path / "cache")}
    env = {**os.environ, "COLUMNS": "200", "PYTHONPATH": str(ROOT)}
    r = subprocess.run(
        [sys.executable, "-m", "nplus.cli", *[a.format(**paths) for a in case.argv]],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert all(expected in _flat(r.stderr) for expected in case.says), r.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()


def test_repeated_set_flags_all_apply(capsys):
    """tyro alone keeps only the last `--set`: `--set A --set B` silently dropped A. Both forms now mean the same."""
    configs = []
    for argv in (
        ["--set", "lr=0.5", "--set", "ppo.kl_coef=0.25", "rm.epochs=3"],
        ["--set", "lr=0.5", "ppo.kl_coef=0.25", "rm.epochs=3"],
        ["--set=lr=0.5", "--seed", "1", "--set", "ppo.kl_coef=0.25", "--set=rm.epochs=3"],
    ):
        assert main(["pipeline", "--preset", "smoke", "--dry-run", *argv]) == 0
        configs.append(json.loads(capsys.readouterr().out))
    assert configs[0] == configs[1] == configs[2]
    assert (configs[0]["lr"], configs[0]["ppo"]["kl_coef"], configs[0]["rm"]["epochs"]) == (0.5, 0.25, 3)


# ---- interruption, operating-system errors at run time, --debug (issue #35) -----------------------------------

SMOKE_RUN = ["pipeline", "--preset", "smoke", "--seed", "1"]


def _raising(exc: BaseException):
    def run_pipeline(*args, **kwargs):
        raise exc

    return run_pipeline


def test_ctrl_c_is_one_line_saying_how_to_resume_and_exit_130(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("nplus.pipeline.run_pipeline", _raising(KeyboardInterrupt()))
    rc, err = _run([*SMOKE_RUN, "--out", str(tmp_path / "run"), "--cache", str(tmp_path / "cache")], capsys)
    assert rc == 130 and err.splitlines() == [err.strip()] and "Traceback" not in err, err
    assert err.startswith("error: interrupted; rerun the same command to resume"), err


def test_an_os_error_at_run_time_is_one_line_naming_the_path(tmp_path, capsys, monkeypatch):
    path = str(tmp_path / "run" / "config.json")
    for exc, says in (
        (PermissionError(13, "Permission denied", path), f"error: Permission denied: {path}"),
        (IsADirectoryError(21, "Is a directory", path), f"error: Is a directory: {path}"),
        (OSError(36, "File name too long", path), f"error: File name too long: {path}"),
    ):
        monkeypatch.setattr("nplus.pipeline.run_pipeline", _raising(exc))
        rc, err = _run([*SMOKE_RUN, "--out", str(tmp_path / "run")], capsys)
        assert (rc, err) == (2, says + "\n")


def test_debug_flag_and_environment_variable_give_the_traceback(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("nplus.pipeline.run_pipeline", _raising(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        main(["--debug", *SMOKE_RUN, "--out", str(tmp_path / "run")])
    from nplus.config import ConfigError

    monkeypatch.setenv("NPLUS_DEBUG", "1")
    with pytest.raises(ConfigError, match="ppo.micro_batch=0"):
        main([*SMOKE_RUN, "--dry-run", "--set", "ppo.micro_batch=0"])


def test_a_real_sigint_stops_the_pipeline_with_one_line(tmp_path):
    """Ctrl-C (SIGINT) once provenance is written: exit 130, one line, no traceback, no DONE; the lock is freed."""
    import signal

    out, env = tmp_path / "run", {**os.environ, "PYTHONPATH": str(ROOT), "NPLUS_CACHE": str(tmp_path / "cache")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "nplus.cli", *SMOKE_RUN, "--out", str(out)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        # as a terminal starts it: SIGINT at its default, unblocked, whatever this test process inherited
        preexec_fn=lambda: (
            signal.signal(signal.SIGINT, signal.SIG_DFL),
            signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGINT]),
        ),
    )
    deadline = time.monotonic() + 300
    while not (out / "config.json").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    status = Path(f"/proc/{proc.pid}/status")
    masks = [ln for ln in status.read_text().splitlines() if ln.startswith("Sig")] if status.exists() else []
    still_running = proc.poll() is None
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    messages = [line for line in err.splitlines() if line.startswith("error:") or "Traceback" in line]
    ok = proc.returncode == 130 and messages == [messages[0]] and "rerun the same command" in messages[0]
    assert ok, (still_running, masks, err[-2000:])
    assert not (out / "DONE").exists()
    from nplus.rundir import run_dir_lock

    with run_dir_lock(out):  # released: a rerun may resume
        pass


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_read_only_out_is_refused_before_anything_is_written(tmp_path, capsys):
    parent = tmp_path / "ro"
    parent.mkdir(mode=0o555)
    rc, err = _run([*SMOKE_RUN, "--out", str(parent / "run"), "--cache", str(tmp_path / "cache")], capsys)
    assert rc == 2 and "is not writable (permission denied)" in err and not (parent / "run").exists()


def test_the_run_lock_is_the_study_runners_and_is_reentrant_in_one_process(tmp_path):
    """The runner holds <run>/.lock around run_pipeline, which takes the same lock: that must pass in the runner's
    own process and be refused in any other (a `nplus pipeline --out` on a directory the runner is writing)."""
    from nplus.rundir import RunDirError, file_lock, run_dir_lock

    run = tmp_path / "run"
    with file_lock(run / ".lock", blocking=False) as taken:
        assert taken
        with run_dir_lock(run):
            pass
        code = (
            "import sys; from nplus.rundir import run_dir_lock\n"
            "try:\n    with run_dir_lock(sys.argv[1]): pass\nexcept Exception as e: print(e); sys.exit(3)"
        )
        r = subprocess.run(
            [sys.executable, "-c", code, str(run)],
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert r.returncode == 3 and "is locked" in r.stdout, r
    (run / "DONE").write_text("{}")
    with pytest.raises(RunDirError, match="holds a finished run"), run_dir_lock(run):
        pass
    with run_dir_lock(run, overwrite=True):
        pass


def test_cached_artifacts_get_the_mode_of_an_ordinary_write(tmp_path):
    """Issue #35: safetensors (and save_pretrained) write 0600 through a private temporary file, everything else
    0644: a shared NPLUS_CACHE's weights were unreadable to colleagues. An artifact's files now all get 0666 less
    the umask, as an ordinary write does; a mode already wider is left alone."""
    import torch
    from safetensors.torch import save_file

    from nplus.rundir import artifact, umask

    with artifact(tmp_path, "sft", "k") as (path, built):
        assert not built
        save_file({"w": torch.zeros(2)}, str(path / "model.safetensors"))
        (path / "eval.json").write_text("{}")
        (path / "wide.txt").write_text("")
        os.chmod(path / "wide.txt", 0o666)
    want = 0o666 & ~umask()
    modes = {f.name: f.stat().st_mode & 0o777 for f in path.iterdir()}
    assert modes == {"model.safetensors": want, "eval.json": want, "wide.txt": 0o666, "DONE": want}, modes
    with artifact(tmp_path, "sft", "k") as (_, built):  # DONE still vouches for the files: modes are not content
        assert built


# ---- property: random values at every numeric and choice field through the real command line (issue #35) ------


def _config_fields() -> list[tuple[str, object, tuple | None]]:
    """(dotted path, type annotation, declared range) of every leaf field of Config that --set can change (the
    details have their own flags, checked by tyro against the registry's choices)."""
    import dataclasses
    import typing

    from nplus.config import Config

    out = []

    def walk(cls, prefix):
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            hint = hints[f.name]
            if f.name == "details" and not prefix:
                continue
            if dataclasses.is_dataclass(hint):
                walk(hint, f"{prefix}{f.name}.")
            else:
                out.append((f"{prefix}{f.name}", hint, f.metadata.get("range")))

    walk(Config, "")
    return out


FIELDS = _config_fields()
# str fields whose value is one of a list (checked by validate, not by the type)
_STR_CHOICES = {
    "algorithm": ("ppo", "dpo", "rloo", "reinforce", "grpo"),
    "reward.source": ("rm", "gold", "rule"),
    "reward.rule": ("keywords", "sentiment"),
}
NUMERIC_AND_CHOICE = [(p, h, r) for p, h, r in FIELDS if p in _STR_CHOICES or h is not str]


def _invalid_values(draw, hint, bounds, path):
    """A text that no reading of the field accepts (so the command must refuse it)."""
    import math
    import typing

    from hypothesis import strategies as st

    from nplus.config import INT_MAX

    optional = typing.get_origin(hint) in (typing.Union, __import__("types").UnionType)
    if optional:
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    junk = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12).filter(
        lambda t: t.strip().lower() not in ("none", "null")
    )
    if path in _STR_CHOICES or typing.get_origin(hint) is typing.Literal:
        choices = _STR_CHOICES.get(path) or typing.get_args(hint)
        return draw(junk.filter(lambda t: t not in choices))
    if hint is bool:
        return draw(junk.filter(lambda t: t.strip().lower() not in ("true", "false")))
    low, high, open_low = bounds or (None, None, False)
    if hint is int:
        low, high = 0 if low is None else low, INT_MAX if high is None else high
        below = st.integers(max_value=int(low) - (not open_low)).map(str)
        return draw(
            st.one_of(
                below,
                st.integers(min_value=int(high) + 1).map(str),
                st.floats(allow_nan=False, allow_infinity=False).filter(lambda x: x != int(x)).map(repr),
                junk.filter(lambda t: not _reads_as_int(t)),
            )
        )
    # float
    outside = [st.sampled_from(["nan", "inf", "-inf", "NaN", "-Infinity"])]
    if low is not None:
        outside.append(
            st.floats(max_value=low, exclude_max=not open_low, allow_nan=False, allow_infinity=False).map(repr)
        )
    if high is not None:
        outside.append(st.floats(min_value=high, exclude_min=True, allow_nan=False, allow_infinity=False).map(repr))
    outside.append(junk.filter(lambda t: not _reads_as_float(t) or not math.isfinite(float(t))))
    return draw(st.one_of(*outside))


def _reads_as_int(text: str) -> bool:
    try:
        int(text)
        return True
    except ValueError:
        return False


def _reads_as_float(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def test_the_property_test_covers_every_numeric_and_choice_field():
    paths = {p for p, _, _ in NUMERIC_AND_CHOICE}
    assert {
        "seed",
        "lr",
        "processes",
        "ppo.micro_batch",
        "ppo.num_minibatches",
        "ppo.temperature",
        "ppo.kl_coef",
        "ppo.frozen_offload",
        "model.dtype",
        "task.max_sft_train",
        "dpo.ref_mixup_alpha",
        "reward.rule",
    } <= paths
    assert len(paths) >= 60, len(paths)


PROPERTY_EXAMPLES = 100  # ~35 s on a busy 2-core machine: each example parses the real command line


def test_random_values_through_the_cli(tmp_path, monkeypatch):
    """Every numeric, boolean and choice field of the config, set through `nplus pipeline --set F=V --dry-run`
    with random values: a value no reading accepts always exits 2 with one `error:` line naming the field and no
    traceback; any value at all (random text, numbers in or out of range) exits 0 or that way, and nothing is
    written. Runs the real parser in-process (nplus.cli.main)."""
    import contextlib
    import io

    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("NPLUS_DEBUG", raising=False)
    out = tmp_path / "out"

    @st.composite
    def cases(draw):
        path, hint, bounds = draw(st.sampled_from(NUMERIC_AND_CHOICE))
        if draw(st.booleans()):
            return path, _invalid_values(draw, hint, bounds, path), True
        anything = st.one_of(
            st.integers().map(str),
            st.floats().map(repr),
            st.text(max_size=12),
            st.sampled_from(["true", "false", "none", "0", "1", "-1", "1e-4", str(2**63)]),
        )
        return path, draw(anything), False

    @settings(
        max_examples=PROPERTY_EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(cases())
    def check(case):
        path, value, invalid = case
        stdout, stderr = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            try:
                rc = main(["pipeline", "--preset", "smoke", "--out", str(out), "--dry-run", "--set", f"{path}={value}"])
            except SystemExit as e:  # tyro: never expected here (--set takes any text)
                rc = e.code
        err = stderr.getvalue()
        assert "Traceback" not in err, err
        assert rc in (0, 2), (rc, err)
        if invalid or rc == 2:
            assert rc == 2 and len(err.splitlines()) == 1 and err.startswith("error: "), (path, value, err)
            assert path.split(".")[-1] in err, (path, value, err)
        assert list(tmp_path.iterdir()) == [], "a dry run writes nothing"

    check()
