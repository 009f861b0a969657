"""The ASE calculator: results equal the model's, checkpoints, ASE's stress convention, and a
short NVE run with ASE's VelocityVerlet."""

import numpy as np
import pytest
import torch
from ase import units
from ase.build import bulk, molecule
from ase.md.verlet import VelocityVerlet

from equikit.data.atoms import AtomsBatch
from equikit.models.calculator import EquikitCalculator, load_potential, save_potential
from equikit.models.potential import Potential, PotentialConfig


def _model(**kw):
    torch.manual_seed(0)
    base = dict(atomic_numbers=(29,), e0=(-0.3,), hidden_irreps="4x0e + 4x1o", max_ell=2, correlation=2,
                radial_mlp=(8,), cutoff=4.0, avg_num_neighbors=20.0)
    base.update(kw)
    return Potential(PotentialConfig(**base))


def _copper(seed=0):
    at = bulk("Cu", "fcc", a=3.6, cubic=True)
    at.rattle(0.05, seed=seed)
    return at


def test_results_equal_the_model():
    model = _model()
    at = _copper()
    at.calc = EquikitCalculator(model)
    b = AtomsBatch.from_arrays(positions=at.positions, numbers=at.numbers, natoms=[len(at)],
                               cell=np.asarray(at.cell)[None], pbc=at.pbc[None], dtype=torch.float64)
    ref = model(b, compute_stress=True)
    assert at.get_potential_energy() == pytest.approx(float(ref["energy"].detach()), rel=1e-12)
    assert at.get_potential_energy(force_consistent=True) == pytest.approx(float(ref["energy"].detach()), rel=1e-12)
    np.testing.assert_allclose(at.get_forces(), ref["forces"].numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(at.get_stress(voigt=False), ref["stress"][0].detach().numpy(), rtol=1e-12, atol=1e-15)


def test_stress_follows_ases_convention():
    """ASE: stress = (1/V) dE/d(strain); check with ASE's own cell strain and energies."""
    at = _copper()
    at.calc = EquikitCalculator(_model())
    stress = at.get_stress(voigt=False)
    h, v = 1e-5, at.get_volume()
    for a, b in [(0, 0), (1, 2), (0, 1)]:
        e = []
        for s in (h, -h):
            eps = np.eye(3)
            eps[a, b] += 0.5 * s
            eps[b, a] += 0.5 * s
            moved = at.copy()
            moved.calc = at.calc
            moved.set_cell(np.asarray(at.cell) @ eps, scale_atoms=True)
            e.append(moved.get_potential_energy())
        fd = (e[0] - e[1]) / (2 * h) / v
        assert fd == pytest.approx(stress[a, b], rel=1e-5, abs=1e-9)
    # Voigt order xx yy zz yz xz xy, as ASE
    voigt = at.get_stress()
    np.testing.assert_allclose(voigt, stress[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]], rtol=0, atol=0)


def test_checkpoint_roundtrip(tmp_path):
    model = _model(radial="spline", spline_intervals=8)
    save_potential(model, tmp_path / "p.pt")
    at = _copper()
    at.calc = EquikitCalculator(tmp_path / "p.pt")
    ref = _copper()
    ref.calc = EquikitCalculator(model)
    assert at.get_potential_energy() == ref.get_potential_energy()
    np.testing.assert_array_equal(at.get_forces(), ref.get_forces())
    assert load_potential(tmp_path / "p.pt").config == model.config


def test_molecule_without_cell_has_no_stress():
    model = _model(atomic_numbers=(1, 8), e0=None)
    at = molecule("H2O")
    at.calc = EquikitCalculator(model)
    assert at.get_forces().shape == (3, 3)
    np.testing.assert_allclose(at.get_forces().sum(0), 0.0, atol=1e-12)  # translation invariance
    from ase.calculators.calculator import PropertyNotImplementedError

    with pytest.raises(PropertyNotImplementedError, match="periodic"):
        at.get_stress()


def test_velocity_verlet_conserves_energy():
    at = _copper().repeat((2, 1, 1))
    at.calc = EquikitCalculator(_model())
    rng = np.random.default_rng(0)  # Maxwell-Boltzmann at 300 K, zero total momentum
    p = rng.normal(size=(len(at), 3)) * np.sqrt(at.get_masses()[:, None] * units.kB * 300)
    at.set_momenta(p - p.mean(0))
    dyn = VelocityVerlet(at, timestep=1.0 * units.fs)
    etot, epot = [at.get_total_energy()], [at.get_potential_energy()]
    for _ in range(10):
        dyn.run(1)
        etot.append(at.get_total_energy())
        epot.append(at.get_potential_energy())
    etot, epot = np.array(etot), np.array(epot)
    ekin0 = 1.5 * len(at) * units.kB * 300
    drift = np.abs(etot - etot[0]).max()
    # a 1 fs step of a smooth potential: the total energy moves by far less than the kinetic energy
    print(f"VelocityVerlet 10 x 1 fs, 8 Cu atoms: max |E_tot - E_tot(0)| = {drift:.2e} eV (E_kin(0) ~ {ekin0:.3f} eV)")
    print(f"  potential energy range {np.ptp(epot):.2e} eV")
    assert drift < 1e-2 * ekin0, (drift, ekin0)
    assert drift < 1e-2 * np.ptp(epot), (drift, np.ptp(epot))  # energy does flow between E_pot and E_kin
    assert np.abs(at.get_momenta().sum(0)).max() < 1e-10


def test_invalid_model_raises(tmp_path):
    with pytest.raises(TypeError, match="Potential or a checkpoint path"):
        EquikitCalculator(object())
    with pytest.raises(ValueError, match="no checkpoint"):
        EquikitCalculator(tmp_path / "missing.pt")
    torch.save({"weights": 1}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="not a potential checkpoint"):
        EquikitCalculator(tmp_path / "bad.pt")


def test_check_state_equals_ase_compare_atoms():
    """The fast check_state gives ASE's compare_atoms result for every kind of change (and none)."""
    from ase.calculators.calculator import compare_atoms

    at = _copper()
    calc = EquikitCalculator(_model())
    assert calc.check_state(at) == compare_atoms(None, at)  # nothing computed yet: all changes
    at.calc = calc
    at.get_forces()
    edits = [
        lambda a: None,
        lambda a: a.positions.__setitem__((0, 0), a.positions[0, 0] + 1e-16),  # below the tolerance
        lambda a: a.positions.__setitem__((0, 0), a.positions[0, 0] + 1e-3),
        lambda a: a.set_cell(a.cell * 1.01, scale_atoms=False),
        lambda a: a.set_pbc([True, False, True]),
        lambda a: a.set_initial_charges(np.ones(len(a))),
        lambda a: a.numbers.__setitem__(0, 28),
        lambda a: a.positions.__setitem__((1, 1), np.nan),
    ]
    for edit in edits:
        b = at.copy()
        edit(b)
        assert calc.check_state(b) == compare_atoms(calc.atoms, b)
    b = at.copy()
    b.numbers[0] = 28
    assert calc.check_state(b) == ["numbers"]
    assert calc.check_state(at.copy()) == []


@pytest.mark.slow
# inductor's first import of torch.utils.mkldnn warns about torch.jit.script_method (torch's own code)
@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
# dynamo probes `.grad` of the strained (non-leaf) positions while tracing (hidden outside pytest's error filter)
@pytest.mark.filterwarnings("ignore:The .grad attribute of a Tensor that is not a leaf Tensor:UserWarning")
def test_compiled_calculator_equals_eager():
    """compile=True: the same energy, forces and stress as the eager calculator (float64), across
    a changing number of edges (the recompile with dynamic shapes), for a CG and a grid variant
    (with the session-8 parametrisations: an e3nn radial MLP, fan-in-parametrised grid weights);
    an unknown element still raises inside the compiled graph (a runtime assert, no graph break)."""
    grid = dict(radial="spline", tp_backend="sparse_cg", tp_product="gaunt", product="grid_mlp",
                grid_condition="scalars", grid_gain=5.0, grid_output="element", grid_param="fan_in")
    for kw in (dict(radial_param="e3nn"), grid):  # the benchmarks' variants of record
        model = _model(atomic_numbers=(28, 29), e0=(-0.2, -0.3), max_ell=1, **kw)
        eager, compiled = EquikitCalculator(model, skin=0.0), EquikitCalculator(model, skin=0.0, compile=True)
        for seed, a in enumerate((3.6, 3.3)):  # a denser cell: more edges
            at = bulk("Cu", "fcc", a=a, cubic=True)
            at.rattle(0.05, seed=seed)
            at.numbers[0] = 28
            ref, got = at.copy(), at.copy()
            ref.calc, got.calc = eager, compiled
            assert got.get_potential_energy() == pytest.approx(ref.get_potential_energy(), rel=1e-10)
            np.testing.assert_allclose(got.get_forces(), ref.get_forces(), rtol=1e-9, atol=1e-11)
            np.testing.assert_allclose(got.get_stress(), ref.get_stress(), rtol=1e-9, atol=1e-12)
        bad = _copper()
        bad.numbers[1] = 30
        bad.calc = compiled
        with pytest.raises(RuntimeError, match="not in the model's elements"):
            bad.get_forces()


def test_compile_flag_is_validated():
    with pytest.raises(TypeError, match="`compile` must be a bool"):
        EquikitCalculator(_model(), compile="yes")
