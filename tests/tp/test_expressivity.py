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
    expressivity_table,
    fully_connected,
    gaunt_product,
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


# ---------------------------------------------------------------------------------- Gaunt, ranks
def test_bilinear_rank_cg_vs_gaunt_on_vectors():
    """1o x 1o: the CG product (0e + 1e + 2e) is an isomorphism of the 9-dim x (x) y, rank 9;
    the Gaunt product keeps only the symmetric part (0e + 2e), rank 6 = dim Sym^2(R^3)."""
    cg = expressivity(fully_connected("1o", "1o", "0e + 1e + 2e"), rank=True)
    assert (cg.bilinear_rank, cg.family_dim, cg.independent_weights) == (9, 3, 3)
    d = gaunt_product("1o", "1o")
    for backend in ("gaunt_fourier", "sphere_grid", "naive"):
        e = expressivity(d, backend, rank=True)
        assert (e.bilinear_rank, e.family_dim, e.independent_weights, e.num_weights) == (6, 1, 0, 0)
        assert e.parity_odd == () and e.unreachable == ()


def test_gaunt_product_is_symmetric_and_onto_band_2l():
    """Products of band-2 functions span all band-4 functions of natural parity (25 dims), and
    the product is symmetric in its operands: full rank on its outputs but no antisymmetric part."""
    sh = "0e + 1o + 2e"
    d = gaunt_product(sh, sh)
    assert d.irreps_out.dim == 25
    assert expressivity(d, "gaunt_fourier", rank=True).bilinear_rank == 25
    x, y = torch.randn(5, 9, dtype=torch.float64), torch.randn(5, 9, dtype=torch.float64)
    ex = make_executor(d, "sphere_grid")
    assert torch.allclose(ex(x, y), ex(y, x), atol=1e-12)
    cg = fully_connected(sh, sh, "0e + 1o + 1e + 2e + 2o + 3o + 3e + 4e")
    assert not torch.allclose(*(make_executor(cg, "naive")(a, b, torch.ones(cg.weight_numel, dtype=torch.float64))
                                for a, b in ((x, y), (y, x))))


def test_gaunt_backends_on_a_cg_descriptor_reach_nothing():
    d = channelwise("2x0e + 2x1o", "0e + 1o")
    rows = {e.backend: e for e in expressivity_table(d, rank=True)}
    assert {"naive", "sparse_cg", "gaunt_fourier", "sphere_grid"} <= set(rows)
    assert rows["sparse_cg"].bilinear_rank == rows["naive"].bilinear_rank > 0
    assert rows["sparse_cg"].family_dim == rows["sparse_cg"].independent_weights == _numerical_rank(d)
    for b in ("gaunt_fourier", "sphere_grid"):
        assert rows[b].paths == () and rows[b].unreachable == d.paths
        assert (rows[b].bilinear_rank, rows[b].family_dim, rows[b].independent_weights) == (0, 0, 0)
    assert rows["sparse_cg"].to_dict()["bilinear_rank"] == rows["sparse_cg"].bilinear_rank


def test_channelwise_gaunt_descriptor_loses_the_odd_paths():
    """The same block pairs with Gaunt coefficients: parity-odd couplings are gone, the weights
    of the remaining paths are still independent (on naive / sparse_cg)."""
    cg, ga = channelwise("2x1o + 2x2e", "0e + 1o + 2e"), channelwise("2x1o + 2x2e", "0e + 1o + 2e",
                                                                     coefficients="gaunt")
    e_cg, e_ga = expressivity(cg, rank=True), expressivity(ga, rank=True)
    assert e_cg.parity_odd and not e_ga.parity_odd
    assert e_ga.independent_weights == _numerical_rank(ga) == e_ga.family_dim < e_cg.independent_weights
    assert e_ga.bilinear_rank < e_cg.bilinear_rank
