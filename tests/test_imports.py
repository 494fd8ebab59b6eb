"""The import structure (issue #34): no import cycle among nplus's modules, the layering contracts of
pyproject.toml ([tool.importlinter], checked by import-linter's `lint-imports`) and no private name imported
across modules. Imports inside functions count: grimp, import-linter's graph, reads every import statement."""

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[1]


def import_cycles(package: str) -> list[tuple[str, ...]]:
    """Every direct import a → b for which b also reaches a (a cycle through that edge), as (a, b, ..., a)."""
    graph = grimp.build_graph(package, cache_dir=None)
    cycles = []
    for a in sorted(graph.modules):
        for b in sorted(graph.find_modules_directly_imported_by(a)):
            back = graph.find_shortest_chain(importer=b, imported=a)
            if back:
                cycles.append((a, *back))
    return cycles


def private_imports(root: Path) -> list[str]:
    """``from nplus.x import _name`` anywhere under ``root`` (dunder names such as __version__ excepted)."""
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == root.name:
                names = [a.name for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
                if names:
                    found.append(
                        f"{path.relative_to(root.parent)}:{node.lineno} imports {', '.join(names)} from {node.module}"
                    )
    return found


def test_no_import_cycle():
    assert import_cycles("nplus") == []


def test_no_private_name_imported_across_modules():
    assert private_imports(ROOT / "nplus") == []


def test_the_layering_contracts_hold():
    """`lint-imports` reads the contracts from pyproject.toml; it exits 1 when one is broken."""
    exe = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))
    out = subprocess.run(
        [exe, "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "0 broken" in out.stdout and "KEPT" in out.stdout


@pytest.fixture
def cyclic_package(tmp_path, monkeypatch):
    """A package whose two modules import each other, one of them inside a function, and which imports a
    private name across modules."""
    pkg = tmp_path / "cyclic"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from cyclic.b import _helper\n")
    (pkg / "b.py").write_text("def _helper():\n    from cyclic import a\n    return a\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return pkg


def test_the_checks_find_what_they_look_for(cyclic_package):
    assert ("cyclic.a", "cyclic.b", "cyclic.a") in import_cycles("cyclic")
    assert private_imports(cyclic_package) == ["cyclic/a.py:1 imports _helper from cyclic.b"]
