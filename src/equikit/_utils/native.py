"""Build small C/C++ kernels on first use and load them with :mod:`ctypes`.

Native kernels (the Cayley bitset BFS, the spherical-harmonics and tensor-product kernels)
are plain C or C++ sources shipped inside the package. :func:`load_library` compiles one with
the system compiler into the user cache directory (``$EQUIKIT_CACHE`` or ``~/.cache/equikit``),
keyed by a hash of the source, the flags and the machine, so an edit or a new CPU triggers a
rebuild and a cached build is reused otherwise. The build writes to a temporary file and
renames it into place, so concurrent builds (pytest workers, two processes) never load half a
library. It returns ``None`` when no compiler is found, the build fails or the environment
variable ``EQUIKIT_NO_NATIVE`` is set; every caller then falls back to a pure-PyTorch path.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

__all__ = ["cache_dir", "load_library", "native_disabled"]

C_FLAGS = ("-O3", "-march=native", "-fopenmp", "-shared", "-fPIC")
CXX_FLAGS = ("-O3", "-march=native", "-fopenmp", "-shared", "-fPIC", "-std=c++17")


def native_disabled() -> bool:
    """True when ``EQUIKIT_NO_NATIVE`` is set (to anything but ``""`` or ``"0"``)."""
    return os.environ.get("EQUIKIT_NO_NATIVE", "") not in ("", "0")


def cache_dir(sub: str) -> Path:
    """``$EQUIKIT_CACHE/<sub>`` (default ``~/.cache/equikit/<sub>``)."""
    root = os.environ.get("EQUIKIT_CACHE") or os.path.join(Path.home(), ".cache", "equikit")
    return Path(root) / sub


def _compiler(source: Path) -> str | None:
    if source.suffix in (".cc", ".cpp", ".cxx"):
        return shutil.which(os.environ.get("CXX", "c++"))
    return shutil.which(os.environ.get("CC", "cc"))


def _compile(compiler: str, flags: tuple[str, ...], source: Path, target: Path) -> tuple[bool, str]:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        proc = subprocess.run([compiler, *flags, str(source), "-o", tmp], capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            return False, proc.stderr
        os.replace(tmp, target)  # atomic: concurrent builds never see half a library
        return True, ""
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@functools.cache
def _load(source: str, target: str, flags: tuple[str, ...]) -> ctypes.CDLL | None:
    compiler = _compiler(Path(source))
    if compiler is None:
        return None
    if not Path(target).exists():
        ok, _ = _compile(compiler, flags, Path(source), Path(target))
        if not ok:
            return None
    return ctypes.CDLL(target)


def load_library(source: str | os.PathLike, sub: str, flags: tuple[str, ...] | None = None) -> ctypes.CDLL | None:
    """Compile ``source`` (once per source, flags and machine) and load it, or ``None``.

    Args:
        source: path of a ``.c`` (built with ``$CC`` or ``cc``) or ``.cpp``/``.cc`` (``$CXX`` or
            ``c++``) file.
        sub: sub-directory of the cache directory for the built library.
        flags: compiler flags; default :data:`C_FLAGS` or :data:`CXX_FLAGS` by suffix.

    Returns:
        The loaded library (argument types are the caller's to declare) or ``None`` when
        ``EQUIKIT_NO_NATIVE`` is set, no compiler exists or the build fails. The result is cached
        per process.
    """
    if native_disabled():
        return None
    path = Path(source)
    if flags is None:
        flags = CXX_FLAGS if path.suffix in (".cc", ".cpp", ".cxx") else C_FLAGS
    flags = tuple(flags)
    key = hashlib.sha256(path.read_bytes() + " ".join(flags).encode() + platform.node().encode()).hexdigest()[:16]
    return _load(str(path), str(cache_dir(sub) / f"{path.stem}_{key}.so"), flags)


def build_error(source: str | os.PathLike, flags: tuple[str, ...] | None = None) -> str:
    """Compile ``source`` into a scratch directory and return the compiler's stderr ("" on success).

    For diagnostics: explains why :func:`load_library` returned ``None``.
    """
    path = Path(source)
    compiler = _compiler(path)
    if compiler is None:
        return "no C/C++ compiler found (set CC / CXX)"
    if flags is None:
        flags = CXX_FLAGS if path.suffix in (".cc", ".cpp", ".cxx") else C_FLAGS
    with tempfile.TemporaryDirectory() as tmp:
        _, err = _compile(compiler, tuple(flags), path, Path(tmp) / "probe.so")
    return err
