"""Shared inputs of the potential's equality tests (imported as ``from potential_test_helpers
import ...``, as dynamics_test_helpers): a molecule batch with three elements, a rattled periodic
copper cell, and the outputs compared between two implementations of the same model."""

import numpy as np
import torch
from ase.build import bulk

from equikit.data.atoms import AtomsBatch


def molecules(dtype):
    """Two molecules (5 and 7 atoms; H, C, O) in one batch."""
    g = torch.Generator().manual_seed(4)
    pos = torch.rand(12, 3, generator=g, dtype=torch.float64) * 3.0
    return AtomsBatch.from_arrays(positions=pos, numbers=torch.tensor([1, 6, 8, 1, 1, 6, 8, 8, 1, 6, 6, 1]),
                                  natoms=torch.tensor([5, 7]), dtype=dtype)


def copper(dtype):
    """A rattled 4-atom fcc copper cell, periodic."""
    at = bulk("Cu", "fcc", a=3.6, cubic=True)
    at.rattle(0.1, seed=2)
    return AtomsBatch.from_arrays(positions=at.get_positions(), numbers=at.get_atomic_numbers(), natoms=[len(at)],
                                  cell=np.asarray(at.cell)[None], pbc=np.ones((1, 3), bool), dtype=dtype)


def outputs(model, batch, stress):
    """Energy, forces (, stress) and the parameter gradients of a force loss (double backward)."""
    out = model(batch, compute_stress=stress, training=True)
    loss = (out["energy"] ** 2).sum() + (out["forces"] ** 2).sum()
    if stress:
        loss = loss + (out["stress"] ** 2).sum()
    grads = torch.autograd.grad(loss, list(model.parameters()))
    return [out["energy"], out["forces"], *([out["stress"]] if stress else []), *grads]


def cluster(dtype):
    """Seven atoms (H, O) in a 3 A box, as the checker's input dict ``{"pos", "numbers"}``."""
    g = torch.Generator().manual_seed(3)
    pos = (torch.rand(7, 3, generator=g, dtype=torch.float64) * 3.0).to(dtype)
    return {"pos": pos, "numbers": torch.tensor([8, 1, 1, 8, 1, 8, 1])}


def energy_forces(model):
    """The model as a function of the checker's input dict: ``{"energy", "forces"}``."""
    def f(d):
        b = AtomsBatch.from_arrays(positions=d["pos"], numbers=d["numbers"], natoms=[d["pos"].shape[0]])
        out = model(b)
        return {"energy": out["energy"].detach(), "forces": out["forces"]}
    return f
