"""Framework-emulation presets: every value is a valid registry choice, every detail is covered and sourced."""

import re
from pathlib import Path

import pytest

from nplus.details import REGISTRY, Details
from nplus.frameworks import _EXPLICIT, FRAMEWORKS, FrameworkError, docs_markdown, framework_details, table_markdown

REQUIRED = ("paper", "trl-ppo", "openrlhf", "deepspeed-chat", "trlx", "lmhp")


def framework_diff(name: str) -> dict[str, str]:
    """The details where a framework departs from the paper."""
    return {k: v for k, v in framework_details(name).items() if v != REGISTRY[k].paper}


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
    assert framework_details("lmhp")["reward_normalization"] == "none"  # class default; the TL;DR launch fits gain/bias
    assert framework_details("lmhp")["kl_controller"] == "fixed"  # adaptive only in lmhp's books experiments
    assert (
        framework_details("trl-ppo")["query_truncation"]
        == framework_details("deepspeed-chat")["query_truncation"]
        == "drop"
    )
    assert framework_details("openrlhf")["temperature_in_training"] == "on"
    assert (
        framework_details("trlx")["lr_schedule"] == "constant" and framework_details("trlx")["pad_token"] == "distinct"
    )
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


# "<repo>@<short sha> <path/to/file.ext>": the commit a note was read at and the file that sets the value
CITATION = re.compile(r"\b[\w.-]+@[0-9a-f]{7}\b.*?\b[\w./{},-]+\.(py|yaml)\b")


@pytest.mark.parametrize("name", [n for n in _EXPLICIT if n != "paper"])
def test_every_explicit_value_cites_a_commit_and_a_file(name):
    for detail in _EXPLICIT[name]:
        _, source = FRAMEWORKS[name][detail]
        assert CITATION.search(source), f"{name}.{detail}: the note names no commit and file: {source!r}"


def test_docs_frameworks_md_is_current():
    docs = (Path(__file__).resolve().parent.parent / "docs" / "frameworks.md").read_text()
    assert docs == docs_markdown(), (
        'docs/frameworks.md is stale: regenerate it with\n  python -c "from nplus.frameworks import docs_markdown; '
        "open('docs/frameworks.md', 'w').write(docs_markdown())\""
    )
    assert table_markdown() in docs
