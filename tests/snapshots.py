"""A ``tldr-synth`` corpus laid out like the public datasets' hub snapshots (what ``huggingface-cli download``
gives)."""

from __future__ import annotations

from pathlib import Path

from nplus.data.loader import load_comparisons, load_sft


def write_hub_snapshots(synth: Path, sft_root: Path, cmp_root: Path) -> None:
    """SFT as ``sft_root/data/<split>-00000-of-00001.parquet`` (a parquet dataset repository); comparisons as
    ``cmp_root/comparisons/<split>/0000.parquet`` (refs/convert/parquet)."""
    for split, ds in load_sft(str(synth / "sft")).items():
        (sft_root / "data").mkdir(parents=True, exist_ok=True)
        ds.to_parquet(str(sft_root / "data" / f"{split}-00000-of-00001.parquet"))
    for split, ds in load_comparisons(str(synth / "comparisons")).items():
        (cmp_root / "comparisons" / split).mkdir(parents=True, exist_ok=True)
        ds.to_parquet(str(cmp_root / "comparisons" / split / "0000.parquet"))
