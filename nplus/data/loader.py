"""One loader for both worlds: the embedded ``tldr-synth`` corpus, local copies and the Hugging Face hub.

A *source* is one of
- ``"tldr-synth"``: the directory written by ``nplus.tasks.synth.generate`` (``data_dir``; its ``sft/`` or
  ``comparisons/`` subdirectory is read);
- a local path: a ``save_to_disk`` directory (a ``tldr-synth`` root also works), a directory of
  parquet/json files (splits from file or folder names, as ``datasets.load_dataset`` infers them, e.g. a
  ``huggingface-cli download`` snapshot), or one parquet/json(l) file (loaded as split ``train``);
- a hub name: ``vwxyzjn/summarize_from_feedback_tldr_3_filtered`` (SFT) or ``openai/summarize_from_feedback``
  (config ``comparisons``). When the hub cannot be reached the loader fails fast with a ``DataSourceError``
  that says what to download and how to point nplus at the copy.

Every loaded dataset is checked against the public schema (reference/DETAILS.md §6) before it is returned.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datasets import Dataset, DatasetDict, Features, Value, load_dataset, load_from_disk

from nplus.data.sources import HUB_NAME, hub_errors, hub_offline, hub_unreachable

SYNTH = "tldr-synth"
SFT_HUB = "vwxyzjn/summarize_from_feedback_tldr_3_filtered"
COMPARISONS_HUB = "openai/summarize_from_feedback"
COMPARISONS_CONFIG = "comparisons"
_FILE_BUILDERS = {".parquet": "parquet", ".json": "json", ".jsonl": "json"}


class DataSourceError(RuntimeError):
    """A source that cannot be loaded (unknown, missing, or on an unreachable hub)."""


class SchemaError(ValueError):
    """A dataset that does not match the public schema; the message names split, row id and field."""


# ----------------------------------------------------------------------------------------------------------
# loading


def load_sft(source: str, data_dir: Path | None = None) -> DatasetDict:
    """SFT posts with reference summaries (columns ``id``, ``subreddit``, ``title``, ``post``, ``summary``)."""
    ds = _load(source, data_dir, kind="sft", hub_config=None)
    validate_sft(ds)
    return ds


def load_comparisons(source: str, data_dir: Path | None = None) -> DatasetDict:
    """Pairwise comparisons (``info``, ``summaries``, ``choice``, ``worker``, ``batch``, ``split``, ``extra``)."""
    config = COMPARISONS_CONFIG if source == COMPARISONS_HUB else None
    ds = _load(source, data_dir, kind="comparisons", hub_config=config)
    ds = DatasetDict({split: _typed_null_columns(d) for split, d in ds.items()})
    validate_comparisons(ds)
    return ds


# The type of a public-schema field whose every row is null in a JSON file (read with the type ``null``).
_NULL_AS = {"confidence": Value("int64"), "choice": Value("int64")}


def _typed_nulls(feature: Any, name: str = "") -> Any:
    """``feature`` with every leaf of type ``null`` given its public-schema type (strings but for integers)."""
    if isinstance(feature, dict):
        return {k: _typed_nulls(v, k) for k, v in feature.items()}
    if type(feature).__name__ in ("List", "Sequence") and hasattr(feature, "feature"):
        return type(feature)(_typed_nulls(feature.feature, name))
    if _dtype(feature) == "null":
        return _NULL_AS.get(name, Value("string"))
    return feature


def _typed_null_columns(d: Dataset) -> Dataset:
    """JSON files whose every row leaves a field null are read with the type ``null`` (AI-feedback labels carry no
    ``extra.confidence``; TL;DR rows no ``info.site`` / ``info.article``). The row checks allow null there, so
    give such fields their public-schema type instead of refusing the file."""
    typed = Features({k: _typed_nulls(v, k) for k, v in d.features.items()})
    return d if typed == d.features else d.cast(typed)


def _load(source: str, data_dir: Path | None, kind: str, hub_config: str | None) -> DatasetDict:
    if source == SYNTH:
        if data_dir is None:
            raise DataSourceError(
                f"source {SYNTH!r} needs data_dir: the directory written by "
                "nplus.tasks.synth.generate(out_dir, seed, scale)"
            )
        path = Path(data_dir) / kind
        if not path.is_dir():
            raise DataSourceError(
                f"{path} not found: generate the corpus first with "
                f"nplus.tasks.synth.generate({str(data_dir)!r}, seed, scale)"
            )
        return _as_dict(load_from_disk(str(path)))
    if Path(source).exists():
        return _load_local(Path(source), kind)
    if HUB_NAME.match(source):
        return _load_hub(source, hub_config)
    raise DataSourceError(
        f"unknown data source {source!r}: expected {SYNTH!r}, an existing local path, "
        f"or a hub dataset name such as {SFT_HUB!r}"
    )


def _as_dict(ds: Dataset | DatasetDict, split: str = "train") -> DatasetDict:
    return ds if isinstance(ds, DatasetDict) else DatasetDict({split: ds})


def _is_saved(path: Path) -> bool:
    return (path / "dataset_dict.json").is_file() or (path / "state.json").is_file()


def _load_local(path: Path, kind: str) -> DatasetDict:
    if path.is_file():
        builder = _FILE_BUILDERS.get(path.suffix)
        if builder is None:
            raise DataSourceError(f"{path}: unsupported file type {path.suffix!r} (expected {sorted(_FILE_BUILDERS)})")
        return _as_dict(load_dataset(builder, data_files={"train": str(path)}))
    if _is_saved(path / kind):  # a tldr-synth root directory
        path = path / kind
    if _is_saved(path):
        return _as_dict(load_from_disk(str(path)))
    return _as_dict(load_dataset(str(path)))


def how_to_download(name: str, config: str | None) -> str:
    """Instructions for getting a hub dataset onto a machine without hub access."""
    revision = " --revision refs/convert/parquet" if config else ""
    subdir = f"/{config}" if config else ""
    config_arg = f", {config!r}" if config else ""
    return (
        f"Download it where the hub is reachable:\n"
        f"  huggingface-cli download --repo-type dataset {name}{revision} --local-dir DIR\n"
        f"or in Python: datasets.load_dataset({name!r}{config_arg}).save_to_disk('DIR')\n"
        f"then pass the local copy as the source (DIR{subdir} for the download, DIR for save_to_disk), "
        f"e.g. task.{'comparisons' if config else 'sft'}_source=DIR. "
        "If the dataset is already in your Hugging Face cache, set HF_HUB_OFFLINE=1 to use it."
    )


def _load_hub(name: str, config: str | None) -> DatasetDict:
    if not hub_offline():
        reason = hub_unreachable()
        if reason:
            raise DataSourceError(
                f"cannot load {name!r} from the Hugging Face hub ({reason}).\n" + how_to_download(name, config)
            )
    try:
        return _as_dict(load_dataset(name, config) if config else load_dataset(name))
    except hub_errors() as e:
        raise DataSourceError(
            f"cannot load {name!r} from the Hugging Face hub ({type(e).__name__}: {e}).\n"
            + how_to_download(name, config)
        ) from e


# ----------------------------------------------------------------------------------------------------------
# schema validation (column checks first, then per-row checks, vectorized with pyarrow)

_STRING = ("string", "large_string")
_INTEGER = ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")
SFT_COLUMNS = ("id", "subreddit", "title", "post", "summary")
COMPARISON_STRING_COLUMNS = ("worker", "batch", "split")
INFO_FIELDS = ("id", "post", "title", "subreddit")
SUMMARY_FIELDS = ("text", "policy")


def _dtype(feature) -> str | None:
    return getattr(feature, "dtype", None) if type(feature).__name__ == "Value" else None


def _require(where: str, name: str, feature, dtypes: tuple[str, ...], kind: str) -> None:
    if feature is None:
        raise SchemaError(f"{where}: missing field {name!r}")
    if _dtype(feature) not in dtypes:
        raise SchemaError(f"{where}: field {name!r} must be {kind}, got {feature}")


def _require_struct(where: str, name: str, feature, fields: dict[str, tuple[tuple[str, ...], str]]) -> None:
    if feature is None:
        raise SchemaError(f"{where}: missing column {name!r}")
    if not isinstance(feature, dict):
        raise SchemaError(f"{where}: column {name!r} must be a struct with fields {sorted(fields)}, got {feature}")
    for field, (dtypes, kind) in fields.items():
        _require(where, f"{name}.{field}", feature.get(field), dtypes, kind)


def _splits(ds: Dataset | DatasetDict) -> dict[str, Dataset]:
    return dict(ds) if isinstance(ds, DatasetDict) else {str(ds.split or "train"): ds}


def _table(ds: Dataset) -> pa.Table:
    """The rows as an Arrow table (honouring any indices mapping from select/filter/shuffle)."""
    return ds.with_format("arrow")[:]


def _first_bad(where: str, ids: pa.ChunkedArray, bad, message) -> None:
    """Raise for the first row where ``bad`` (a boolean Arrow array; nulls count as False) holds."""
    mask = pc.fill_null(bad, False).to_numpy(zero_copy_only=False)
    hits = np.flatnonzero(mask)
    if hits.size:
        i = int(hits[0])
        row_id = ids[i].as_py()
        more = f" ({hits.size} rows fail this check)" if hits.size > 1 else ""
        raise SchemaError(f"{where} row id={row_id if row_id else '#' + str(i)}: {message(i)}{more}")


def _empty(strings) -> pa.ChunkedArray:
    """True where a string is null or blank."""
    return pc.or_kleene(pc.is_null(strings), pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(strings)), 0))


def validate_sft(ds: Dataset | DatasetDict) -> None:
    """Check the schema of ``vwxyzjn/summarize_from_feedback_tldr_3_filtered``; raise ``SchemaError``."""
    for split, d in _splits(ds).items():
        where = f"sft[{split}]"
        for col in SFT_COLUMNS:
            if col not in d.features:
                raise SchemaError(f"{where}: missing column {col!r} (columns: {list(d.features)})")
            _require(where, col, d.features[col], _STRING, "a string")
        t = _table(d)
        for col in ("post", "summary"):
            values = t.column(col)
            _first_bad(
                where,
                t.column("id"),
                _empty(values),
                lambda i, c=col, v=values: f"field {c!r} must be a non-empty string, got {v[i].as_py()!r}",
            )


def validate_comparisons(ds: Dataset | DatasetDict) -> None:
    """Check the schema of ``openai/summarize_from_feedback`` (``comparisons``); raise ``SchemaError``.

    Integer columns may be any integer type; ``info`` may carry the CNN/DM fields ``site`` and ``article``,
    and a row whose ``article`` is set (CNN/DM) needs no ``post``.
    """
    string, integer = (_STRING, "a string"), (_INTEGER, "an integer")
    for split, d in _splits(ds).items():
        where = f"comparisons[{split}]"
        f = d.features
        _require_struct(where, "info", f.get("info"), {k: string for k in INFO_FIELDS})
        summaries = f.get("summaries")
        if summaries is None:
            raise SchemaError(f"{where}: missing column 'summaries'")
        inner = getattr(summaries, "feature", None)
        if not isinstance(inner, dict):
            raise SchemaError(
                f"{where}: column 'summaries' must be a list of structs {{text, policy, note}}, got {summaries}"
            )
        _require_struct(where, "summaries[]", inner, {k: string for k in SUMMARY_FIELDS})
        if "choice" not in f:
            raise SchemaError(f"{where}: missing column 'choice'")
        _require(where, "choice", f["choice"], *integer)
        for col in COMPARISON_STRING_COLUMNS:
            if col not in f:
                raise SchemaError(f"{where}: missing column {col!r}")
            _require(where, col, f[col], *string)
        _require_struct(where, "extra", f.get("extra"), {"confidence": integer})
        _check_comparison_rows(where, _table(d))


def _check_comparison_rows(where: str, t: pa.Table) -> None:
    info = t.column("info")
    ids = pc.struct_field(info, "id")
    choice = t.column("choice")
    _first_bad(
        where,
        ids,
        pc.invert(pc.is_in(choice, value_set=pa.array([0, 1], choice.type))),
        lambda i: f"field 'choice' must be 0 or 1, got {choice[i].as_py()}",
    )
    n_summaries = pc.list_value_length(t.column("summaries"))
    _first_bad(
        where,
        ids,
        pc.or_kleene(pc.is_null(n_summaries), pc.not_equal(n_summaries, 2)),
        lambda i: f"field 'summaries' must hold 2 summaries, got {n_summaries[i].as_py() or 0}",
    )
    texts = pc.list_flatten(t.column("summaries"))
    text_null = pc.is_null(pc.struct_field(texts, "text")).to_numpy(zero_copy_only=False).reshape(-1, 2).any(axis=1)
    _first_bad(where, ids, pa.array(text_null), lambda i: "field 'summaries[].text' must be a string, got None")
    post_missing = _empty(pc.struct_field(info, "post"))
    if "article" in info.type.names:  # CNN/DM rows carry an article instead of a post
        post_missing = pc.and_kleene(post_missing, _empty(pc.struct_field(info, "article")))
    _first_bad(
        where,
        ids,
        post_missing,
        lambda i: f"field 'info.post' must be a non-empty string, got {info[i].as_py()['post']!r}",
    )
    confidence = pc.struct_field(t.column("extra"), "confidence")
    out_of_range = pc.or_kleene(pc.less(confidence, 1), pc.greater(confidence, 9))  # null confidence is allowed
    _first_bad(
        where, ids, out_of_range, lambda i: f"field 'extra.confidence' must be in 1..9, got {confidence[i].as_py()}"
    )
