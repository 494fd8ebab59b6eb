"""Where a run's data comes from, without loading it: the artifact cache, the generated tldr-synth corpus,
hub names and whether the Hugging Face hub can be reached.

The lowest layer of nplus.data (no datasets import): the loader, the data commands, the relabelled corpora
(nplus/data/relabel.py) and the pipeline read these; none of them is imported here.
"""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path
from urllib.parse import urlparse

from nplus.config import Config
from nplus.rundir import artifact
from nplus.tasks.synth import VERSION, generate

HUB_NAME = re.compile(r"^[\w.-]+/[\w.-]+$")
"""owner/name: a model, tokenizer or dataset on the Hugging Face hub."""
# How long to wait for the hub before giving up (the datasets library itself retries for ~20 s).
HUB_PROBE_TIMEOUT_S = 3.0


def default_cache() -> Path:
    """The artifact cache: $NPLUS_CACHE, else runs/.cache."""
    return Path(os.environ.get("NPLUS_CACHE", "runs/.cache"))


def synth_dir(cfg: Config, cache: Path) -> Path:
    """Generate the embedded corpus once per (seed, scale, comparison count, generator version), shared by every run."""
    n_cmp = cfg.task.synth_comparisons
    extra = f"-cmp{n_cmp}" if n_cmp is not None else ""
    path = cache / "data" / f"tldr-synth-seed{cfg.task.synth_seed}-{cfg.task.synth_scale}{extra}-v{VERSION}"
    with artifact(cache, "data", path.name) as (p, built):
        if not built:
            generate(p, seed=cfg.task.synth_seed, scale=cfg.task.synth_scale, comparisons=n_cmp)
    return path


def hub_offline() -> bool:
    """Whether HF_HUB_OFFLINE is set (huggingface_hub's constant or the environment)."""
    from huggingface_hub import constants  # here: importing huggingface_hub is needed only for hub names

    return bool(constants.HF_HUB_OFFLINE) or os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")


def hub_unreachable() -> str | None:
    """Why the hub endpoint cannot be reached (a short TCP probe), or None if it can."""
    from huggingface_hub import constants  # here: importing huggingface_hub is needed only for hub names

    url = urlparse(constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=HUB_PROBE_TIMEOUT_S).close()
    except OSError as e:
        return f"{url.hostname}:{port} unreachable: {e}"
    return None


def hub_errors() -> tuple[type[BaseException], ...]:
    """The exceptions a hub download raises when the hub or the file cannot be reached."""
    from huggingface_hub.errors import HfHubHTTPError  # here: importing huggingface_hub is needed only for hub names

    return (OSError, ConnectionError, HfHubHTTPError)
