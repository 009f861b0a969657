"""The grid + MLP potential with a conditioned grid MLP (``grid_condition`` "element" / "scalars"),
per-element activation coefficients (``grid_powers="element"``) and several hidden layers
(``grid_hidden`` tuples), the input gain and per-element output weights (``grid_gain``,
``grid_output``): E(3) invariance of the energy and
equivariance of the forces through the public checker (reflections included) in float32 and
float64, atom permutations, a negative control, forces against finite differences, the
conditioning's effect, ``SphereGridMLP``'s ``bias`` argument, config validation and YAML."""

import pytest
import torch
from potential_test_helpers import (
    RTOL,
    check_e3,
    check_forces_against_finite_differences,
    check_permutations,
    cluster,
    energy_forces,
)
from potential_test_helpers import cluster_batch as _batch
from potential_test_helpers import energy as _energy

from equikit.check import assert_equivariant, equivariance_error
from equikit.groups import E, NodePermutation, PointCloud
from equikit.models.potential import Potential, PotentialConfig
from equikit.nn import SphereGridMLP
from equikit.o3 import Irreps, IrrepsRep

E3_OUT = PointCloud(E(3), pos=None, vectors=("forces",), scalars=("energy",))
FACET = dict(radial="spline", tp_backend="sparse_cg", tp_product="gaunt", product="grid_mlp")


def _config(**kw):
    base = dict(atomic_numbers=(1, 8), e0=(-0.5, -2.0), hidden_irreps="4x0e + 4x1o", max_ell=2, correlation=3,
                cutoff=3.0, num_interactions=2, avg_num_neighbors=4.0, readout_hidden=4, grid_hidden=8, **FACET)
    base.update(kw)
    return PotentialConfig(**base)


def _model(dtype=torch.float64, **kw):
    """A model whose per-element biases are random (their zero init would hide them)."""
    torch.manual_seed(0)
    model = Potential(_config(dtype=str(dtype).split(".")[-1], **kw))
    with torch.no_grad():
        for layer in model.interactions:
            if isinstance(getattr(layer, "grid_bias", None), torch.nn.Parameter):
                layer.grid_bias.normal_()
            if getattr(layer, "grid_powers", None) is not None:
                layer.grid_powers.uniform_(0.5, 1.5)
    return model


VARIANTS = [{"grid_condition": "element"}, {"grid_condition": "scalars", "grid_powers": "element"},
            {"grid_condition": "element", "grid_hidden": (6, 5), "correlation": 2},
            # facet_gain_el of the benchmarks: input gain 5 / output 1/5, last layer per degree and element
            {"grid_condition": "scalars", "grid_gain": 5.0, "grid_output": "element"}]
IDS = ["element", "scalars_powers", "element_depth2", "gain_element_output"]
PERM = [0, 1, 3]


@pytest.mark.parametrize("variant", VARIANTS, ids=IDS)
def test_energy_invariant_forces_equivariant_under_e3(dtype, variant):
    model = _model(dtype, **variant)
    check_e3(model, dtype)


@pytest.mark.parametrize("variant", [VARIANTS[i] for i in PERM], ids=[IDS[i] for i in PERM])
def test_atom_permutation_equivariance(dtype, variant):
    model = _model(dtype, **variant)
    check_permutations(model, dtype)


def test_negative_control_bias_from_vector_features(dtype):
    """A bug that conditions the grid MLP on the first vector (1o) components of the node features
    as well as the scalars (a slice past the scalar block) is not invariant: the checker must fail."""
    model = _model(dtype, grid_condition="scalars")
    layer = model.interactions[1]
    c = layer.grid_bias.in_features
    torch.manual_seed(1)
    layer.grid_bias = torch.nn.Linear(c + 3, layer.grid_bias.out_features, bias=False).to(dtype)
    report = equivariance_error(energy_forces(model), cluster(dtype), PointCloud(E(3), scalars=("numbers",)),
                                E3_OUT, n_samples=8, generator=1)
    assert not report.passed(rtol=RTOL[dtype])
    assert report.rel_max > 1e-3


def test_negative_control_per_element_weights_by_position(dtype):
    """A bug that picks the per-element output weights of the grid MLP by the atom's position in
    the structure instead of its element (``grid_output="element"``) is invariant under rotations
    but not equivariant under atom permutations: the checker must fail."""
    model = _model(dtype, **VARIANTS[3])
    with torch.no_grad():
        for layer in model.interactions:
            layer.product.out_weight.normal_()  # distinct weights per element
    for layer in model.interactions:
        inner = layer.product.forward

        def by_position(x, bias=None, act=None, group=None, inner=inner, **kw):
            return inner(x, bias, act, group=torch.arange(x.shape[0]) % 2, **kw)

        layer.product.forward = by_position
    x = cluster(dtype)
    n = x["pos"].shape[0]
    act_in = NodePermutation(n, nodes={"pos": -2, "numbers": -1})
    act_out = NodePermutation(n, nodes={"forces": -2}, invariant=("energy",))
    assert not equivariance_error(energy_forces(model), x, act_in, act_out, n_samples=6,
                                  generator=3).passed(rtol=RTOL[dtype])
    assert_equivariant(energy_forces(model), x, PointCloud(E(3), scalars=("numbers",)), E3_OUT, n_samples=4,
                       generator=1, rtol=RTOL[dtype])


def test_grid_gain_and_element_output_reach_the_grid_mlp():
    """``grid_gain`` and ``grid_output`` configure the layer (input scale g, output 1/g, per-degree
    output weights per element); the per-element weights of an element absent from the structure
    change nothing, those of a present element change the energy."""
    model = _model(**VARIANTS[3])
    gm = model.interactions[0].product
    assert gm.input_scale == 5.0 and gm.output_scale == pytest.approx(0.2)
    assert gm.out_weight.shape[0] == 2  # one set per element (H, O)
    b = _batch({"pos": cluster(torch.float64)["pos"], "numbers": torch.tensor([8, 8, 8, 8, 8, 8, 8])})
    e0 = _energy(model, b)
    with torch.no_grad():
        for layer in model.interactions:
            layer.product.out_weight[0].add_(1.0)  # element index 0: H, absent
    assert torch.equal(_energy(model, b), e0)
    with torch.no_grad():
        for layer in model.interactions:
            layer.product.out_weight[1].add_(0.1)  # O, present
    assert float((_energy(model, b) - e0).abs()) > 1e-6


@pytest.mark.parametrize("variant", VARIANTS, ids=IDS)
def test_forces_are_minus_finite_differences_of_energy(variant):
    model = _model(**variant)
    check_forces_against_finite_differences(model)


def test_element_bias_acts_per_element():
    """The "element" bias of an element absent from the structure changes nothing; that of a present
    element changes the energy; a zero bias is the unconditioned model (same weights)."""
    model = _model(grid_condition="element")
    x = cluster(torch.float64)
    only_h = {"pos": x["pos"][[1, 2, 4, 6]], "numbers": torch.tensor([1, 1, 1, 1])}
    e_h, e_all = _energy(model, _batch(only_h)), _energy(model, _batch(x))
    with torch.no_grad():
        model.interactions[0].grid_bias[1] += 0.5  # oxygen's row (atomic_numbers = (1, 8))
    torch.testing.assert_close(_energy(model, _batch(only_h)), e_h, rtol=0, atol=0)
    assert (_energy(model, _batch(x)) - e_all).abs().item() > 1e-6
    plain = _model(grid_condition="none")
    state = {k: v for k, v in model.state_dict().items() if "grid_bias" not in k}
    plain.load_state_dict(state)
    with torch.no_grad():
        for layer in model.interactions:
            layer.grid_bias.zero_()
    torch.testing.assert_close(_energy(model, _batch(x)), _energy(plain, _batch(x)), rtol=1e-12, atol=0)


def test_element_powers_act_per_element():
    """``grid_powers="element"``: all coefficients 1 is the fixed truncated exponential (same
    weights); an absent element's coefficients change nothing, a present element's change the energy."""
    model = _model(grid_powers="element")
    x = cluster(torch.float64)
    only_h = {"pos": x["pos"][[1, 2, 4, 6]], "numbers": torch.tensor([1, 1, 1, 1])}
    e_h, e_all = _energy(model, _batch(only_h)), _energy(model, _batch(x))
    with torch.no_grad():
        model.interactions[1].grid_powers[1, :, 2] += 0.5  # oxygen's cubic coefficients, second layer
    torch.testing.assert_close(_energy(model, _batch(only_h)), e_h, rtol=0, atol=0)
    assert (_energy(model, _batch(x)) - e_all).abs().item() > 1e-6
    plain = _model(grid_powers="fixed")
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if "grid_powers" not in k})
    with torch.no_grad():
        for layer in model.interactions:
            layer.grid_powers.fill_(1.0)
    torch.testing.assert_close(_energy(model, _batch(x)), _energy(plain, _batch(x)), rtol=1e-12, atol=0)


def test_polynomial_activation_coefficients_against_the_expanded_polynomial():
    from equikit.models.potential import PolynomialActivation

    t = torch.linspace(-2, 2, 7, dtype=torch.float64)
    a = torch.tensor([0.3, -1.2, 2.5], dtype=torch.float64)
    expected = 0.3 * t - 1.2 * t**2 / 2 + 2.5 * t**3 / 6
    torch.testing.assert_close(PolynomialActivation(3)(t, a), expected, rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("variant", [{"grid_condition": "element"}, {"grid_condition": "scalars"},
                                     {"grid_powers": "element"}], ids=["element", "scalars", "powers"])
def test_conditioned_model_trains_its_new_parameters(variant):
    model = _model(**variant)
    b = _batch(cluster(torch.float64))
    out = model(b, training=True)
    (out["forces"] ** 2).sum().backward()
    for layer in model.interactions:
        p = layer.grid_bias.weight if variant.get("grid_condition") == "scalars" else (
            layer.grid_bias if "grid_condition" in variant else layer.grid_powers)
        assert p.grad is not None and p.grad.abs().sum() > 0


def test_depth_two_grid_is_exact_for_the_squared_band_limit():
    """Two hidden layers with the degree-2 polynomial: band limit 4 L_in, and the grid is built for it."""
    m = _model(grid_condition="none", grid_hidden=(6, 5), correlation=2).interactions[0].product
    assert len(m.layers) == 3
    assert m.resolution == ((4 * 2 + 1) // 2 + 1, 4 * 2 + 1 + 1)  # L_in = max_ell = 2, L_out = 1


# --------------------------------------------------------------------------- SphereGridMLP(bias)
I, O = "4x0e + 4x1o + 4x2e", "3x0e + 3x1o"


def test_grid_mlp_bias_is_a_per_sample_first_layer_bias():
    """Independent reference: sample b's output equals the same MLP with its first bias shifted by
    bias[b] (a constant on the sphere), computed without the `bias` argument."""
    torch.manual_seed(0)
    m = SphereGridMLP(I, O, hidden=(8,), act=torch.square).double()
    x, bias = torch.randn(3, Irreps(I).dim, dtype=torch.float64), torch.randn(3, 8, dtype=torch.float64)
    got = m(x, bias)
    for k in range(3):
        ref = SphereGridMLP(I, O, hidden=(8,), act=torch.square).double()
        ref.load_state_dict(m.state_dict())
        with torch.no_grad():
            ref.layers[0].bias += bias[k]
        torch.testing.assert_close(got[k], ref(x[k : k + 1])[0], rtol=1e-12, atol=1e-12)
    assert (got - m(x)).abs().max() > 1e-3


def test_grid_mlp_with_invariant_bias_is_equivariant(dtype):
    torch.manual_seed(0)
    m = SphereGridMLP(I, O, hidden=(8,), act=torch.square).to(dtype)
    bias = torch.randn(5, 8, dtype=dtype)
    x = torch.randn(5, Irreps(I).dim, dtype=dtype)
    assert_equivariant(lambda v: m(v, bias), x, IrrepsRep(I), IrrepsRep(O), rtol=RTOL[dtype])


def test_grid_mlp_per_call_activation():
    """``act=`` replaces the activation for one call: the same as a module built with it."""
    torch.manual_seed(0)
    m = SphereGridMLP(I, O, hidden=(8,), act=torch.square).double()
    other = SphereGridMLP(I, O, hidden=(8,), act=torch.tanh).double()
    other.load_state_dict(m.state_dict())
    x = torch.randn(4, Irreps(I).dim, dtype=torch.float64)
    torch.testing.assert_close(m(x, act=torch.tanh), other(x), rtol=0, atol=0)
    assert (m(x, act=torch.tanh) - m(x)).abs().max() > 1e-3
    with pytest.raises(TypeError, match="`act` must be callable"):
        m(x, act=3)


def test_grid_mlp_bias_bad_shapes_raise():
    m = SphereGridMLP(I, O, hidden=(8,))
    x = torch.randn(5, Irreps(I).dim)
    with pytest.raises(ValueError, match=r"SphereGridMLP: `bias` must have shape \(5, 8\)"):
        m(x, torch.randn(5, 7))
    with pytest.raises(ValueError, match="needs a hidden layer"):
        SphereGridMLP(I, O, hidden=())(x, torch.randn(5, 3))


# --------------------------------------------------------------------------- config
@pytest.mark.parametrize("kw, match", [
    ({"grid_condition": "species"}, "grid_condition` must be"),
    ({"grid_condition": "element", "product": "symmetric_contraction"}, "needs product='grid_mlp'"),
    ({"grid_hidden": ()}, "grid_hidden"),
    ({"grid_hidden": [8, 0]}, "grid_hidden"),
    ({"grid_hidden": True}, "grid_hidden"),
    ({"grid_hidden": 8.0}, "grid_hidden"),
    ({"grid_powers": "learned"}, "grid_powers` must be"),
    ({"grid_powers": "element", "grid_hidden": (8, 8)}, "one hidden layer"),
    ({"grid_powers": "element", "product": "symmetric_contraction"}, "needs product='grid_mlp'"),
    ({"grid_gain": 0.0}, "grid_gain` must be a finite number > 0"),
    ({"grid_gain": float("nan")}, "grid_gain` must be a finite number > 0"),
    ({"grid_gain": True}, "grid_gain` must be a finite number > 0"),
    ({"grid_gain": "5"}, "grid_gain` must be a finite number > 0"),
    ({"grid_output": "atom"}, "grid_output` must be 'shared' or 'element'"),
    ({"grid_gain": 5.0, "product": "symmetric_contraction"}, "need product='grid_mlp'"),
    ({"grid_output": "element", "product": "symmetric_contraction"}, "need product='grid_mlp'"),
])
def test_invalid_config_raises(kw, match):
    with pytest.raises(ValueError, match=match):
        _config(**kw)


def test_yaml_roundtrip(tmp_path):
    cfg = _config(grid_condition="scalars", grid_hidden=[16, 8])
    assert cfg.grid_hidden == (16, 8)
    cfg.to_yaml(tmp_path / "p.yaml")
    back = PotentialConfig.from_yaml(tmp_path / "p.yaml")
    assert back == cfg and back.grid_hidden == (16, 8) and back.grid_condition == "scalars"
    cfg = _config(grid_condition="element", grid_powers="element")
    cfg.to_yaml(tmp_path / "q.yaml")
    assert PotentialConfig.from_yaml(tmp_path / "q.yaml").grid_powers == "element"
    assert PotentialConfig.from_dict({**cfg.to_dict(), "grid_hidden": 12}).grid_hidden == 12
    cfg = _config(grid_condition="scalars", grid_gain=5.0, grid_output="element")
    cfg.to_yaml(tmp_path / "r.yaml")
    back = PotentialConfig.from_yaml(tmp_path / "r.yaml")
    assert back == cfg and back.grid_gain == 5.0 and back.grid_output == "element"
