"""Tooling around the core, not part of a run: throughput benchmarks (``make bench``, ``bench-ppo``, ``bench-gpu``,
``bench-peers``), the FLOP formulas they and the base builder's manifest read (perf.py), and the test suite's
fresh-process runner (testing.py). The core imports none of it except perf's formulas (pyproject.toml's
import-linter contracts)."""
