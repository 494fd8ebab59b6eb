"""`nplus report`: a study directory (or one run directory) in, a self-contained HTML report out."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import tyro

from nplus.config import non_negative


def default_name(study: Path) -> str:
    """runs/NAME → NAME; a lone run runs/NAME/variant/seed=1 → NAME-variant-seed=1 (not just "seed=1")."""
    path = study.resolve()
    if not path.name.startswith("seed="):
        return path.name
    parts = [p for p in path.parts[-3:] if p != "/"]
    return "-".join(parts)


@dataclass(frozen=True)
class ReportCmd:
    """Write the HTML report of a study: index.html (one self-contained file), figures/ (PNG + PDF), tables/ (CSV)."""

    study: tyro.conf.Positional[Path]
    """Study directory (runs/NAME, as written by `nplus ablate`) or one run directory (one holding summary.json)."""
    out: Path | None = None
    """Report directory (default: reports/<study directory name>; for a lone run, its last three path parts)."""
    title: str | None = None
    """Page title (default: "<study name>: RLHF implementation details")."""
    samples: int = non_negative(6)
    """Validation prompts shown side by side (reference, SFT, baseline PPO, every variant)."""
    examples: int = non_negative(8)
    """PPO samples with the largest proxy-minus-gold gap shown in the over-optimization section."""
    published: Literal["auto", "always", "never"] = "auto"
    """Draw the paper's published values beside the scaling curves (panels of their own): auto = for studies with
    two or more model sizes."""
    formats: tuple[Literal["png", "pdf", "svg"], ...] = ("png", "pdf")
    """File formats written to figures/ (the page itself always embeds PNG)."""

    def run(self) -> int:
        from nplus.report.build import Options, build_report

        out = self.out or Path("reports") / default_name(self.study)
        index = build_report(
            self.study,
            out,
            Options(
                title=self.title,
                samples=self.samples,
                examples=self.examples,
                published=self.published,
                formats=self.formats,
            ),
        )
        print(index)
        return 0
