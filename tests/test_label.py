"""nplus label (AI-feedback labels): the public schema, the judge in `worker`, the agreement figures, the
simulated AI labeller's biases, a network judge's cache, and an RM run on the relabelled pairs."""

import json

import pytest
import test_judge_server as server_mod

from nplus.cli import main
from nplus.data.label_cmd import LabelConfig, LabelInputError, run_label
from nplus.data.loader import load_comparisons
from nplus.evaluation.evaluate_cmd import JudgeOptions
from nplus.evaluation.judges import SimulatedAIJudge
from nplus.tasks import synth
from nplus.tasks.gold import GoldJudge


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("label")
    synth.generate(root / "data", seed=0, scale="tiny")
    return root / "data"


def _label(corpus, out, judge="gold", limit=None, splits=("train", "validation"), **options):
    cfg = LabelConfig(
        out=out,
        input=str(corpus / "comparisons"),
        judge=judge,
        limit=limit,
        splits=splits,
        judge_options=JudgeOptions(data_dir=corpus, **options),
    )
    return run_label(cfg)


def test_gold_labels_pass_the_schema_validator_and_agree_with_gold(corpus, tmp_path):
    result = _label(corpus, tmp_path / "gold")
    ds = load_comparisons(str(tmp_path / "gold"))  # validates the public schema
    original = load_comparisons("tldr-synth", corpus)
    assert {k: len(v) for k, v in ds.items()} == {k: len(v) for k, v in original.items()}
    assert set(ds["train"]["worker"]) == {result["worker"]} and result["worker"].startswith("judge:tldr-synth-gold")
    for split in result["splits"].values():
        assert split["agreement_with_gold"] == 1.0 and split["unparseable"] == split["failed"] == 0
        # the simulated human annotators are noisy (tau): they disagree with gold on a share of the pairs
        assert 0.6 < split["agreement_with_original"] < 0.9
    saved = json.loads((tmp_path / "gold" / "label.json").read_text())
    assert saved["splits"] == result["splits"]


def test_by_default_only_the_training_pairs_are_relabelled(corpus, tmp_path):
    cfg = LabelConfig(
        out=tmp_path / "ai",
        input=str(corpus / "comparisons"),
        judge="simulated-ai",
        judge_options=JudgeOptions(data_dir=corpus),
    )
    result = run_label(cfg)
    ds, original = load_comparisons(str(tmp_path / "ai")), load_comparisons("tldr-synth", corpus)
    assert ds["validation"].to_list() == original["validation"].to_list()  # held-out human-style labels
    assert set(ds["train"]["worker"]) == {result["worker"]} and result["splits"]["validation"]["relabelled"] is False
    with pytest.raises(LabelInputError, match="not in the input"):
        run_label(
            LabelConfig(
                out=tmp_path / "bad",
                input=str(corpus / "comparisons"),
                splits=("test",),
                judge_options=JudgeOptions(data_dir=corpus),
            )
        )


def test_simulated_ai_labeller_prefers_length_and_the_first_position():
    gold = GoldJudge(
        {
            "p": {
                "event": "cheated",
                "relation": "boyfriend",
                "ask": None,
                "duration": None,
                "feeling": None,
                "narrator": "24F",
                "counterpart": "26M",
            }
        }
    )
    judge = SimulatedAIJudge(gold, length_preference=0.15, position_margin=0.5)
    short, long = " my bf (26M) cheated. me (24F).", " my bf (26M) cheated on me at a party downtown. me (24F)."
    assert gold.compare("p", short, long).choice == "A"  # gold: the same facts in fewer words
    assert judge.compare("p", short, long).choice == "B"  # the AI labeller: longer is better
    # equal texts: the position bias picks A in both orders
    assert judge.compare("p", short, short).choice == "A"


def test_existing_output_and_bad_judge_settings_are_errors_before_judging(corpus, tmp_path):
    (tmp_path / "taken").mkdir()
    with pytest.raises(LabelInputError, match="exists"):
        _label(corpus, tmp_path / "taken")
    with pytest.raises(LabelInputError, match="needs --judge-model"):
        _label(corpus, tmp_path / "hf", judge="hf")
    assert main(["label", "--out", str(tmp_path / "x"), "--input", str(tmp_path / "missing")]) == 2
    assert not (tmp_path / "x").exists()


def test_network_judge_rerun_makes_zero_requests(corpus, tmp_path, monkeypatch):
    gold = GoldJudge.from_dir(corpus)
    monkeypatch.setattr(server_mod, "backing_choice", lambda post, a, b: gold.compare(post, a, b).choice)
    monkeypatch.setenv("NPLUS_TEST_JUDGE_KEY", server_mod.SECRET)
    with server_mod.ChatServer({}) as server:
        opts = dict(
            judge_model="test-model",
            judge_base_url=server.base_url,
            api_key_env="NPLUS_TEST_JUDGE_KEY",
            cache_dir=tmp_path / "cache",
        )
        first = _label(corpus, tmp_path / "a", judge="openai", limit=6, **opts)
        asked = server.total_requests
        second = _label(corpus, tmp_path / "b", judge="openai", limit=6, **opts)
        assert asked > 0 and server.total_requests == asked  # every reply came from the cache
    assert first["splits"] == second["splits"]
    assert first["splits"]["train"]["agreement_with_gold"] == 1.0  # the server answers with the gold verdict
    for path in (tmp_path / "a", tmp_path / "b", tmp_path / "cache"):
        for f in path.rglob("*"):
            assert not f.is_file() or server_mod.SECRET not in f.read_text(errors="ignore")


def test_relabelled_pairs_are_a_comparisons_source_of_the_embedded_task(corpus, tmp_path):
    from nplus.config import ConfigError, apply_overrides
    from nplus.presets import preset

    _label(corpus, tmp_path / "ai", judge="simulated-ai", limit=4)
    base = preset("smoke", 1)
    ai = apply_overrides(base, hparams={"task.comparisons_source": str(tmp_path / "ai")})
    assert ai.stage_hash("sft") == base.stage_hash("sft") and ai.stage_hash("rm") != base.stage_hash("rm")
    for bad in (str(tmp_path / "nowhere"), "tldr-synth:hf"):
        with pytest.raises(
            ConfigError, match="tldr-synth:gold, tldr-synth:simulated-ai .* or a local comparisons directory"
        ):
            apply_overrides(base, hparams={"task.comparisons_source": bad})
    named = apply_overrides(base, hparams={"task.comparisons_source": "tldr-synth:simulated-ai"})
    assert named.stage_hash("sft") == base.stage_hash("sft") and named.stage_hash("rm") not in (
        base.stage_hash("rm"),
        ai.stage_hash("rm"),
    )


def test_pipeline_relabelling_is_nplus_label_with_its_defaults_and_cached(corpus, tmp_path):
    from nplus.data.relabel import synth_relabelled

    cli = run_label(
        LabelConfig(
            out=tmp_path / "cli",
            input=str(corpus / "comparisons"),
            judge="simulated-ai",
            judge_options=JudgeOptions(data_dir=corpus),
        )
    )
    path = synth_relabelled(corpus, "simulated-ai", tmp_path / "cache")
    built, by_cli = load_comparisons(str(path / "comparisons")), load_comparisons(str(tmp_path / "cli"))
    assert {k: v.to_list() for k, v in built.items()} == {k: v.to_list() for k, v in by_cli.items()}
    assert json.loads((path / "label.json").read_text())["splits"] == cli["splits"]
    stamp = (path / "label.json").stat().st_mtime_ns
    assert synth_relabelled(corpus, "simulated-ai", tmp_path / "cache") == path  # built once
    assert (path / "label.json").stat().st_mtime_ns == stamp
    with pytest.raises(LabelInputError, match="valid judges are gold, simulated-ai"):
        synth_relabelled(corpus, "openai", tmp_path / "cache")
