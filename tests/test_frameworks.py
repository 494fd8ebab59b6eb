"""Framework-emulation presets: every value is a valid registry choice, every detail is covered and sourced."""

import pytest

from nplus.details import REGISTRY, Details
from nplus.frameworks import FRAMEWORKS, FrameworkError, framework_details, framework_diff, table_markdown

REQUIRED = ("paper", "trl-ppo", "openrlhf", "deepspeed-chat", "trlx", "lmhp")


def test_required_presets_exist():
    assert set(REQUIRED) <= set(FRAMEWORKS)


@pytest.mark.parametrize("name", list(FRAMEWORKS))
def test_every_value_is_a_valid_choice_with_a_source(name):
    preset = FRAMEWORKS[name]
    assert list(preset) == list(REGISTRY), "every detail, in registry order"
    for detail, (value, source) in preset.items():
        assert value in REGISTRY[detail].choices, (name, detail, value)
        assert source.strip(), (name, detail)
    Details(**framework_details(name))  # the dataclass accepts it as a whole


def test_paper_is_the_paper():
    assert framework_diff("paper") == {}
    assert framework_details("sfd") == framework_details("paper")


def test_presets_differ_where_the_systems_differ():
    # Spot checks of documented differences (sources in nplus/frameworks.py).
    assert framework_details("deepspeed-chat")["reward_clipping"] == "5"
    assert framework_details("deepspeed-chat")["advantage_whitening"] == "off"
    assert framework_details("lmhp")["reward_normalization"] == "policy_gain_bias"
    assert framework_details("lmhp")["kl_controller"] == "adaptive"
    assert framework_details("trlx")["value_network"] == "shared_trunk"
    assert framework_details("trl-ppo")["score_position"] == "eos_plus_one"
    for name in REQUIRED[1:]:
        assert framework_diff(name), f"{name} should differ from the paper somewhere"


def test_unknown_framework_lists_valid_names():
    with pytest.raises(FrameworkError) as e:
        framework_details("trl")
    assert "trl-ppo" in str(e.value) and "openrlhf" in str(e.value)


def test_table_has_a_row_per_detail():
    assert len(table_markdown().splitlines()) == 2 + sum(d.applies_to("ppo") for d in REGISTRY.values())


def test_docs_table_is_current():
    from pathlib import Path

    docs = (Path(__file__).resolve().parent.parent / "docs" / "ablations.md").read_text()
    assert table_markdown() in docs, "regenerate the table in docs/ablations.md with nplus.frameworks.table_markdown()"
