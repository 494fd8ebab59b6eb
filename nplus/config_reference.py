"""The reference of every ``--set`` field (docs/set-reference.md), generated from ``nplus.config.Config``.

One row per hyperparameter: its dotted path (as ``--set`` and a study's ``[hparams]`` take it), type, the
dataclass default (a preset changes many of them: ``nplus config --preset NAME`` prints the resolved values),
the valid values where the code declares them (``Literal`` choices, the reward sources and rules, the
algorithms), the stage artifacts whose hash includes it (so a change rebuilds them), and the field's own
docstring. The ranges shown are the ones ``nplus.config.validate`` checks before any compute (with divisibility
and cross-field rules it states in its errors).

    python -m nplus.config_reference > docs/set-reference.md

``tests/test_docs.py`` fails when the committed file differs from this output.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import itertools
import types
import typing
from typing import Any, Literal

from nplus import config as C

STAGES = ("base", "sft", "rm", "ppo")


def _docstrings(cls: type) -> dict[str, str]:
    """Attribute docstrings (the string literal after a field), read from the source."""
    tree = ast.parse(inspect.getsource(cls))
    body = tree.body[0].body
    out = {}
    for node, nxt in itertools.pairwise(body):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(nxt, ast.Expr)
            and isinstance(nxt.value, ast.Constant)
            and isinstance(nxt.value.value, str)
        ):
            out[node.target.id] = " ".join(nxt.value.value.split())
    return out


def _choices(path: str, hint: Any) -> str:
    if typing.get_origin(hint) is Literal:
        return ", ".join(f"`{c}`" for c in typing.get_args(hint))
    if path in ("reward.source", "reward.rule", "algorithm"):
        from nplus.details import ALGORITHMS
        from nplus.rewards import RULES, SOURCES

        known = {"reward.source": SOURCES, "reward.rule": RULES, "algorithm": ALGORITHMS}
        return ", ".join(f"`{c}`" for c in known[path])
    return ""


def _type(hint: Any) -> str:
    if typing.get_origin(hint) is Literal:
        return "str"
    name = getattr(hint, "__name__", None) or str(hint).replace("typing.", "")
    return name.replace(" | ", " or ")  # a | would split the Markdown table cell


def _flat(d: dict, prefix: str = "") -> set[str]:
    out = set()
    for k, v in d.items():
        if isinstance(v, dict):
            out |= _flat(v, f"{prefix}{k}.")
        out.add(f"{prefix}{k}")
    return out


def _range(f: dataclasses.Field, hint: Any) -> str:
    """The numeric range ``validate`` checks: the field's declared one, else its type's (ints are ≥ 0)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):  # X | None: the range of X
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    if hint not in (int, float):
        return ""
    low, high, open_low = f.metadata.get("range", (0 if hint is int else None, None, False))
    if hint is int:
        low = int(low) + open_low if low is not None else None
        return f"integer ≥ {low}" if high is None else f"integer {low} … {int(high)}"
    lo = "" if low is None else f"{'>' if open_low else '≥'} {low:g}"
    hi = "" if high is None else f"≤ {high:g}"
    return " and ".join(b for b in (lo, hi) if b) or "finite"


def _stage_keys(stage: str) -> set[str]:
    """The fields in ``stage``'s hash: those of the default config, and the ones it leaves out only at their
    defaults (added with the scaling ladder, so that earlier hashes stay as they were)."""
    cfg = C.Config()
    ladder = dataclasses.replace(
        cfg,
        lr_rule="inverse_width",
        model=dataclasses.replace(cfg.model, pretrain_lr_rule="inverse_width", pretrain_grad_clip=1.0),
    )
    return _flat(cfg.stage_dict(stage)) | _flat(ladder.stage_dict(stage))


def rows() -> list[dict]:
    cfg = C.Config()
    in_stage = {s: _stage_keys(s) for s in STAGES}
    out = []

    def walk(obj: Any, prefix: str) -> None:
        hints, docs = typing.get_type_hints(type(obj)), _docstrings(type(obj))
        for f in dataclasses.fields(obj):
            value, path = getattr(obj, f.name), prefix + f.name
            if path == "details":  # details are set with --details.NAME (docs/ablations.md), not --set
                continue
            if dataclasses.is_dataclass(value):
                walk(value, path + ".")
                continue
            stages = [s for s in STAGES if path in in_stage[s]]
            out.append(
                {
                    "path": path,
                    "type": _type(hints[f.name]),
                    "default": repr(value),
                    "choices": _choices(path, hints[f.name]) or _range(f, hints[f.name]),
                    "stages": ", ".join(stages) or "—",
                    "doc": docs.get(f.name, ""),
                }
            )

    walk(cfg, "")
    return out


def markdown() -> str:
    lines = [
        "# `--set` reference",
        "",
        (
            "Generated by `python -m nplus.config_reference > docs/set-reference.md` from `nplus/config.py`; "
            "`tests/test_docs.py` checks that this file is current."
        ),
        "",
        (
            "Every hyperparameter `nplus pipeline --set KEY=VALUE` and a study's `[hparams]` accept. *Default* is the "
            "dataclass default; the presets (`nplus/presets.py`) set many fields, so a run's value is its preset's "
            "unless overridden. *Valid values*: the choices or the numeric range the code declares, checked by "
            "`nplus.config.validate` before any compute with the divisibility and cross-field rules (batch sizes, "
            "lengths), naming the field (docs/bad-inputs.md). *Stages*: the artifacts whose hash includes the field — "
            "changing it rebuilds "
            "those and reuses the others. Details are not set here but with `--details.NAME VALUE` (docs/ablations.md)."
        ),
        "",
        "| field | type | default | valid values | stages | meaning |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows():
        doc = r["doc"].replace("|", "\\|")
        cells = (f"`{r['path']}`", r["type"], f"`{r['default']}`", r["choices"] or "—", r["stages"], doc)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(markdown(), end="")
