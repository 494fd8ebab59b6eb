"""Run directories and content-addressed artifacts: atomic writes, locks, provenance.

Everything a run writes that others read (config, summary, markers) is written atomically (temp file +
rename), so a run killed at any moment (even ``kill -9``) leaves either the old file or the new one. Stage
artifacts (base model, SFT, RM) live under ``<cache>/<stage>/<hash>/`` where the hash covers the stage's
configuration and everything upstream; a ``DONE`` marker is written last, and a lock file serialises builders
so two workers never build the same artifact at once.

The ``DONE`` marker lists the size and sha256 of every file it vouches for, and an artifact is only reused
when they all still match: a truncated or corrupted checkpoint (a disk that filled up, a copy cut short, a
file edited by hand) is rebuilt instead of loaded. A write that fails for lack of space raises
:class:`DiskFullError`, one line naming the path.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import importlib.metadata
import json
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

DONE = "DONE"
# What a run directory's DONE vouches for: what stats and the report read (log.txt and error.txt are appended to
# by later attempts, so they are not listed).
RUN_OUTPUTS = ("config.json", "summary.json", "eval.json", "metrics.jsonl", "samples.jsonl")
PACKAGES = (
    "torch",
    "transformers",
    "datasets",
    "tokenizers",
    "accelerate",
    "numpy",
    "scipy",
    "statsmodels",
    "pandas",
    "rouge-score",
    "safetensors",
    "tyro",
    "nplus",
)


# Fault injection for the kill -9 campaign (nplus/ablate/faults.py): "<point>:<n>" makes the process that reaches
# fault point <point> for the n-th time (counted across processes in the file FAULT_COUNTER_ENV names) SIGKILL
# its whole process group, i.e. the runner and its workers die there with no cleanup. Unset: one dict lookup.
FAULT_ENV, FAULT_COUNTER_ENV = "NPLUS_FAULT", "NPLUS_FAULT_COUNTER"
FAULT_POINTS = ("write", "checkpoint", "stats")  # mid atomic write, between checkpoint files, inside write_stats


def fault_point(name: str) -> None:
    spec = os.environ.get(FAULT_ENV)
    if not spec or spec.partition(":")[0] != name:
        return
    counter = Path(os.environ[FAULT_COUNTER_ENV])
    with file_lock(counter.with_name(counter.name + ".lock")):
        hits = int(counter.read_text() or 0) + 1 if counter.exists() else 1
        counter.write_text(str(hits))
    if hits == int(spec.partition(":")[2]):
        os.killpg(os.getpgid(0), signal.SIGKILL)


# The kill -9 campaign's two-runner check (nplus/ablate/faults.py) needs both runners to have listed what is left
# before either finishes a run; process start-up alone can take longer than a fast run. "<dir>:<n>": each runner
# that reaches the barrier (after listing, before running) leaves a file in <dir> and waits until <n> are there,
# or 120 s (then the check reports that they did not overlap). Unset: one dict lookup.
BARRIER_ENV = "NPLUS_START_BARRIER"


def start_barrier() -> None:
    spec = os.environ.get(BARRIER_ENV)
    if not spec:
        return
    folder, _, n = spec.rpartition(":")
    Path(folder).mkdir(parents=True, exist_ok=True)
    (Path(folder) / str(os.getpid())).touch()
    deadline = time.monotonic() + 120
    while len(list(Path(folder).iterdir())) < int(n) and time.monotonic() < deadline:
        time.sleep(0.05)


# errno values that mean "the disk (or this process's file-size limit, RLIMIT_FSIZE, or quota) is full".
DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


class DiskFullError(Exception):
    """A write failed for lack of space: one line naming the path (the CLI prints it without a traceback). Not
    an OSError, so that no ``except OSError`` on the way up mistakes it for a missing file."""

    def __init__(self, path: Path, cause: BaseException):
        reason = cause.strerror if isinstance(cause, OSError) and cause.strerror else str(cause).splitlines()[0]
        super().__init__(
            f"no space to write {path} ({reason}); free some space and rerun the same command: "
            "finished runs and artifacts are kept, nothing half-written is reused"
        )


def is_disk_full(e: BaseException | None) -> bool:
    """An OSError with a disk-full errno anywhere in the exception chain, or a library error that carries one in
    its message only (safetensors and tokenizers surface Rust's io::Error as "... (os error 28)")."""
    while e is not None:
        if isinstance(e, DiskFullError) or (isinstance(e, OSError) and e.errno in DISK_FULL_ERRNOS):
            return True
        if any(f"(os error {n})" in str(e) for n in DISK_FULL_ERRNOS):
            return True
        e = e.__cause__ or e.__context__
    return False


@contextlib.contextmanager
def naming_full_disk(path: Path) -> Iterator[None]:
    """Turn a disk-full failure of the writes inside into a :class:`DiskFullError` that names ``path``."""
    try:
        yield
    except DiskFullError:
        raise
    except Exception as e:
        if is_disk_full(e):
            raise DiskFullError(Path(getattr(e, "filename", None) or path), e) from e
        raise


def atomic_write_text(path: Path, text: str) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with naming_full_disk(path):
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "w") as f:
                f.write(text[: len(text) // 2])
                f.flush()  # so that a kill at the fault point leaves the half on disk, as a real one may
                fault_point("write")  # killed here: a half-written temp file, the old `path` untouched
                f.write(text[len(text) // 2 :])
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
    except DiskFullError:
        tmp.unlink(missing_ok=True)  # give the space back
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def save_dataset(dataset: Any, path: Path) -> None:
    """``save_to_disk`` of a ``Dataset``/``DatasetDict`` without its per-split progress bars (a study's log shows the
    runner's bar, not one line per split written), restoring the caller's setting."""
    from datasets.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    was_disabled = are_progress_bars_disabled()
    disable_progress_bars()
    try:
        with naming_full_disk(path):
            dataset.save_to_disk(str(path))
    finally:
        if not was_disabled:
            enable_progress_bars()


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def append_jsonl(path: Path, row: dict) -> None:
    with naming_full_disk(path), open(path, "a") as f:
        f.write(json.dumps(row, sort_keys=True, default=float) + "\n")


def read_jsonl(path: Path) -> list[dict]:
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# The locks this process holds, by (real path, thread): the study runner holds a run directory's lock around
# run_pipeline, which takes the same lock itself (flock would refuse a second descriptor of the same process).
_HELD: set[tuple[str, int]] = set()


@contextlib.contextmanager
def file_lock(path: Path, blocking: bool = True) -> Iterator[bool]:
    """An advisory exclusive lock (flock); released by the OS if the holder dies. Yields whether it was taken.
    Re-entrant within a thread: a lock the calling thread already holds is taken again at once."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    key = (os.path.realpath(path), threading.get_ident())
    if key in _HELD:
        yield True
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        _HELD.add(key)
        try:
            yield True
        finally:
            _HELD.discard(key)
    finally:
        os.close(fd)


class RunDirError(Exception):
    """A run directory that must not be written now: another process is writing it, it holds a finished run
    (without ``--overwrite``), or it is not a run directory. One line naming the path (the CLI prints it)."""


RUN_LOCK = ".lock"  # the run directory's lock: run_pipeline and the study runner take the same file
# What marks a directory as a run directory (a file the pipeline or the runner wrote there)
RUN_MARKERS = (RUN_LOCK, "config.json", DONE, "command.txt", "error.txt")


@contextlib.contextmanager
def run_dir_lock(path: Path, overwrite: bool = False) -> Iterator[None]:
    """Hold ``path``'s run lock for the whole run, refusing (RunDirError) when another process holds it, when
    ``path`` holds a finished run (DONE) and ``overwrite`` is false, or when it is a non-empty directory that is
    not a run directory (``--out .`` would mix a run's files into it)."""
    path = Path(path)
    if path.is_dir() and any(path.iterdir()) and not any((path / m).exists() for m in RUN_MARKERS):
        raise RunDirError(
            f"{path} is a non-empty directory that is not a run directory; choose a new or empty directory for --out"
        )

    def refuse_finished() -> None:
        if not overwrite and (path / DONE).exists():
            raise RunDirError(
                f"{path} holds a finished run ({DONE} present); pass --overwrite to replace it, or choose another --out"
            )

    refuse_finished()  # before the lock file is created: a refused run leaves the directory as it was
    with file_lock(path / RUN_LOCK, blocking=False) as taken:
        if not taken:
            raise RunDirError(
                f"{path} is locked: another nplus process (a pipeline or a study runner) is writing "
                "this run directory; wait for it to finish or choose another --out"
            )
        refuse_finished()  # again under the lock: the other process may have just finished
        yield


class PathError(Exception):
    """A path the operating system will refuse (a file where a directory must be, no permission, a name too
    long): one line naming the path, raised before anything is written."""


def check_writable_dir(path: Path, flag: str) -> None:
    """``path`` is a directory this command will create or write into: refuse (PathError, naming ``flag``) when it
    or its nearest existing ancestor is not a directory, that ancestor is not writable, or a name in it is longer
    than the file system allows. Cheap, so every writer checks before its first write."""
    path = Path(path)

    def exists(p: Path) -> bool:  # a name too long makes stat fail with ENAMETOOLONG rather than say "absent"
        try:
            return p.exists()
        except OSError:
            return False

    existing = path
    while not exists(existing) and existing != existing.parent:
        existing = existing.parent
    limit = os.pathconf(existing if existing.is_dir() else existing.parent, "PC_NAME_MAX")
    for part in path.parts:
        if len(os.fsencode(part)) > limit:
            raise PathError(
                f"{flag} {str(path)[:60]}...: the name {part[:40]!r}... is longer than the file system's {limit} bytes"
            )
    if existing == path and not path.is_dir():
        raise PathError(f"{flag} {path}: exists and is not a directory")
    if not existing.is_dir():
        raise PathError(f"{flag} {path}: {existing} is a file, not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PathError(f"{flag} {path}: {existing} is not writable (permission denied)")


# The longest name (in bytes) a study or variant may have: the common file-system limit is 255 bytes, less room
# for what is added to a name on disk (a report's or an atomic write's ".NAME.tmpPID").
NAME_MAX_BYTES = 200


def dir_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be one directory level on any common file system (None when it can): checked where a
    study loads, so a bad name fails before any training, not after the baseline has trained."""
    if name.strip() in ("", ".", ".."):
        return "empty, '.' or '..'"
    if "/" in name or "\\" in name:
        return "it contains a path separator ('/' or '\\')"
    if name.startswith(".") or name != name.strip():
        return "it starts with '.' or starts or ends with a space (hidden or easily mistyped)"
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return "it contains a control character"
    if len(name.encode()) > NAME_MAX_BYTES:
        return f"it is {len(name.encode())} bytes long, more than the {NAME_MAX_BYTES} allowed"
    return None


def is_done(path: Path) -> bool:
    """The marker exists: cheap enough to poll (the scheduler does); :func:`done_problem` also checks content."""
    return (Path(path) / DONE).exists()


def sha256_file(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def file_manifest(path: Path, files: tuple[str, ...] | None = None) -> dict[str, list]:
    """``{relative path: [size, sha256]}`` of ``files`` that exist under ``path``, or of every file but DONE."""
    path = Path(path)
    names = (
        files
        if files is not None
        else sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file() and p.name != DONE)
    )
    return {n: [(path / n).stat().st_size, sha256_file(path / n)] for n in names if (path / n).is_file()}


def mark_done(path: Path, info: dict | None = None, files: tuple[str, ...] | None = None) -> None:
    """Write DONE last, vouching for ``files`` (default: every file in the directory) by size and sha256."""
    atomic_write_json(
        Path(path) / DONE,
        {"finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **(info or {}), "files": file_manifest(path, files)},
    )


def done_problem(path: Path) -> str | None:
    """Why ``path`` does not count as finished (no or unreadable DONE, a listed file missing, truncated or
    changed), or None when it does. Sizes are compared first, so a truncated file costs no hashing."""
    path = Path(path)
    try:
        marker = read_json(path / DONE)
    except FileNotFoundError:
        return f"no {DONE} marker"
    except (OSError, ValueError):
        return f"{DONE} is unreadable"
    listed = marker.get("files") if isinstance(marker, dict) else None
    if not isinstance(listed, dict):
        return f"{DONE} lists no files (written by an older nplus)"
    for name, (size, digest) in sorted(listed.items()):
        f = path / name
        if not f.is_file():
            return f"{name} is missing"
        if f.stat().st_size != size:
            return f"{name} has {f.stat().st_size} bytes, {DONE} says {size}"
        if sha256_file(f) != digest:
            return f"{name} changed since {DONE} was written (sha256 differs)"
    return None


def umask() -> int:
    """This process's umask (read from /proc where it can be, so that no other thread sees it changed)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def share_file_modes(path: Path) -> None:
    """Give every file under ``path`` the mode an ordinary write gets (0666 less the umask: 0644 usually). Files
    written through a private temporary file (safetensors, transformers' save_pretrained) come out 0600, which
    makes a shared NPLUS_CACHE (docs/reproduce.md) unreadable to colleagues; a mode already wider is left."""
    want = 0o666 & ~umask()
    path = Path(path)
    for f in [path] if path.is_file() else path.rglob("*"):
        if f.is_file() and not f.is_symlink():
            mode = f.stat().st_mode & 0o777
            if mode != want and mode & want == mode:  # narrower than an ordinary write: widen to it, never beyond
                os.chmod(f, want)


@contextlib.contextmanager
def artifact(cache: Path, stage: str, key: str) -> Iterator[tuple[Path, bool]]:
    """Content-addressed stage artifact. Yields (directory, already_built).

    The caller builds into the directory when ``already_built`` is false and the marker is written on a clean
    exit. A partial directory left by a killed builder, or one whose files no longer match its DONE marker, is
    wiped and rebuilt. A build that runs out of space is wiped at once (freeing the space) and raises
    :class:`DiskFullError`.
    """
    path = Path(cache) / stage / key
    with file_lock(Path(cache) / stage / f".{key}.lock"):
        problem = done_problem(path) if path.exists() else "absent"
        if problem is None:
            yield path, True
            return
        if is_done(path):
            print(f"rebuilding {path}: {problem}", file=sys.stderr, flush=True)
        if path.exists():
            shutil.rmtree(path)
        path.mkdir(parents=True)
        try:
            with naming_full_disk(path):
                yield path, False
                share_file_modes(path)
                mark_done(path)
        except DiskFullError:
            shutil.rmtree(path, ignore_errors=True)
            raise


def git_revision() -> dict[str, Any]:
    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    return {
        "revision": git("rev-parse", "HEAD") or None,
        "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
    }


def cpu_model() -> str:
    """The CPU's model name and the cores this process may use ("AMD EPYC, 2 cores"): numbers are bit-identical
    only on the same CPU type with the same thread count, so every run and benchmark records it."""
    name = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            name = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        pass
    name = name or platform.processor() or platform.machine() or "unknown CPU"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{name}, {cores} cores"


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
        "cpu": cpu_model(),
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
