"""The code's shape (issue #34): PPO alone in nplus/stages/ppo.py, read beside the paper's ppo.py; no long functions.

Pure source reads (ast), no imports of the package: they fail when a change breaks the rule, whatever it runs.
"""

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "nplus"
MAX_PPO_LINES = 250
MAX_FUNCTION_LINES = 80


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside a function (``from a import b`` counts a and a.b)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
            out.update(f"{node.module}.{alias.name}" for alias in node.names)
    return out


def function_lengths(path: Path) -> dict[str, int]:
    """name:line → lines from the first decorator to the last line of the body, for every (nested) function."""
    out = {}
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            first = node.decorator_list[0].lineno if node.decorator_list else node.lineno
            out[f"{node.name}:{node.lineno}"] = node.end_lineno - first + 1
    return out


def test_ppo_module_is_short():
    lines = len((PKG / "stages" / "ppo.py").read_text().splitlines())
    assert lines <= MAX_PPO_LINES, f"nplus/stages/ppo.py has {lines} lines (at most {MAX_PPO_LINES}: PPO alone)"


def test_no_other_stage_imports_ppo():
    importers = [
        f.name
        for f in sorted((PKG / "stages").glob("*.py"))
        if f.name != "ppo.py" and "nplus.stages.ppo" in imported_modules(f)
    ]
    assert not importers, f"{importers} import nplus.stages.ppo: the shared framework is nplus/stages/online.py"


def test_the_online_algorithms_use_the_framework():
    for name in ("ppo.py", "critic_free.py", "dpo.py"):
        assert "nplus.stages.online" in imported_modules(PKG / "stages" / name), name


def test_no_function_over_the_limit():
    long = {
        f"{f.relative_to(PKG.parent)}:{name}": n
        for f in sorted(PKG.rglob("*.py"))
        for name, n in function_lengths(f).items()
        if n > MAX_FUNCTION_LINES
    }
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines (split them): {long}"


def test_the_checks_see_what_they_check(tmp_path):
    """The helpers find a function-level import and a long function (so the tests above can fail)."""
    src = tmp_path / "m.py"
    src.write_text("def f():\n    from nplus.stages import ppo\n" + "    x = 1\n" * MAX_FUNCTION_LINES)
    assert "nplus.stages.ppo" in imported_modules(src)
    assert function_lengths(src) == {"f:1": MAX_FUNCTION_LINES + 2}


def test_every_slow_test_listed_in_conftest_exists():
    """A renamed or removed test must leave SLOW_TESTS too (else the fast tier silently runs it again)."""
    from tests.conftest import SLOW_TESTS

    root = PKG.parent
    for entry in SLOW_TESTS:
        path, _, name = entry.partition("::")
        assert (root / path).is_file(), entry
        if name:
            assert name in {key.split(":")[0] for key in function_lengths(root / path)}, entry


def test_the_tree_is_ruff_formatted_and_lint_clean():
    """ruff (in the test extra; configured in pyproject.toml) on the whole tree: `make lint` fixes what it can."""
    import shutil
    import subprocess
    import sys

    ruff = shutil.which("ruff") or str(Path(sys.executable).with_name("ruff"))
    root = PKG.parent
    check = subprocess.run([ruff, "check", "--output-format", "concise", "."], cwd=root, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout[-3000:] + check.stderr[-1000:]
    fmt = subprocess.run([ruff, "format", "--check", "."], cwd=root, capture_output=True, text=True)
    assert fmt.returncode == 0, fmt.stdout[-3000:] + fmt.stderr[-1000:]
