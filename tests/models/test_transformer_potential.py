"""The non-equivariant transformer potential: permutation invariance of the energy and
equivariance of the forces through the public checker (float32 and float64) with a negative
control (a token-index embedding), translation invariance, the documented absence of rotation
invariance before training, padded batches equal one-by-one evaluation, forces equal finite
differences, the force loss's double backward, and bad input."""

import pytest
import torch

from equikit.check import assert_equivariant, equivariance_error
from equikit.data.atoms import AtomsBatch
from equikit.groups import NodePermutation, O, PointCloud, Translation
from equikit.models import TransformerPotential, TransformerPotentialConfig
from equikit.models.transformer_potential import pad_atoms, pair_distances

RTOL = {torch.float32: 1e-5, torch.float64: 1e-10}
OUT = PointCloud(O(3), pos=None, vectors=("forces",), scalars=("energy",))
# tokens only; attention biases from raw displacements; from a radial basis of the distances (rotation
# invariant biases, raw positions in the tokens); both, also as attention values, with a readout scale
VARIANTS = {"tokens": {}, "pair_bias": {"pair_bias": True},
            "pair_distance": {"pair_bias": True, "pair_features": "distance"},
            "pair_both_values": {"pair_bias": True, "pair_features": "both", "pair_values": True, "energy_scale": 0.7}}


def _model(dtype=torch.float64, cls=TransformerPotential, **kw):
    base = dict(atomic_numbers=(1, 6, 8), e0=(-0.5, -1.0, -2.0), dim=16, heads=4, layers=2, num_frequencies=4,
                readout_hidden=8)
    base.update(kw)
    torch.manual_seed(0)
    return cls(TransformerPotentialConfig(dtype=str(dtype).split(".")[-1], **base))


def _molecule(dtype, n=7, seed=3):
    g = torch.Generator().manual_seed(seed)
    pos = (torch.rand(n, 3, generator=g, dtype=torch.float64) * 3.0).to(dtype)
    numbers = torch.tensor([8, 1, 6, 1, 6, 1, 1, 8, 6][:n])
    return {"pos": pos, "numbers": numbers}


def _energy_forces(model):
    def f(d):
        b = AtomsBatch.from_arrays(positions=d["pos"], numbers=d["numbers"], natoms=[d["pos"].shape[0]])
        out = model(b)
        return {"energy": out["energy"].detach(), "forces": out["forces"].detach()}

    return f


def _permutation_actions(n):
    return (NodePermutation(n, nodes={"pos": -2, "numbers": -1}),
            NodePermutation(n, nodes={"forces": -2}, invariant=("energy",)))


@pytest.mark.parametrize("variant", list(VARIANTS.values()), ids=list(VARIANTS))
def test_atom_permutations_leave_energy_invariant_and_permute_forces(dtype, variant):
    model = _model(dtype, **variant)
    x = _molecule(dtype)
    act_in, act_out = _permutation_actions(7)
    report = assert_equivariant(_energy_forces(model), x, act_in, act_out, n_samples=8, generator=1,
                                rtol=RTOL[dtype])
    assert report.n_elements == 8


class _IndexedTransformer(TransformerPotential):
    """Negative control: a positional (token-index) embedding, as a sequence transformer has."""

    def encode(self, pos, numbers, mask):
        h = super().encode(pos, numbers, mask)
        index = torch.arange(h.shape[1], dtype=h.dtype)[:, None] * torch.linspace(-1, 1, h.shape[2], dtype=h.dtype)
        return h + 0.5 * index  # not constant over channels: the readout's LayerNorm would remove that


@pytest.mark.parametrize("variant", list(VARIANTS.values()), ids=list(VARIANTS))
def test_negative_control_token_index_breaks_permutation_symmetry(dtype, variant):
    model = _model(dtype, cls=_IndexedTransformer, **variant)
    act_in, act_out = _permutation_actions(7)
    report = equivariance_error(_energy_forces(model), _molecule(dtype), act_in, act_out, n_samples=8, generator=1)
    assert not report.passed(rtol=RTOL[dtype])
    assert report.rel_max > 1e-3


@pytest.mark.parametrize("variant", list(VARIANTS.values()), ids=list(VARIANTS))
def test_translations_leave_energy_and_forces_unchanged(dtype, variant):
    model = _model(dtype, **variant)
    out = PointCloud(Translation(3), pos=None, vectors=("forces",), scalars=("energy",))
    # float32: centring x + t loses |t| * 2^-24 per coordinate; translations are O(1) here
    assert_equivariant(_energy_forces(model), _molecule(dtype), PointCloud(Translation(3), scalars=("numbers",)),
                       out, n_samples=6, generator=2, rtol=RTOL[dtype] if dtype == torch.float64 else 2e-5)


@pytest.mark.parametrize("variant", list(VARIANTS.values()), ids=list(VARIANTS))
def test_untrained_model_is_not_rotation_invariant(dtype, variant):
    """The point of the benchmark: rotations and reflections are not built in, so an untrained
    model changes its energy and forces under O(3) by far more than rounding."""
    report = equivariance_error(_energy_forces(_model(dtype, **variant)), _molecule(dtype),
                                PointCloud(O(3), scalars=("numbers",)), OUT, n_samples=8, generator=4)
    assert not report.passed(rtol=1e-3)
    assert report.rel_max > 1e-2


@pytest.mark.parametrize("variant", list(VARIANTS.values()), ids=list(VARIANTS))
def test_padded_batch_equals_one_by_one(dtype, variant):
    model = _model(dtype, **variant)
    mols = [_molecule(dtype, n, seed) for n, seed in ((7, 1), (3, 2), (9, 3), (5, 4))]
    batch = AtomsBatch.from_arrays(positions=torch.cat([m["pos"] for m in mols]),
                                   numbers=torch.cat([m["numbers"] for m in mols]), natoms=[7, 3, 9, 5])
    out = model(batch, return_tokens=True)
    singles = [_energy_forces(model)(m) for m in mols]
    tol = dict(rtol=RTOL[dtype], atol=0.0) if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out["energy"].detach(), torch.stack([s["energy"][0] for s in singles]), **tol)
    torch.testing.assert_close(out["forces"], torch.cat([s["forces"] for s in singles]), **tol)
    assert out["tokens"].shape == (24, 16) and out["node_energy"].shape == (24,)


def test_pad_atoms_places_each_atom_in_its_structure_row():
    values = torch.arange(6.0)[:, None] * torch.ones(1, 3)
    dense, mask = pad_atoms(values, torch.tensor([0, 1, 1, 1, 2, 2]), 3)
    assert mask.tolist() == [[True, False, False], [True, True, True], [True, True, False]]
    assert dense[..., 0].tolist() == [[0.0, 0.0, 0.0], [1.0, 2.0, 3.0], [4.0, 5.0, 0.0]]


@pytest.mark.parametrize("variant", list(VARIANTS.values()), ids=list(VARIANTS))
def test_forces_are_minus_finite_differences_of_energy(variant):
    model = _model(torch.float64, **variant)
    x = _molecule(torch.float64)
    b = AtomsBatch.from_arrays(positions=x["pos"], numbers=x["numbers"], natoms=[7])
    forces = model(b)["forces"]
    h = 1e-5
    for atom, axis in ((0, 0), (3, 1), (6, 2), (2, 0)):
        plus, minus = x["pos"].clone(), x["pos"].clone()
        plus[atom, axis] += h
        minus[atom, axis] -= h
        e = [float(model(AtomsBatch.from_arrays(positions=p, numbers=x["numbers"], natoms=[7]),
                         compute_forces=False)["energy"].detach()) for p in (plus, minus)]
        fd = -(e[0] - e[1]) / (2 * h)
        assert abs(fd - float(forces[atom, axis])) <= 1e-8 * max(1.0, abs(fd))


@pytest.mark.parametrize("pair_features", ["displacement", "both"])
def test_force_loss_double_backward_gradcheck(pair_features):
    """Training on forces differentiates -dE/dx by the parameters (attention's math kernel; with
    the radial basis, through the distances, whose diagonal r = 0 must not give NaN)."""
    model = _model(torch.float64, dim=8, heads=2, layers=1, num_frequencies=2, pair_bias=True,
                   pair_features=pair_features, num_radial=3, pair_values=pair_features == "both")
    x = _molecule(torch.float64, n=4)
    b = AtomsBatch.from_arrays(positions=x["pos"], numbers=x["numbers"], natoms=[4])

    def force_loss(w):  # the loss as a function of one weight matrix
        out = torch.func.functional_call(model, {"blocks.0.qkv.weight": w}, (b,), {"training": True})
        return out["forces"].pow(2).sum()

    w0 = model.blocks[0].qkv.weight.detach().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(force_loss, (w0,), eps=1e-6, atol=1e-6)


def test_invalid_config_and_inputs_raise():
    with pytest.raises(ValueError, match="TransformerPotentialConfig: `heads` \\(3\\) must divide `dim` \\(16\\)"):
        TransformerPotentialConfig(dim=16, heads=3)
    with pytest.raises(ValueError, match="TransformerPotentialConfig: `e0` needs one energy per element"):
        TransformerPotentialConfig(atomic_numbers=(1, 8), e0=(0.0,))
    with pytest.raises(TypeError, match="TransformerPotentialConfig: `pair_bias` must be a bool"):
        TransformerPotentialConfig(pair_bias=1)
    with pytest.raises(ValueError, match=r"TransformerPotentialConfig: `pair_features` must be one of "
                                         r"\['displacement', 'distance', 'both'\], got 'radial'"):
        TransformerPotentialConfig(pair_features="radial")
    with pytest.raises(TypeError, match="TransformerPotentialConfig: `pair_values` must be a bool"):
        TransformerPotentialConfig(pair_bias=True, pair_values="yes")
    with pytest.raises(ValueError, match="`pair_values=True` needs `pair_bias=True`"):
        TransformerPotentialConfig(pair_values=True)
    with pytest.raises(ValueError, match="TransformerPotentialConfig: `energy_scale` must be a number > 0, got 0"):
        TransformerPotentialConfig(energy_scale=0)
    with pytest.raises(ValueError, match="TransformerPotentialConfig: `cutoff` must be a number > 0, got -1"):
        TransformerPotentialConfig(cutoff=-1.0)
    with pytest.raises(ValueError, match="TransformerPotentialConfig: `num_radial` must be a positive int"):
        TransformerPotentialConfig(num_radial=0)
    with pytest.raises(ValueError, match="TransformerPotentialConfig: `dtype` must be one of"):
        TransformerPotentialConfig(dtype="float16")
    with pytest.raises(ValueError, match=r"TransformerPotentialConfig\.from_dict: unknown fields \['width'\]"):
        TransformerPotentialConfig.from_dict({"width": 3})
    with pytest.raises(TypeError, match="TransformerPotential: `config` must be a TransformerPotentialConfig"):
        TransformerPotential({"dim": 16})
    model = _model(torch.float64)
    x = _molecule(torch.float64, n=3)
    with pytest.raises(ValueError, match="atomic numbers \\[29\\] are not in the model's elements \\[1, 6, 8\\]"):
        model(AtomsBatch.from_arrays(positions=x["pos"], numbers=torch.tensor([8, 29, 1]), natoms=[3]))
    with pytest.raises(TypeError, match=r"positions are torch\.float32 but the model is torch\.float64"):
        model(AtomsBatch.from_arrays(positions=x["pos"].float(), numbers=x["numbers"], natoms=[3]))
    bad = x["pos"].clone()
    bad[1, 2] = float("nan")
    with pytest.raises(ValueError, match=r"TransformerPotential\.forward: positions contain NaN"):
        model(AtomsBatch.from_arrays(positions=bad, numbers=x["numbers"], natoms=[3]))
    with pytest.raises(ValueError, match="periodic cells are not supported"):
        model(AtomsBatch.from_arrays(positions=x["pos"], numbers=x["numbers"], natoms=[3],
                                     cell=torch.eye(3)[None] * 5, pbc=torch.ones(1, 3, dtype=torch.bool)))
    with pytest.raises(TypeError, match="`batch` must be an AtomsBatch"):
        model({"pos": x["pos"]})


def test_pair_distances_match_cdist_and_have_finite_second_derivatives():
    x = _molecule(torch.float64, n=5)["pos"][None].requires_grad_(True)
    r = pair_distances(x)
    torch.testing.assert_close(r, torch.cdist(x, x), rtol=1e-12, atol=1e-12)
    assert r.diagonal(dim1=-2, dim2=-1).abs().max() == 0
    (g,) = torch.autograd.grad(r.sum(), x, create_graph=True)
    (h,) = torch.autograd.grad(g.pow(2).sum(), x)
    assert torch.isfinite(h).all() and h.abs().max() > 0


def test_distance_pair_features_are_rotation_invariant_displacement_ones_are_not(dtype):
    """The radial pair features see only |x_j - x_i| (invariant under O(3)); the displacement
    features (the negative control) see the raw vectors. Either way the tokens see raw positions,
    so the model stays non-equivariant (test_untrained_model_is_not_rotation_invariant)."""
    x = {"pos": _molecule(dtype)["pos"]}
    act = PointCloud(O(3))
    for features, invariant in (("distance", True), ("displacement", False)):
        model = _model(dtype, pair_bias=True, pair_features=features)
        report = equivariance_error(lambda d, m=model: m.pair_features(d["pos"][None])[0], x, act, n_samples=8,
                                    generator=6)
        assert report.passed(rtol=RTOL[dtype], atol=1e-6 if dtype == torch.float32 else 1e-12) == invariant
        if not invariant:
            assert report.rel_max > 1e-2


def test_distance_pair_features_vanish_beyond_the_cutoff():
    model = _model(torch.float64, pair_bias=True, pair_features="distance", cutoff=2.0)
    x = torch.tensor([[[0.0, 0, 0], [1.0, 0, 0], [0.0, 2.5, 0]]], dtype=torch.float64)
    feats = model.pair_features(x)[0]
    assert feats[0, 2].abs().max() == 0 and feats[1, 2].abs().max() == 0  # 2.5 and 2.69 A > cutoff 2 A
    assert feats[0, 1].abs().max() > 1e-3 and feats[0, 0].abs().max() > 1e-3


def test_energy_scale_scales_the_learned_part_of_energy_and_forces():
    """E = E0 + s * MLP: the same weights with s = 2.5 give forces and E - E0 2.5 times those at s = 1."""
    x = _molecule(torch.float64)
    b = AtomsBatch.from_arrays(positions=x["pos"], numbers=x["numbers"], natoms=[7])
    one = _model(torch.float64, pair_bias=True, pair_features="both")
    scaled = _model(torch.float64, pair_bias=True, pair_features="both", energy_scale=2.5)
    scaled.load_state_dict(one.state_dict())
    e0 = float(one.e0[one.element_index(x["numbers"])].sum())
    a, c = one(b), scaled(b)
    torch.testing.assert_close(c["forces"], 2.5 * a["forces"], rtol=1e-12, atol=0.0)
    torch.testing.assert_close(c["energy"] - e0, 2.5 * (a["energy"] - e0), rtol=1e-12, atol=0.0)
    assert a["forces"].abs().max() > 1e-4


def test_pair_values_reach_the_energy_and_zero_values_change_nothing():
    """With the pair-value MLP's last layer zeroed, ``pair_values=True`` equals the model without it
    (same remaining weights); with its weights, the energy changes (the pathway is live)."""
    x = _molecule(torch.float64)
    b = AtomsBatch.from_arrays(positions=x["pos"], numbers=x["numbers"], natoms=[7])
    kw = dict(pair_bias=True, pair_features="both")
    base, with_values = _model(torch.float64, **kw), _model(torch.float64, pair_values=True, **kw)
    state = {k: v for k, v in with_values.state_dict().items() if not k.startswith("pair_value.")}
    base.load_state_dict(state)
    e_live = with_values(b)["energy"].detach()
    with torch.no_grad():
        with_values.pair_value[-1].weight.zero_()
        with_values.pair_value[-1].bias.zero_()
    a, c = base(b), with_values(b)
    torch.testing.assert_close(c["energy"], a["energy"], rtol=1e-12, atol=0.0)
    torch.testing.assert_close(c["forces"], a["forces"], rtol=1e-10, atol=1e-14)
    assert float((e_live - a["energy"].detach()).abs()) > 1e-4
