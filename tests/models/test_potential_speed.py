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
