"""Committed base models (nplus/bases): probes, integrity checks, and proof that the recipe made the weights."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from nplus import bases
from nplus.config import BASE_RECIPE, apply_overrides
from nplus.pipeline import load_data
from nplus.presets import preset
from nplus.stages.base import pretrain_base, pretraining_texts, token_stream

# make test-fast leaves it out: base-model builds and replays
pytestmark = pytest.mark.slow

MANIFESTS = sorted(bases.BASES_DIR.glob("*/manifest.json"))
RUNGS = [p.parent.name for p in MANIFESTS]


def _cfg(rung: str):
    manifest = bases.read_manifest(rung)
    name = manifest.get("preset") or "demo"  # manifests before the scaling ladder were all built with the demo preset
    cfg = apply_overrides(preset(name), hparams={"model.name": rung})
    assert cfg.stage_dict("base") == manifest["config"], f"the {name} preset no longer builds the committed base"
    return cfg, manifest


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """The corpus a fresh clone generates for the demo preset (the committed bases' corpus)."""
    cache = tmp_path_factory.mktemp("cache")
    return load_data(preset("demo"), cache)


def test_the_presets_rungs_are_committed():
    assert preset("demo").model.name in RUNGS


def test_the_scaling_studys_ladder_spans_8x_grows_deeper_and_improves_strictly_with_size():
    """Issue 32's bar: the sizes of ablations/scaling.toml are committed rungs of one recipe, ≥ 5 of them over ≥ 8× in
    parameters, ≥ 4 layers at the top, and both language-model losses fall strictly as parameters grow."""
    import tomllib

    study = tomllib.loads((Path(__file__).resolve().parents[1] / "ablations" / "scaling.toml").read_text())
    manifests = sorted((bases.read_manifest(r) for r in study["sizes"]), key=lambda m: m["params"])
    assert len(manifests) >= 5 and {m["preset"] for m in manifests} == {study["preset"]}
    assert manifests[-1]["params"] >= 8 * manifests[0]["params"]
    layers = json.loads((bases.BASES_DIR / manifests[-1]["rung"] / "model" / "config.json").read_text())
    assert layers["num_hidden_layers"] >= 4
    for key in ("validation_loss", "reference_nll"):
        values = [m.get(key, m["probes"].get(key)) for m in manifests]
        assert all(a > b for a, b in zip(values, values[1:])), (key, values)


@pytest.mark.parametrize("rung", RUNGS)
def test_committed_base_meets_the_copy_bar(rung):
    assert bases.read_manifest(rung)["probes"]["copy_gain"] >= 2.0  # induction: a random sequence's repeat is predicted


@pytest.mark.parametrize("rung", RUNGS)
def test_committed_base_reads_the_post_and_matches_its_manifest(rung):
    cfg, manifest = _cfg(rung)
    assert manifest["recipe"] == BASE_RECIPE and manifest["base_hash"] == cfg.stage_hash("base")
    assert manifest["probes"]["post_swap_gap"] >= 0.3  # the reference TL;DR depends on the post body
    assert bases.sha256_file(bases.BASES_DIR / rung / "model" / bases.WEIGHTS) == manifest["weights_sha256"]
    assert bases.committed_base(cfg, None) == bases.BASES_DIR / rung / "model"


@pytest.fixture(scope="module")
def streams(corpus):
    """(corpus, extra posts, generator seed) → (stream sha256, documents): built once per distinct corpus (the
    rungs share one; 15-30 s each)."""
    made: dict[tuple, tuple[str, int]] = {}

    def get(cfg) -> tuple[str, int]:
        key = (cfg.model.pretrain_corpus, cfg.model.pretrain_extra_posts, cfg.task.synth_seed)
        if key not in made:
            stream, starts, _ = token_stream(pretraining_texts(corpus.sft["train"], *key), corpus.tokenizer)
            made[key] = bases.sha256_tensor(stream), starts.numel()
        return made[key]

    return get


@pytest.mark.parametrize("rung", RUNGS)
def test_committed_base_was_trained_on_the_corpus_a_fresh_clone_generates(rung, corpus, streams):
    """Byte-identical tokenizer and pretraining token stream, regenerated here from the generator's seed."""
    cfg, manifest = _cfg(rung)
    assert bases.sha256_file(corpus.data_dir / "tokenizer" / "tokenizer.json") == manifest["tokenizer_sha256"]
    assert streams(cfg) == (manifest["corpus_sha256"], manifest["documents"])


@pytest.mark.parametrize("rung", RUNGS)
def test_the_recipe_reproduces_the_first_updates_of_the_committed_build(rung, corpus, tmp_path):
    cfg, manifest = _cfg(rung)
    first = manifest["first_losses"]
    assert len(first) <= cfg.model.pretrain_induction_steps  # the replay never reads the token stream (tested above)
    replay = pretrain_base(cfg, corpus.sft["train"], corpus.tokenizer, tmp_path, stop_after=len(first))["losses"]
    assert replay == pytest.approx(first, abs=1e-5)
    assert not (tmp_path / "model").exists()  # a replay saves nothing


def _copy(rung: str, tmp_path: Path) -> Path:
    shutil.copytree(bases.BASES_DIR / rung, tmp_path / rung)
    return tmp_path


@pytest.mark.parametrize("rung", RUNGS)
def test_an_altered_or_missing_committed_base_is_a_clear_error(rung, tmp_path):
    cfg, _ = _cfg(rung)
    root = _copy(rung, tmp_path)
    weights = root / rung / "model" / bases.WEIGHTS
    blob = bytearray(weights.read_bytes())
    blob[-1] ^= 1
    weights.write_bytes(bytes(blob))
    with pytest.raises(bases.BaseModelError, match=rf"sha256 .*`nplus base build --rung {rung}`"):
        bases.committed_base(cfg, None, root=root)
    weights.unlink()
    with pytest.raises(bases.BaseModelError, match=rf"missing; rebuild it with `nplus base build --rung {rung}`"):
        bases.committed_base(cfg, None, root=root)


@pytest.mark.parametrize("rung", RUNGS)
def test_a_stale_recipe_or_another_tokenizer_is_refused(rung, tmp_path):
    cfg, manifest = _cfg(rung)
    root = _copy(rung, tmp_path)
    (root / rung / "manifest.json").write_text(json.dumps({**manifest, "recipe": BASE_RECIPE - 1}))
    with pytest.raises(bases.BaseModelError, match="recipe"):
        bases.committed_base(cfg, None, root=root)
    (root / rung / "manifest.json").write_text(json.dumps(manifest))
    other = tmp_path / "tokenizer.json"
    other.write_text("{}")
    with pytest.raises(bases.BaseModelError, match="another tokenizer"):
        bases.committed_base(cfg, other, root=root)


def test_a_configuration_no_base_was_built_with_builds_its_own():
    """Another corpus or recipe setting is not the committed model: the pipeline builds one into the cache."""
    cfg = apply_overrides(preset("demo"), hparams={"model.pretrain_steps": 7})
    assert bases.committed_base(cfg, None) is None
    assert bases.committed_base(preset("smoke"), None) is None


def _build(out: Path, cache: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    """A small base build through the real CLI (smoke preset: 36 updates, a checkpoint every 10)."""
    cmd = [
        sys.executable,
        "-m",
        "nplus.cli",
        "base",
        "build",
        "--rung",
        "nano",
        "--preset",
        "smoke",
        "--out",
        str(out),
        "--cache",
        str(cache),
        "--copy-bar",
        "0",
        "--checkpoint-every",
        "10",
        "--threads",
        "1",
    ]
    return subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        env={**os.environ, "NPLUS_PROGRESS": "0", **(env or {})},
        start_new_session=True,
    )


@pytest.mark.slow
def test_a_killed_base_build_resumes_to_the_same_weights(tmp_path):
    """kill -9 mid-build (between writing a checkpoint and putting it in place), rerun the same command: the weights
    equal an uninterrupted build's, and the manifest says where it resumed."""
    cache = tmp_path / "cache"
    whole = _build(tmp_path / "whole", cache)
    assert whole.returncode == 0, whole.stderr
    assert not list((cache / "base-builds").glob("*/checkpoint.safetensors"))  # removed once the manifest is written
    killed = _build(
        tmp_path / "killed", cache, {"NPLUS_FAULT": "checkpoint:2", "NPLUS_FAULT_COUNTER": str(tmp_path / "n")}
    )
    assert killed.returncode == -9  # died at the second checkpoint (after update 10), the first (update 6) in place
    assert not (tmp_path / "killed" / "manifest.json").exists()
    resumed = _build(tmp_path / "killed", cache)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming nano" in resumed.stderr
    a, b = (json.loads((tmp_path / d / "manifest.json").read_text()) for d in ("whole", "killed"))
    assert b["resumed_at_update"] == 6 and a["resumed_at_update"] == 0
    assert a["weights_sha256"] == b["weights_sha256"]
    steps = [json.loads(line)["step"] for line in (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps))  # the rows the killed run logged past its checkpoint were dropped, not doubled


def test_a_checkpoint_of_another_thread_count_is_refused(tmp_path):
    import torch

    from nplus.stages.base import CheckpointMismatch, load_checkpoint, save_checkpoint

    model = torch.nn.Linear(2, 2)
    opt = torch.optim.AdamW(model.parameters())
    gen = torch.Generator().manual_seed(0)
    save_checkpoint(tmp_path / "c.safetensors", 3, model, opt, gen, [1.0], "hash/threads=2")
    with pytest.raises(CheckpointMismatch, match="same --threads"):
        load_checkpoint(tmp_path / "c.safetensors", model, opt, gen, "hash/threads=1")
    assert load_checkpoint(tmp_path / "c.safetensors", model, opt, gen, "hash/threads=2") == (3, [1.0])


def test_the_ladder_rule_scales_the_rate_with_width():
    from nplus.models import LADDER
    from nplus.stages.base import peak_lrs

    m = preset("scaling").model
    rates = {r: peak_lrs(m, LADDER[r][0]) for r in ("r32x2", "r48x3", "r64x4", "r96x4", "r128x4")}
    assert rates["r64x4"] == (1e-3, 1e-3) and rates["r32x2"] == (2e-3, 2e-3) and rates["r128x4"] == (5e-4, 5e-4)
    assert peak_lrs(preset("demo").model, 128) == (2e-3, 2e-3)  # recipe 3: one rate for every width


def test_the_downstream_rule_scales_every_stage_rate_and_enters_only_downstream_hashes():
    from nplus.config import apply_overrides

    demo = preset("demo")
    wide = apply_overrides(demo, hparams={"lr_rule": "inverse_width"})
    for stage in ("sft", "rm", "ppo", "dpo"):
        configured = getattr(demo, stage).lr
        assert demo.stage_lr(stage, 128) == configured  # fixed: the paper's one set for every size
        assert wide.stage_lr(stage, 64) == configured
        assert wide.stage_lr(stage, 128) == configured / 2 and wide.stage_lr(stage, 32) == configured * 2
    single = apply_overrides(wide, details={"learning_rate": "single"})
    assert single.stage_lr("rm", 128) == single.lr / 2
    # the base never reads it (committed bases keep their hash); every trained stage and the run do
    assert wide.stage_hash("base") == demo.stage_hash("base")
    assert all(wide.stage_hash(s) != demo.stage_hash(s) for s in ("sft", "rm")) and wide.hash != demo.hash
