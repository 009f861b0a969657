"""The shared native-kernel builder: compile on first use, cache, fall back cleanly."""

import ctypes
import shutil

import pytest

from equikit._utils import native

pytestmark = pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler on this machine")


def _write(tmp_path, body, name="k.c"):
    src = tmp_path / name
    src.write_text(body)
    return src


def test_builds_caches_and_loads(tmp_path, monkeypatch):
    monkeypatch.setenv("EQUIKIT_CACHE", str(tmp_path / "cache"))
    src = _write(tmp_path, "int eq_add(int a, int b) { return a + b; }\n")
    lib = native.load_library(src, "probe")
    assert lib is not None
    lib.eq_add.argtypes = [ctypes.c_int, ctypes.c_int]
    assert lib.eq_add(2, 40) == 42
    built = list((tmp_path / "cache" / "probe").glob("k_*.so"))
    assert len(built) == 1
    # an edited source gets a new key and a second build
    src.write_text("int eq_add(int a, int b) { return a + b + 1; }\n")
    lib2 = native.load_library(src, "probe")
    lib2.eq_add.argtypes = [ctypes.c_int, ctypes.c_int]
    assert lib2.eq_add(2, 40) == 43
    assert len(list((tmp_path / "cache" / "probe").glob("k_*.so"))) == 2


def test_disabled_by_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("EQUIKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("EQUIKIT_NO_NATIVE", "1")
    src = _write(tmp_path, "int eq_one(void) { return 1; }\n")
    assert native.native_disabled()
    assert native.load_library(src, "probe") is None
    monkeypatch.setenv("EQUIKIT_NO_NATIVE", "0")
    assert not native.native_disabled()


def test_broken_source_returns_none_and_explains(tmp_path, monkeypatch):
    monkeypatch.setenv("EQUIKIT_CACHE", str(tmp_path / "cache"))
    src = _write(tmp_path, "int eq_broken(void) { return undefined_symbol_here; }\n", name="bad.c")
    assert native.load_library(src, "probe") is None
    assert "undefined_symbol_here" in native.build_error(src)
    assert not list((tmp_path / "cache" / "probe").glob("*.so"))  # no half-written library left


def test_cpp_sources_use_the_cxx_compiler(tmp_path, monkeypatch):
    if shutil.which("c++") is None:
        pytest.fail("a C compiler exists but no C++ compiler (c++): install g++")
    monkeypatch.setenv("EQUIKIT_CACHE", str(tmp_path / "cache"))
    src = _write(tmp_path, 'template <typename T> T twice(T x) { return 2 * x; }\n'
                 'extern "C" double eq_twice(double x) { return twice(x); }\n', name="k.cpp")
    lib = native.load_library(src, "probe")
    assert lib is not None
    lib.eq_twice.argtypes = [ctypes.c_double]
    lib.eq_twice.restype = ctypes.c_double
    assert lib.eq_twice(1.5) == 3.0
