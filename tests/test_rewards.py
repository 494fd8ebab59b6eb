"""Reward sources (reward.source = rm | gold | rule): the rules by hand, centring on the references, the config's
errors before any compute, hashes, and smoke runs of each source on the PPO smoke run's SFT and RM."""

import shutil
from pathlib import Path

import pytest
import torch

from nplus.config import ConfigError, apply_overrides
from nplus.presets import preset
from nplus.rewards import RULES, keywords_rule, sentiment_rule, text_score_fn
from nplus.rundir import read_json, read_jsonl
from nplus.tooling.testing import run_isolated

# make test-fast leaves it out: a smoke run per reward source, trained in fresh processes
pytestmark = pytest.mark.slow


def test_keywords_rule_counts_every_occurrence_of_a_key_fact_word():
    # "bf" and "cheated" are key-fact words; "my" and "on" are function words; repeats count
    assert keywords_rule("my bf cheated on me") == 2.0
    assert keywords_rule("bf bf bf cheated cheated") == 5.0
    assert keywords_rule("the weather was nice") == 0.0


def test_sentiment_rule_is_plus_one_per_positive_minus_two_per_negative_word():
    assert sentiment_rule("thanks, I am happy") == 2.0
    assert sentiment_rule("happy but hurt and angry") == 1.0 - 4.0
    assert sentiment_rule("") == 0.0


class _WordTokenizer:
    """Token i is the word VOCAB[i]; 0 pads, 1 is EOS."""

    VOCAB = ["[PAD]", "<eos>", "bf", "cheated", "weather", "nice"]
    pad_token_id, eos_token_id = 0, 1

    def decode(self, ids, skip_special_tokens=True):
        return " ".join(self.VOCAB[i] for i in ids if i > 1)


def test_text_score_is_centred_on_the_references_and_reads_eos_as_finished():
    seen = []

    def score(post, text, finished):
        seen.append((post, text, finished))
        return keywords_rule(text) + (0.0 if finished else -10.0)

    fn = text_score_fn(score, _WordTokenizer(), [("p", "bf cheated"), ("p", "nice weather")])  # mean reference 1.0
    responses = torch.tensor([[2, 2, 3, 1, 0], [4, 5, 0, 0, 0]])  # "bf bf cheated" + EOS; "weather nice", no EOS
    out = fn(torch.zeros(2, 3, dtype=torch.long), responses, ["post a", "post b"])
    assert out.tolist() == [3.0 - 1.0, 0.0 - 10.0 - 1.0]
    assert seen[-2:] == [("post a", "bf bf cheated", True), ("post b", "weather nice", False)]
    assert seen[0] == ("p", " bf cheated", True)  # references get the sample convention's leading space


@pytest.mark.parametrize(
    "override, message",
    [
        ({"reward.source": "oracle"}, "valid choices: rm, gold, rule"),
        ({"reward.source": "rule", "reward.rule": "nope"}, "valid choices: keywords, sentiment"),
        ({"reward.source": "gold", "algorithm": "dpo"}, "means nothing under algorithm=dpo"),
        (
            {"reward.model": "micro", "algorithm": "dpo"},
            "reward.model='micro' means nothing without a learned reward model",
        ),
        (
            {"reward.model": "micro", "reward.source": "gold"},
            "reward.model='micro' means nothing without a learned reward model",
        ),
        ({"reward.model": "micro", "algorithm": "grpo", "ppo.group_size": 4}, None),
    ],
)
def test_bad_reward_settings_are_clear_errors(override, message):
    if message is None:  # a valid combination, for contrast
        apply_overrides(preset("smoke", 1), hparams=override)
        return
    with pytest.raises(ConfigError, match=message):
        apply_overrides(preset("smoke", 1), hparams=override)


def test_reward_model_of_another_size_needs_a_separate_critic():
    with pytest.raises(ConfigError, match="value_network=shared_trunk"):
        apply_overrides(
            preset("smoke", 1), hparams={"reward.model": "micro"}, details={"value_network": "shared_trunk"}
        )


def test_reward_model_enters_the_run_hash_only_when_set_and_its_rm_is_that_models():
    base = preset("demo", 1)
    assert apply_overrides(base, hparams={"reward.model": ""}).hash == base.hash
    assert apply_overrides(base, hparams={"reward.model": "tiny"}).stage_hash("rm") == base.stage_hash("rm")
    xs = apply_overrides(base, hparams={"reward.model": "xs"})
    assert xs.hash != base.hash and xs.stage_hash("sft") == base.stage_hash("sft")  # the policy's SFT is its own
    assert xs.stage_hash("rm") == apply_overrides(base, hparams={"model.name": "xs"}).stage_hash("rm")  # shared


def test_gold_reward_needs_the_embedded_task():
    with pytest.raises(ConfigError, match="reward.source=gold needs the gold judge"):
        apply_overrides(preset("paper-1b", 1), hparams={"reward.source": "gold"})


def test_reward_source_enters_the_run_hash_only_when_it_is_not_the_rm():
    base = preset("smoke", 1)
    with pytest.raises(ConfigError, match="reward.rule='sentiment' has no effect"):  # unread under rm: refused
        apply_overrides(base, hparams={"reward.rule": "sentiment"})
    gold = apply_overrides(base, hparams={"reward.source": "gold"})
    rules = [apply_overrides(base, hparams={"reward.source": "rule", "reward.rule": r}) for r in RULES]
    hashes = {base.hash, gold.hash, *(c.hash for c in rules)}
    assert len(hashes) == 2 + len(RULES)
    # SFT and RM are shared across reward sources
    assert {c.stage_hash("rm") for c in (gold, *rules)} == {base.stage_hash("rm")}


@pytest.fixture(scope="module")
def sources(tmp_path_factory, smoke):
    """The smoke run (reward source: the RM) and one run per other source, sharing its cache (a copy)."""
    root = tmp_path_factory.mktemp("rewards")
    shutil.copytree(smoke["root"] / "run", root / "rm")
    shutil.copytree(smoke["root"] / "cache", root / "cache")
    out = {}
    for name, hp in {
        "gold": {"reward.source": "gold"},
        "keywords": {"reward.source": "rule", "reward.rule": "keywords"},
        "rm_micro": {"reward.model": "micro"},
    }.items():
        summary, _ = run_isolated(apply_overrides(preset("smoke", 1), hparams=hp), root / name, root / "cache")
        out[name] = (summary, root / name)
    out["rm"] = (read_json(root / "rm" / "summary.json"), root / "rm")
    return out


def keys(summary: dict) -> dict[str, str]:
    """Each upstream artifact's cache key (its folder's name: the smoke run's cache was copied)."""
    return {stage: Path(path).name for stage, path in summary["artifacts"].items()}


def test_every_source_finishes_with_the_same_layout_and_the_gold_judge_still_evaluating(sources):
    rm_summary = sources["rm"][0]
    for name, (summary, run) in sources.items():
        assert set(rm_summary) <= set(summary), name
        if name == "rm_micro":
            continue
        assert keys(summary) == keys(rm_summary), "SFT and RM are shared across reward sources"
        ppo_rows = [r for r in read_jsonl(run / "samples.jsonl") if r["stage"] == "ppo"]
        assert all(r["gold_score"] is not None for r in ppo_rows)
    assert read_json(sources["gold"][1] / "config.json")["reward"]["source"] == "gold"


def test_reward_model_from_another_rung_trains_its_own_sft_and_scores_the_policy(sources):
    """reward.model = micro under a nano policy: the policy's SFT is the default run's, the RM is micro's (built
    from micro's own SFT), the critic starts from it (another width than the policy's) and PPO runs cleanly."""
    summary, run = sources["rm_micro"]
    default = sources["rm"][0]
    assert summary["reward_model"] == "micro" and summary["model"] == default["model"] == "nano"
    assert keys(summary)["sft"] == keys(default)["sft"] and keys(summary)["rm"] != keys(default)["rm"]
    rm_cfg = read_json(Path(summary["artifacts"]["rm"]) / "config.json")
    assert rm_cfg["model"]["name"] == "micro"
    assert summary["sanity.first_ratio_ok"] and summary["sanity.initial_kl_ok"]
    assert summary["rm.reward_bias"] != default["rm.reward_bias"]  # another model's scores


def test_proxy_reward_is_the_source_score(sources):
    """Under the gold source the proxy of every evaluation sample is its gold score less the references' mean."""
    _, run = sources["gold"]
    rows = [r for r in read_jsonl(run / "samples.jsonl") if r["stage"] == "ppo"]
    offsets = [r["gold_score"] - r["proxy_score"] for r in rows]
    assert max(offsets) - min(offsets) < 1e-4  # float32 scores
    _, run = sources["keywords"]
    rows = [r for r in read_jsonl(run / "samples.jsonl") if r["stage"] == "ppo"]
    offsets = [keywords_rule(r["response"]) - r["proxy_score"] for r in rows]
    assert max(offsets) - min(offsets) < 1e-4


def test_cli_names_the_valid_rules_before_any_compute(tmp_path, capsys):
    from nplus.cli import main

    code = main(
        [
            "pipeline",
            "--preset",
            "smoke",
            "--reward.source",
            "rule",
            "--reward.rule",
            "polite",
            "--out",
            str(tmp_path / "run"),
            "--cache",
            str(tmp_path / "cache"),
        ]
    )
    assert code == 2 and "valid choices: keywords, sentiment" in capsys.readouterr().err
    assert not (tmp_path / "run").exists() and not (tmp_path / "cache").exists()
