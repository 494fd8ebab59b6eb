"""Datasets: loading and validation (``loader``), query formatting (``formatting``), pre-tokenization (``builder``)."""
