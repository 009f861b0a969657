"""Atomic checkpoints and the random-number-generator states they carry."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from equikit._utils.files import atomic_write


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file in ``path``'s folder, then ``os.replace`` it: a
    crash leaves either the old file or the new one, never half of one."""
    atomic_write(path, lambda fh: fh.write(data), prefix=path.name)


def seed_everything(seed: int) -> None:
    """Seed torch, numpy's global stream and Python's ``random``.

    Example:
        >>> seed_everything(3); a = torch.rand(1)
        >>> seed_everything(3); bool((torch.rand(1) == a).all())
        True
    """
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed_everything: `seed` must be an int, got {type(seed).__name__} {seed!r}")
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 (the global stream is what user code draws from)
    random.seed(seed)


def get_rng_state() -> dict[str, Any]:
    """The global torch, numpy and Python RNG states, as plain tensors/tuples (loadable with
    ``torch.load(weights_only=True)``)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": random.getstate(),
    }
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`get_rng_state` returned."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state((n["kind"], keys, n["pos"], n["has_gauss"], n["cached_gaussian"]))  # noqa: NPY002
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """``torch.save`` ``state`` atomically (temporary file + ``os.replace``).

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "ck.pt"
        >>> _ = save_checkpoint(p, {"step": 4, "w": torch.ones(2)})
        >>> load_checkpoint(p)["step"]
        4
    """
    import io

    path = Path(path)
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(path, buf.getvalue())
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` (``weights_only``: plain data)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"load_checkpoint: no checkpoint at {str(path)!r} (train without resume first)")
    return torch.load(path, map_location="cpu", weights_only=True)
