"""MolecularProperty (QM9-style regression on the Potential's invariant readout): the
extensive, intensive and dipole-norm outputs are invariant and the dipole vector equivariant
under E(3) (reflections included) and atom permutations, float32 and float64; a
non-neutral-charge dipole (negative control) is not translation invariant; pooling matches a
direct computation; bad input."""

import pytest
import torch

from equikit.check import assert_equivariant, equivariance_error
from equikit.data.atoms import AtomsBatch
from equikit.groups import E, NodePermutation, PointCloud
from equikit.models.molecular_property import DEBYE_PER_E_ANGSTROM, MolecularProperty, property_statistics
from equikit.models.potential import PotentialConfig

RTOL = {torch.float32: 1e-5, torch.float64: 1e-10}
POOLINGS = ("extensive", "intensive", "dipole")


def _config(dtype):
    return PotentialConfig(atomic_numbers=(1, 6, 8), hidden_irreps="4x0e + 4x1o", max_ell=2, correlation=2,
                           radial_mlp=(8,), cutoff=3.0, num_interactions=2, avg_num_neighbors=4.0,
                           dtype=str(dtype).split(".")[-1])


def _model(dtype, pooling, cls=MolecularProperty):
    torch.manual_seed(0)
    shift = (-0.5, -30.0, -60.0) if pooling == "extensive" else (1.0 if pooling == "intensive" else 0.0)
    return cls(_config(dtype), pooling, shift=shift, scale=0.3)


def _molecule(dtype):
    g = torch.Generator().manual_seed(5)
    return {"pos": (torch.rand(7, 3, generator=g, dtype=torch.float64) * 2.5).to(dtype),
            "numbers": torch.tensor([6, 1, 1, 8, 1, 6, 1])}


def _batch(d):
    return AtomsBatch.from_arrays(positions=d["pos"], numbers=d["numbers"], natoms=[d["pos"].shape[0]])


def _outputs(model):
    def f(d):
        b = _batch(d)
        out = {"y": model(b)}
        if model.pooling == "dipole":
            out["mu"] = model.dipole(b)
        return out
    return f


def _e3_out(pooling):
    return PointCloud(E(3), pos=None, vectors=("mu",) if pooling == "dipole" else (), scalars=("y",))


@pytest.mark.parametrize("pooling", POOLINGS)
def test_invariant_outputs_and_equivariant_dipole_under_e3(dtype, pooling):
    model = _model(dtype, pooling)
    report = assert_equivariant(_outputs(model), _molecule(dtype), PointCloud(E(3), scalars=("numbers",)),
                                _e3_out(pooling), n_samples=8, generator=1, rtol=RTOL[dtype])
    assert report.n_elements == 8
    A, _ = E(3).as_affine(E(3).sample(8, generator=1, dtype=torch.float64))
    assert (torch.linalg.det(A) < 0).any()  # reflections among the checked elements


@pytest.mark.parametrize("pooling", POOLINGS)
def test_atom_permutations(dtype, pooling):
    model = _model(dtype, pooling)
    n = 7
    act_in = NodePermutation(n, nodes={"pos": -2, "numbers": -1})
    act_out = NodePermutation(n, nodes={}, invariant=("y", "mu") if pooling == "dipole" else ("y",))
    assert_equivariant(_outputs(model), _molecule(dtype), act_in, act_out, n_samples=6, generator=3,
                       rtol=RTOL[dtype])


class _ChargedDipole(MolecularProperty):
    """Negative control: charges not made neutral, so the dipole depends on the origin."""

    def dipole(self, batch):
        q = self.scale * self._atoms(batch)
        return DEBYE_PER_E_ANGSTROM * torch.zeros(batch.num_graphs, 3, dtype=q.dtype).index_add_(
            0, batch.batch, q[:, None] * batch.positions)


def test_negative_control_non_neutral_charges_break_translation_invariance(dtype):
    model = _model(dtype, "dipole", cls=_ChargedDipole)
    report = equivariance_error(_outputs(model), _molecule(dtype), PointCloud(E(3), scalars=("numbers",)),
                                _e3_out("dipole"), n_samples=8, generator=1)
    assert not report.passed(rtol=RTOL[dtype])
    assert report.rel_max > 1e-2


def test_pooling_matches_a_direct_computation():
    torch.manual_seed(0)
    d = _molecule(torch.float64)
    d2 = {"pos": d["pos"][:4] + 5.0, "numbers": d["numbers"][:4]}
    b = AtomsBatch.from_arrays(positions=torch.cat([d["pos"], d2["pos"]]),
                               numbers=torch.cat([d["numbers"], d2["numbers"]]), natoms=[7, 4])
    for pooling in POOLINGS:
        model = _model(torch.float64, pooling)
        h = model.backbone.node_energies(b.positions, b.cell, b.batch, b.numbers, b.pbc)
        y = model(b)
        for k, sl in enumerate((slice(0, 7), slice(7, 11))):
            hk, zk, rk = h[sl], b.numbers[sl], b.positions[sl]
            if pooling == "extensive":
                shift = {1: -0.5, 6: -30.0, 8: -60.0}
                ref = sum(shift[int(z)] + 0.3 * v for z, v in zip(zk, hk))
            elif pooling == "intensive":
                ref = 1.0 + 0.3 * hk.mean()
            else:
                q = 0.3 * (hk - hk.mean())
                ref = DEBYE_PER_E_ANGSTROM * torch.linalg.vector_norm((q[:, None] * rk).sum(0))
            torch.testing.assert_close(y[k], torch.as_tensor(ref, dtype=torch.float64), rtol=1e-10, atol=1e-9)


def test_property_statistics():
    b = AtomsBatch.from_arrays(positions=torch.zeros(7, 3), numbers=torch.tensor([1, 8, 1, 1, 8, 1, 1]),
                               natoms=[2, 3, 2])
    y = torch.tensor([-3.0, -5.0, -2.0])  # H -1, O -2 would give -3, -4, -2
    shift, scale = property_statistics(b, y, "extensive", (1, 8))
    counts = torch.tensor([[1.0, 1], [2, 1], [2, 0]])
    ref = torch.linalg.lstsq(counts.double(), y.double()[:, None]).solution[:, 0]
    torch.testing.assert_close(shift, ref, rtol=1e-10, atol=1e-12)
    assert scale == pytest.approx(float(((y - counts.double() @ ref) / torch.tensor([2.0, 3, 2])).std()))
    assert property_statistics(b, y, "intensive", (1, 8)) == pytest.approx((float(y.mean()), float(y.std())))


def test_bad_input_names_the_argument():
    cfg = _config(torch.float64)
    with pytest.raises(ValueError, match="`pooling` must be one of"):
        MolecularProperty(cfg, "sum")
    with pytest.raises(ValueError, match="`scale` must be a number > 0"):
        MolecularProperty(cfg, "intensive", scale=0.0)
    with pytest.raises(ValueError, match="`shift` must be one number"):
        MolecularProperty(cfg, "intensive", shift=(1.0, 2.0, 3.0))
    with pytest.raises(TypeError, match="`config` must be a PotentialConfig"):
        MolecularProperty({}, "intensive")
    model = MolecularProperty(cfg, "intensive")
    with pytest.raises(ValueError, match="needs pooling='dipole'"):
        model.dipole(_batch(_molecule(torch.float64)))
    with pytest.raises(TypeError, match=r"positions are torch\.float32"):
        model(_batch(_molecule(torch.float32)))
    with pytest.raises(ValueError, match="`values` must have shape"):
        property_statistics(_batch(_molecule(torch.float64)), torch.zeros(3), "intensive", (1, 6, 8))
