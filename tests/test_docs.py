"""The docs tell one story: the README's demo numbers are the committed artifact's, the `--set` reference is
generated from the code, and docs/CONTRACTS.md lists every key a run writes into summary.json."""

from __future__ import annotations

import html
import re
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _readme_table() -> dict[str, list[str]]:
    """The README's demo table (after its `demo-table` marker): row label → the three seed cells, bold removed."""
    text = (ROOT / "README.md").read_text()
    block = text[text.index("<!-- demo-table: reports/frameworks/tables/runs.csv") :]
    rows = {}
    for line in block.splitlines()[1:]:
        if not line.startswith("|"):
            if rows:
                break
            continue
        cells = [c.strip().strip("*") for c in line.strip("|").split("|")]
        if cells[0] and not cells[0].startswith("---"):
            rows[cells[0]] = cells[1:]
    return rows


def test_readme_demo_table_is_the_committed_artifact():
    runs = pd.read_csv(ROOT / "reports/frameworks/tables/runs.csv")
    base = runs[runs.variant == "baseline"].set_index("seed").loc[[1, 2, 3]]
    assert set(base.preset) == {"demo"}
    expected = {
        "SFT win rate against the references": [f"{v:.3f}" for v in base["sft.win_rate"]],
        "PPO win rate": [f"{v:.3f}" for v in base["ppo.win_rate"]],
        "SFT → PPO gold score": [f"{a:.2f} → {b:.2f}" for a, b in zip(base["sft.gold_score"], base["ppo.gold_score"])],
        "PPO KL, EOS rate": [f"{a:.2f}, {b:.3f}" for a, b in zip(base["ppo.kl"], base["ppo.eos_rate"])],
    }
    assert _readme_table() == expected


def test_readme_ppo_minus_sft_is_the_committed_report():
    page = (ROOT / "reports/frameworks/index.html").read_text()
    table = page[page.index("What PPO adds over SFT") :]
    row = re.search(r"<tr><td>baseline</td>(.*?)</tr>", table[: table.index("</table>")], flags=re.DOTALL).group(1)
    cells = [
        html.unescape(re.sub(r"<[^>]+>", "", c)).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", row, re.DOTALL)
    ]
    diff, interval = cells[1], cells[2].replace(" (excludes 0)", "")
    assert f"**PPO − SFT: {diff} {interval}**" in (ROOT / "README.md").read_text()


def test_readme_flip_numbers_are_the_committed_stats():
    stats = pd.read_csv(ROOT / "reports/one_at_a_time/tables/stats.csv")
    row = lambda m: stats[(stats.variant == "temperature_in_training=off") & (stats.metric == m)].iloc[0]
    win, kl = row("ppo.win_rate"), row("ppo.kl")
    readme = " ".join((ROOT / "README.md").read_text().split()).replace("−", "-")
    assert f"(+{win['diff']:.3f}, unadjusted 95 % interval [{win.diff_ci_low:+.3f}, {win.diff_ci_high:+.3f}])" in readme
    assert f"(+{kl['diff']:.2f} [{kl.diff_ci_low:+.2f}, {kl.diff_ci_high:+.2f}], Holm p = {kl.p_holm:.1g})" in readme


def test_set_reference_is_current():
    from nplus.config_reference import markdown

    assert (ROOT / "docs/set-reference.md").read_text() == markdown(), (
        "docs/set-reference.md is stale: python -m nplus.config_reference > docs/set-reference.md"
    )


def test_set_reference_states_each_fields_range_and_stages_as_validate_and_the_hashes_do():
    from nplus.config import ConfigError, apply_overrides
    from nplus.config_reference import rows
    from nplus.presets import preset

    by_path = {r["path"]: r for r in rows()}
    assert by_path["ppo.cliprange"]["choices"] == "≥ 0" and by_path["seed"]["choices"] == "integer ≥ 0"
    assert by_path["ppo.temperature"]["choices"] == "> 0" and by_path["task.max_sft_train"]["choices"] == "integer ≥ 1"
    # a field left out of hashes at its default still names the stages it rebuilds
    assert by_path["lr_rule"]["stages"] == "sft, rm, ppo"
    assert by_path["model.pretrain_grad_clip"]["stages"] == "base, sft, rm, ppo"
    # what the table says is what validate refuses
    with pytest.raises(ConfigError, match="ppo.cliprange"):
        apply_overrides(preset("smoke"), hparams={"ppo.cliprange": "-0.1"})


def test_contracts_lists_every_summary_key():
    from nplus.metrics_doc import SUMMARY_METRICS
    from nplus.report.tables import SANITY_CHECKS

    contracts = (ROOT / "docs/CONTRACTS.md").read_text()
    written = (
        set(SUMMARY_METRICS)
        | {k for _, vk, ok in SANITY_CHECKS for k in (vk, ok)}
        | {
            "sanity.score_position_expected_offset",
            "sft.win_rate_ci",
            "ppo.win_rate_ci",
            "params",
            "model",
            "seed",
            "preset",
            "algorithm",
            "reward_model",
            "artifacts",
            "wall_time_s",
            "ppo_wall_time_s",
        }
    )
    # and every key the committed runs wrote (tables/runs.csv of each report)
    for runs in ROOT.glob("reports/*/tables/runs.csv"):
        written |= set(pd.read_csv(runs, nrows=1).columns) - {"path", "variant", "size", "seed", "status", "error"}
    missing = sorted(k for k in written if f"`{k}`" not in contracts)
    assert missing == [], missing


def test_docs_cite_no_reference_file_as_if_it_were_here():
    """DETAILS.md and PEERS.md are the project's notes outside this repository: a page may cite them by section,
    never link them as a file here."""
    for page in [ROOT / "README.md", *ROOT.glob("docs/*.md")]:
        text = page.read_text()
        assert not re.search(r"\]\([^)]*(DETAILS|PEERS)\.md", text), page
        assert "shared/reference/" not in text or "outside this repository" in text, page
