"""Radius graphs with periodic boundaries: the same (i, j, S) set as ASE's neighbour list on
random triclinic, tiny, slab and open structures; E(3) and permutation equivariance through
the checker (with a broken control); invariance under periodic images; gradients that give
ASE's Lennard-Jones forces and stress; validation."""

import itertools

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.calculators.lj import LennardJones
from ase.neighborlist import neighbor_list

from equikit.check import assert_equivariant, equivariance_error
from equikit.data import neighbors
from equikit.data.neighbors import edge_vectors, radius_graph
from equikit.groups import Compose, E, NodePermutation, PointCloud

METHODS = ["brute", "cells"]


def _triples(i, j, s) -> list:
    return sorted(zip(np.asarray(i).tolist(), np.asarray(j).tolist(), map(tuple, np.asarray(s).tolist())))


def _ours(nbrs) -> list:
    return _triples(nbrs.edge_index[1], nbrs.edge_index[0], nbrs.shifts)


def _ase(pos, cell, pbc, cutoff, self_interaction=False) -> list:
    atoms = Atoms(positions=np.asarray(pos, dtype=np.float64), cell=np.asarray(cell, dtype=np.float64), pbc=pbc)
    i, j, s = neighbor_list("ijS", atoms, cutoff, self_interaction=self_interaction)
    return _triples(i, j, s)


def _random_structure(rng, n, pbc, dtype, scale=(0.6, 4.0)):
    """A random triclinic (skewed) cell and atoms partly outside it (to test wrapping)."""
    cell = rng.normal(size=(3, 3)) * rng.uniform(0.2, 0.6) + np.diag(rng.uniform(*scale, size=3))
    pos = rng.uniform(-0.3, 1.3, size=(n, 3)) @ cell
    # round to the test dtype: ASE then sees exactly the numbers we search
    pos_t, cell_t = torch.tensor(pos, dtype=dtype), torch.tensor(cell, dtype=dtype)
    return pos_t, cell_t, np.array(pbc)


PBCS = [(True, True, True), (True, True, False), (False, True, False), (False, False, False)]


@pytest.fixture(params=["native", "torch"])
def scan(request, monkeypatch):
    """Both candidate scans: the C kernel and the pure-PyTorch fallback (loader patched)."""
    if request.param == "torch":
        monkeypatch.setattr(neighbors, "_native", lambda: None)
    elif neighbors._native() is None:
        pytest.skip("no C compiler here (or EQUIKIT_NO_NATIVE is set): the PyTorch path is tested")
    return request.param


# the search runs in float64 whatever the input dtype, so the PyTorch scan needs one dtype
SCAN_DTYPES = [("native", torch.float32), ("native", torch.float64), ("torch", torch.float64)]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("pbc", PBCS, ids=["3d", "slab", "wire", "open"])
@pytest.mark.parametrize(("scan", "dtype"), SCAN_DTYPES, ids=["native-f32", "native-f64", "torch-f64"],
                         indirect=["scan"])
def test_same_triples_as_ase_on_random_triclinic_cells(pbc, method, dtype, scan):
    rng = np.random.default_rng(10 * PBCS.index(pbc) + METHODS.index(method))  # fixed seeds
    for _ in range(4):
        n = int(rng.integers(1, 14))
        cutoff = float(rng.uniform(0.8, 5.0))  # often > the cell: many images per pair
        pos, cell, flags = _random_structure(rng, n, pbc, dtype)
        nbrs = radius_graph(pos, cutoff, cell=cell, pbc=flags.tolist(), method=method)
        expected = _ase(pos.double(), cell.double(), flags, cutoff)
        assert _ours(nbrs) == expected  # also: no duplicate edges (sorted lists, not sets)
        assert nbrs.vectors.dtype == dtype
        lengths = nbrs.vectors.double().norm(dim=1)
        assert bool((lengths < cutoff * (1 + 1e-5)).all())


@pytest.mark.parametrize("method", METHODS)
def test_one_atom_cell_three_times_smaller_than_the_cutoff(method, dtype):
    """Every lattice point within the cutoff is a neighbour of the single atom: counted
    here by enumerating integer vectors (independent of both codes), and equal to ASE."""
    length, cutoff = 1.25, 3.8  # 3.04 cell lengths; no lattice distance 1.25 sqrt(k) near 3.8
    cell = torch.eye(3, dtype=dtype) * length
    pos = torch.tensor([[0.2, 0.4, 0.1]], dtype=dtype)
    nbrs = radius_graph(pos, cutoff, cell=cell, method=method)
    grid = np.array(list(itertools.product(range(-4, 5), repeat=3)))
    inside = (np.linalg.norm(grid * length, axis=1) < cutoff) & (np.abs(grid).sum(1) > 0)
    assert nbrs.edge_index.shape[1] == int(inside.sum())
    assert _ours(nbrs) == _ase(pos.double(), cell.double(), (True,) * 3, cutoff)
    assert set(map(tuple, nbrs.shifts.tolist())) == set(map(tuple, grid[inside].tolist()))


def test_self_interaction_adds_exactly_the_zero_shift_self_pairs():
    rng = np.random.default_rng(3)
    pos, cell, _ = _random_structure(rng, 7, (True,) * 3, torch.float64)
    without = _ours(radius_graph(pos, 3.0, cell=cell))
    with_self = _ours(radius_graph(pos, 3.0, cell=cell, self_interaction=True))
    assert sorted(without + [(i, i, (0, 0, 0)) for i in range(7)]) == with_self
    assert with_self == _ase(pos, cell, (True,) * 3, 3.0, self_interaction=True)


def test_zero_cell_vector_along_a_non_periodic_direction():
    """A slab whose cell has no third vector (as in many surface files)."""
    rng = np.random.default_rng(4)
    cell = torch.tensor([[2.5, 0.0, 0.0], [0.7, 2.2, 0.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    pos = torch.tensor(rng.uniform(0, 1, (9, 3)) * [2.5, 2.2, 6.0])
    for method in METHODS:
        nbrs = radius_graph(pos, 3.1, cell=cell, pbc=(True, True, False), method=method)
        assert _ours(nbrs) == _ase(pos, cell, (True, True, False), 3.1)
        assert bool((nbrs.shifts[:, 2] == 0).all())


@pytest.mark.parametrize("method", METHODS)
def test_batch_of_different_cells_equals_each_structure_alone(method, dtype):
    rng = np.random.default_rng(5)
    sizes, pbcs = [3, 1, 6, 4], [(True,) * 3, (True,) * 3, (True, True, False), (False,) * 3]
    parts = [_random_structure(rng, n, p, dtype) for n, p in zip(sizes, pbcs)]
    pos = torch.cat([p for p, _, _ in parts])
    cell = torch.stack([c for _, c, _ in parts])
    batch = torch.repeat_interleave(torch.arange(4), torch.tensor(sizes))
    nbrs = radius_graph(pos, 2.7, batch=batch, cell=cell, pbc=torch.tensor(pbcs), method=method)
    expected, offset = [], 0
    for (p, c, f), n in zip(parts, sizes):
        expected += [(i + offset, j + offset, s) for i, j, s in _ase(p.double(), c.double(), f, 2.7)]
        offset += n
    assert _ours(nbrs) == sorted(expected)
    assert bool((batch[nbrs.edge_index[0]] == batch[nbrs.edge_index[1]]).all())
    ref = edge_vectors(pos.double(), nbrs.edge_index, nbrs.shifts, cell.double(), batch)
    torch.testing.assert_close(nbrs.vectors.double(), ref, rtol=0, atol=1e-5 if dtype == torch.float32 else 1e-12)


def test_native_and_pytorch_scans_give_identical_edges_in_the_same_order(monkeypatch):
    if neighbors._native() is None:
        pytest.skip("no C compiler here (or EQUIKIT_NO_NATIVE is set)")
    rng = np.random.default_rng(13)
    pos, cell, _ = _random_structure(rng, 40, (True, True, False), torch.float64, scale=(4.0, 7.0))
    native = {m: radius_graph(pos, 3.4, cell=cell, pbc=(True, True, False), method=m) for m in METHODS}
    monkeypatch.setattr(neighbors, "_native", lambda: None)
    for m in METHODS:
        fallback = radius_graph(pos, 3.4, cell=cell, pbc=(True, True, False), method=m)
        assert torch.equal(native[m].edge_index, fallback.edge_index)
        assert torch.equal(native[m].shifts, fallback.shifts)


def test_large_cell_binning_equals_ase_and_brute_force(scan):
    """500 atoms: the O(N) binning path (with many bins per direction) against both."""
    rng = np.random.default_rng(6)
    cell = np.diag([17.0, 15.0, 16.0]) + rng.normal(size=(3, 3)) * 1.5
    pos = torch.tensor(rng.uniform(0, 1, (500, 3)) @ cell)
    cell = torch.tensor(cell)
    cells = radius_graph(pos, 3.3, cell=cell, method="cells")
    assert _ours(cells) == _ours(radius_graph(pos, 3.3, cell=cell, method="brute"))
    assert _ours(cells) == _ase(pos, cell, (True,) * 3, 3.3)
    open_ = radius_graph(pos * 3, 3.3, method="cells")  # a sparse open cloud
    assert _ours(open_) == _ase(pos * 3, np.zeros((3, 3)), (False,) * 3, 3.3)


def test_molecule_without_cell_and_empty_input(dtype):
    rng = np.random.default_rng(7)
    pos = torch.tensor(rng.normal(size=(12, 3)) * 1.5, dtype=dtype)
    nbrs = radius_graph(pos, 2.0)
    assert _ours(nbrs) == _ase(pos.double(), np.zeros((3, 3)), (False,) * 3, 2.0)
    assert bool((nbrs.shifts == 0).all())
    empty = radius_graph(torch.zeros(0, 3, dtype=dtype), 2.0)
    assert empty.edge_index.shape == (2, 0) and empty.shifts.shape == (0, 3) and empty.vectors.shape == (0, 3)


def test_edge_set_is_symmetric_and_ordered_by_centre():
    rng = np.random.default_rng(8)
    pos, cell, _ = _random_structure(rng, 6, (True,) * 3, torch.float64)
    nbrs = radius_graph(pos, 3.5, cell=cell)
    triples = _ours(nbrs)
    assert sorted((j, i, tuple(-x for x in s)) for i, j, s in triples) == triples
    assert bool((nbrs.edge_index[1][1:] >= nbrs.edge_index[1][:-1]).all())


# --------------------------------------------------------------------------- symmetries
def _per_atom_features(graph_fn):
    """Per-atom sum of w(|r|) r over the neighbours (an O(3) vector) and of w(|r|) (a
    scalar): a function of the edge set that changes when the set is wrong."""

    def f(x):
        nbrs = graph_fn(x["pos"], x["cell"])
        r = nbrs.vectors
        w = torch.exp(-r.norm(dim=1))
        i = nbrs.edge_index[1]
        n = x["pos"].shape[0]
        v = torch.zeros(n, 3, dtype=r.dtype).index_add_(0, i, w[:, None] * r)
        c = torch.zeros(n, dtype=r.dtype).index_add_(0, i, w)
        return {"v": v, "c": c}

    return f


def _actions(n):
    perm_in = NodePermutation(n, nodes={"pos": -2}, invariant=("cell",))
    perm_out = NodePermutation(n, nodes={"v": -2, "c": -1})
    e3_in = PointCloud(E(3), vectors=("cell",))
    e3_out = PointCloud(E(3), pos=None, vectors=("v",), scalars=("c",))
    return Compose(perm_in, e3_in), Compose(perm_out, e3_out)


def _periodic_input(dtype, n=7):
    rng = np.random.default_rng(9)
    pos, cell, _ = _random_structure(rng, n, (True,) * 3, dtype, scale=(2.0, 3.0))
    return {"pos": pos, "cell": cell}


def test_equivariant_under_rigid_motions_reflections_and_relabelling(dtype):
    x = _periodic_input(dtype)
    act_in, act_out = _actions(7)
    for method in METHODS:
        f = _per_atom_features(lambda p, c, m=method: radius_graph(p, 3.2, cell=c, method=m))
        report = assert_equivariant(f, x, act_in, act_out, n_samples=12, generator=1)
        # the sampled O(3) parts include reflections
        assert report.passed()


def test_negative_control_a_box_search_without_the_distance_filter_fails():
    """Keeping every candidate of the cube |dx|,|dy|,|dz| < cutoff (a forgotten distance
    test) depends on the axes, so rotations change the edge set: the checker must fail."""

    def box_graph(p, c):
        wide = radius_graph(p, 3.2 * 3**0.5, cell=c)
        keep = wide.vectors.abs().amax(dim=1) < 3.2
        return type(wide)(wide.edge_index[:, keep], wide.shifts[keep], wide.vectors[keep])

    x = _periodic_input(torch.float64)
    act_in, act_out = _actions(7)
    report = equivariance_error(_per_atom_features(box_graph), x, act_in, act_out, n_samples=12, generator=1)
    assert not report.passed()
    assert report.rel_max > 1e-3


def test_invariant_under_moving_atoms_by_lattice_vectors(dtype):
    """Periodic images are the same atom: moving atom k by m_k @ cell changes its shifts by
    exactly m_i - m_j and leaves every edge vector unchanged. A control that forgets the
    shift in the vectors is not invariant."""
    rng = np.random.default_rng(10)
    pos, cell, _ = _random_structure(rng, 6, (True, True, False), dtype)
    pbc = (True, True, False)
    m = torch.tensor(rng.integers(-3, 4, size=(6, 3)))
    m[:, 2] = 0
    moved = pos + (m.to(dtype) @ cell)
    a = radius_graph(pos, 3.0, cell=cell, pbc=pbc)
    b = radius_graph(moved, 3.0, cell=cell, pbc=pbc)
    j, i = a.edge_index
    shifted = a.shifts - m[j] + m[i]
    expected = _triples(i, j, shifted)
    assert _ours(b) == expected
    # match a's edges to b's through their (i, j, shift) triples
    where_in_a = {(int(i[k]), int(j[k]), tuple(shifted[k].tolist())): k for k in range(len(i))}
    order = [where_in_a[(int(ib), int(jb), tuple(sb))] for jb, ib, sb in
             zip(b.edge_index[0], b.edge_index[1], b.shifts.tolist())]
    tol = 1e-4 if dtype == torch.float32 else 1e-10  # float32: |m @ cell| ~ 10 A rounds at ~1e-6 A
    torch.testing.assert_close(b.vectors, a.vectors[order], rtol=0, atol=tol)
    broken_a = a.vectors - a.shifts.to(dtype) @ cell
    broken_b = b.vectors - b.shifts.to(dtype) @ cell
    assert (broken_b - broken_a[order]).abs().max() > 1.0


def test_edge_vectors_are_translation_invariant(dtype):
    x = _periodic_input(dtype)
    t = torch.tensor([4.1, -7.3, 2.2], dtype=dtype)
    a = radius_graph(x["pos"], 3.2, cell=x["cell"])
    b = radius_graph(x["pos"] + t, 3.2, cell=x["cell"])
    assert _ours(a) == _ours(b)
    torch.testing.assert_close(b.vectors, a.vectors, rtol=0, atol=1e-5 if dtype == torch.float32 else 1e-12)


# --------------------------------------------------------------------------- gradients
def _lj_energy(pos, cell, cutoff, sigma=1.0, epsilon=1.0):
    """Plain pair LJ, shifted to zero at the cutoff like ASE's LennardJones(smooth=False):
    0.5 sum over directed edges of 4 eps ((s/r)^12 - (s/r)^6) - e0."""
    nbrs = radius_graph(pos, cutoff, cell=cell)
    r2 = (nbrs.vectors**2).sum(1)
    c6 = (sigma**2 / r2) ** 3
    e0 = 4 * epsilon * ((sigma / cutoff) ** 12 - (sigma / cutoff) ** 6)
    return 0.5 * (4 * epsilon * (c6 * c6 - c6) - e0).sum()


def _energy_forces_stress(pos, cell, cutoff):
    """Forces -dE/dpos and ASE's stress (1/V) dE/deps from a symmetric strain eps applied to
    positions and cell: the virial through autograd of the edge vectors."""
    eps = torch.zeros(3, 3, dtype=pos.dtype, requires_grad=True)
    pos = pos.clone().requires_grad_(True)
    strain = torch.eye(3, dtype=pos.dtype) + 0.5 * (eps + eps.T)
    energy = _lj_energy(pos @ strain, cell @ strain, cutoff)
    d_pos, d_eps = torch.autograd.grad(energy, (pos, eps))
    return energy.detach(), -d_pos, d_eps / torch.linalg.det(cell).abs()


def test_autograd_gives_ase_lennard_jones_energy_forces_and_stress():
    """ASE computes LJ forces and the virial stress pair by pair with its own neighbour
    list; ours come from autograd through radius_graph's vectors (positions and cell), in a
    small skewed cell where each pair has many images."""
    rng = np.random.default_rng(11)
    cell = np.array([[2.4, 0.0, 0.0], [0.9, 2.3, 0.0], [0.4, -0.6, 2.6]])
    pos = rng.uniform(0, 1, (4, 3)) @ cell
    atoms = Atoms("Ar4", positions=pos, cell=cell, pbc=True)
    atoms.calc = LennardJones(sigma=1.0, epsilon=1.0, rc=3.0, smooth=False)
    energy, forces, stress = _energy_forces_stress(torch.tensor(pos), torch.tensor(cell), 3.0)
    np.testing.assert_allclose(float(energy), atoms.get_potential_energy(), rtol=1e-10)
    f_ref = atoms.get_forces()
    np.testing.assert_allclose(forces.numpy(), f_ref, rtol=0, atol=1e-10 * np.abs(f_ref).max())
    s_ref = atoms.get_stress(voigt=False)
    np.testing.assert_allclose(stress.numpy(), s_ref, rtol=0, atol=1e-10 * np.abs(s_ref).max())


def test_forces_and_stress_equal_finite_differences_of_the_energy():
    rng = np.random.default_rng(12)
    cell = torch.tensor([[3.1, 0.2, 0.0], [0.5, 2.9, 0.1], [0.3, -0.4, 3.3]], dtype=torch.float64)
    pos = torch.tensor(rng.uniform(0, 1, (5, 3)), dtype=torch.float64) @ cell
    _, forces, stress = _energy_forces_stress(pos, cell, 2.9)
    h = 1e-5
    fd = torch.zeros(5, 3, dtype=torch.float64)
    for a in range(5):
        for k in range(3):
            dp = torch.zeros_like(pos)
            dp[a, k] = h
            fd[a, k] = -(_lj_energy(pos + dp, cell, 2.9) - _lj_energy(pos - dp, cell, 2.9)) / (2 * h)
    # central differences: error ~h^2 f''' ~ 1e-8 of the force scale (not 1e-10)
    torch.testing.assert_close(forces, fd, rtol=0, atol=1e-6 * float(fd.abs().max()))
    fd_s = torch.zeros(3, 3, dtype=torch.float64)
    vol = float(torch.linalg.det(cell))
    for a, b in itertools.product(range(3), repeat=2):
        e = torch.zeros(3, 3, dtype=torch.float64)
        e[a, b] = e[b, a] = h / 2 if a != b else h
        up, down = torch.eye(3, dtype=torch.float64) + e, torch.eye(3, dtype=torch.float64) - e
        fd_s[a, b] = (_lj_energy(pos @ up, cell @ up, 2.9) - _lj_energy(pos @ down, cell @ down, 2.9)) / (2 * h * vol)
    torch.testing.assert_close(stress, fd_s, rtol=0, atol=1e-6 * float(fd_s.abs().max()))


# --------------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"cutoff": -1.0}, ValueError, "cutoff"),
        ({"cutoff": 0.0}, ValueError, "cutoff"),
        ({"cutoff": float("nan")}, ValueError, "cutoff"),
        ({"cutoff": "3"}, TypeError, "cutoff"),
        ({"cell": torch.eye(2)}, ValueError, r"cell.*\(3, 3\)"),
        ({"cell": torch.eye(3).expand(2, 3, 3), "batch": torch.tensor([0, 0, 1, 2])}, ValueError, "3 structures"),
        ({"cell": torch.tensor([[1.0, 0, 0], [2.0, 0, 0], [0, 0, 1.0]])}, ValueError, "linearly dependent"),
        ({"cell": torch.eye(3, dtype=torch.float64)}, TypeError, "dtype"),
        ({"pbc": (True, False, False)}, ValueError, "no `cell`"),
        ({"cell": torch.eye(3), "pbc": (True, False)}, ValueError, "pbc"),
        ({"cell": torch.eye(3), "pbc": (1, 0, 0)}, TypeError, "pbc"),
        ({"batch": torch.zeros(3, dtype=torch.long)}, ValueError, "batch"),
        ({"batch": torch.zeros(4)}, TypeError, "batch"),
        ({"method": "fast"}, ValueError, "method"),
    ],
)
def test_bad_input_raises_with_the_argument_named(kwargs, error, match):
    args = {"pos": torch.rand(4, 3), "cutoff": 2.0, **kwargs}
    with pytest.raises(error, match=match) as info:
        radius_graph(**args)
    assert "radius_graph" in str(info.value)


def test_bad_positions_raise():
    with pytest.raises(ValueError, match=r"radius_graph: `pos` must have shape \(N, 3\)"):
        radius_graph(torch.rand(4, 2), 1.0)
    with pytest.raises(TypeError, match="radius_graph: `pos` must be a floating"):
        radius_graph(torch.ones(4, 3, dtype=torch.long), 1.0)
    with pytest.raises(ValueError, match="NaN"):
        radius_graph(torch.tensor([[0.0, float("nan"), 0.0]]), 1.0)
    singular_but_open = radius_graph(torch.rand(3, 3), 1.0, cell=torch.zeros(3, 3), pbc=(False,) * 3)
    assert bool((singular_but_open.shifts == 0).all())  # a zero cell is fine without pbc
