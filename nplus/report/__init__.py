"""The HTML report of a study: one self-contained page, its figures (PNG + PDF) and tables (CSV)."""

from nplus.report.build import Options, ReportError, build_report, load_study

__all__ = ["Options", "ReportError", "build_report", "load_study"]
