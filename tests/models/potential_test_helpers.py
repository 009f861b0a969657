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


#: the potential tests' tolerances (DESIGN §4)
RTOL = {torch.float32: 1e-5, torch.float64: 1e-10}


def cluster_batch(x, dtype=torch.float64):
    """:func:`cluster`'s dict as an :class:`AtomsBatch`."""
    return AtomsBatch.from_arrays(positions=x["pos"], numbers=x["numbers"], natoms=[len(x["numbers"])], dtype=dtype)


def energy(model, b):
    """The energies of batch ``b``, without forces or a graph."""
    with torch.no_grad():
        return model(b, compute_forces=False)["energy"]


def check_e3(model, dtype):
    """Energy invariant and forces equivariant under 8 sampled E(3) elements (reflections among them)."""
    from equikit.check import assert_equivariant
    from equikit.groups import E, PointCloud

    out = PointCloud(E(3), pos=None, vectors=("forces",), scalars=("energy",))
    report = assert_equivariant(energy_forces(model), cluster(dtype), PointCloud(E(3), scalars=("numbers",)), out,
                                n_samples=8, generator=1, rtol=RTOL[dtype])
    assert report.n_elements == 8
    A, _ = E(3).as_affine(E(3).sample(8, generator=1, dtype=torch.float64))  # the checker's elements
    assert (torch.linalg.det(A.double()) < 0).any()  # reflections are among them


def check_permutations(model, dtype):
    """Energy invariant and forces equivariant under 6 sampled permutations of the cluster's atoms."""
    from equikit.check import assert_equivariant
    from equikit.groups import NodePermutation

    x = cluster(dtype)
    n = x["pos"].shape[0]
    act_in = NodePermutation(n, nodes={"pos": -2, "numbers": -1})
    act_out = NodePermutation(n, nodes={"forces": -2}, invariant=("energy",))
    assert_equivariant(energy_forces(model), x, act_in, act_out, n_samples=6, generator=3, rtol=RTOL[dtype])


def check_forces_against_finite_differences(model, h=1e-5):
    """Forces (float64 model) equal minus central differences of the energy at three coordinates."""
    b = cluster_batch(cluster(torch.float64))
    forces = model(b)["forces"].detach()
    assert forces.abs().max() > 1e-4
    for i, k in [(0, 0), (2, 1), (5, 2)]:
        e = []
        for s in (h, -h):
            p = b.positions.clone()
            p[i, k] += s
            e.append(energy(model, AtomsBatch(p, b.numbers, b.cell, b.pbc, b.batch)))
        fd = -float(e[0] - e[1]) / (2 * h)
        assert abs(fd - float(forces[i, k])) <= 1e-6 * max(abs(fd), 1e-3), (i, k, fd, float(forces[i, k]))
