"""The data loader: every kind of source, the public schemas, bad rows, and failing fast without the hub."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from datasets import Dataset, DatasetDict, Features, List, Value

from nplus.data.loader import (
    DataSourceError,
    SchemaError,
    load_comparisons,
    load_sft,
    validate_comparisons,
    validate_sft,
)
from nplus.tasks.synth import generate

# reference/DETAILS.md §6, with the feature types of the hub datasets' cards.
PUBLIC_SFT_FEATURES = Features(
    {
        "id": Value("string"),
        "subreddit": Value("string"),
        "title": Value("string"),
        "post": Value("string"),
        "summary": Value("string"),
    }
)
PUBLIC_COMPARISON_FEATURES = Features(
    {
        "info": {
            "id": Value("string"),
            "post": Value("string"),
            "title": Value("string"),
            "subreddit": Value("string"),
            "site": Value("string"),
            "article": Value("string"),
        },
        "summaries": List({"text": Value("string"), "policy": Value("string"), "note": Value("string")}),
        "choice": Value("int32"),
        "worker": Value("string"),
        "batch": Value("string"),
        "split": Value("string"),
        "extra": {"confidence": Value("int32")},
    }
)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("loader") / "tldr-synth"
    generate(out, seed=0, scale="tiny")
    return out


def test_generated_datasets_have_the_public_schemas(data_dir):
    sft, cmp = load_sft("tldr-synth", data_dir), load_comparisons("tldr-synth", data_dir)
    assert set(sft) == {"train", "validation", "test"} and set(cmp) == {"train", "validation"}
    for split in sft.values():
        assert split.features == PUBLIC_SFT_FEATURES
        assert list(split.features) == list(PUBLIC_SFT_FEATURES)
    for split in cmp.values():
        assert split.features == PUBLIC_COMPARISON_FEATURES
        assert list(split.features) == list(PUBLIC_COMPARISON_FEATURES)


def test_local_sources(data_dir, tmp_path):
    assert len(load_sft(str(data_dir))["train"]) == 64  # a tldr-synth root
    assert len(load_comparisons(str(data_dir / "comparisons"))["validation"]) == 32  # a save_to_disk dir
    cmp = load_comparisons(str(data_dir))
    # a hub-snapshot layout: <config>/<split>/0000.parquet
    for split, ds in cmp.items():
        (tmp_path / "snap" / split).mkdir(parents=True)
        ds.to_parquet(str(tmp_path / "snap" / split / "0000.parquet"))
    from_parquet = load_comparisons(str(tmp_path / "snap"))
    assert from_parquet["train"].features == PUBLIC_COMPARISON_FEATURES
    assert from_parquet["train"]["choice"] == cmp["train"]["choice"]
    sft = load_sft(str(data_dir))
    sft["test"].to_json(str(tmp_path / "test.jsonl"))
    assert load_sft(str(tmp_path / "test.jsonl"))["train"]["post"] == sft["test"]["post"]


def test_source_errors(data_dir, tmp_path):
    with pytest.raises(DataSourceError, match="needs data_dir"):
        load_sft("tldr-synth")
    with pytest.raises(DataSourceError, match="generate the corpus first"):
        load_sft("tldr-synth", tmp_path / "nothing")
    with pytest.raises(DataSourceError, match="unknown data source"):
        load_comparisons("not a path or a hub name")


def _run_offline(code: str, tmp_path: Path, **env) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "PYTHONPATH": str(REPO), **env}
    return subprocess.run([sys.executable, "-c", code], env=full_env, capture_output=True, text=True, timeout=60)


HUB_PROBE = """
from nplus.data.loader import DataSourceError, load_comparisons, load_sft
for load, name in ((load_sft, "vwxyzjn/summarize_from_feedback_tldr_3_filtered"),
                   (load_comparisons, "openai/summarize_from_feedback")):
    try:
        load(name)
    except DataSourceError as e:
        print(e)
    else:
        raise SystemExit("loaded without the hub?")
"""


@pytest.mark.parametrize(
    "env",
    [{"HF_HUB_OFFLINE": "1"}, {"HF_ENDPOINT": "http://127.0.0.1:9"}],
    ids=["HF_HUB_OFFLINE", "unreachable-endpoint"],
)
def test_hub_without_network_fails_fast_with_instructions(tmp_path, env):
    start = time.monotonic()
    result = _run_offline(HUB_PROBE, tmp_path, **env)
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - start < 30
    out = result.stdout
    assert "huggingface-cli download --repo-type dataset vwxyzjn/summarize_from_feedback_tldr_3_filtered" in out
    assert "huggingface-cli download --repo-type dataset openai/summarize_from_feedback" in out
    assert "save_to_disk" in out and "pass the local copy as the source" in out


# ----------------------------------------------------------------------------------------------------------
# schema validation


def _with_row(ds: Dataset, index: int, edit) -> DatasetDict:
    rows = ds.to_list()
    edit(rows[index])
    return DatasetDict({"validation": Dataset.from_list(rows, features=ds.features)})


@pytest.fixture(scope="module")
def comparisons(data_dir) -> Dataset:
    return load_comparisons("tldr-synth", data_dir)["validation"]


@pytest.fixture(scope="module")
def sft(data_dir) -> Dataset:
    return load_sft("tldr-synth", data_dir)["validation"]


def _set(path: tuple, value):
    def edit(row):
        target = row
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return edit


@pytest.mark.parametrize(
    "edit, message",
    [
        (_set(("choice",), 2), "field 'choice' must be 0 or 1, got 2"),
        (lambda row: row["summaries"].pop(), "field 'summaries' must hold 2 summaries, got 1"),
        (
            lambda row: row["summaries"].append(dict(row["summaries"][0])),
            "field 'summaries' must hold 2 summaries, got 3",
        ),
        (_set(("info", "post"), ""), "field 'info.post' must be a non-empty string, got ''"),
        (_set(("extra", "confidence"), 10), "field 'extra.confidence' must be in 1..9, got 10"),
        (_set(("summaries", 0, "text"), None), "field 'summaries[].text' must be a string, got None"),
    ],
    ids=["choice", "one-summary", "three-summaries", "empty-post", "confidence", "null-text"],
)
def test_bad_comparison_rows(comparisons, edit, message):
    row_id = comparisons[3]["info"]["id"]
    with pytest.raises(SchemaError) as err:
        validate_comparisons(_with_row(comparisons, 3, edit))
    assert str(err.value) == f"comparisons[validation] row id={row_id}: {message}"


def test_bad_sft_rows(sft):
    row_id = sft[5]["id"]
    message = rf"^sft\[validation\] row id={row_id}: field 'post' must be a non-empty string"
    with pytest.raises(SchemaError, match=message):
        validate_sft(_with_row(sft, 5, _set(("post",), "   ")))
    with pytest.raises(SchemaError, match=rf"row id={row_id}: field 'summary'"):
        validate_sft(_with_row(sft, 5, _set(("summary",), None)))


def test_bad_columns(comparisons, sft):
    with pytest.raises(SchemaError, match=r"^comparisons\[validation\]: missing column 'choice'"):
        validate_comparisons(DatasetDict({"validation": comparisons.remove_columns("choice")}))
    as_string = comparisons.cast_column("choice", Value("string"))
    with pytest.raises(SchemaError, match=r"field 'choice' must be an integer, got Value\('string'\)"):
        validate_comparisons(DatasetDict({"validation": as_string}))
    with pytest.raises(SchemaError, match=r"^sft\[test\]: missing column 'summary'"):
        validate_sft(DatasetDict({"test": sft.remove_columns("summary")}))
    with pytest.raises(SchemaError, match=r"sft\[test\]: field 'id' must be a string"):
        validate_sft(DatasetDict({"test": Dataset.from_dict({**sft[:2], "id": [1, 2]})}))


def test_accepts_schema_variants(comparisons):
    """int64 integers, an ``info`` without the CNN/DM fields, and CNN/DM rows (article instead of post)."""
    rows = comparisons.to_list()
    for row in rows:
        del row["info"]["site"], row["info"]["article"]
    plain = Dataset.from_list(rows)
    assert plain.features["choice"] == Value("int64")
    validate_comparisons(DatasetDict({"train": plain}))
    validate_comparisons(_with_row(comparisons, 0, lambda row: row["info"].update(post=None, article="CNN text")))
    validate_comparisons(_with_row(comparisons, 0, _set(("extra", "confidence"), None)))


def test_validation_sees_selected_rows_only(comparisons):
    bad = _with_row(comparisons, 0, _set(("choice",), 7))["validation"]
    validate_comparisons(DatasetDict({"validation": bad.select(range(1, len(bad)))}))


def test_json_comparisons_whose_every_confidence_is_null_load(comparisons, tmp_path):
    """Issue #35: AI-feedback labels carry no confidence; saved as JSON, every row's `extra.confidence` is null and
    the column is read with the type null. The row check allows null, so the file loads (as integers)."""
    rows = comparisons.to_list()
    for row in rows:
        row["extra"]["confidence"] = None
    path = tmp_path / "labels.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    loaded = load_comparisons(str(path))["train"]
    assert loaded.features["extra"]["confidence"] == Value("int64")
    assert loaded["extra"] == [{"confidence": None}] * len(rows)
    assert loaded["choice"] == comparisons["choice"]
