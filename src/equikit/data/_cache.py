"""Where generated data lives, and how it is written: atomically, beside a JSON manifest.

The data directory is, in order of precedence: the ``root`` argument, the ``EQUIKIT_DATA``
environment variable, ``$XDG_CACHE_HOME/equikit/data``, ``~/.cache/equikit/data``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from equikit._utils.files import atomic_write

ENV_VAR = "EQUIKIT_DATA"


def data_dir(root: str | os.PathLike | None = None) -> Path:
    """The data directory (not created here).

    Example:
        >>> import os
        >>> from equikit.data import data_dir
        >>> str(data_dir("/tmp/somewhere"))
        '/tmp/somewhere'
    """
    if root is not None:
        if not isinstance(root, (str, os.PathLike)):
            raise TypeError(f"data_dir: `root` must be a path or None, got {type(root).__name__}")
        return Path(root).expanduser()
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "equikit" / "data"


def _atomic_write(path: Path, write) -> None:
    """Write through ``write(fileobj)`` to a temp file in ``path``'s folder, then
    ``os.replace`` it onto ``path``: readers see the old file or the whole new one."""
    atomic_write(path, write, prefix=f".{path.name}.")


def save_arrays(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Save named arrays to ``path`` (an uncompressed ``.npz``), atomically."""
    _atomic_write(path, lambda f: np.savez(f, **arrays))


def load_arrays(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def write_manifest(path: Path, manifest: dict[str, Any]) -> None:
    text = json.dumps(manifest, indent=2, sort_keys=True).encode()
    _atomic_write(path, lambda f: f.write(text))


def read_manifest(path: Path) -> dict[str, Any] | None:
    """The manifest at ``path``, or ``None`` when it is missing or unreadable."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
