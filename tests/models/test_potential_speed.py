"""Speed work on the potential must not change what it computes: the energy is continuous where an
atom crosses the cutoff (the radial MLP maps 0 to 0), the calculator's Verlet skin gives the same
energies and forces as a fresh neighbour list, and the fast paths equal the general code."""

import pytest
import torch

from equikit.data.atoms import AtomsBatch
from equikit.models.potential import Potential, PotentialConfig


def _config(**kw):
    base = dict(atomic_numbers=(1, 8), hidden_irreps="4x0e + 4x1o", max_ell=2, correlation=2, radial_mlp=(8, 8),
                cutoff=3.0, num_interactions=2, avg_num_neighbors=4.0, readout_hidden=4, dtype="float64")
    base.update(kw)
    return PotentialConfig(**base)


def _pair(d: float) -> AtomsBatch:
    return AtomsBatch.from_arrays(positions=torch.tensor([[0.0, 0, 0], [d, 0, 0]]), numbers=torch.tensor([8, 1]),
                                  natoms=torch.tensor([2]), dtype=torch.float64)


@pytest.mark.parametrize("radial", ["bessel", "spline"])
def test_energy_is_continuous_at_the_cutoff(radial):
    torch.manual_seed(0)
    model = Potential(_config(radial=radial))
    # just inside / just outside the 3 A cutoff: the edge vanishes, the energy must not jump
    inside, outside = model(_pair(3.0 - 1e-5))["energy"].item(), model(_pair(3.0 + 1e-5))["energy"].item()
    assert abs(inside - outside) < 1e-9 * max(1.0, abs(outside))
    # and the pair does interact well inside the cutoff (the check above is not vacuous)
    assert abs(model(_pair(2.0))["energy"].item() - outside) > 1e-6


def _copper_md_frames(steps=12):
    """Positions of a short, hot velocity-Verlet run of 8 Cu atoms under EMT (atoms move ~0.1 A)."""
    from ase import units
    from ase.build import bulk
    from ase.calculators.emt import EMT
    from ase.md.velocitydistribution import thermalize_momenta
    from ase.md.verlet import VelocityVerlet

    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 1, 1))
    atoms.rattle(0.05, seed=1)
    atoms.calc = EMT()
    thermalize_momenta(atoms, temperature_K=3000, rng=__import__("numpy").random.default_rng(0))
    dyn = VelocityVerlet(atoms, 2.0 * units.fs)
    frames = []
    for _ in range(steps):
        dyn.run(1)
        frames.append(atoms.copy())
    return frames


def test_verlet_skin_gives_the_fresh_neighbour_list_results():
    from equikit.models.calculator import EquikitCalculator

    torch.manual_seed(0)
    model = Potential(_config(atomic_numbers=(29,), cutoff=3.0))
    frames = _copper_md_frames()
    skin, fresh = EquikitCalculator(model, skin=0.3), EquikitCalculator(model, skin=0.0)
    moved = max(abs(f.positions - frames[0].positions).max() for f in frames)
    assert moved > 0.15  # atoms cross skin / 2, so the list is rebuilt at least once
    for atoms in frames:
        a, b = atoms.copy(), atoms.copy()
        a.calc, b.calc = skin, fresh
        ea, eb = a.get_potential_energy(), b.get_potential_energy()
        assert abs(ea - eb) <= 1e-10 * abs(eb)
        fa, fb = a.get_forces(), b.get_forces()
        assert abs(fa - fb).max() <= 1e-10 * abs(fb).max()
        sa, sb = a.get_stress(), b.get_stress()
        assert abs(sa - sb).max() <= 1e-10 * abs(sb).max()
    assert 1 < skin.rebuilds < len(frames)  # reused between rebuilds, rebuilt when atoms moved
    assert fresh.rebuilds == 0  # skin 0: the model searches on every call


def test_verlet_list_is_rebuilt_when_the_cell_changes():
    from equikit.models.calculator import EquikitCalculator

    torch.manual_seed(0)
    model = Potential(_config(atomic_numbers=(29,), cutoff=3.0))
    atoms = _copper_md_frames(1)[0]
    calc = EquikitCalculator(model, skin=0.3)
    atoms.calc = calc
    atoms.get_potential_energy()
    atoms.set_cell(atoms.cell * 1.02, scale_atoms=True)  # every atom moves < skin/2 near the origin
    e_skin = atoms.get_potential_energy()
    ref = atoms.copy()
    ref.calc = EquikitCalculator(model, skin=0.0)
    assert abs(e_skin - ref.get_potential_energy()) <= 1e-10 * abs(e_skin)
    assert calc.rebuilds == 2


def test_precomputed_neighbors_equal_the_search():
    torch.manual_seed(0)
    model = Potential(_config())
    b = AtomsBatch.from_arrays(positions=torch.rand(6, 3, generator=torch.Generator().manual_seed(2)) * 3,
                               numbers=torch.tensor([8, 1, 1, 8, 1, 1]), natoms=torch.tensor([3, 3]),
                               dtype=torch.float64)
    ref, out = model(b), model(b, neighbors=b.neighbors(3.0))
    assert torch.allclose(out["energy"], ref["energy"], rtol=1e-12, atol=0)
    assert torch.allclose(out["forces"], ref["forces"], rtol=1e-12, atol=1e-14)
    with pytest.raises(TypeError, match=r"Potential.forward: `neighbors`"):
        model(b, neighbors=(1, 2))


def test_bad_skin_raises():
    from equikit.models.calculator import EquikitCalculator

    model = Potential(_config(atomic_numbers=(29,)))
    for bad in (-0.1, "1", True):
        with pytest.raises(ValueError, match="EquikitCalculator: `skin`"):
            EquikitCalculator(model, skin=bad)


def test_calculator_leaves_the_parameters_trainable():
    from equikit.models.calculator import EquikitCalculator

    torch.manual_seed(0)
    model = Potential(_config(atomic_numbers=(29,), cutoff=3.0))
    atoms = _copper_md_frames(1)[0]
    model.embedding.requires_grad_(False)  # a frozen parameter stays frozen
    atoms.calc = EquikitCalculator(model)
    forces = atoms.get_forces()
    assert not model.embedding.requires_grad
    assert all(p.requires_grad for n, p in model.named_parameters() if n != "embedding")
    b = AtomsBatch.from_arrays(positions=atoms.positions, numbers=atoms.numbers, natoms=[len(atoms)],
                               cell=atoms.cell.array[None], pbc=atoms.pbc[None], dtype=torch.float64)
    out = model(b)
    assert abs(out["forces"].detach().numpy() - forces).max() <= 1e-10 * abs(forces).max()
    model(b, compute_forces=False)["energy"].sum().backward()  # the model still trains after the calculator ran
    assert all(p.grad is not None for n, p in model.named_parameters() if n != "embedding")


@pytest.mark.parametrize("radial", ["bessel", "spline"])
def test_radial_columns_equal_gathered_outputs(radial):
    """``RadialWeights(r, cols)`` (columns taken from the last linear map, the Gaunt path's
    scalings) equals the full output's columns, values and parameter gradients (float64)."""
    from equikit.models.potential import RadialWeights

    torch.manual_seed(0)
    f = RadialWeights(_config(radial=radial), 12).double()
    r = torch.rand(40, dtype=torch.float64) * 3.2  # some beyond the cutoff
    cols = torch.tensor([3, 0, 11, 3, 7])
    a, b = f(r, cols), f(r)[:, cols]
    assert a.shape == (40, 5) and float(a.detach().abs().max()) > 1e-3
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    g = torch.randn(40, 5, dtype=torch.float64)
    ga = torch.autograd.grad((a * g).sum(), list(f.parameters()))
    gb = torch.autograd.grad((b * g).sum(), list(f.parameters()))
    for x, y in zip(ga, gb):
        torch.testing.assert_close(x, y, rtol=1e-12, atol=1e-14)
    # negative control: other columns differ
    assert float((f(r, (cols + 1) % 12) - b).detach().abs().max()) > 1e-3
