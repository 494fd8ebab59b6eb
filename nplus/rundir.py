"""Run directories and content-addressed artifacts: atomic writes, locks, provenance.

Everything a run writes that others read (config, summary, markers) is written atomically (temp file +
rename), so a run killed at any moment (even ``kill -9``) leaves either the old file or the new one. Stage
artifacts (base model, SFT, RM) live under ``<cache>/<stage>/<hash>/`` where the hash covers the stage's
configuration and everything upstream; a ``DONE`` marker is written last, and a lock file serialises builders
so two workers never build the same artifact at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.metadata
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

DONE = "DONE"
PACKAGES = ("torch", "transformers", "datasets", "tokenizers", "accelerate", "numpy", "scipy", "statsmodels",
            "pandas", "rouge-score", "safetensors", "tyro", "nplus")


def atomic_write_text(path: Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def append_jsonl(path: Path, row: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(row, sort_keys=True, default=float) + "\n")


def read_jsonl(path: Path) -> list[dict]:
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@contextlib.contextmanager
def file_lock(path: Path, blocking: bool = True) -> Iterator[bool]:
    """An advisory exclusive lock (flock); released by the OS if the holder dies. Yields whether it was taken."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def is_done(path: Path) -> bool:
    return (Path(path) / DONE).exists()


def mark_done(path: Path, info: dict | None = None) -> None:
    atomic_write_json(Path(path) / DONE, {"finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **(info or {})})


@contextlib.contextmanager
def artifact(cache: Path, stage: str, key: str) -> Iterator[tuple[Path, bool]]:
    """Content-addressed stage artifact. Yields (directory, already_built).

    The caller builds into the directory when ``already_built`` is false and the marker is written on a clean
    exit. A partial directory left by a killed builder is wiped and rebuilt.
    """
    path = Path(cache) / stage / key
    with file_lock(Path(cache) / stage / f".{key}.lock"):
        if is_done(path):
            yield path, True
            return
        if path.exists():
            shutil.rmtree(path)
        path.mkdir(parents=True)
        yield path, False
        mark_done(path)


def git_revision() -> dict[str, Any]:
    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    return {"revision": git("rev-parse", "HEAD") or None, "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}


def environment() -> dict[str, Any]:
    """Provenance: git revision, package versions, device and determinism flags."""
    import torch

    versions = {}
    for pkg in PACKAGES:
        try:
            versions[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            versions[pkg] = None
    return {
        "git": git_revision(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": versions,
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "torch_threads": torch.get_num_threads(),
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "hostname": platform.node(),
    }


def command_line() -> str:
    return " ".join(shlex.quote(a) for a in [Path(sys.argv[0]).name, *sys.argv[1:]])


def write_provenance(run_dir: Path, config: dict, details: dict, command: str | None = None) -> None:
    """Written before step 0: the resolved config (with hash), details, environment and exact command."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(run_dir / "config.json", config)
    atomic_write_json(run_dir / "details.json", details)
    atomic_write_json(run_dir / "env.json", environment())
    atomic_write_text(run_dir / "command.txt", (command or command_line()) + "\n")
