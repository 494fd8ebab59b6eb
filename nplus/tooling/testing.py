"""Run a pipeline in a fresh process, optionally recording which details it reads.

Used by the test suite (a pipeline run leaves process-wide state behind: accelerate's state, library loggers
bound to the streams of the moment) and useful on its own to audit that a configuration's details are live.
"""

from __future__ import annotations

import multiprocessing
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from nplus.config import Config

# Frames of these modules read every field mechanically (hashing, validation, copying): not a use of the detail.
_MECHANICAL = ("dataclasses", "nplus.details", "copy")


def _run(cfg: Config, out: Path, cache: Path, spy: bool) -> tuple[dict, list[str]]:
    from nplus.details import REGISTRY, Details  # here: only the spawned child loads the pipeline
    from nplus.pipeline import run_pipeline  # here: only the spawned child loads the pipeline

    read: set[str] = set()
    if spy:
        original = Details.__getattribute__

        def recording(self, name):
            if name in REGISTRY and sys._getframe(1).f_globals.get("__name__", "") not in _MECHANICAL:
                read.add(name)
            return original(self, name)

        Details.__getattribute__ = recording
    return run_pipeline(cfg, out, cache), sorted(read)


def run_isolated(cfg: Config, out: Path, cache: Path, spy: bool = False) -> tuple[dict, list[str]]:
    """(summary, names of the details the run read) from a pipeline run in a spawned process."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_run, cfg, Path(out), Path(cache), spy).result()
