"""The Gaunt edge product as per-edge matrices (``tp.GauntEdgeMatrix``, ``tp.edge_matrix_conv``,
``PotentialConfig.gaunt_edge="matrix"``) against the fused sparse-kernel path and an independent
dense oracle: the op (native kernel and PyTorch fallback, gradcheck / gradgradcheck), the whole
potential (energies, forces, stress, parameter gradients of a force loss, float64 and float32),
equivariance of the whole potential through ``equikit.check``, negative controls, bad input."""

import numpy as np
import pytest
import torch
from potential_test_helpers import cluster, copper, energy_forces, molecules, outputs

from equikit.check import assert_equivariant, equivariance_error
from equikit.data.atoms import AtomsBatch
from equikit.groups import E, NodePermutation, PointCloud
from equikit.models.potential import Potential, PotentialConfig
from equikit.o3 import Irreps, gaunt
from equikit.tp import GauntEdgeMatrix, edge_matrix_conv, gaunt_edge_matrix
from equikit.tp import _edge_matrix as em

RTOL = {torch.float32: 1e-5, torch.float64: 1e-10}
SH = "1x0e + 1x1o + 1x2e + 1x3o"


# --------------------------------------------------------------------------- the op
def _dense_gaunt(irreps_in: str, lmax: int) -> torch.Tensor:
    """Oracle ``G[i, j, k]`` from ``o3.gaunt`` (integrals of three real harmonics), independent of
    the Clebsch-Gordan construction: ``sqrt(4 pi) * gaunt`` is the Gaunt coefficient of component
    harmonics (docs/tp.md); only natural-parity output degrees (the product keeps l1 + l2 + l3 even)."""
    ir_in, ir_sh = Irreps(irreps_in), Irreps(SH)
    outs = Irreps("+".join(f"1x{l}{'e' if l % 2 == 0 else 'o'}" for l in range(lmax + 1)))
    g = torch.zeros(ir_in.dim, ir_sh.dim, outs.dim, dtype=torch.float64)
    for (_, a), sa in zip(ir_in, ir_in.slices()):
        for (_, b), sb in zip(ir_sh, ir_sh.slices()):
            for (_, c), sc in zip(outs, outs.slices()):
                if (a.l + b.l + c.l) % 2 == 0 and abs(a.l - b.l) <= c.l <= a.l + b.l:
                    g[sa, sb, sc] = gaunt(a.l, b.l, c.l, dtype=torch.float64) * (4 * np.pi) ** 0.5
    return g


@pytest.mark.parametrize("irreps_in", ["1x0e", "1x0e + 1x1o", "1x0e + 1x1o + 1x2e"])
def test_gaunt_matrix_equals_integrals_of_three_harmonics(irreps_in):
    g, out = gaunt_edge_matrix(irreps_in, SH, 3)
    assert str(out) == "1x0e+1x1o+1x2e+1x3o"
    d_in = Irreps(irreps_in).dim
    dense = _dense_gaunt(irreps_in, 3)  # (d_in, 16, 16)
    torch.testing.assert_close(g.reshape(16, d_in, 16), dense.permute(1, 0, 2), rtol=0, atol=1e-12)
    assert dense.abs().max() > 0.1


def _operands(dtype, e=23, n=6, c=3, d_in=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(e, c, d_in, generator=g, dtype=torch.float64).to(dtype)
    t = torch.randn(e, d_in, 16, generator=g, dtype=torch.float64).to(dtype)
    w = torch.randn(e, c, 4, generator=g, dtype=torch.float64).to(dtype)
    dst = torch.randint(0, n, (e,), generator=g)
    blocks = torch.tensor([0, 1, 1, 1, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3])
    return x, t, w, blocks, dst, n


def _loop_oracle(x, t, w, blocks, dst, n):
    """The definition, one edge at a time in float64."""
    out = torch.zeros(n, x.shape[1], t.shape[2], dtype=torch.float64)
    for e in range(x.shape[0]):
        out[dst[e]] += (x[e].double() @ t[e].double()) * w[e].double()[:, blocks]
    return out


@pytest.fixture(params=["native", "torch"])
def path(request, monkeypatch):
    if request.param == "native":
        if not em.available():
            pytest.skip("no C++ compiler: the native kernel is not built here")
    else:
        monkeypatch.setenv("EQUIKIT_NO_NATIVE", "1")
    return request.param


def test_conv_equals_the_definition(dtype, path):
    ops = _operands(dtype)
    out = edge_matrix_conv(*ops)
    ref = _loop_oracle(*ops)
    assert ref.abs().max() > 1.0
    torch.testing.assert_close(out.double(), ref, rtol=0, atol=RTOL[dtype] * float(ref.abs().max()))


def test_native_kernel_used_and_equal_to_fallback(dtype, monkeypatch):
    if not em.available():
        pytest.skip("no C++ compiler: the native kernel is not built here")
    calls = []
    real = em._native
    monkeypatch.setattr(em, "_native", lambda *a: calls.append(a[0]) or real(*a))
    ops = [o.requires_grad_() if isinstance(o, torch.Tensor) and o.is_floating_point() else o
           for o in _operands(dtype, seed=1)]
    x, t, w = ops[:3]
    out = edge_matrix_conv(*ops)
    multi = []
    real_multi = em._native_backward
    monkeypatch.setattr(em, "_native_backward", lambda *a: multi.append(a[0]) or real_multi(*a))
    # no graph of the gradients: the three in one kernel pass
    first = torch.autograd.grad((out ** 2).sum(), (x, t, w), retain_graph=True)
    assert multi == [(True, True, True)]
    gx, gt, gw = torch.autograd.grad((out ** 2).sum(), (x, t, w), create_graph=True)
    second = torch.autograd.grad((gx ** 2).sum() + (gt ** 2).sum() + (gw ** 2).sum(), (x, t, w))
    assert sorted(set(calls)) == [0, 1, 2, 3]  # every slot ran in the kernel
    native = [out, gx, gt, gw, *second, *first]
    monkeypatch.setattr(em, "load_library", lambda *a, **k: None)  # as without a compiler
    em._library.cache_clear()
    try:
        assert not em.available()
        out = edge_matrix_conv(*ops)
        first = torch.autograd.grad((out ** 2).sum(), (x, t, w), retain_graph=True)
        gx, gt, gw = torch.autograd.grad((out ** 2).sum(), (x, t, w), create_graph=True)
        second = torch.autograd.grad((gx ** 2).sum() + (gt ** 2).sum() + (gw ** 2).sum(), (x, t, w))
    finally:
        monkeypatch.undo()
        em._library.cache_clear()
    for a, b in zip(native, [out, gx, gt, gw, *second, *first], strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=RTOL[dtype] * float(b.detach().abs().max()))


def test_gradcheck_and_gradgradcheck(path):
    x, t, w, blocks, dst, n = _operands(torch.float64, e=9, n=4, c=2, d_in=4, seed=2)
    ins = tuple(v.clone().requires_grad_() for v in (x, t, w))

    def f(x, t, w):
        return edge_matrix_conv(x, t, w, blocks, dst, n)

    assert torch.autograd.gradcheck(f, ins)
    assert torch.autograd.gradgradcheck(f, ins)


def test_module_equals_gaunt_product_oracle(dtype):
    """GauntEdgeMatrix per edge (one edge per centre) against the dense Gaunt integrals times the
    output weights, all in the channel-major layout."""
    layer = GauntEdgeMatrix("1x0e + 1x1o", SH, lmax=3).to(dtype)
    g = torch.Generator().manual_seed(5)
    e, c = 7, 3
    x = torch.randn(e, c, 4, generator=g, dtype=torch.float64).to(dtype)
    sh = torch.randn(e, 16, generator=g, dtype=torch.float64).to(dtype)
    w = torch.randn(e, c, 4, generator=g, dtype=torch.float64).to(dtype)
    out = layer(x, sh, w, torch.arange(e), e)
    dense = _dense_gaunt("1x0e + 1x1o", 3)
    ref = torch.einsum("eci,ej,ijk->eck", x.double(), sh.double(), dense) * w.double()[:, :, layer.blocks]
    torch.testing.assert_close(out.double(), ref, rtol=0, atol=RTOL[dtype] * float(ref.abs().max()))


@pytest.mark.parametrize("irreps_in, lmax", [("1x0e + 1x1o + 1x2e", 3), ("1x0e + 1x1o", 2),
                                             ("1x0e + 1x1o + 1x2e + 1x3o", 4)],
                         ids=["d9x16", "d4x9", "d16x25-generic"])
def test_module_other_sizes_native_equals_oracle(irreps_in, lmax, path):
    """The kernel's compile-time sizes (9 x 16, 4 x 9) and its generic path (16 x 25) against the dense
    Gaunt integrals, float64, with several edges per centre."""
    layer = GauntEdgeMatrix(irreps_in, "+".join(f"1x{l}{'e' if l % 2 == 0 else 'o'}" for l in range(lmax + 1)),
                            lmax=lmax).double()
    g = torch.Generator().manual_seed(6)
    e, c, n = 11, 3, 4
    d_in, d_y, d_out = Irreps(irreps_in).dim, layer.irreps_sh.dim, layer.irreps_out.dim
    x = torch.randn(e, c, d_in, generator=g, dtype=torch.float64)
    sh = torch.randn(e, d_y, generator=g, dtype=torch.float64)
    w = torch.randn(e, c, len(layer.irreps_out), generator=g, dtype=torch.float64)
    dst = torch.randint(0, n, (e,), generator=g)
    out = layer(x, sh, w, dst, n)
    dense = torch.zeros(d_in, d_y, d_out, dtype=torch.float64)
    ir_in, ir_sh, ir_out = Irreps(irreps_in), layer.irreps_sh, layer.irreps_out
    for (_, a), sa in zip(ir_in, ir_in.slices()):
        for (_, b), sb in zip(ir_sh, ir_sh.slices()):
            for (_, cc), sc in zip(ir_out, ir_out.slices()):
                if (a.l + b.l + cc.l) % 2 == 0 and abs(a.l - b.l) <= cc.l <= a.l + b.l:
                    dense[sa, sb, sc] = gaunt(a.l, b.l, cc.l, dtype=torch.float64) * (4 * np.pi) ** 0.5
    z = torch.einsum("eci,ej,ijk->eck", x, sh, dense) * w[:, :, layer.blocks]
    ref = torch.zeros(n, c, d_out, dtype=torch.float64).index_add_(0, dst, z)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-12 * float(ref.abs().max()))


def test_unsorted_blocks_run_the_fallback_and_agree():
    x, t, w, _, dst, n = _operands(torch.float64, seed=7)
    blocks = torch.tensor([3, 0, 1, 1, 2, 2, 1, 2, 2, 3, 3, 0, 3, 3, 3, 2])  # not contiguous ranges
    out = edge_matrix_conv(x, t, w, blocks, dst, n)
    ref = _loop_oracle(x, t, w, blocks, dst, n)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-12 * float(ref.abs().max()))


def test_negative_control_perturbed_gaunt_tensor_differs():
    layer = GauntEdgeMatrix("1x0e + 1x1o", SH, lmax=3).double()
    x, _, w, _, dst, n = _operands(torch.float64, seed=3)
    sh = torch.randn(x.shape[0], 16, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    a = layer(x, sh, w, dst, n)
    with torch.no_grad():
        layer.matrix[5, 7] += 1e-3
    assert float((layer(x, sh, w, dst, n) - a).abs().max()) > 1e-5


@pytest.mark.parametrize("kw, match", [
    (dict(x=torch.ones(3, 2)), "`x` must be a floating tensor with 3 dims"),
    (dict(t=torch.ones(3, 4, 9)), "`t` must be"),
    (dict(w_out=torch.ones(3, 2, 2)), "`w_out` must be"),
    (dict(dst=torch.tensor([0, 5, 1])), "`dst` must lie in 0..1"),
    (dict(dst=torch.zeros(2, dtype=torch.long)), "`dst` must be an int tensor"),
    (dict(num_nodes=-1), "`num_nodes` must be an int >= 0"),
    (dict(blocks=torch.ones(16)), "`blocks` must be an int tensor"),
])
def test_bad_input_raises(kw, match):
    args = dict(x=torch.ones(3, 2, 4), t=torch.ones(3, 4, 16), w_out=torch.ones(3, 2, 4),
                blocks=torch.tensor([0, 1, 1, 1, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3]),
                dst=torch.tensor([0, 1, 1]), num_nodes=2)
    args.update(kw)
    with pytest.raises(ValueError, match="edge_matrix_conv: " + match.replace("(", r"\(")):
        edge_matrix_conv(**args)
    with pytest.raises(ValueError, match="gaunt_edge_matrix: `irreps_in` must list one channel"):
        gaunt_edge_matrix("2x0e", SH, 3)


# --------------------------------------------------------------------------- the potential
def _cfg(dtype, **kw):
    base = dict(hidden_irreps="4x0e + 4x1o", max_ell=3, correlation=2, cutoff=3.0, radial="spline",
                tp_product="gaunt", product="grid_mlp", grid_hidden=8, grid_condition="scalars",
                num_interactions=2, avg_num_neighbors=4.0, readout_hidden=4, dtype=dtype)
    base.update(kw)
    return PotentialConfig(**base)


def _pair(dtype, **kw):
    torch.manual_seed(0)
    new = Potential(_cfg(dtype, gaunt_edge="matrix", **kw))
    old = Potential(_cfg(dtype, gaunt_edge="fused", **kw))
    old.load_state_dict(new.state_dict())
    assert new.interactions[1].edge_matrix and old.interactions[1].fused
    return new, old


@pytest.mark.parametrize("case", ["molecules", "copper"])
def test_potential_matrix_equals_fused(dtype, case, path):
    elements = (1, 6, 8) if case == "molecules" else (29,)
    new, old = _pair(str(dtype).split(".")[-1], atomic_numbers=elements)
    batch = (molecules if case == "molecules" else copper)(dtype)
    stress = case == "copper"
    a, b = outputs(new, batch, stress), outputs(old, batch, stress)
    assert float(b[1].detach().abs().max()) > 1e-3  # nonzero forces: not a vacuous comparison
    # float32: 1e-5 of each tensor's scale (the two paths sum ~10^2-10^3 products in different orders;
    # measured up to 3.1e-6 on a parameter gradient), float64 1e-10
    tol = RTOL[dtype]
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=0, atol=tol * max(float(y.detach().abs().max()), 1e-12))


def test_potential_matrix_equals_fused_inference(dtype, path):
    """Energy and forces without a graph of the gradients (MD / inference: the one-pass backward)."""
    new, old = _pair(str(dtype).split(".")[-1], atomic_numbers=(29,))
    batch = copper(dtype)
    with torch.no_grad():
        a, b = new(batch), old(batch)
    assert float(b["forces"].abs().max()) > 1e-3
    for k in ("energy", "forces"):
        torch.testing.assert_close(a[k].detach(), b[k].detach(), rtol=0,
                                   atol=RTOL[dtype] * float(b[k].detach().abs().max()))


def test_potential_without_edges_equals_fused():
    """Atoms beyond the cutoff of each other: no edges (E = 0), only the element energies' readout."""
    new, old = _pair("float64", atomic_numbers=(1, 8))
    b = AtomsBatch.from_arrays(positions=torch.tensor([[0.0, 0, 0], [10.0, 0, 0]]), numbers=torch.tensor([8, 1]),
                               natoms=torch.tensor([2]), dtype=torch.float64)
    a, o = outputs(new, b, False), outputs(old, b, False)
    for x, y in zip(a, o):
        torch.testing.assert_close(x, y, rtol=0, atol=1e-12)
    assert float(a[1].detach().abs().max()) == 0.0  # no neighbours: no forces


def test_potential_negative_control_other_gaunt_tensor_differs():
    """The comparison above can fail: a perturbed Gaunt matrix in one layer moves the forces."""
    new, old = _pair("float64", atomic_numbers=(1, 6, 8))
    with torch.no_grad():
        new.interactions[1].edge.matrix[3, 20] += 1e-3
    batch = molecules(torch.float64)
    assert float((new(batch)["forces"] - old(batch)["forces"]).abs().max()) > 1e-7


E3_OUT = PointCloud(E(3), pos=None, vectors=("forces",), scalars=("energy",))


def test_potential_e3_and_permutation_equivariance(dtype):
    torch.manual_seed(0)
    model = Potential(_cfg(str(dtype).split(".")[-1], atomic_numbers=(1, 8), gaunt_edge="matrix"))
    assert all(layer.edge_matrix for layer in model.interactions)
    x = cluster(dtype)
    assert_equivariant(energy_forces(model), x, PointCloud(E(3), scalars=("numbers",)), E3_OUT,
                       n_samples=8, generator=1, rtol=RTOL[dtype])
    A, _ = E(3).as_affine(E(3).sample(8, generator=1, dtype=torch.float64))
    assert (torch.linalg.det(A.double()) < 0).any()  # reflections among the checked elements
    n = x["pos"].shape[0]
    assert_equivariant(energy_forces(model), x, NodePermutation(n, nodes={"pos": -2, "numbers": -1}),
                       NodePermutation(n, nodes={"forces": -2}, invariant=("energy",)), n_samples=6, generator=3,
                       rtol=RTOL[dtype])


def test_potential_negative_control_wrong_harmonics_break_equivariance(dtype):
    """T built from a wrong Y (two components of Y_1 exchanged: not a rotation of the edge vector)
    must fail the check (a constant factor per degree would not: it commutes with the rotations)."""
    torch.manual_seed(0)
    model = Potential(_cfg(str(dtype).split(".")[-1], atomic_numbers=(1, 8), gaunt_edge="matrix"))
    with torch.no_grad():
        for layer in model.interactions:
            layer.edge.matrix[[1, 2]] = layer.edge.matrix[[2, 1]].clone()  # rows of Y_1 components 0 and 1
    report = equivariance_error(energy_forces(model), cluster(dtype), PointCloud(E(3), scalars=("numbers",)),
                                E3_OUT, n_samples=8, generator=1)
    assert not report.passed(rtol=RTOL[dtype])


@pytest.mark.parametrize("kw, match", [
    (dict(gaunt_edge="dense"), "`gaunt_edge` must be 'auto', 'matrix' or 'fused'"),
    (dict(gaunt_edge="matrix", tp_backend="sphere_grid"), "gaunt_edge='matrix' replaces"),
    (dict(gaunt_edge="matrix", tp_product="clebsch_gordan"), "gaunt_edge='matrix' runs the Gaunt edge product"),
])
def test_bad_config_raises(kw, match):
    with pytest.raises(ValueError, match=r"PotentialConfig: .*" + match.replace("(", r"\(")):
        PotentialConfig(**kw)


def test_auto_picks_matrix_for_sparse_cg_and_fused_for_naive():
    torch.manual_seed(0)
    assert Potential(_cfg("float64")).interactions[0].edge_matrix
    naive = Potential(_cfg("float64", tp_backend="naive"))
    assert not naive.interactions[0].edge_matrix and naive.interactions[0].fused
