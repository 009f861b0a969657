"""Atomic file writes shared by the data cache and the training checkpoints."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO


def atomic_write(path: Path, write: Callable[[IO[bytes]], object], prefix: str) -> None:
    """Write through ``write(fileobj)`` to a temporary file ``<prefix>*.tmp`` in ``path``'s
    folder (created if missing), fsync it, then ``os.replace`` it onto ``path``: a crash
    leaves either the old file or the whole new one, never half of one; the temporary file
    is removed on any error.

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> p = Path(tempfile.mkdtemp()) / "sub" / "a.bin"
        >>> atomic_write(p, lambda f: f.write(b"abc"), prefix=".a.bin.")
        >>> p.read_bytes(), sorted(x.name for x in p.parent.iterdir())
        (b'abc', ['a.bin'])
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
