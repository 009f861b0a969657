"""The docstring examples of equikit.symmetrize run (STYLE principle 6)."""

import doctest
import importlib
import pkgutil

import pytest

import equikit.symmetrize

MODULES = [m.name for m in pkgutil.iter_modules(equikit.symmetrize.__path__, "equikit.symmetrize.")]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0, f"{name} has no docstring example"
    assert result.failed == 0, f"{result.failed} docstring example(s) failed in {name}"
