"""Study files: validation before anything runs, and expansion into run specs."""

from pathlib import Path

import pytest

from nplus.ablate.study import StudyError, expand, load_study
from nplus.details import REGISTRY
from nplus.stats import AA_SEED_OFFSET, AA_VARIANT

ROOT = Path(__file__).resolve().parent.parent


def write_study(tmp_path: Path, body: str, seeds: str = "1\n2\n") -> Path:
    (tmp_path / "seeds").mkdir(exist_ok=True)
    (tmp_path / "seeds" / "mine.txt").write_text(seeds)
    (tmp_path / "ablations").mkdir(exist_ok=True)
    path = tmp_path / "ablations" / "s.toml"
    path.write_text(body)
    return path


BASE = 'name = "s"\npreset = "smoke"\nseeds = "mine"\n'


@pytest.mark.parametrize("path", sorted((ROOT / "ablations").glob("*.toml")), ids=lambda p: p.name)
def test_every_shipped_study_loads_and_expands(path, tmp_path):
    study = load_study(path)
    specs = expand(study, tmp_path / study.name)
    assert len(specs) == len(study.variants) * len(study.seeds) * max(1, len(study.sizes))
    assert specs[0].variant == study.baseline
    assert len({s.run_dir for s in specs}) == len(specs)
    for s in specs:
        # the A/A arm trains on fresh seeds and is paired with the baseline by its label seed
        assert s.config.seed == s.seed + (AA_SEED_OFFSET if s.variant == AA_VARIANT else 0)
        assert s.run_dir.name == f"seed={s.seed}"
        if s.size:
            assert s.run_dir.parent.name == f"size={s.size}"
            if study.preset == "paper":  # a paper size selects the whole paper preset
                assert s.config.preset == f"paper-{s.size}"
            else:
                assert s.config.model.name == s.size


def test_demo_study_is_the_documented_one():
    study = load_study(ROOT / "ablations" / "demo.toml")
    assert study.seeds == (1, 2, 3) and study.preset == "demo"
    assert {v.name for v in study.variants} == {"baseline", "temperature_in_training=off"}


def test_one_at_a_time_covers_every_alternative():
    """Alternatives to the baseline's own resolved values: the demo preset runs learning_rate = per_stage, so the
    flip is to single (the paper's value), never to per_stage itself."""
    study = load_study(ROOT / "ablations" / "one_at_a_time.toml")
    values = {**{d.name: d.paper for d in REGISTRY.values()}, "learning_rate": "per_stage"}
    expected = {
        f"{d.name}={a}" for d in REGISTRY.values() for a in d.choices if a != values[d.name] and d.applies_to("ppo")
    }
    assert {v.name for v in study.variants} == expected | {"baseline", AA_VARIANT}
    assert "learning_rate=single" in expected and "learning_rate=per_stage" not in expected
    v = study.variant("kl_estimator=k3")
    assert v.details == {"kl_estimator": "k3"}
    specs = {s.variant: s.config for s in expand(study, "runs/x") if s.seed == study.seeds[0]}
    assert specs["learning_rate=single"].details.learning_rate == "single" != specs["baseline"].details.learning_rate


def test_one_at_a_time_flips_the_details_of_the_baselines_algorithm(tmp_path):
    """A GRPO baseline gets GRPO's details and the shared ones that mean something under it, never PPO's critic."""
    study = load_study(write_study(tmp_path, BASE + 'one_at_a_time = true\n[hparams]\nalgorithm = "grpo"\n'))
    names = {v.name for v in study.variants}
    assert {"grpo_std_normalization=off", "grpo_loss_averaging=per_token", "missing_eos_penalty=off"} <= names
    assert not any(n.startswith(("value_init=", "dpo_loss=", "kl_estimator=")) for n in names)
    assert all(spec.config.algorithm == "grpo" for spec in expand(study, tmp_path / "runs"))


def test_a_study_varies_the_algorithm_like_any_value_and_shares_sft_and_rm(tmp_path):
    study = load_study(
        write_study(
            tmp_path,
            BASE
            + "".join(
                f'[[variants]]\nname = "{a}"\nhparams = {{ algorithm = "{a}" }}\n'
                for a in ("dpo", "rloo", "reinforce", "grpo")
            ),
        )
    )
    specs = {s.variant: s.config for s in expand(study, tmp_path / "runs") if s.seed == study.seeds[0]}
    assert {c.algorithm for c in specs.values()} == {"ppo", "dpo", "rloo", "reinforce", "grpo"}
    assert (
        len({c.stage_hash("rm") for c in specs.values()}) == 1
        and len({c.stage_hash("sft") for c in specs.values()}) == 1
    )
    assert len({c.hash for c in specs.values()}) == 5


def test_variant_configs(tmp_path):
    path = write_study(
        tmp_path,
        BASE
        + """
sizes = ["nano", "tiny"]
[hparams]
"ppo.total_episodes" = 32
[[variants]]
name = "trl"
framework = "trl-ppo"
details = { kl_estimator = "k3" }
hparams = { "ppo.lr" = 2e-4 }
""",
    )
    study = load_study(path)
    specs = expand(study, tmp_path / "out")
    assert len(specs) == 2 * 2 * 2
    trl = [s for s in specs if s.variant == "trl" and s.size == "tiny" and s.seed == 2][0]
    assert trl.run_dir == tmp_path / "out" / "trl" / "size=tiny" / "seed=2"
    cfg = trl.config
    assert cfg.model.name == "tiny" and cfg.ppo.total_episodes == 32 and cfg.ppo.lr == 2e-4
    assert cfg.details.kl_estimator == "k3"  # the variant's own detail wins over its framework
    assert cfg.details.missing_eos_penalty == "off"  # from trl-ppo
    base = [s for s in specs if s.variant == "baseline" and s.size == "tiny" and s.seed == 2][0]
    assert base.config.ppo.lr != 2e-4 and base.config.ppo.total_episodes == 32
    assert base.config.details.diff() == {}


def test_ppo_only_flip_shares_upstream_hashes(tmp_path):
    study = load_study(ROOT / "ablations" / "smoke.toml")
    specs = expand(study, tmp_path)
    by = {(s.variant, s.seed): s.stage_hashes() for s in specs}
    a, b = by[("baseline", 1)], by[("missing_eos_penalty=off", 1)]
    assert a["sft"] == b["sft"] and a["rm"] == b["rm"] and a["ppo"] != b["ppo"]
    assert by[("baseline", 1)]["sft"] != by[("baseline", 2)]["sft"]


KNOB = """[[variants]]
name = "v"
[[variants]]
name = "u"
[knob]
name = "k"
variants = {variants}
metric = "{metric}"
hypothesis = "{hyp}"
"""


def test_knob_is_kept_in_order_and_written_to_study_json(tmp_path):
    study = load_study(
        write_study(tmp_path, BASE + KNOB.format(variants='["u", "v"]', metric="ppo.gold_score", hyp="falls"))
    )
    assert study.knob == {"name": "k", "variants": ["u", "v"], "metric": "ppo.gold_score", "hypothesis": "falls"}
    assert study.as_dict()["knob"] == study.knob
    assert "knob" not in load_study(write_study(tmp_path, BASE)).as_dict()  # studies without one: study.json unchanged


@pytest.mark.parametrize(
    "body, key, choices",
    [
        (BASE + "colour = 1\n", "colour", "valid keys"),
        ('name = "s"\npreset = "huge"\nseeds = "mine"\n', "preset", "smoke"),
        ('name = "s"\npreset = "smoke"\nseeds = "nope"\n', "seeds", "mine"),
        (BASE + 'sizes = ["xxl"]\n', "sizes", "nano"),
        (
            BASE + '[[variants]]\nname = "v"\ndetails = { not_a_detail = "on" }\n',
            "variants[0].details.not_a_detail",
            "query_truncation",
        ),
        (
            BASE + '[[variants]]\nname = "v"\ndetails = { kl_estimator = "k9" }\n',
            "variants[0].details.kl_estimator",
            "k1, k2, k3",
        ),
        (BASE + '[[variants]]\nname = "v"\nframework = "trl"\n', "variants[0].framework", "trl-ppo"),
        (BASE + '[[variants]]\nname = "v"\ncolour = 1\n', "variants[0].colour", "details"),
        (BASE + '[[variants]]\nname = "v"\nhparams = { "ppo.nonsense" = 1 }\n', "variant 'v'", "valid fields"),
        (BASE + '[[variants]]\nname = "a/b"\n', "variants[0].name", "directory"),
        (BASE + '[[variants]]\nname = "v"\n[[variants]]\nname = "v"\n', "variants", "duplicate"),
        (BASE + 'baseline = "ref"\n', "baseline", "no variant named"),
        ('preset = "smoke"\nseeds = "mine"\n', "name", "missing"),
        (BASE + "one_at_a_time = 1\n", "one_at_a_time", "true or false"),
        (BASE + KNOB.format(variants='["v", "w"]', metric="ppo.win_rate", hyp="rises"), "knob.variants", "valid: v"),
        (BASE + KNOB.format(variants='["v"]', metric="ppo.win_rate", hyp="rises"), "knob.variants", "two or more"),
        (
            BASE + KNOB.format(variants='["v", "baseline"]', metric="ppo.win_rate", hyp="rises"),
            "knob.variants",
            "valid: v",
        ),
        (BASE + KNOB.format(variants='["v", "u"]', metric="ppo.winrate", hyp="rises"), "knob.metric", "ppo.win_rate"),
        (BASE + KNOB.format(variants='["v", "u"]', metric="ppo.win_rate", hyp="up"), "knob.hypothesis", "rises, falls"),
    ],
)
def test_invalid_studies_fail_with_file_key_and_choices(tmp_path, body, key, choices):
    path = write_study(tmp_path, body)
    with pytest.raises(StudyError) as e:
        load_study(path)
    msg = str(e.value)
    assert str(path) in msg and key in msg and choices in msg, msg


def test_bad_seed_file(tmp_path):
    path = write_study(tmp_path, BASE, seeds="1\n1\n")
    with pytest.raises(StudyError, match="duplicates"):
        load_study(path)


def test_not_toml(tmp_path):
    path = write_study(tmp_path, "name = \n")
    with pytest.raises(StudyError, match="not valid TOML"):
        load_study(path)
