"""benchmarks/atoms_mace_accuracy.py installs its grid options (the session-7 runs were trained
with them) by subclassing the potential's Interaction: the installed model runs, uses its
per-element weights, and equals the model built from the PotentialConfig fields that replaced
the options (grid_gain / grid_output) with the same weights."""

import importlib.util
from pathlib import Path

import torch

import equikit.models.potential as pot
from equikit.data.atoms import AtomsBatch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "atoms_mace_accuracy.py"
BASE = dict(atomic_numbers=(1, 8), hidden_irreps="4x0e + 4x1o", max_ell=2, cutoff=3.0, grid_hidden=8,
            radial="spline", tp_product="gaunt", product="grid_mlp", grid_condition="scalars", dtype="float64")


def _script():
    spec = importlib.util.spec_from_file_location("atoms_mace_accuracy_under_test", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_installed_grid_options_equal_the_config_fields(monkeypatch):
    monkeypatch.setattr(pot, "Interaction", pot.Interaction)  # restored after the test
    torch.manual_seed(0)
    ref = pot.Potential(pot.PotentialConfig(**BASE, grid_gain=5.0, grid_output="element"))
    script = _script()
    monkeypatch.setattr(script, "_GRID_OPTIONS", {})
    script.use_grid_options({"output": "degree", "per_element": True, "input_scale": 5.0, "output_scale": 0.2})
    model = pot.Potential(pot.PotentialConfig(**BASE))
    model.load_state_dict(ref.state_dict())
    g = torch.Generator().manual_seed(1)
    b = AtomsBatch.from_arrays(positions=torch.rand(6, 3, generator=g, dtype=torch.float64) * 3,
                               numbers=torch.tensor([1, 8, 1, 8, 8, 1]), natoms=[6], dtype=torch.float64)
    out, want = model(b), ref(b)
    torch.testing.assert_close(out["energy"], want["energy"], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(out["forces"], want["forces"], rtol=1e-10, atol=1e-12)
    with torch.no_grad():  # the per-element weights are used: changing oxygen's moves the energy
        for layer in model.interactions:
            layer.product.out_weight[1].add_(0.1)
    assert float((model(b)["energy"] - want["energy"]).detach().abs()) > 1e-6
