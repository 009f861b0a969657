"""The radial embedding (Bessel basis x envelope, or the enveloped spline basis) is computed once
per call and shared by the layers: it equals each layer's own, and the potential's energies,
forces and training gradients equal those of layers that compute it themselves (float64)."""

import pytest
import torch

from equikit.data.atoms import AtomsBatch
from equikit.models.potential import Potential, PotentialConfig


def _model(radial):
    torch.manual_seed(0)
    return Potential(PotentialConfig(atomic_numbers=(1, 8), hidden_irreps="4x0e + 4x1o", max_ell=2, correlation=2,
                                     radial=radial, radial_mlp=(8,), cutoff=3.0, num_interactions=3,
                                     avg_num_neighbors=4.0, readout_hidden=4, dtype="float64"))


def _batch():
    g = torch.Generator().manual_seed(7)
    return AtomsBatch.from_arrays(positions=torch.rand(8, 3, generator=g, dtype=torch.float64) * 3.0,
                                  numbers=torch.tensor([8, 1, 1, 8, 1, 1, 8, 1]), natoms=torch.tensor([3, 5]),
                                  dtype=torch.float64)


def _unshared(model):
    """The layers called without the shared embedding (each computes its own from r)."""
    def node_energies(pos, cell, batch, numbers, pbc, edge_index=None, shifts=None):
        from equikit.data.neighbors import edge_vectors, radius_graph
        element = model.element_index(numbers)
        if edge_index is None:
            nb = radius_graph(pos.detach(), model.config.cutoff, batch=batch, cell=cell.detach(), pbc=pbc)
            edge_index, shifts = nb.edge_index, nb.shifts
        r, sh = model.edge_features(edge_vectors(pos, edge_index, shifts, cell, batch))
        h, energy = model.embedding[element], model.e0[element]
        for layer, readout in zip(model.interactions, model.readouts):
            h = layer(h, element, sh, r, edge_index)
            energy = energy + readout(h).squeeze(-1)
        return energy
    return node_energies


def _outputs(model, batch):
    out = model(batch, training=True)
    loss = (out["energy"] ** 2).sum() + (out["forces"] ** 2).sum()
    return [out["energy"], out["forces"], *torch.autograd.grad(loss, list(model.parameters()))]


@pytest.mark.parametrize("radial", ["bessel", "spline"])
def test_shared_radial_embedding_equals_per_layer(radial):
    model, batch = _model(radial), _batch()
    r = torch.linspace(0.1, 3.2, 11, dtype=torch.float64)
    embs = [layer.radial.embedding(r) for layer in model.interactions]
    for e in embs[1:]:
        torch.testing.assert_close(e, embs[0], rtol=0, atol=0)
    assert float(embs[0][-1].abs().max()) == 0.0 and float(embs[0][0].abs().max()) > 0  # envelope: 0 past the cutoff
    shared = _outputs(model, batch)
    model.node_energies = _unshared(model)
    own = _outputs(model, batch)
    assert float(own[1].detach().abs().max()) > 1e-4
    for a, b in zip(shared, own):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12 * max(1.0, float(b.detach().abs().max())))


def test_radial_forward_with_embedding_and_columns():
    """``forward(r, columns, embedding=...)`` equals ``forward(r)[:, columns]``; a wrong embedding
    (of other distances) gives other weights: the argument is used."""
    for radial in ("bessel", "spline"):
        f = _model(radial).interactions[0].radial
        r = torch.tensor([0.4, 1.3, 2.9], dtype=torch.float64)
        cols = torch.tensor([3, 0, 0, 5])
        e = f.embedding(r)
        torch.testing.assert_close(f(r, embedding=e), f(r), rtol=0, atol=1e-14)
        torch.testing.assert_close(f(r, cols, embedding=e), f(r)[:, cols], rtol=1e-12, atol=1e-14)
        assert float((f(r, embedding=f.embedding(r * 0.5)) - f(r)).detach().abs().max()) > 1e-6
