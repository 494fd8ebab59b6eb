"""`nplus data-build` (nplus/data/build_cmd.py): pre-tokenized datasets from local copies in the public schemas.

The sources are the tldr-synth corpus (its sft/ and comparisons/ directories are exactly the public schemas of
DETAILS.md §6), read once as save_to_disk directories and once as parquet files laid out like `huggingface-cli
download` snapshots. The tokenizer is a tiny byte-level BPE trained here WITHOUT a pad token, so the build has
to add `[PAD]` (DETAILS.md §2.4) and the datasets must use its id. Lengths are the paper's (§2.7, §6).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tyro
from datasets import load_from_disk
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from nplus.config import Lengths
from nplus.data.build_cmd import DataBuildCmd, load_hub_tokenizer
from nplus.data.loader import DataSourceError, load_comparisons, load_sft
from nplus.details import DetailError, Details
from nplus.tasks.synth import generate
from tests.snapshots import write_hub_snapshots

ROOT = Path(__file__).resolve().parent.parent
EOS = "<|endoftext|>"
# DETAILS.md §6: widths of the pre-tokenized columns
SFT_WIDTHS = {"query_token": 512, "reference_response_token": 53, "query_reference_response_token": 562}
PREF_WIDTHS = {
    "query_token": 512,
    "chosen_token": 169,
    "rejected_token": 169,
    "query_chosen_token": 638,
    "query_rejected_token": 638,
}


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, Path]:
    """tldr-synth (small: enough long posts to exceed the paper's 512-token query) as save_to_disk directories and
    as hub-snapshot-like parquet trees, plus a pad-less BPE."""
    root = tmp_path_factory.mktemp("build")
    data = root / "synth"
    generate(data, 0, "small")
    write_hub_snapshots(data, root / "sft_snap", root / "cmp_snap")
    # a byte-level BPE like GPT-NeoX's: EOS only, no pad token. Its vocabulary is small enough that some posts
    # exceed 512 tokens (newline truncation runs) and large enough that query + reference stays within 562, as
    # it does for Pythia on the real data (sfd asserts it; the builder raises otherwise).
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    texts = [r["post"] + "\n" + r["summary"] for r in load_sft(str(data / "sft"))["train"]]
    bpe.train_from_iterator(
        texts,
        trainers.BpeTrainer(
            vocab_size=2000,
            special_tokens=[EOS],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        ),
    )
    PreTrainedTokenizerFast(
        tokenizer_object=bpe, eos_token=EOS, bos_token=EOS, unk_token=EOS, clean_up_tokenization_spaces=False
    ).save_pretrained(str(root / "bpe_nopad"))
    assert AutoTokenizer.from_pretrained(str(root / "bpe_nopad")).pad_token is None
    return {
        "data": data,
        "sft_snap": root / "sft_snap",
        "cmp_snap": root / "cmp_snap" / "comparisons",
        "tokenizer": root / "bpe_nopad",
        "synth_tokenizer": data / "tokenizer",
    }


@pytest.fixture(scope="module")
def built(sources, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("out") / "tldr"
    cmd = DataBuildCmd(
        out=out,
        sft_source=str(sources["sft_snap"]),
        comparisons_source=str(sources["cmp_snap"]),
        tokenizer=str(sources["tokenizer"]),
    )
    assert cmd.run() == 0
    return out


def _matrix(ds, column: str) -> np.ndarray:
    rows = ds[column]
    widths = {len(r) for r in rows}
    assert len(widths) == 1, f"{column}: rows of different widths {sorted(widths)}"
    return np.asarray(rows)


def test_writes_datasets_tokenizer_and_stats(built):
    assert {p.name for p in built.iterdir()} == {"sft", "preferences", "tokenizer", "stats.json"}
    stats = json.loads((built / "stats.json").read_text())
    assert set(stats["sft"]) == {"train", "validation", "test"}
    assert set(stats["preferences"]) == {"train", "validation"}
    assert stats["lengths"] == {
        "query": 512,
        "sft_response": 53,
        "sft_total": 562,
        "pref_response": 169,
        "pref_total": 638,
    }
    assert stats["details"]["pad_token"] == "distinct" and stats["details"]["query_padding_side"] == "left"
    assert stats["sft"]["train"]["n_query_truncated"] > 0  # the 512-token limit was exercised
    sft, pref = load_from_disk(str(built / "sft")), load_from_disk(str(built / "preferences"))
    for kind, ds in (("sft", sft), ("preferences", pref)):
        for split, d in ds.items():
            assert stats[kind][split]["n_rows"] == len(d) > 0


def test_pad_token_was_added(built, sources):
    raw = AutoTokenizer.from_pretrained(str(sources["tokenizer"]))
    tok = AutoTokenizer.from_pretrained(str(built / "tokenizer"))
    stats = json.loads((built / "stats.json").read_text())["tokenizer"]
    assert tok.pad_token == "[PAD]" and tok.pad_token_id != tok.eos_token_id
    assert tok.pad_token_id == len(raw) and stats["pad_added"] is True  # a new id, after the vocabulary
    assert (stats["pad_token_id"], stats["eos_token_id"]) == (tok.pad_token_id, tok.eos_token_id)


def test_sft_columns(built):
    tok = AutoTokenizer.from_pretrained(str(built / "tokenizer"))
    pad, eos = tok.pad_token_id, tok.eos_token_id
    for split, d in load_from_disk(str(built / "sft")).items():
        m = {c: _matrix(d, c) for c in SFT_WIDTHS}
        assert {c: x.shape[1] for c, x in m.items()} == SFT_WIDTHS, split
        q, r = m["query_token"], m["reference_response_token"]
        qlen, rlen = np.asarray(d["query_token_len"]), np.asarray(d["response_token_len"])
        assert (qlen <= 512).all() and (rlen <= 53).all() and (qlen + rlen <= 562).all()
        for i in range(len(d)):
            # queries left-padded: pads, then exactly query_token_len real tokens ending with the TL;DR: cue
            assert (q[i, : 512 - qlen[i]] == pad).all() and (q[i, 512 - qlen[i] :] != pad).all()
            assert tok.decode(q[i, 512 - qlen[i] :]).endswith("TL;DR:")
            # references right-padded, " " + summary + EOS (§2.5)
            assert (r[i, : rlen[i]] != pad).all() and (r[i, rlen[i] :] == pad).all()
            assert r[i, rlen[i] - 1] == eos and tok.decode(r[i, : rlen[i]]).startswith(" ")
            # training sequence: un-padded query then the reference, right-padded
            full = m["query_reference_response_token"][i]
            assert (full[: qlen[i] + rlen[i]] == np.concatenate([q[i, 512 - qlen[i] :], r[i, : rlen[i]]])).all()
            assert (full[qlen[i] + rlen[i] :] == pad).all()


def test_preference_columns(built):
    tok = AutoTokenizer.from_pretrained(str(built / "tokenizer"))
    pad, eos = tok.pad_token_id, tok.eos_token_id
    for split, d in load_from_disk(str(built / "preferences")).items():
        m = {c: _matrix(d, c) for c in PREF_WIDTHS}
        assert {c: x.shape[1] for c, x in m.items()} == PREF_WIDTHS, split
        qlen = np.asarray(d["query_token_len"])
        assert (qlen <= 512).all()
        assert ((m["query_token"] == pad).sum(1) == 512 - qlen).all()
        assert (m["query_token"][:, -1] != pad).all()  # left padding: the last position is real
        for name in ("chosen", "rejected"):
            n = np.asarray(d[f"{name}_token_len"])
            assert (n <= 169).all() and (qlen + n <= 638).all()
            tokens = m[f"{name}_token"]
            assert (tokens[np.arange(len(d)), n - 1] == eos).all()  # EOS appended (§2.6)
            assert ((tokens != pad).sum(1) == n).all()
            assert ((m[f"query_{name}_token"] != pad).sum(1) == qlen + n).all()


def test_same_build_from_save_to_disk_sources(built, sources, tmp_path):
    """The snapshot (parquet) and save_to_disk copies of the same data give the same token ids."""
    out = tmp_path / "again"
    assert (
        DataBuildCmd(
            out=out,
            sft_source=str(sources["data"] / "sft"),
            comparisons_source=str(sources["data"]),
            tokenizer=str(sources["tokenizer"]),
        ).run()
        == 0
    )
    for kind, columns in (("sft", SFT_WIDTHS), ("preferences", PREF_WIDTHS)):
        a, b = load_from_disk(str(built / kind)), load_from_disk(str(out / kind))
        for split in a:
            for c in columns:
                assert a[split][c] == b[split][c], (kind, split, c)


def test_flags_parse_and_reach_the_build(sources, tmp_path):
    """The command line as tyro builds it: --lengths.* and the data-stage --details.* reach the builder."""
    out = tmp_path / "short"
    cmd = tyro.cli(
        DataBuildCmd,
        args=[
            "--out",
            str(out),
            "--sft-source",
            str(sources["data"]),
            "--comparisons-source",
            str(sources["data"]),
            "--tokenizer",
            str(sources["synth_tokenizer"]),
            "--lengths.query",
            "96",
            "--lengths.sft-response",
            "24",
            "--lengths.sft-total",
            "120",
            "--lengths.pref-response",
            "40",
            "--lengths.pref-total",
            "136",
            "--details.query-truncation",
            "hard",
        ],
    )
    assert cmd.lengths == Lengths(96, 24, 120, 40, 136) and cmd.details.query_truncation == "hard"
    assert cmd.run() == 0
    sft = load_from_disk(str(out / "sft"))["train"]
    assert len(sft[0]["query_token"]) == 96 and len(sft[0]["query_reference_response_token"]) == 120
    assert json.loads((out / "stats.json").read_text())["details"]["query_truncation"] == "hard"
    assert json.loads((out / "stats.json").read_text())["tokenizer"]["pad_added"] is False  # synth has [PAD]
    # an existing build is kept unless --overwrite
    with pytest.raises(DataSourceError, match="--overwrite"):
        DataBuildCmd(
            out=out,
            sft_source=str(sources["data"]),
            comparisons_source=str(sources["data"]),
            tokenizer=str(sources["synth_tokenizer"]),
        ).run()


def test_non_data_details_are_rejected(sources, tmp_path):
    cmd = DataBuildCmd(
        out=tmp_path / "x",
        sft_source=str(sources["data"]),
        comparisons_source=str(sources["data"]),
        tokenizer=str(sources["synth_tokenizer"]),
        details=Details(kl_estimator="k3"),
    )
    with pytest.raises(DetailError, match="details.kl_estimator=k3 does not affect the built datasets"):
        cmd.run()
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    "env",
    [{"HF_HUB_OFFLINE": "1"}, {"HF_ENDPOINT": "http://127.0.0.1:9"}],
    ids=["HF_HUB_OFFLINE", "unreachable-endpoint"],
)
def test_hub_tokenizer_without_network_fails_in_one_line(sources, tmp_path, env):
    full_env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "PYTHONPATH": str(ROOT), **env}
    start = time.monotonic()
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "nplus.data.build_cmd",
            "--out",
            str(tmp_path / "out"),
            "--sft-source",
            str(sources["data"]),
            "--comparisons-source",
            str(sources["data"]),
            "--tokenizer",
            "EleutherAI/pythia-1b-deduped",
        ],
        cwd=ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert time.monotonic() - start < 60
    assert r.returncode == 2, r.stderr[-2000:]
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("error: cannot load tokenizer 'EleutherAI/pythia-1b-deduped'")
    assert "`hf download EleutherAI/pythia-1b-deduped --local-dir DIR`" in lines[0]
    assert "`huggingface-cli download EleutherAI/pythia-1b-deduped --local-dir DIR`" in lines[0]
    assert "--tokenizer DIR" in lines[0]
    assert not (tmp_path / "out").exists()


def test_load_hub_tokenizer_local_and_unknown(sources):
    assert load_hub_tokenizer(str(sources["tokenizer"])).eos_token == EOS
    with pytest.raises(DataSourceError, match="neither an existing local directory nor a hub name"):
        load_hub_tokenizer("no such tokenizer")


def test_hard_truncation_builds_at_the_paper_lengths(sources, tmp_path):
    """Issue #16: a hard cut leaves over-long queries at exactly 512 tokens, so with a reference cut to 53 tokens
    512 + 53 > 562 (and 512 + 169 > 638 for preferences); the ablation raises the totals to query + response
    (565 / 681) instead of refusing to build. The summaries are repeated so that they reach the response limits,
    as the longest real ones do."""
    sft_dir, cmp_dir = tmp_path / "long_sft", tmp_path / "long_cmp"
    load_sft(str(sources["data"] / "sft")).map(lambda r: {"summary": " ".join([r["summary"]] * 4)}).save_to_disk(
        str(sft_dir)
    )
    load_comparisons(str(sources["data"])).map(
        lambda r: {"summaries": [{**s, "text": s["text"] * 12} for s in r["summaries"]]}
    ).save_to_disk(str(cmp_dir))
    out = tmp_path / "hard"
    cmd = DataBuildCmd(
        out=out,
        sft_source=str(sft_dir),
        comparisons_source=str(cmp_dir),
        tokenizer=str(sources["tokenizer"]),
        details=Details(query_truncation="hard"),
    )
    assert cmd.lengths == Lengths()  # the paper's
    assert cmd.run() == 0
    stats = json.loads((out / "stats.json").read_text())
    assert stats["applied_lengths"] == {**stats["lengths"], "sft_total": 565, "pref_total": 681}
    assert stats["sft"]["train"]["n_query_truncated"] > 0 and stats["preferences"]["train"]["n_query_truncated"] > 0
    sft = load_from_disk(str(out / "sft"))["train"]
    assert (
        _matrix(sft, "query_token").shape[1] == 512 and _matrix(sft, "query_reference_response_token").shape[1] == 565
    )
    totals = np.asarray(sft["query_token_len"]) + np.asarray(sft["response_token_len"])
    assert totals.max() == 512 + 53  # a hard-cut query with a full-length reference: what 562 refused
    pref = load_from_disk(str(out / "preferences"))["train"]
    assert _matrix(pref, "query_token").shape[1] == 512 and _matrix(pref, "query_chosen_token").shape[1] == 681
    totals = np.asarray(pref["query_token_len"]) + np.asarray(pref["chosen_token_len"])
    assert totals.max() == 512 + 169


def _cli(args: list[str], capsys) -> tuple[int, list[str]]:
    """Run `nplus` in-process; its exit code and the stderr lines other than the datasets progress bars."""
    from nplus.cli import main

    rc = main(args)
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return rc, [line for line in err.splitlines() if line.strip() and "examples/s]" not in line]


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--lengths.sft-total", "60"], "rows have query + response longer than Lengths.sft_total=60"),
        (["--lengths.query", "4", "--lengths.sft-total", "57"], "could not truncate the query to 4 tokens"),
    ],
    ids=["total-overflow", "cannot-truncate"],
)
def test_cli_build_errors_are_one_line(sources, tmp_path, capsys, flags, message):
    """Issue #16: `nplus data-build` prints the builder's own errors in one line and exits 2, like
    `python -m nplus.data.build_cmd`; nothing is written."""
    rc, lines = _cli(
        [
            "data-build",
            "--out",
            str(tmp_path / "out"),
            "--sft-source",
            str(sources["data"]),
            "--comparisons-source",
            str(sources["data"]),
            "--tokenizer",
            str(sources["synth_tokenizer"]),
            *flags,
        ],
        capsys,
    )
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
    assert not (tmp_path / "out").exists()
