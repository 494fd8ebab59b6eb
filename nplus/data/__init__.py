"""Datasets: loading and validation (``loader``), query formatting (``formatting``) and truncation
(``truncation``), pre-tokenization (``builder``)."""
