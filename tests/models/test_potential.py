"""The MACE-style potential: E(3) invariance of the energy and equivariance of the forces through
the public checker (reflections included), atom permutations, float32 and float64, a negative
control; periodic images; forces and stress against finite differences; the stress sign
against ASE's EMT; double backward and a short force-matching run; backends; config errors."""

import numpy as np
import pytest
import torch
from ase.build import bulk
from ase.calculators.emt import EMT

from equikit.check import assert_equivariant, equivariance_error
from equikit.data.atoms import AtomsBatch
from equikit.groups import E, NodePermutation, PointCloud
from equikit.models.potential import Potential, PotentialConfig

RTOL = {torch.float32: 1e-5, torch.float64: 1e-10}


def _config(**kw):
    base = dict(atomic_numbers=(1, 8), e0=(-0.5, -2.0), hidden_irreps="4x0e + 4x1o", max_ell=2, correlation=3,
                radial_mlp=(8,), cutoff=3.0, num_interactions=2, avg_num_neighbors=4.0, readout_hidden=4)
    base.update(kw)
    return PotentialConfig(**base)


def _model(dtype=torch.float64, **kw):
    torch.manual_seed(0)
    return Potential(_config(dtype=str(dtype).split(".")[-1], **kw))


def _cluster(dtype):
    g = torch.Generator().manual_seed(3)
    pos = (torch.rand(7, 3, generator=g, dtype=torch.float64) * 3.0).to(dtype)
    numbers = torch.tensor([8, 1, 1, 8, 1, 8, 1])
    return {"pos": pos, "numbers": numbers}


def _crystal(dtype=torch.float64, rattle=0.05, repeat=(1, 1, 1), seed=0):
    at = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(repeat)
    at.rattle(rattle, seed=seed)
    return at


def _batch(atoms_list, dtype=torch.float64):
    return AtomsBatch.from_arrays(
        positions=np.concatenate([a.get_positions() for a in atoms_list]),
        numbers=np.concatenate([a.get_atomic_numbers() for a in atoms_list]),
        natoms=[len(a) for a in atoms_list], cell=np.stack([np.asarray(a.cell) for a in atoms_list]),
        pbc=np.stack([a.pbc for a in atoms_list]), dtype=dtype)


def _energy_forces(model, pbc=False):
    def f(d):
        n = d["pos"].shape[0]
        cell = d["cell"][None] if pbc else None
        b = AtomsBatch.from_arrays(positions=d["pos"], numbers=d["numbers"], natoms=[n], cell=cell,
                                   pbc=torch.ones(1, 3, dtype=torch.bool) if pbc else None)
        out = model(b)
        return {"energy": out["energy"].detach(), "forces": out["forces"]}

    return f


E3_OUT = PointCloud(E(3), pos=None, vectors=("forces",), scalars=("energy",))


@pytest.mark.parametrize("variant", [{}, {"radial": "spline"}, {"tp_backend": "sphere_grid"},
                                     {"product": "grid_mlp", "grid_hidden": 8},
                                     {"tp_backend": "sparse_cg", "tp_product": "gaunt", "radial": "spline",
                                      "product": "grid_mlp", "grid_hidden": 8}],
                         ids=["mace", "spline", "grid", "gridmlp", "facet_sparse"])
def test_energy_invariant_forces_equivariant_under_e3(dtype, variant):
    model = _model(dtype, **variant)
    x = _cluster(dtype)
    report = assert_equivariant(_energy_forces(model), x, PointCloud(E(3), scalars=("numbers",)), E3_OUT,
                                n_samples=8, generator=1, rtol=RTOL[dtype])
    assert report.n_elements == 8
    A, _ = E(3).as_affine(E(3).sample(8, generator=1, dtype=torch.float64))  # the checker's elements
    assert (torch.linalg.det(A.double()) < 0).any()  # reflections are among the samples


def test_periodic_cell_e3_equivariance(dtype):
    """Rotating / reflecting positions and lattice vectors together, and translating the atoms."""
    model = _model(dtype, atomic_numbers=(29,), e0=None, cutoff=3.0)
    at = _crystal()
    x = {"pos": torch.tensor(at.get_positions(), dtype=dtype), "cell": torch.tensor(np.asarray(at.cell), dtype=dtype),
         "numbers": torch.tensor(at.get_atomic_numbers())}
    act = PointCloud(E(3), vectors=("cell",), scalars=("numbers",))
    assert_equivariant(_energy_forces(model, pbc=True), x, act, E3_OUT, n_samples=6, generator=2, rtol=RTOL[dtype])


def test_atom_permutation_equivariance(dtype):
    model = _model(dtype)
    x = _cluster(dtype)
    n = x["pos"].shape[0]
    act_in = NodePermutation(n, nodes={"pos": -2, "numbers": -1})
    act_out = NodePermutation(n, nodes={"forces": -2}, invariant=("energy",))
    assert_equivariant(_energy_forces(model), x, act_in, act_out, n_samples=6, generator=3, rtol=RTOL[dtype])


class _XComponentPotential(Potential):
    """Negative control: the edge length gets the raw x-component of the edge vector added."""

    def edge_features(self, vec):
        r, sh = super().edge_features(vec)
        return r + 0.3 * vec[:, 0], sh


def test_negative_control_x_component_breaks_invariance(dtype):
    torch.manual_seed(0)
    model = _XComponentPotential(_config(dtype=str(dtype).split(".")[-1]))
    report = equivariance_error(_energy_forces(model), _cluster(dtype), PointCloud(E(3), scalars=("numbers",)),
                                E3_OUT, n_samples=8, generator=1)
    assert not report.passed(rtol=RTOL[dtype])
    assert report.rel_max > 1e-3


def test_periodic_images_wrapping_and_supercell():
    model = _model(atomic_numbers=(29,), e0=(-1.25,), cutoff=4.0)
    at = _crystal()
    ref = model(_batch([at]), compute_stress=True)
    moved = at.copy()
    shifts = np.array([[1, 0, -2], [0, 3, 0], [-1, -1, 1], [2, 0, 0]])
    moved.positions = at.positions + shifts @ np.asarray(at.cell)
    out = model(_batch([moved]), compute_stress=True)
    torch.testing.assert_close(out["energy"], ref["energy"], rtol=1e-10, atol=0)
    torch.testing.assert_close(out["forces"], ref["forces"], rtol=1e-10, atol=1e-12)
    sup = model(_batch([at.repeat((2, 1, 1))]), compute_stress=True)
    torch.testing.assert_close(sup["energy"], 2 * ref["energy"], rtol=1e-10, atol=0)
    torch.testing.assert_close(sup["forces"], torch.cat([ref["forces"], ref["forces"]]), rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(sup["stress"], ref["stress"], rtol=1e-9, atol=1e-13)
    # a batch of two different structures equals each alone
    other = _crystal(seed=5)
    both = model(_batch([at, other]))
    alone = model(_batch([other]))
    torch.testing.assert_close(both["energy"], torch.cat([ref["energy"], alone["energy"]]), rtol=1e-10, atol=0)


def _assert_forces_are_minus_energy_differences(model, b, entries, h=1e-5):
    """Central differences of the energy at the (atom, axis) ``entries`` equal -forces (1e-6)."""
    forces = model(b)["forces"]
    for i, k in entries:
        e = []
        for s in (h, -h):
            p = b.positions.clone()
            p[i, k] += s
            moved = AtomsBatch(p, b.numbers, b.cell, b.pbc, b.batch)
            e.append(float(model(moved, compute_forces=False)["energy"].detach()))
        fd = -(e[0] - e[1]) / (2 * h)
        assert abs(fd - float(forces[i, k])) <= 1e-6 * max(abs(fd), 1e-3), (i, k, fd, float(forces[i, k]))


def test_forces_are_minus_finite_differences_of_energy():
    model = _model(atomic_numbers=(29,), e0=None, cutoff=4.0)
    _assert_forces_are_minus_energy_differences(model, _batch([_crystal()]), [(0, 0), (1, 2), (3, 1)])


def _strained_energy(energy_of_atoms, at, eps):
    a = at.copy()
    a.set_cell(np.asarray(at.cell) @ (np.eye(3) + eps), scale_atoms=True)
    return energy_of_atoms(a)


def _fd_stress(energy_of_atoms, at, h=1e-5):
    """Central differences of E under the symmetric strain (1 + eps), divided by the volume."""
    s = np.zeros((3, 3))
    for a_ in range(3):
        for b_ in range(3):
            eps = np.zeros((3, 3))
            eps[a_, b_] += 0.5 * h
            eps[b_, a_] += 0.5 * h
            plus, minus = _strained_energy(energy_of_atoms, at, eps), _strained_energy(energy_of_atoms, at, -eps)
            s[a_, b_] = (plus - minus) / (2 * h)
    return s / at.get_volume()


def test_stress_is_strain_derivative_with_ases_sign():
    # the finite-difference definition agrees with ASE's own EMT stress (the sign convention) ...
    at = _crystal(rattle=0.1)
    at.cell = np.asarray(at.cell) @ np.array([[1.02, 0.01, 0.0], [0.0, 0.99, 0.02], [0.0, 0.0, 1.01]])

    def emt_energy(a):
        a.calc = EMT()
        return a.get_potential_energy()

    probe = at.copy()
    probe.calc = EMT()
    np.testing.assert_allclose(_fd_stress(emt_energy, at), probe.get_stress(voigt=False), rtol=1e-5, atol=1e-8)
    # ... and the model's autograd stress equals the same definition applied to its energy
    model = _model(atomic_numbers=(29,), e0=None, cutoff=4.0)

    def model_energy(a):
        return float(model(_batch([a]), compute_forces=False)["energy"].detach())

    stress = model(_batch([at]), compute_stress=True)["stress"][0].detach().numpy()
    fd = _fd_stress(model_energy, at)
    np.testing.assert_allclose(stress, fd, rtol=1e-6, atol=1e-6 * np.abs(fd).max())
    np.testing.assert_allclose(stress, stress.T, rtol=0, atol=1e-14)


def test_force_loss_double_backward_gradcheck():
    model = _model(hidden_irreps="2x0e + 2x1o", max_ell=1, correlation=2, num_interactions=1, radial_mlp=(4,))
    x = _cluster(torch.float64)
    b = AtomsBatch.from_arrays(positions=x["pos"][:4], numbers=x["numbers"][:4], natoms=[4], dtype=torch.float64)
    target = torch.randn(4, 3, dtype=torch.float64)
    names = ["embedding", "interactions.0.product.weight"]
    params = {k: v for k, v in model.named_parameters()}

    def loss(emb, w_sc):
        out = torch.func.functional_call(model, {**params, names[0]: emb, names[1]: w_sc}, (b,),
                                         {"training": True})
        return ((out["forces"] - target) ** 2).sum()

    inputs = tuple(params[n].detach().clone().requires_grad_() for n in names)
    assert torch.autograd.gradcheck(loss, inputs, atol=1e-7)
    # and w.r.t. the positions (forces differentiated again: the Hessian)
    pos = b.positions.clone().requires_grad_()
    f = lambda p: model(AtomsBatch(p, b.numbers, b.cell, b.pbc, b.batch), training=True)["forces"]  # noqa: E731
    assert torch.autograd.gradcheck(f, (pos,), atol=1e-7)


def test_training_reduces_force_loss_on_emt_copper():
    frames = []
    for seed in range(4):
        at = _crystal(rattle=0.08, seed=seed)
        at.calc = EMT()
        frames.append(at)
    batch = AtomsBatch.from_atoms(frames, require=("energy", "forces"))
    torch.manual_seed(0)
    model = Potential(PotentialConfig(atomic_numbers=(29,), hidden_irreps="4x0e + 4x1o", max_ell=1, correlation=2,
                                      radial_mlp=(8,), cutoff=3.0, avg_num_neighbors=12.0, num_interactions=2))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(25):
        opt.zero_grad()
        out = model(batch, training=True)
        loss = ((out["forces"] - batch.forces) ** 2).mean()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert all(p.grad is not None for p in model.interactions[0].radial.parameters())
    assert losses[-1] < 0.5 * losses[0], losses


def test_backends_sparse_cg_and_naive_agree():
    a = _model(tp_backend="sparse_cg")
    b = _model(tp_backend="naive", symmetric_backend="naive")
    b.load_state_dict(a.state_dict())
    at = _crystal()
    at.numbers[:] = [8, 1, 1, 8]
    ba = _batch([at])
    oa, ob = a(ba, compute_stress=True), b(ba, compute_stress=True)
    for k in ("energy", "forces", "stress"):
        torch.testing.assert_close(oa[k], ob[k], rtol=1e-10, atol=1e-13)
    assert oa["energy"].abs().item() > 1e-3


@pytest.mark.parametrize("backend", ["sparse_cg", "sphere_grid", "gaunt_fourier"])
def test_gaunt_product_backends_agree_with_naive(backend):
    a = _model(tp_backend="naive", tp_product="gaunt")
    b = _model(tp_backend=backend, tp_product="auto" if backend != "sparse_cg" else "gaunt")
    assert b.interactions[0].gaunt
    b.load_state_dict(a.state_dict())
    at = _crystal()
    at.numbers[:] = [8, 1, 8, 1]
    ba = _batch([at])
    oa, ob = a(ba, compute_stress=True), b(ba, compute_stress=True)
    for k in ("energy", "forces", "stress"):
        torch.testing.assert_close(oa[k], ob[k], rtol=1e-10, atol=1e-13)
    assert oa["energy"].abs().item() > 1e-3


def test_facet_model_same_on_sparse_and_grid_executors():
    """The Facet-like model (spline radial, Gaunt edge product, grid-MLP mixing) gives the same
    energies, forces and stress whether its Gaunt product runs on the sphere grid or on the sparse
    Gaunt coefficients (the benchmark's `facet` and `facet_sparse` variants), float64."""
    kw = dict(radial="spline", product="grid_mlp", grid_hidden=8)
    a = _model(tp_backend="sphere_grid", **kw)
    b = _model(tp_backend="sparse_cg", tp_product="gaunt", **kw)
    b.load_state_dict(a.state_dict())
    at = _crystal(repeat=(2, 1, 1))
    at.numbers[:] = [8, 1, 1, 8, 1, 8, 8, 1]
    ba = _batch([at])
    oa, ob = a(ba, compute_stress=True), b(ba, compute_stress=True)
    for k in ("energy", "forces", "stress"):
        assert ob[k].abs().max() > 1e-6
        torch.testing.assert_close(ob[k], oa[k], rtol=1e-10, atol=1e-10 * oa[k].abs().max().item())


def test_e0_reference_energies_are_added_per_atom():
    model = _model()
    x = _cluster(torch.float64)
    b = AtomsBatch.from_arrays(positions=x["pos"], numbers=x["numbers"], natoms=[7], dtype=torch.float64)
    with torch.no_grad():
        model.e0 += torch.tensor([1.0, 10.0], dtype=torch.float64)
    shifted = model(b, compute_forces=False)["energy"]
    with torch.no_grad():
        model.e0 -= torch.tensor([1.0, 10.0], dtype=torch.float64)
    base = model(b, compute_forces=False)["energy"]
    n_h, n_o = int((x["numbers"] == 1).sum()), int((x["numbers"] == 8).sum())
    torch.testing.assert_close(shifted - base, torch.tensor([n_h * 1.0 + n_o * 10.0], dtype=torch.float64))


def test_yaml_roundtrip(tmp_path):
    cfg = _config(radial="spline", spline_intervals=8)
    cfg.to_yaml(tmp_path / "p.yaml")
    assert PotentialConfig.from_yaml(tmp_path / "p.yaml") == cfg


@pytest.mark.parametrize("kw, match", [
    ({"hidden_irreps": "4x0e + 2x1o"}, "one multiplicity"),
    ({"hidden_irreps": "4x0e + 4x1e"}, "natural parity"),
    ({"hidden_irreps": "4x0e + 4x1o + 4x2e", "max_ell": 1}, "max_ell"),
    ({"radial": "gauss"}, "radial"),
    ({"tp_backend": "fast"}, "tp_backend"),
    ({"correlation": 0}, "correlation"),
    ({"cutoff": -1.0}, "cutoff"),
    ({"e0": (1.0,)}, "e0"),
    ({"atomic_numbers": (1, 1)}, "duplicates"),
    ({"dtype": "float16"}, "dtype"),
    ({"tp_backend": "sphere_grid", "tp_product": "clebsch_gordan"}, "only computes Gaunt"),
    ({"tp_product": "fourier"}, "tp_product"),
    ({"product": "mlp"}, "product"),
    ({"grid_hidden": 0}, "grid_hidden"),
])
def test_invalid_config_raises(kw, match):
    with pytest.raises(ValueError, match=match):
        _config(**kw)


def test_invalid_inputs_raise(tmp_path):
    model = _model()
    x = _cluster(torch.float64)
    b = AtomsBatch.from_arrays(positions=x["pos"], numbers=torch.tensor([8, 1, 1, 6, 1, 8, 1]), natoms=[7])
    with pytest.raises(ValueError, match=r"atomic numbers \[6\]"):
        model(b)
    with pytest.raises(TypeError, match="float32"):
        model(b.to(dtype=torch.float32))
    with pytest.raises(ValueError, match="periodic"):
        model(AtomsBatch.from_arrays(positions=x["pos"], numbers=x["numbers"], natoms=[7]), compute_stress=True)
    with pytest.raises(TypeError, match="AtomsBatch"):
        model(x)
    with pytest.raises(ValueError, match="unknown fields"):
        PotentialConfig.from_dict({"cutof": 5.0})
    with pytest.raises(ValueError, match="no file"):
        PotentialConfig.from_yaml(tmp_path / "missing.yaml")


def test_dataset_statistics_against_ase_and_known_reference_energies():
    from ase.neighborlist import neighbor_list

    from equikit.models.potential import average_num_neighbors, fit_reference_energies

    frames = [_crystal(seed=s, repeat=(1, 1, 2)) for s in range(2)]
    expected = sum(len(neighbor_list("i", a, 3.0)) for a in frames) / sum(len(a) for a in frames)
    assert average_num_neighbors(_batch(frames), 3.0) == pytest.approx(expected, rel=1e-12)
    # energies built from known per-element values are recovered exactly (no noise)
    g = torch.Generator().manual_seed(0)
    numbers = torch.tensor([1, 8, 8, 1, 1, 6, 8, 1, 6, 6])
    natoms = torch.tensor([3, 4, 3])
    true = {1: -0.5, 6: -3.25, 8: -2.0}
    batch_idx = torch.repeat_interleave(torch.arange(3), natoms)
    energy = torch.zeros(3, dtype=torch.float64).index_add_(
        0, batch_idx, torch.tensor([true[int(z)] for z in numbers], dtype=torch.float64))
    b = AtomsBatch.from_arrays(positions=torch.rand(10, 3, generator=g), numbers=numbers, natoms=natoms,
                               energy=energy, dtype=torch.float64)
    e0 = fit_reference_energies(b, (1, 6, 8, 29))
    np.testing.assert_allclose(e0, [-0.5, -3.25, -2.0, 0.0], rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match=r"atomic numbers \[6\]"):
        fit_reference_energies(b, (1, 8))
    with pytest.raises(ValueError, match="no energy labels"):
        fit_reference_energies(_batch(frames), (29,))


def test_stress_transforms_as_a_rank_two_tensor():
    """stress(R pos, R cell) = R stress R^T for rotations and reflections (float64)."""
    model = _model(atomic_numbers=(29,), e0=None, cutoff=4.0)
    at = _crystal(rattle=0.1)
    ref = model(_batch([at]), compute_stress=True)["stress"][0].detach()
    A, _ = E(3).as_affine(E(3).sample(6, generator=1, dtype=torch.float64))  # both orientations (asserted)
    A = A.double()
    assert (torch.linalg.det(A) < 0).any()
    for R in A:
        moved = at.copy()
        moved.positions = at.positions @ R.numpy().T
        moved.cell = np.asarray(at.cell) @ R.numpy().T
        got = model(_batch([moved]), compute_stress=True)["stress"][0].detach()
        torch.testing.assert_close(got, R @ ref @ R.T, rtol=1e-9, atol=1e-12)
    assert ref.abs().max() > 1e-6


def test_grid_mlp_product_forces_match_finite_differences_and_train():
    model = _model(atomic_numbers=(29,), e0=None, cutoff=4.0, product="grid_mlp", grid_hidden=8)
    b = _batch([_crystal()])
    _assert_forces_are_minus_energy_differences(model, b, [(0, 1), (2, 2)])
    out = model(b, training=True)
    (out["forces"] ** 2).sum().backward()
    assert model.interactions[0].product.layers[0].weight.grad.abs().sum() > 0
