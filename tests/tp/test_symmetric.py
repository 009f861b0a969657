"""MACE's symmetric contraction: the basis U (counts from character theory, symmetry,
equivariance, orthogonality), the executors (recursive, monomial == naive in float64), autograd."""

import itertools

import numpy as np
import pytest
import torch

from equikit import tp
from equikit.groups import O
from equikit.o3 import Irreps, irreps_D

V3 = "0e + 1o + 2e + 3o"  # MACE's per-channel irreps at max_ell 3


# ------------------------------------------------------------------ independent count: characters
def _chi(l, th):
    return sum(np.cos(m * th) for m in range(-l, l + 1))


def _multiplicity(irreps_in, ir_out, nu):
    """Multiplicity of ``ir_out`` in ``Sym^nu(irreps_in)`` by integrating characters over O(3):
    ``chi_Sym^nu`` from the power sums (Newton), Haar measure ``(1 - cos t) / pi`` on SO(3),
    improper elements ``-R(t)`` weighted by the parities."""
    th = np.linspace(0.0, np.pi, 40001)
    haar = (1 - np.cos(th)) / np.pi
    blocks = [(ir.l, ir.p) for mul, ir in Irreps(irreps_in) for _ in range(mul)]
    (L, P) = (Irreps(ir_out)[0].ir.l, Irreps(ir_out)[0].ir.p)
    total = 0.0
    for s in (1, -1):
        def power(k, s=s):  # chi_V(g^k) with g = s R(t): g^k = s^k R(k t)
            return sum((p if s**k == -1 else 1) * _chi(l, k * th) for l, p in blocks)
        p1, p2, p3, p4 = (power(k) for k in (1, 2, 3, 4))
        sym = {1: p1, 2: (p1**2 + p2) / 2, 3: (p1**3 + 3 * p1 * p2 + 2 * p3) / 6,
               4: (p1**4 + 6 * p1**2 * p2 + 3 * p2**2 + 8 * p1 * p3 + 6 * p4) / 24}[nu]
        total += np.trapezoid(haar * sym * (P if s == -1 else 1) * _chi(L, th), th) / 2
    return round(total)


CASES = [(V3, ir, nu) for ir in ("0e", "1o", "1e", "2e", "0o") for nu in (1, 2, 3)] + [
    ("0e + 1o + 2e", "0e", 4), ("2x0e + 1o", "1o", 3), ("0e + 1e + 1o", "1e", 3), ("0o + 1o", "0o", 3),
]


@pytest.mark.parametrize("irreps_in, ir_out, nu", CASES)
def test_basis_size_is_the_multiplicity_in_sym_power(irreps_in, ir_out, nu):
    u = tp.symmetric_basis(irreps_in, ir_out, nu, dtype=torch.float64)
    assert u.shape[-1] == _multiplicity(irreps_in, ir_out, nu)


def test_mace_counts_of_unsymmetrised_paths():
    """MACE's U_matrix_real keeps every iterated CG path: for 0e the paths (l1, l2) -> l3 -> 0e
    are the triples with the triangle condition and even l1 + l2 + l3 (enumerated here
    independently); 21 for 0e+1o+2e -> 1o at correlation 3 is the shape of MACE's U matrix
    (3, 9, 9, 9, 21) reported by its users. Ours drop the redundancy: 8 < 23."""
    triples = sum(1 for a, b, c in itertools.product(range(4), repeat=3)
                  if abs(a - b) <= c <= a + b and (a + b + c) % 2 == 0)
    assert triples == 23
    assert [tp.count_coupling_paths(V3, "0e", nu) for nu in (1, 2, 3)] == [1, 4, triples]
    assert tp.count_coupling_paths("0e + 1o + 2e", "1o", 3) == 21
    assert [tp.symmetric_basis(V3, "0e", nu).shape[-1] for nu in (1, 2, 3)] == [1, 4, 8]
    assert [tp.symmetric_basis(V3, "1o", nu).shape[-1] for nu in (1, 2, 3)] == [1, 3, 12]


@pytest.mark.parametrize("ir_out", ["0e", "1o", "2e"])
def test_basis_symmetric_orthogonal_equivariant(ir_out):
    nu = 3
    u = tp.symmetric_basis(V3, ir_out, nu, dtype=torch.float64)
    m, K = u.shape[-2:]
    for perm in itertools.permutations(range(nu)):
        torch.testing.assert_close(u.permute(*perm, nu, nu + 1), u, rtol=0, atol=1e-12)
    flat = u.reshape(-1, K)
    torch.testing.assert_close(flat.T @ flat, m * torch.eye(K, dtype=torch.float64), rtol=0, atol=1e-10)
    g = O(3).sample(3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    for gi in g:
        D = irreps_D(Irreps(V3), gi)
        Do = irreps_D(Irreps(ir_out), gi)
        # f(D x) = D_out f(x) for f(x)_m = U_ijlm x_i x_j x_l
        left = torch.einsum("ia,jb,lc,ijlmk->abcmk", D, D, D, u)
        right = torch.einsum("mn,abcnk->abcmk", Do, u)
        torch.testing.assert_close(left, right, rtol=0, atol=1e-10)


def test_basis_negative_control_parity():
    """The 0e basis read as 0o breaks under reflections (parity is not a free label)."""
    u = tp.symmetric_basis(V3, "0e", 2, dtype=torch.float64)
    g = -torch.eye(3, dtype=torch.float64)
    D = irreps_D(Irreps(V3), g)
    left = torch.einsum("ai,bj,ijmk->abmk", D, D, u)
    assert torch.allclose(left, u, atol=1e-12)
    assert not torch.allclose(left, -u, atol=1e-3)


def test_basis_cached_and_validated():
    assert tp.symmetric_basis(V3, "0e", 3).data_ptr() != tp.symmetric_basis(V3, "0e", 3).data_ptr()  # fresh tensor
    from equikit.tp._symmetric import _symmetric_basis64
    _symmetric_basis64.cache_clear()
    tp.symmetric_basis(V3, "1o", 2)
    tp.symmetric_basis(V3, "1o", 2)
    assert _symmetric_basis64.cache_info().hits == 1
    with pytest.raises(ValueError, match=r"`nu` must be an int in 1\.\.4"):
        tp.symmetric_basis(V3, "0e", 5)
    with pytest.raises(ValueError, match="single irrep"):
        tp.symmetric_basis(V3, "0e + 1o", 2)
    with pytest.raises(ValueError, match="multiplicity 1"):
        tp.symmetric_contraction(V3, "2x0e", 2)
    with pytest.raises(ValueError, match="`correlation` must be an int"):
        tp.symmetric_contraction(V3, "0e", 0)


def test_descriptor_layout():
    d = tp.symmetric_contraction(V3, "0e + 1o + 1e", 3)
    assert d.num_basis(0) == (1, 4, 8) and d.num_basis(2) == (0, 0, 4)
    sl = d.weight_slices()
    assert [sl[(i, nu)].stop - sl[(i, nu)].start for i in range(3) for nu in (1, 2, 3)] == [1, 4, 8, 1, 3, 12, 0, 0, 4]
    assert d.weight_numel == 33
    assert d == tp.symmetric_contraction("1x0e+1x1o+1x2e+1x3o", "0e+1o+1e", 3) and hash(d) == hash(
        tp.symmetric_contraction(V3, "0e + 1o + 1e", 3))
    assert str(d.irreps_out_full(4)) == "4x0e+4x1o+4x1e"


# ------------------------------------------------------------------ executors
def _inputs(desc, n=23, c=5, e=3, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, desc.irreps_in.dim, generator=g, dtype=dtype)
    el = torch.randint(0, e, (n,), generator=g)
    w = torch.randn(e, desc.weight_numel, c, generator=g, dtype=dtype)
    return x, el, w


@pytest.mark.parametrize("irreps_in, irreps_out, corr", [
    (V3, "0e", 3), (V3, "0e + 1o", 3), ("0e + 1o + 2e", "0e + 1o + 1e + 2e", 3), ("0e + 1o", "0e + 1o", 1),
    ("2x0e + 1o", "1o + 0e", 2), ("0e + 1o + 2e", "0e", 4),
    ("0e + 1e", "1o + 0e + 1e", 2),  # 1o has no basis at any order: zero columns beside the others
])
@pytest.mark.parametrize("backend", ["recursive", "monomial"])
def test_fast_executors_equal_naive_float64(irreps_in, irreps_out, corr, backend):
    d = tp.symmetric_contraction(irreps_in, irreps_out, corr)
    x, el, w = _inputs(d)
    ref = tp.make_symmetric_executor(d, "naive")(x, el, w)
    for chunk in (2**25, 50):  # one chunk, and many chunks of a few nodes
        out = tp.make_symmetric_executor(d, backend, chunk_elements=chunk)(x, el, w)
        torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10 * ref.abs().max().item())
    # one element only (no per-node selection of the element's rows)
    ref1 = tp.make_symmetric_executor(d, "naive")(x, el * 0, w[:1])
    torch.testing.assert_close(tp.make_symmetric_executor(d, backend)(x, el * 0, w[:1]), ref1, rtol=1e-10,
                               atol=1e-10 * ref1.abs().max().item())


def test_monomial_plan_keeps_only_the_monomials_with_coefficients():
    """V3 -> 0e + 1o at correlation 3: of the 16 / 136 / 816 sorted monomials of orders 1 / 2 / 3,
    the order-3 ones with a nonzero coefficient (counted here from the basis directly) are all
    computed and no others; order 2 adds the prefixes they are built from, order 1 is x itself."""
    d = tp.symmetric_contraction(V3, "0e + 1o", 3)
    ex = tp.make_symmetric_executor(d, "monomial")
    us = [d.basis(i, 3, torch.float64) for i in range(2)]
    nonzero = sum(1 for m in itertools.combinations_with_replacement(range(16), 3)
                  if any(u[m].abs().max() > 1e-13 for u in us))
    assert ex._sizes[0] == 16 and ex._sizes[2] == nonzero < 816 // 2
    assert ex.num_monomials == sum(ex._sizes) < 816


@pytest.mark.parametrize("backend", ["recursive", "monomial"])
def test_fast_executors_float32_close_to_float64(backend):
    d = tp.symmetric_contraction(V3, "0e + 1o", 3)
    x, el, w = _inputs(d)
    ex = tp.make_symmetric_executor(d, backend)
    ref = ex(x, el, w)
    out = ex(x.float(), el, w.float())
    # float32 rounding over ~16^3 products per output: 1e-5 relative to the output scale
    torch.testing.assert_close(out.double(), ref, rtol=0, atol=1e-5 * ref.abs().max().item())


def test_executor_matches_hand_written_correlation_two():
    """For irreps_in = 1o, nu <= 2 into 0e: B = w1 * 0 + w2 * |x|^2 / sqrt(3) (by hand: the only
    symmetric invariant of a vector is its squared norm; the basis has |U|_F = 1)."""
    d = tp.symmetric_contraction("1o", "0e", 2)
    assert d.num_basis(0) == (0, 1)
    x, el, w = _inputs(d, n=7, c=2, e=2)
    out = tp.make_symmetric_executor(d, "recursive")(x, el, w)
    u = tp.symmetric_basis("1o", "0e", 2, dtype=torch.float64)
    sign = torch.sign(u[0, 0, 0, 0])
    expect = sign * w[el, 0, :] * (x**2).sum(-1) / 3**0.5
    torch.testing.assert_close(out, expect, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("backend", ["recursive", "monomial", "naive"])
def test_gradcheck_and_double_backward(backend):
    d = tp.symmetric_contraction("0e + 1o", "0e + 1o", 3)
    x, el, w = _inputs(d, n=3, c=2, e=2)
    x.requires_grad_(True)
    w.requires_grad_(True)
    ex = tp.make_symmetric_executor(d, backend)
    f = lambda a, b: ex(a, el, b)  # noqa: E731
    assert torch.autograd.gradcheck(f, (x, w))
    if backend != "naive":  # the oracle's second derivatives are compared in test_forces_train_through_it
        assert torch.autograd.gradgradcheck(f, (x, w))


@pytest.mark.parametrize("irreps_out", ["0e", "0e + 1o"])
def test_forces_train_through_it(irreps_out):
    """Energy = sum of the outputs; its gradient w.r.t. x (the 'forces') is differentiable w.r.t.
    the weights, and every backend agrees with the oracle on that second derivative."""
    d = tp.symmetric_contraction(V3, irreps_out, 3)
    x, el, w = _inputs(d, n=6, c=3)
    grads = []
    for backend in ("naive", "recursive", "monomial"):
        ww = w.clone().requires_grad_(True)
        xx = x.clone().requires_grad_(True)
        e = tp.make_symmetric_executor(d, backend)(xx, el, ww).sum()
        (f,) = torch.autograd.grad(e, xx, create_graph=True)
        (gw,) = torch.autograd.grad((f**2).sum(), ww)
        grads.append(gw)
    assert grads[0].abs().max() > 0
    for g in grads[1:]:
        torch.testing.assert_close(g, grads[0], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("backend", ["recursive", "monomial"])
def test_frozen_weight_products_follow_the_weights(backend):
    """Weights that need no gradient (MD, frozen models) keep their ``U W`` products between
    calls; the result must still follow every change of the weights: in place (version bump),
    a new tensor, another dtype; and the gradient path (requires_grad) never reads the cache."""
    d = tp.symmetric_contraction(V3, "0e + 1o", 3)
    x, el, w = _inputs(d)
    naive = tp.make_symmetric_executor(d, "naive")
    ex = tp.make_symmetric_executor(d, backend)
    torch.testing.assert_close(ex(x, el, w), naive(x, el, w), rtol=1e-10, atol=1e-10)
    assert ex._frozen  # the products were kept
    torch.testing.assert_close(ex(x, el, w), naive(x, el, w), rtol=1e-10, atol=1e-10)
    with torch.no_grad():
        w.mul_(-2.0)  # in place: same storage, new version
    torch.testing.assert_close(ex(x, el, w), naive(x, el, w), rtol=1e-10, atol=1e-10)
    w2 = torch.randn_like(w)
    torch.testing.assert_close(ex(x, el, w2), naive(x, el, w2), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(ex(x.float(), el, w2.float()).double(), naive(x, el, w2), rtol=0,
                               atol=1e-5 * naive(x, el, w2).abs().max().item())
    wg = w2.clone().requires_grad_(True)
    n_cached = len(ex._frozen)
    out = ex(x, el, wg)
    assert len(ex._frozen) == n_cached  # trained weights are never cached
    (g,) = torch.autograd.grad(out.sum(), wg)
    (g_ref,) = torch.autograd.grad(naive(x, el, wg).sum(), wg)
    torch.testing.assert_close(g, g_ref, rtol=1e-10, atol=1e-10)


def test_executor_validation():
    d = tp.symmetric_contraction("0e + 1o", "0e", 2)
    ex = tp.make_symmetric_executor(d)
    x, el, w = _inputs(d, n=5, c=2, e=3)
    with pytest.raises(ValueError, match=r"must lie in \[0, 3\)"):
        ex(x, torch.tensor([0, 1, 2, 3, 0]), w)
    with pytest.raises(ValueError, match=r"must lie in \[0, 3\)"):
        ex(x, torch.tensor([0, -1, 2, 0, 0]), w)
    with pytest.raises(TypeError, match="integer tensor"):
        ex(x, el.double(), w)
    with pytest.raises(ValueError, match=r"shape \(5,\)"):
        ex(x, el[:4], w)
    with pytest.raises(ValueError, match=r"`x` must have shape \(N, channels, 4\)"):
        ex(x[..., :3], el, w)
    with pytest.raises(ValueError, match=r"`weight` must have shape \(num_elements, 3, 2\)"):
        ex(x, el, w[:, :2])
    with pytest.raises(TypeError, match="dtype"):
        ex(x, el, w.float())
    with pytest.raises(ValueError, match="unknown backend 'fast'"):
        tp.make_symmetric_executor(d, "fast")
    assert set(tp.SYMMETRIC_BACKENDS) >= {"naive", "recursive", "monomial"}
    with pytest.raises(ValueError, match="`chunk_elements` must be an int >= 1"):
        tp.make_symmetric_executor(d, "monomial", chunk_elements=0)
    assert ex(x[:0], el[:0], w).shape == (0, 2)


@pytest.mark.parametrize("k", [4, 1, 7])  # k == d takes the multiply-and-sum route, others bmm
def test_rowdot_values_and_derivatives_to_third_order(k):
    """The recursive executor's row-wise product (and its hand-written derivative functions)
    equals einsum's values and first, second and third derivatives (float64)."""
    from equikit.tp._symmetric_backends import rowdot

    g = torch.Generator().manual_seed(5)
    x = torch.randn(6, 4, dtype=torch.float64, generator=g, requires_grad=True)
    y = torch.randn(6, 4, k, dtype=torch.float64, generator=g, requires_grad=True)
    assert torch.autograd.gradcheck(rowdot, (x, y))
    assert torch.autograd.gradgradcheck(rowdot, (x, y))
    probe = torch.randn(6, k, dtype=torch.float64, generator=g)

    def derivatives(fn):
        out = (fn(x, y) * probe).sum()
        gx, gy = torch.autograd.grad(out, (x, y), create_graph=True)
        s = (gx**2).sum() * (gy**2).sum()  # products of first derivatives: nonzero 2nd and 3rd order
        hx, hy = torch.autograd.grad(s, (x, y), create_graph=True)
        tx, ty = torch.autograd.grad((hx**3).sum() + (hy * y).sum(), (x, y))
        return fn(x, y), gx, gy, hx, hy, tx, ty

    ours = derivatives(rowdot)
    ref = derivatives(lambda a, b: torch.einsum("bd,bdk->bk", a, b))
    for a, b in zip(ours, ref):
        assert b.abs().max() > 0
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10 * b.abs().max().item())
