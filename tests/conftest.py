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


@pytest.fixture(scope="session")
def smoke(tmp_path_factory):
    """One smoke run (in a fresh process) recording which details the pipeline reads: test_pipeline's subject,
    and the shared upstream (SFT, RM, cache) other modules copy rather than retrain. Read-only for them."""
    root = tmp_path_factory.mktemp("smoke")
    summary, read = run_isolated(preset("smoke", 1), root / "run", root / "cache", spy=True)
    return {"root": root, "summary": summary, "read": set(read)}
