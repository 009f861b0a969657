"""The potential with the ``monomial`` symmetric-contraction executor (the default) against the
``recursive`` one: the same parameters give the same energies, forces, stress and training
gradients (float64, 1e-10; float32 to rounding), on a molecule batch with three elements and
on periodic copper."""

import pytest
import torch
from potential_test_helpers import copper, molecules, outputs

from equikit.models.potential import Potential, PotentialConfig


def _pair(dtype, **kw):
    cfg = dict(hidden_irreps="4x0e + 4x1o", max_ell=3, correlation=3, radial_mlp=(8,), cutoff=3.0,
               num_interactions=2, avg_num_neighbors=4.0, readout_hidden=4, dtype=dtype, **kw)
    torch.manual_seed(0)
    mono = Potential(PotentialConfig(symmetric_backend="monomial", **cfg))
    rec = Potential(PotentialConfig(symmetric_backend="recursive", **cfg))
    rec.load_state_dict(mono.state_dict())
    with torch.no_grad():  # the contraction's weights away from their small initial scale
        for m in (mono, rec):
            for layer in m.interactions:
                layer.product.weight.copy_(torch.randn(layer.product.weight.shape, generator=torch.Generator()
                                                       .manual_seed(1), dtype=layer.product.weight.dtype))
    return mono, rec


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", ["molecules", "copper"])
def test_monomial_equals_recursive(dtype, case):
    elements = (1, 6, 8) if case == "molecules" else (29,)
    mono, rec = _pair(dtype, atomic_numbers=elements)
    batch = (molecules if case == "molecules" else copper)(getattr(torch, dtype))
    stress = case == "copper"
    a, b = outputs(mono, batch, stress), outputs(rec, batch, stress)
    rtol = 1e-10 if dtype == "float64" else 2e-5  # float32: different summation orders of ~10^3 terms
    assert float(b[1].detach().abs().max()) > 1e-3  # nonzero forces: the comparison is not vacuous
    for x, y in zip(a, b):
        scale = float(y.detach().abs().max())
        torch.testing.assert_close(x, y, rtol=0, atol=rtol * max(scale, 1e-12))


def test_negative_control_other_weights_differ():
    """The comparison above can fail: one changed weight of the contraction moves the forces."""
    mono, rec = _pair("float64", atomic_numbers=(1, 6, 8))
    with torch.no_grad():
        rec.interactions[0].product.weight[1, 5, 0] += 0.5
    batch = molecules(torch.float64)
    fa, fb = mono(batch)["forces"], rec(batch)["forces"]
    assert float((fa - fb).abs().max()) > 1e-6
