"""Expressivity: reachable paths, parity-odd paths and independent weights, checked against
the numerical rank of the weights-to-function map."""

import pytest
import torch

from equikit.tp import (
    BACKENDS,
    Executor,
    Mode,
    channelwise,
    expressivity,
    fully_connected,
    make_executor,
    register_backend,
    tensor_square,
)


def _numerical_rank(d, n=64):
    """Rank of w -> f_w(x1_s, x2_s) over random inputs (the function is linear in w)."""
    ex = make_executor(d, "naive")
    x1 = torch.randn(n, d.irreps1.dim, dtype=torch.float64)
    x2 = None if d.square else torch.randn(n, d.irreps2.dim, dtype=torch.float64)
    eye = torch.eye(d.weight_numel, dtype=torch.float64)
    cols = torch.stack([ex(x1, x2, eye[i]).reshape(-1) for i in range(d.weight_numel)], 1)
    return int(torch.linalg.matrix_rank(cols, rtol=1e-9))


@pytest.mark.parametrize("d", [
    fully_connected("2x0e + 2x1o", "1o + 2e", "2x1o + 1x1e + 2x2e"),
    channelwise("3x1o + 2x2e", "0e + 1o + 2e"),
    tensor_square("3x1o + 2x0e", "2x0e + 2x1e + 1x2e"),
    tensor_square("2x2e", lmax=4),
])
def test_independent_weights_equal_numerical_rank(d):
    e = expressivity(d, "naive")
    assert e.independent_weights == _numerical_rank(d)
    assert e.num_weights == d.weight_numel
    if d.square:
        assert e.independent_weights < e.num_weights


def test_parity_odd_paths_and_reachability():
    d = fully_connected("1o + 2e", "1o", "0e + 1e + 2e + 1o + 2o + 3o")
    e = expressivity(d)
    names = {f"{a} x {b} -> {c}" for a, b, c in e.parity_odd}
    assert names == {"1o x 1o -> 1e", "2e x 1o -> 2o"}
    assert all((a.l + b.l + c.l) % 2 for a, b, c in e.parity_odd)
    assert len(e.paths) == len(d.paths) and e.unreachable == ()
    assert e.to_dict()["backend"] == "sparse_cg"


def test_restricted_backend_reports_what_it_loses():
    class OnlyChannelwise(Executor):
        name = "_test_uvu"
        modes = frozenset({Mode.UVU})

    register_backend(OnlyChannelwise)
    try:
        d = fully_connected("2x1o", "1o", "2x0e")
        e = expressivity(d, "_test_uvu")
        assert e.paths == () and e.unreachable == d.paths and e.independent_weights == 0
        assert expressivity(channelwise("2x1o", "1o"), "_test_uvu").independent_weights == 2 * 3
    finally:
        del BACKENDS["_test_uvu"]


def test_bad_arguments():
    with pytest.raises(TypeError, match="expressivity: `descriptor` must be a TensorProductDescriptor, got str"):
        expressivity("1o")
    with pytest.raises(ValueError, match="unknown backend 'gaunt'"):
        expressivity(channelwise("1o", "1o"), "gaunt")
