"""Atomistic data: the typed batch and its ASE round trips, extxyz and ASE-db IO with label
checks, the EMT / MMFF94 generators (labels belong to the stored frames, seeds reproduce,
cache), MMFF forces against finite differences, the BAOAB integrator's equipartition,
GFN2-xTB units, and QM9 from the qm9pack wheel."""

import json

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, molecule
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator

from equikit.data import atoms_md
from equikit.data.atoms import (
    AtomsBatch,
    AtomsDataset,
    collate_atoms,
    read_ase_db,
    read_extxyz,
    write_ase_db,
    write_extxyz,
)
from equikit.data.atoms_md import (
    MD17_SMILES,
    EMTConfig,
    MMFFConfig,
    generate_emt,
    generate_mmff,
    langevin_baoab,
    load_emt,
    mmff_calculator,
)
from equikit.data.neighbors import radius_graph

KCAL_MOL_EV = 0.0433641  # the brief's constant, independent of ase.units


def _labelled_frames():
    """Three structures with different cells, pbc, sizes and labels (EMT for the metals)."""
    rng = np.random.default_rng(0)
    cu = bulk("Cu", "fcc", a=3.6, cubic=True)
    cu.rattle(0.05, seed=1)
    slab = bulk("Ni", "fcc", a=3.52, cubic=True).repeat((1, 1, 2))
    slab.pbc = (True, True, False)
    slab.positions += rng.normal(size=slab.positions.shape) * 0.03
    skew = bulk("Cu", "fcc", a=3.6)  # primitive triclinic cell, 1 atom
    frames = []
    for k, a in enumerate((cu, slab, skew)):
        a.calc = EMT()
        e, f, s = a.get_potential_energy(), a.get_forces(), a.get_stress(voigt=False)
        a.calc = SinglePointCalculator(a, energy=e, forces=f, stress=s)
        a.info["temperature"] = 300.0 * (k + 1)
        frames.append(a)
    return frames


# --------------------------------------------------------------------------- the batch
def test_from_atoms_and_back_keeps_every_field():
    frames = _labelled_frames()
    b = AtomsBatch.from_atoms(frames, require=("energy", "forces", "stress"), info_keys=("temperature",))
    assert len(b) == 3 and b.natoms.tolist() == [4, 8, 1] and b.ptr.tolist() == [0, 4, 12, 13]
    assert b.pbc.tolist()[1] == [True, True, False]
    back = b.to_atoms()
    for a, r in zip(frames, back):
        np.testing.assert_array_equal(r.positions, a.positions)
        np.testing.assert_array_equal(r.cell.array, a.cell.array)
        np.testing.assert_array_equal(r.pbc, a.pbc)
        np.testing.assert_array_equal(r.numbers, a.numbers)
        assert r.get_potential_energy() == a.get_potential_energy()
        np.testing.assert_array_equal(r.get_forces(), a.get_forces())
        np.testing.assert_array_equal(r.get_stress(voigt=False), a.get_stress(voigt=False))
        assert r.info["temperature"] == a.info["temperature"]


def test_select_collate_dataset_and_dtype():
    b = AtomsBatch.from_atoms(_labelled_frames())
    sub = b[[2, 0]]
    assert sub.natoms.tolist() == [1, 4] and sub.batch.tolist() == [0, 1, 1, 1, 1]
    torch.testing.assert_close(sub.forces[1:], b.forces[:4], rtol=0, atol=0)
    again = collate_atoms([b[0], b[1], b[2]])
    for name in ("positions", "numbers", "cell", "pbc", "batch", "energy", "forces", "stress"):
        assert torch.equal(getattr(again, name), getattr(b, name)), name
    loader = torch.utils.data.DataLoader(AtomsDataset(b), batch_size=2, collate_fn=collate_atoms)
    assert [x.natoms.tolist() for x in loader] == [[4, 8], [1]]
    f32 = b.to(dtype=torch.float32)
    assert f32.positions.dtype == torch.float32 and f32.stress.dtype == torch.float32
    assert f32.numbers.dtype == torch.long


def test_batch_neighbors_equal_per_structure_radius_graphs():
    b = AtomsBatch.from_atoms(_labelled_frames())
    nbrs = b.neighbors(4.0)
    got, offset = [], 0
    for k in range(len(b)):
        one = b[k]
        g = radius_graph(one.positions, 4.0, cell=one.cell[0], pbc=one.pbc[0])
        got += [(i + offset, j + offset, tuple(s)) for j, i, s in
                zip(g.edge_index[0].tolist(), g.edge_index[1].tolist(), g.shifts.tolist())]
        offset += len(one.positions)
    ours = list(zip(nbrs.edge_index[1].tolist(), nbrs.edge_index[0].tolist(), map(tuple, nbrs.shifts.tolist())))
    assert ours == got


def test_missing_and_partial_labels_raise_with_the_frames_named():
    frames = [molecule("H2O"), molecule("CH4")]
    frames[1].calc = SinglePointCalculator(frames[1], energy=-1.0)
    with pytest.raises(ValueError, match=r"1 of 2 structures have no energy \(structures \[0\]\)"):
        AtomsBatch.from_atoms(frames)
    frames[0].calc = SinglePointCalculator(frames[0], energy=-2.0)
    b = AtomsBatch.from_atoms(frames)
    assert b.energy.tolist() == [-2.0, -1.0] and b.forces is None
    with pytest.raises(ValueError, match=r"no forces.*Training on forces needs them"):
        AtomsBatch.from_atoms(frames, require=("energy", "forces"))
    with pytest.raises(ValueError, match="require"):
        AtomsBatch.from_atoms(frames, require=("charges",))
    with pytest.raises(TypeError, match=r"item 1 must be an ase\.Atoms"):
        AtomsBatch.from_atoms([frames[0], "H2O"])


def test_from_arrays_validates_shapes():
    with pytest.raises(ValueError, match=r"AtomsBatch.from_arrays: `positions` must have shape \(3, 3\)"):
        AtomsBatch.from_arrays(positions=torch.zeros(4, 3), numbers=[1, 1, 1], natoms=[3])
    with pytest.raises(ValueError, match="`forces`"):
        AtomsBatch.from_arrays(positions=torch.zeros(3, 3), numbers=[1, 1, 1], natoms=[3], forces=torch.zeros(2, 3))
    with pytest.raises(ValueError, match="collate_atoms: some items have energy"):
        one = AtomsBatch.from_arrays(positions=torch.zeros(1, 3), numbers=[1], natoms=[1])
        two = AtomsBatch.from_arrays(positions=torch.zeros(1, 3), numbers=[1], natoms=[1], energy=[0.0])
        collate_atoms([one, two])


# --------------------------------------------------------------------------- files
def test_extxyz_round_trip_energy_forces_stress_cell_pbc(tmp_path):
    b = AtomsBatch.from_atoms(_labelled_frames(), info_keys=("temperature",))
    path = tmp_path / "frames.xyz"
    write_extxyz(path, b)
    back = read_extxyz(path, require=("energy", "forces", "stress"), info_keys=("temperature",))
    assert torch.equal(back.numbers, b.numbers) and torch.equal(back.pbc, b.pbc) and torch.equal(back.batch, b.batch)
    # extxyz is text: ASE writes positions/cell with 8 decimals, so agreement is ~1e-8 absolute
    for name in ("positions", "cell", "energy", "forces", "stress"):
        torch.testing.assert_close(getattr(back, name), getattr(b, name), rtol=0, atol=1e-8, msg=name)
    torch.testing.assert_close(back.info["temperature"], b.info["temperature"])


def test_extxyz_without_forces_fails_early_when_training_needs_them(tmp_path):
    frames = [molecule("H2O"), molecule("NH3")]
    for k, a in enumerate(frames):
        a.info["REF_energy"] = -10.0 - k  # labels under a custom key, as in MACE data files
    path = tmp_path / "energies.xyz"
    from ase.io import write

    write(path, frames, format="extxyz")
    with pytest.raises(ValueError, match=r"read_extxyz|energies.xyz"):
        read_extxyz(path, require=("energy",))
    b = read_extxyz(path, require=("energy",), energy_key="REF_energy")
    assert b.energy.tolist() == [-10.0, -11.0]
    with pytest.raises(ValueError, match=r"energies.xyz.*2 of 2 structures have no forces"):
        read_extxyz(path, require=("energy", "forces"), energy_key="REF_energy")
    with pytest.raises(FileNotFoundError, match="read_extxyz: no file"):
        read_extxyz(tmp_path / "missing.xyz")


def test_stored_results_calculator_listing_a_missing_property_gives_no_label(monkeypatch):
    # mace-torch's MACECalculator appends "stress" etc. to the implemented_properties list that
    # ASE's SinglePointCalculator shares; reading molecules afterwards must not ask it for stress
    monkeypatch.setattr(SinglePointCalculator, "implemented_properties", ["energy", "forces", "stress"])
    a = molecule("H2O")
    a.calc = SinglePointCalculator(a, energy=-1.5, forces=np.ones((3, 3)))
    b = AtomsBatch.from_atoms([a])
    assert b.stress is None and b.energy.tolist() == [-1.5] and b.forces.sum().item() == 9.0
    a.info["stress"] = np.arange(6.0)  # a label stored beside the calculator is still found
    s = AtomsBatch.from_atoms([a]).stress[0]
    assert s.tolist() == [[0.0, 5.0, 4.0], [5.0, 1.0, 3.0], [4.0, 3.0, 2.0]]


def test_ase_db_round_trip_is_exact_and_selectable(tmp_path):
    b = AtomsBatch.from_atoms(_labelled_frames(), info_keys=("temperature",))
    path = tmp_path / "frames.db"
    write_ase_db(path, b)
    back = read_ase_db(path, require=("energy", "forces", "stress"), info_keys=("temperature",))
    for name in ("positions", "numbers", "cell", "pbc", "energy", "forces", "stress"):
        assert torch.equal(getattr(back, name), getattr(b, name)), name
    assert back.info["temperature"].tolist() == [300.0, 600.0, 900.0]
    hot = read_ase_db(path, "temperature>500", info_keys=("temperature",))
    assert hot.natoms.tolist() == [8, 1]
    with pytest.raises(ValueError, match="no rows"):
        read_ase_db(path, natoms=99)
    unlabelled = tmp_path / "bare.db"
    write_ase_db(unlabelled, AtomsBatch.from_atoms([molecule("H2O")]))
    with pytest.raises(ValueError, match="no forces"):
        read_ase_db(unlabelled, require=("forces",))


# --------------------------------------------------------------------------- EMT
TINY_EMT = EMTConfig(element="CuNi", alloy_fraction=0.25, repeat=1, temperatures=(300.0, 1200.0),
                     frames_per_temperature=2, stride=3, equilibration_steps=2)


def test_emt_frames_carry_their_own_labels_and_the_alloy_fraction():
    frames = generate_emt(TINY_EMT)
    assert len(frames) == 4 and frames.info["temperature"].tolist() == [300.0, 300.0, 1200.0, 1200.0]
    assert int((frames.numbers == 28).sum()) == 4 * 1  # 1 of 4 atoms Ni, in each frame
    for a, k in zip(frames.to_atoms(), range(4)):
        a.calc = EMT()  # recompute on the stored positions: the labels are of this frame
        np.testing.assert_allclose(a.get_potential_energy(), float(frames.energy[k]), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(a.get_forces(), frames[k].forces.numpy(), rtol=0, atol=1e-12)
        np.testing.assert_allclose(a.get_stress(voigt=False), frames.stress[k].numpy(), rtol=0, atol=1e-12)
    again = generate_emt(TINY_EMT)
    assert torch.equal(again.positions, frames.positions) and torch.equal(again.numbers, frames.numbers)
    other = generate_emt(EMTConfig(**{**TINY_EMT.__dict__, "seed": 1}))
    assert not torch.equal(other.positions, frames.positions)


def test_emt_cache_reads_back_without_regenerating(tmp_path, monkeypatch):
    frames = load_emt(TINY_EMT, root=tmp_path, progress=False)
    (folder,) = (tmp_path / "atoms").iterdir()
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["recipe"]["seed"] == 0 and manifest["recipe"]["element"] == "CuNi"
    assert manifest["structures"] == 4 and manifest["labels"] == ["energy", "forces", "stress"]

    def boom(*args, **kwargs):
        raise AssertionError("regenerated although the cache is valid")

    monkeypatch.setattr(atoms_md, "generate_emt", boom)
    cached = load_emt(TINY_EMT, root=tmp_path, progress=False)
    for name in ("positions", "numbers", "cell", "pbc", "energy", "forces", "stress"):
        assert torch.equal(getattr(cached, name), getattr(frames, name)), name
    assert torch.equal(cached.info["temperature"], frames.info["temperature"])


def test_config_validation():
    with pytest.raises(ValueError, match="EMTConfig: `element`"):
        EMTConfig(element="Fe")
    with pytest.raises(ValueError, match="temperatures"):
        EMTConfig(temperatures=(300.0, -5.0))
    with pytest.raises(TypeError, match="MMFFConfig: `stride` must be an int"):
        MMFFConfig(stride=2.5)
    with pytest.raises(ValueError, match="cannot parse the SMILES"):
        mmff_calculator("C1CC(")


# --------------------------------------------------------------------------- MMFF94
@pytest.mark.parametrize("name", ["ethanol", "uracil"])
def test_mmff_forces_are_minus_finite_differences_of_the_energy_in_ev(name):
    from rdkit import Chem
    from rdkit.Chem import AllChem

    numbers, pos, _, energy_forces = mmff_calculator(MD17_SMILES[name], seed=3)
    pos = pos + np.random.default_rng(0).normal(size=pos.shape) * 0.05  # off the minimum
    energy, forces = energy_forces(pos)
    h = 1e-5
    fd = np.zeros_like(pos)
    for a in range(len(pos)):
        for k in range(3):
            dp = np.zeros_like(pos)
            dp[a, k] = h
            fd[a, k] = -(energy_forces(pos + dp)[0] - energy_forces(pos - dp)[0]) / (2 * h)
    # central differences: truncation ~h^2 and rounding ~1e-16 E / h, about 1e-8 of the scale
    np.testing.assert_allclose(forces, fd, rtol=0, atol=1e-6 * np.abs(fd).max())
    # energy in eV = MMFF kcal/mol * 0.0433641 (the brief's 6-digit constant: 1e-6 relative)
    mol = Chem.AddHs(Chem.MolFromSmiles(MD17_SMILES[name]))
    AllChem.EmbedMolecule(mol, randomSeed=3)
    ff = AllChem.MMFFGetMoleculeForceField(mol, AllChem.MMFFGetMoleculeProperties(mol))
    kcal = ff.CalcEnergy(pos.reshape(-1).tolist())
    np.testing.assert_allclose(energy, kcal * KCAL_MOL_EV, rtol=2e-6)
    assert numbers.tolist() == [a.GetAtomicNum() for a in mol.GetAtoms()]


def test_mmff_frames_are_reproducible_and_labelled_at_their_positions():
    cfg = MMFFConfig("malonaldehyde", temperatures=(300.0, 900.0), frames_per_temperature=3, stride=4,
                     equilibration_steps=10, minimize_steps=10, seed=2)
    frames = generate_mmff(cfg)
    assert len(frames) == 6 and frames.stress is None and not bool(frames.pbc.any())
    _, _, _, energy_forces = mmff_calculator(cfg.smiles, cfg.seed)
    ptr = frames.ptr.tolist()
    for k in range(len(frames)):
        e, f = energy_forces(frames.positions[ptr[k]:ptr[k + 1]].numpy())
        assert e == float(frames.energy[k])
        np.testing.assert_array_equal(f, frames.forces[ptr[k]:ptr[k + 1]].numpy())
    assert torch.equal(generate_mmff(cfg).positions, frames.positions)


def test_baoab_samples_the_boltzmann_distribution_of_harmonic_oscillators():
    """3000 independent 3D oscillators (k = 2 eV/A^2, m = 4 amu) at 600 K: BAOAB samples the
    exact configurational distribution of a harmonic system, so <k x^2> = <m v^2> = kT per
    degree of freedom. Tolerance 2%: the time average over 9000 dof x 1500 correlated steps
    has a standard error of ~0.3%."""
    from ase import units

    n, kspring, mass, temp = 3000, 2.0, 4.0, 600.0
    rng = np.random.default_rng(0)
    x, v = np.zeros((n, 3)), np.zeros((n, 3))
    masses = np.full(n, mass)

    def spring(x):
        return 0.5 * kspring * float((x * x).sum()), -kspring * x

    kw = {"timestep_fs": 2.0, "temperature_K": temp, "friction_per_fs": 0.05, "rng": rng}
    x, v, _, f = langevin_baoab(x, v, masses, spring, n_steps=300, **kw)
    pot, kin = [], []
    for _ in range(150):
        x, v, _, f = langevin_baoab(x, v, masses, spring, n_steps=10, forces=f, **kw)
        pot.append(kspring * (x * x).mean())
        kin.append(mass * (v * v).mean())
    kt = units.kB * temp
    np.testing.assert_allclose(np.mean(pot) / kt, 1.0, atol=0.02)
    np.testing.assert_allclose(np.mean(kin) / kt, 1.0, atol=0.02)


def test_velocity_verlet_limit_conserves_mmff_energy():
    from ase import units

    _, x, masses, energy_forces = mmff_calculator("CCO", seed=0)
    rng = np.random.default_rng(1)
    v = rng.standard_normal(x.shape) * np.sqrt(units.kB * 300.0 / masses)[:, None]
    e0 = energy_forces(x)[0] + 0.5 * float((masses[:, None] * v * v).sum())
    kw = {"timestep_fs": 0.1, "temperature_K": 300.0, "friction_per_fs": 0.0, "rng": rng}
    x1, v1, e1, _ = langevin_baoab(x, v, masses, energy_forces, n_steps=200, **kw)
    total = e1 + 0.5 * float((masses[:, None] * v1 * v1).sum())
    kinetic = 0.5 * 9 * 3 * units.kB * 300.0
    assert abs(total - e0) < 1e-3 * kinetic  # Verlet at 0.1 fs: drift well below the thermal scale
    assert np.abs(x1 - x).max() > 1e-3  # and the atoms did move


# --------------------------------------------------------------------------- GFN2-xTB
def test_xtb_relabel_matches_tblites_ase_calculator_in_ev():
    pytest.importorskip("tblite", reason="optional: pip install tblite")
    from tblite.ase import TBLite

    cfg = MMFFConfig("ethanol", temperatures=(300.0,), frames_per_temperature=2, stride=5,
                     equilibration_steps=0, minimize_steps=0)
    frames = generate_mmff(cfg)
    xtb = atoms_md.relabel_xtb(frames)
    for k, a in enumerate(frames.to_atoms()):
        a.calc = TBLite(method="GFN2-xTB", verbosity=0)
        np.testing.assert_allclose(float(xtb.energy[k]), a.get_potential_energy(), rtol=1e-10)
        np.testing.assert_allclose(xtb[k].forces.numpy(), a.get_forces(), rtol=0,
                                   atol=1e-8 * np.abs(a.get_forces()).max())  # SCF converged to ~1e-8
    assert not torch.allclose(xtb.energy, frames.energy)  # relabelled, not copied


# --------------------------------------------------------------------------- QM9
def _need_qm9pack():
    """qm9pack is optional (the `atoms` extra); its own __init__ imports pkg_resources, so
    we look for its data files rather than importing it."""
    from equikit.data.qm9 import qm9_files

    try:
        qm9_files()
    except ImportError:
        pytest.skip("optional: pip install qm9pack")


def test_qm9_first_molecules_units_and_consistency():
    _need_qm9pack()
    from equikit.data.qm9 import read_qm9

    mols = read_qm9(max_molecules=50)
    assert len(mols) == 50 and mols.natoms[:3].tolist() == [5, 4, 3] and mols.info["index"][:3].tolist() == [1, 2, 3]
    hartree = 27.211386024367243
    # methane in QM9: HOMO -0.3877, LUMO 0.1171, U0 -40.47893 Hartree
    np.testing.assert_allclose(mols.info["homo"][0].item(), -0.3877 * hartree, rtol=1e-12)
    np.testing.assert_allclose(mols.info["lumo"][0].item(), 0.1171 * hartree, rtol=1e-12)
    np.testing.assert_allclose(mols.energy[0].item(), -40.47893 * hartree, rtol=1e-12)
    # the file's gap is LUMO - HOMO to its 4 printed decimals (1e-4 Hartree)
    gap = (mols.info["lumo"] - mols.info["homo"]).numpy()
    np.testing.assert_allclose(mols.info["gap"].numpy(), gap, rtol=0, atol=1.01e-4 * hartree)
    c_h = (mols.positions[1:5] - mols.positions[0]).norm(dim=1)  # methane C-H bonds ~1.09 A
    np.testing.assert_allclose(c_h.numpy(), 1.0919, atol=2e-3)


# --------------------------------------------------------------------------- slow
@pytest.mark.slow
def test_qm9_full_wheel_has_every_characterised_molecule(tmp_path):
    _need_qm9pack()
    from equikit.data.qm9 import load_qm9

    mols = load_qm9(root=tmp_path, progress=False)
    assert len(mols) == 130831 and int(mols.info["index"].max()) == 133885
    assert set(mols.numbers.unique().tolist()) == {1, 6, 7, 8, 9}


@pytest.mark.slow
@pytest.mark.parametrize("element", ["Cu", "CuNi"])
def test_default_emt_recipes(tmp_path, element):
    frames = load_emt(EMTConfig(element=element), root=tmp_path, progress=False)
    assert len(frames) == 150 and frames.natoms.unique().tolist() == [108]
    hot = frames.info["temperature"] == 1200.0
    cold = frames.info["temperature"] == 300.0
    assert frames.energy[hot].mean() > frames.energy[cold].mean()  # hotter frames sit higher


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(MD17_SMILES))
def test_default_mmff_recipes(tmp_path, name):
    frames = atoms_md.load_mmff(MMFFConfig(name), root=tmp_path, progress=False)
    assert len(frames) == 300
    hot = frames.info["temperature"] == 1200.0
    cold = frames.info["temperature"] == 300.0
    assert frames.energy[hot].mean() > frames.energy[cold].mean()
    assert bool(torch.isfinite(frames.forces).all())


def test_atoms_without_cell_become_open_structures():
    b = AtomsBatch.from_atoms([Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.74]])])
    assert b.pbc.tolist() == [[False] * 3] and float(b.cell.abs().sum()) == 0.0
    assert b.neighbors(1.0).edge_index.tolist() == [[1, 0], [0, 1]]
