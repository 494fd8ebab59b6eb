"""Suite-wide set-up.

absl (imported by rouge-score) creates a logging handler bound to ``sys.stderr`` as it is at import time, which
under pytest is a capture file. submitit's ``logging.config.dictConfig`` later closes every existing handler, and
absl's handler then closes that stream unless it is the *current* stderr: pytest's capture file gets closed and
the session dies ("lost sys.stderr"). Binding absl's handler to the process's real stderr avoids it.

The smoke pipeline run is a session fixture: several modules start from it.
"""

import sys

import absl.logging
import pytest

from nplus.presets import preset
from nplus.tooling.testing import run_isolated

absl.logging.get_absl_handler().python_handler.stream = sys.__stderr__

# The slow tier beyond the modules that mark themselves (pytestmark = pytest.mark.slow: training in fresh
# processes, the browser): tests that start fresh processes (the CLI, worker pools, kill -9 campaigns), build whole
# reports or sweep a corpus. `make test-fast` leaves them out; `make test` runs them. A module path marks the whole
# module, "path::name" one test function (all its parameters). tests/test_layout.py checks that each entry exists.
SLOW_TESTS = {
    "tests/test_faults.py": "kill -9 campaigns and full-disk runs of the real runner",
    "tests/test_report.py": "whole HTML reports with their figures",
    "tests/test_bad_inputs.py::test_the_real_command_line_exits_non_zero_without_traceback": "the CLI, fresh processes",
    "tests/test_build_cmd.py::test_hub_tokenizer_without_network_fails_in_one_line": "a fresh process per case",
    "tests/test_details.py::test_pipeline_rejects_a_bad_algorithm_before_compute": "the CLI in a fresh process",
    "tests/test_details.py::test_stage_command_rejects_bad_detail_before_compute": "the CLI in a fresh process",
    "tests/test_eval_cmd.py::test_help_shows_field_docs": "the CLI in a fresh process",
    "tests/test_eval_metrics.py::test_evaluate_load_offline_matches_rouge_py": "loads the evaluate library",
    "tests/test_truncation_fast.py::test_fast_truncation_of_tldr_synth_posts_equals_the_paper_loop": "the whole corpus",
    "tests/test_truncation_fast.py::test_fast_newline_truncation_equals_the_paper_loop": "a property sweep",
    "tests/test_truncation_fast.py::test_fast_truncation_of_many_rows_with_a_cache": "a property sweep",
    "tests/test_paper_presets.py::test_deepspeed_is_optional": "fresh processes",
    "tests/test_paper_presets.py::test_dry_run_prints_the_preset_offline_and_fast": "the CLI in a fresh process",
    "tests/test_perf.py::test_by_length_equals_one_padded_pass_in_values_gradients_and_row_order": "forward + backward",
    "tests/test_perf.py::test_cost_table_rows_and_format": "PPO updates",
    "tests/test_perf.py::test_bench_gpu_runs_on_cpu_with_the_tiny_config": "PPO updates",
    "tests/test_power.py::test_report_shows_aa_and_power_outside_the_headline": "a whole report",
    "tests/test_power.py::test_report_without_aa_arm_says_how_to_add_one": "a whole report",
    "tests/test_runner.py::test_kill_9_then_resume": "worker pools killed and resumed",
    "tests/test_runner.py::test_failures_are_contained": "worker pools",
    "tests/test_runner.py::test_slurm_stages_with_submitit_local_executor": "submitit job processes",
    "tests/test_slurm_paper.py::test_paper_dry_run_command_line": "the CLI in a fresh process",
    "tests/test_stats.py::test_holm_matches_statsmodels": "loads statsmodels",
    "tests/test_tracking.py::test_offline_mirror_writes_inside_run_dir": "wandb in offline mode",
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        path, _, name = item.nodeid.partition("::")
        if path in SLOW_TESTS or f"{path}::{name.split('[')[0]}" in SLOW_TESTS:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def smoke(tmp_path_factory):
    """One smoke run (in a fresh process) recording which details the pipeline reads: test_pipeline's subject,
    and the shared upstream (SFT, RM, cache) other modules copy rather than retrain. Read-only for them."""
    root = tmp_path_factory.mktemp("smoke")
    summary, read = run_isolated(preset("smoke", 1), root / "run", root / "cache", spy=True)
    return {"root": root, "summary": summary, "read": set(read)}
