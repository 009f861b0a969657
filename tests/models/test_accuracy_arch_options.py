"""benchmarks/atoms_mace_accuracy.py's session-8 prototypes (installed by subclassing the potential's
Interaction; the session-8 runs were trained with them): ``radial_e3nn`` and ``linear_e3nn`` equal the
models built from the PotentialConfig fields that replaced them (``radial_param="e3nn"``,
``grid_param="fan_in"``) with the same weights; the MACE-architecture prototypes (``element_skip``,
``element_mix``, ``path_linear``) are E(3)-invariant / equivariant and MACE's sizes, and a negative
control (per-element skip weights picked by atom position) fails the permutation check."""

import importlib.util
from pathlib import Path

import pytest
import torch
from potential_test_helpers import cluster, energy_forces

import equikit.models.potential as pot
from equikit.check import assert_equivariant, equivariance_error
from equikit.data.atoms import AtomsBatch
from equikit.groups import E, NodePermutation, PointCloud

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "atoms_mace_accuracy.py"
BASE = dict(atomic_numbers=(1, 8), hidden_irreps="4x0e + 4x1o", max_ell=2, cutoff=3.0, radial_mlp=(8, 8),
            avg_num_neighbors=4.0, readout_hidden=4, dtype="float64")
FACET = dict(grid_hidden=8, radial="spline", tp_product="gaunt", product="grid_mlp", grid_condition="scalars")
E3_OUT = PointCloud(E(3), pos=None, vectors=("forces",), scalars=("energy",))


@pytest.fixture
def script(monkeypatch):
    monkeypatch.setattr(pot, "Interaction", pot.Interaction)  # the script's subclass is removed after the test
    spec = importlib.util.spec_from_file_location("atoms_mace_accuracy_under_test", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    monkeypatch.setattr(mod, "_GRID_OPTIONS", {})
    return mod


def _batch():
    g = torch.Generator().manual_seed(1)
    return AtomsBatch.from_arrays(positions=torch.rand(6, 3, generator=g, dtype=torch.float64) * 3,
                                  numbers=torch.tensor([1, 8, 1, 8, 8, 1]), natoms=[6], dtype=torch.float64)


@pytest.mark.parametrize("options, fields, extra", [
    ({"radial_e3nn": True}, {"radial_param": "e3nn"}, {}),
    ({"linear_e3nn": True, "output": "degree", "per_element": True, "input_scale": 5.0, "output_scale": 0.2},
     {"grid_param": "fan_in", "grid_gain": 5.0, "grid_output": "element"}, FACET),
], ids=["radial_e3nn", "linear_e3nn"])
def test_prototypes_equal_the_config_fields(script, options, fields, extra):
    torch.manual_seed(0)
    ref = pot.Potential(pot.PotentialConfig(**BASE, **extra, **fields))
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(0.05 * torch.randn_like(p))  # not the initial weights
    script.use_grid_options(options)
    model = pot.Potential(pot.PotentialConfig(**BASE, **extra))
    model.load_state_dict(ref.state_dict())  # strict: the same parameter names and shapes
    b = _batch()
    out, want = model(b), ref(b)
    torch.testing.assert_close(out["energy"], want["energy"], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(out["forces"], want["forces"], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("options", [{"element_skip": True, "element_mix": True}, {"path_linear": True}],
                         ids=["mace_skip", "path_linear"])
def test_mace_architecture_prototypes_are_e3_equivariant(script, dtype, options):
    script.use_grid_options(options)
    torch.manual_seed(0)
    model = pot.Potential(pot.PotentialConfig(**{**BASE, "dtype": str(dtype).split(".")[-1]}))
    rtol = {torch.float32: 1e-5, torch.float64: 1e-10}[dtype]
    assert_equivariant(energy_forces(model), cluster(dtype), PointCloud(E(3), scalars=("numbers",)), E3_OUT,
                       n_samples=6, generator=1, rtol=rtol)


def test_mace_architecture_prototype_sizes(script):
    """At the benchmark size (32 channels, 3 elements) the prototypes have MACE's parameter counts:
    first-layer skip_tp 4 x 32 x 32 x 3, second-layer skip_tp 32 x 32 x 3, per-path linear 10 x 32 x 32."""
    cfg = dict(atomic_numbers=(1, 6, 8), hidden_irreps="32x0e + 32x1o", max_ell=3, dtype="float64")
    script.use_grid_options({"element_skip": True, "element_mix": True})
    m = pot.Potential(pot.PotentialConfig(**cfg))
    assert sum(p.numel() for p in m.interactions[0].element_mix.parameters()) == 12288
    assert sum(p.numel() for p in m.interactions[1].element_skip.parameters()) == 3072
    script.use_grid_options({"path_linear": True})
    m = pot.Potential(pot.PotentialConfig(**cfg))
    assert m.interactions[1].linear_a.weight.numel() == 10240
    assert m.interactions[1].conv.weight_numel == 320  # 10 paths x 32 channels, as MACE's conv_tp


def test_negative_control_element_skip_by_position(script):
    script.use_grid_options({"element_skip": True})
    torch.manual_seed(0)
    model = pot.Potential(pot.PotentialConfig(**BASE))
    x = cluster(torch.float64)
    n = x["pos"].shape[0]
    act_in = NodePermutation(n, nodes={"pos": -2, "numbers": -1})
    act_out = NodePermutation(n, nodes={"forces": -2}, invariant=("energy",))
    assert_equivariant(energy_forces(model), x, act_in, act_out, n_samples=6, generator=3, rtol=1e-10)
    skip = model.interactions[1].element_skip
    inner = skip.forward
    skip.forward = lambda x, element=None: inner(x, torch.arange(x.shape[0]) % 2)  # the bug: by position
    report = equivariance_error(energy_forces(model), x, act_in, act_out, n_samples=6, generator=3)
    assert not report.passed(rtol=1e-10)
