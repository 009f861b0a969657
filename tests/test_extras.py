"""Optional dependencies load lazily, and a missing one gives an ImportError that names the
extra to install."""

import importlib
import sys

import pytest


def test_strategies_name_the_dev_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "hypothesis", None)
    monkeypatch.delitem(sys.modules, "equikit.check.strategies", raising=False)
    with pytest.raises(ImportError, match=r"equikit\[dev\]"):
        importlib.import_module("equikit.check.strategies")


def test_e3nn_conversion_names_the_e3nn_extra(monkeypatch):
    from equikit.o3 import Irreps

    monkeypatch.setitem(sys.modules, "e3nn", None)
    monkeypatch.setitem(sys.modules, "e3nn.o3", None)
    with pytest.raises(ImportError, match=r"equikit\[e3nn\]"):
        Irreps("2x0e+1x1o").to_e3nn()


def test_core_import_needs_no_optional_package(monkeypatch):
    for name in ("hypothesis", "e3nn", "sphericart", "sphericart.torch", "matplotlib", "sklearn", "tqdm"):
        monkeypatch.setitem(sys.modules, name, None)
    for mod in [m for m in sys.modules if m.startswith("equikit")]:
        monkeypatch.delitem(sys.modules, mod)
    groups = importlib.import_module("equikit.groups")
    check = importlib.import_module("equikit.check")
    o3 = importlib.import_module("equikit.o3")
    assert groups.SO(3) and check.equivariance_error and o3.Irreps("1x1o").dim == 3
