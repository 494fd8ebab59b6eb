"""``nplus data-build``: pre-tokenize the TL;DR datasets once, the way the paper's released datasets were built.

The paper trained on pre-tokenized copies of the public datasets (``..._oai_preprocessing_1706381144``, DETAILS.md
§6): 512-token left-padded queries, SFT references of at most 53 tokens, preference summaries of at most 169.
This command builds the same form from the raw public datasets (or local copies of them) with nplus's builder,
so the data-stage details and length limits can be inspected before any GPU time is spent:

    nplus data-build --tokenizer EleutherAI/pythia-1b-deduped --out data/tldr-pythia

writes ``DIR/sft/`` and ``DIR/preferences/`` (``datasets.save_to_disk``), ``DIR/tokenizer/`` (the tokenizer the
token ids refer to, with ``[PAD]`` added when it had no distinct pad token) and ``DIR/stats.json`` (rows,
truncations and longest responses per split, the sources, lengths and details), in that order, stats.json last.

Without hub access every hub name fails fast with what to download: the datasets through the loader
(``nplus.data.loader.DataSourceError``), the tokenizer here, in one line.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from nplus.config import Lengths, positive
from nplus.data.builder import DATA_DETAILS, applied_lengths, build_preferences, build_sft, data_details
from nplus.data.formatting import DataBuildError, prepare_tokenizer
from nplus.data.loader import COMPARISONS_HUB, SFT_HUB, DataSourceError, load_comparisons, load_sft
from nplus.data.sources import HUB_NAME, hub_errors, hub_offline, hub_unreachable
from nplus.details import DetailError, Details
from nplus.rundir import atomic_write_json, save_dataset

DEFAULT_TOKENIZER = "EleutherAI/pythia-1b-deduped"
"""Pythia's GPT-NeoX tokenizer; the 1B, 2.8B and 6.9B deduped models share it."""


def tokenizer_download_hint(name: str) -> str:
    # Recent huggingface_hub releases ship only the `hf` command, older ones only `huggingface-cli`: name both.
    return (
        f"`hf download {name} --local-dir DIR` (older huggingface_hub: "
        f"`huggingface-cli download {name} --local-dir DIR`)"
    )


def load_hub_tokenizer(name_or_path: str, flag: str = "--tokenizer"):
    """``AutoTokenizer.from_pretrained`` for a local directory or a hub name. Without hub access a hub name
    fails at once with a one-line ``DataSourceError`` that says what to download and how to pass it
    (instead of the library's retries and a multi-line traceback)."""
    from transformers import AutoTokenizer

    if Path(name_or_path).exists():
        return AutoTokenizer.from_pretrained(str(name_or_path))
    if not HUB_NAME.match(name_or_path):
        raise DataSourceError(
            f"tokenizer {name_or_path!r} is neither an existing local directory nor a hub name "
            f"such as {DEFAULT_TOKENIZER!r}"
        )
    sep = "" if flag.endswith("=") else " "  # "--tokenizer DIR", "--set model.name=DIR"
    fix = f"download it where the hub is reachable with {tokenizer_download_hint(name_or_path)} and pass {flag}{sep}DIR"
    if not hub_offline():
        reason = hub_unreachable()
        if reason:
            raise DataSourceError(f"cannot load tokenizer {name_or_path!r} from the Hugging Face hub ({reason}): {fix}")
    try:
        return AutoTokenizer.from_pretrained(name_or_path)
    except hub_errors() as e:  # offline and not in the cache, or a hub error
        first = (str(e).strip().splitlines() or [""])[0]
        raise DataSourceError(f"cannot load tokenizer {name_or_path!r} ({type(e).__name__}: {first}): {fix}") from e


@dataclass(frozen=True)
class DataBuildCmd:
    """Pre-tokenize the TL;DR SFT and preference datasets (the paper's `_oai_preprocessing` form) into --out."""

    out: Path
    """Output directory: sft/ and preferences/ (datasets save_to_disk), tokenizer/, stats.json."""
    sft_source: str = SFT_HUB
    """SFT posts with reference summaries: a hub dataset name or a local copy (save_to_disk directory, a
    `hf download` snapshot directory of parquet/json files, or one parquet/json file)."""
    comparisons_source: str = COMPARISONS_HUB
    """Human comparisons: a hub dataset name (config `comparisons`) or a local copy (for a parquet snapshot
    downloaded with --revision refs/convert/parquet, pass its comparisons/ subdirectory)."""
    tokenizer: str = DEFAULT_TOKENIZER
    """Tokenizer: a hub name or a local directory (AutoTokenizer.from_pretrained)."""
    details: Details = field(default_factory=Details)
    """Implementation details (paper values by default). Only the data-stage ones are used (query_truncation,
    query_padding_side, pad_token, reference_leading_space, reference_eos, preference_eos); setting any other
    one is an error, since it could not change the datasets."""
    lengths: Lengths = field(default_factory=Lengths)
    """Token limits (paper: query 512, SFT response 53 / total 562, preference response 169 / total 638)."""
    num_proc: int | None = positive(None)
    """Processes for tokenization (datasets.map num_proc; default: one)."""
    overwrite: bool = False
    """Replace the datasets already in --out (otherwise an existing build is an error)."""

    def check_data_details_only(self) -> None:
        """Only data-stage details may leave their paper value: any other could not change the datasets."""
        ignored = {k: v for k, v in self.details.diff().items() if k not in DATA_DETAILS}
        if ignored:
            name, value = next(iter(ignored.items()))
            raise DetailError(
                f"details.{name}={value} does not affect the built datasets; data-stage details: "
                f"{', '.join(DATA_DETAILS)}"
            )

    def run(self) -> int:
        self.check_data_details_only()
        out = Path(self.out)
        built = [p for p in (out / "sft", out / "preferences", out / "stats.json") if p.exists()]
        if built and not self.overwrite:
            raise DataSourceError(
                f"{out} already holds a build ({', '.join(p.name for p in built)}); pass --overwrite to replace it"
            )
        # Cheap checks first: a missing tokenizer or dataset fails before any tokenization.
        raw_tokenizer = load_hub_tokenizer(self.tokenizer)
        if raw_tokenizer.eos_token_id is None:  # every data-stage detail that appends EOS or pads with it needs one
            raise DataBuildError(
                f"--tokenizer {self.tokenizer}: the tokenizer has no eos_token; set one in its "
                "tokenizer_config.json (Pythia's is '<|endoftext|>')"
            )
        tokenizer = prepare_tokenizer(raw_tokenizer, self.details.pad_token)
        raw_sft = load_sft(self.sft_source)
        raw_cmp = load_comparisons(self.comparisons_source)
        sft, sft_stats = build_sft(raw_sft, tokenizer, self.lengths, self.details, num_proc=self.num_proc)
        pref, pref_stats = build_preferences(raw_cmp, tokenizer, self.lengths, self.details, num_proc=self.num_proc)
        # Written into a scratch directory and moved into place, stats.json last: a killed build never leaves
        # datasets that look complete.
        out.mkdir(parents=True, exist_ok=True)
        (out / "stats.json").unlink(missing_ok=True)
        scratch = out / ".building"
        shutil.rmtree(scratch, ignore_errors=True)
        save_dataset(sft, scratch / "sft")
        save_dataset(pref, scratch / "preferences")
        tokenizer.save_pretrained(str(scratch / "tokenizer"))
        for name in ("sft", "preferences", "tokenizer"):
            shutil.rmtree(out / name, ignore_errors=True)
            os.replace(scratch / name, out / name)
        scratch.rmdir()
        stats = {
            "sft": sft_stats,
            "preferences": pref_stats,
            "sources": {"sft": self.sft_source, "comparisons": self.comparisons_source, "tokenizer": self.tokenizer},
            "tokenizer": {
                "vocab_size": len(tokenizer),
                "pad_token": tokenizer.pad_token,
                "pad_token_id": tokenizer.pad_token_id,
                "eos_token_id": tokenizer.eos_token_id,
                "pad_added": len(tokenizer) > len(raw_tokenizer),
            },
            "lengths": dataclasses.asdict(self.lengths),
            # the totals enforced: raised to query + response under query_truncation=hard (applied_lengths)
            "applied_lengths": dataclasses.asdict(applied_lengths(self.lengths, self.details.query_truncation)),
            "details": data_details(self.details),
        }
        atomic_write_json(out / "stats.json", stats)
        for kind, per_split in (("sft", sft_stats), ("preferences", pref_stats)):
            for split, s in per_split.items():
                print(
                    f"{kind}/{split}: {s['n_rows']} rows, {s['n_query_truncated']} queries truncated, "
                    f"longest response {s['max_response_tokens']} tokens ({s['n_response_truncated']} cut)"
                )
        print(f"wrote {out}/sft, {out}/preferences, {out}/tokenizer, {out}/stats.json")
        return 0


BuildCmd = DataBuildCmd  # the name used in the design notes


def main(argv: list[str] | None = None) -> int:
    """``python -m nplus.data.build_cmd``: the same command outside ``nplus`` (user errors: one line, exit 2)."""
    import tyro

    cmd = tyro.cli(DataBuildCmd, args=argv, prog="nplus data-build")
    try:
        return cmd.run()
    except (DataSourceError, DetailError, ValueError) as e:  # SchemaError and DataBuildError are ValueErrors
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
