"""pytest plugin (registered through the ``pytest11`` entry point): check a model under a
group in one line of your own test suite.

    def test_my_model_is_invariant(equikit_check):
        equikit_check(model, x, PointCloud(E(3)))            # invariance
        equikit_check(model, x, PointCloud(E(3)), PointCloud(E(3)))   # equivariance

The fixture calls :func:`equikit.check.assert_equivariant` with a seed derived from the test
id (reproducible, different per test) and ``--equikit-samples`` group elements (default 16).
On failure, the assertion message names the worst group element and both outputs.
"""

from __future__ import annotations

import zlib

import pytest

from equikit.check.equivariance import assert_equivariant


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("equikit")
    group.addoption(
        "--equikit-samples",
        type=int,
        default=16,
        help="number of group elements sampled by the equikit_check fixture (default 16)",
    )


@pytest.fixture
def equikit_check(request: pytest.FixtureRequest):
    """Return ``check(f, x, in_action, out_action=None, **kwargs) -> EquivarianceReport``."""
    seed = zlib.crc32(request.node.nodeid.encode())
    n_samples = request.config.getoption("--equikit-samples")

    def check(f, x, in_action, out_action=None, **kwargs):
        kwargs.setdefault("generator", seed)
        if kwargs.get("elements") is None:
            kwargs.setdefault("n_samples", n_samples)
        return assert_equivariant(f, x, in_action, out_action, **kwargs)

    return check
