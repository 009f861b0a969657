r"""Molecular property regression (QM9-style targets) on top of the MACE-style
:class:`~equikit.models.potential.Potential`: its invariant per-atom readout ``h_i`` (the
"atomic energies" of :meth:`Potential.node_energies`, with ``e0 = 0``) pooled three ways.

.. math::
    \text{extensive:}\quad y = \sum_i \big(b_{z_i} + \sigma h_i\big) \qquad
    \text{intensive:}\quad y = b + \sigma\, \frac{1}{n} \sum_i h_i \qquad
    \text{dipole:}\quad \boldsymbol\mu = c \sum_i q_i \mathbf r_i,\
    q_i = \sigma\big(h_i - \tfrac1n \textstyle\sum_j h_j\big),\ y = \lVert \boldsymbol\mu \rVert

``b`` (per element, or one number) and ``sigma`` are fixed target statistics (shift and scale,
so the network learns an O(1) quantity); extensive suits U0 (``b`` = per-element reference
energies) and alpha, intensive HOMO, LUMO and the gap. The dipole is the usual
"charges times positions" form (SchNet / PaiNN): the charges ``q_i`` are invariant and sum to
zero in each molecule, so ``mu`` is translation invariant and rotates (and reflects) with the
molecule as a polar vector ``1o``; ``c = 4.80320 D / (e A)`` converts to Debye.
"""

from __future__ import annotations

import torch
from torch import nn

from equikit.data.atoms import AtomsBatch
from equikit.models.potential import Potential, PotentialConfig

#: Debye per (elementary charge x Angstrom)
DEBYE_PER_E_ANGSTROM = 4.803204544
POOLINGS = ("extensive", "intensive", "dipole")


class MolecularProperty(nn.Module):
    """One scalar property per molecule from a :class:`Potential`'s invariant atomic readout.

    Args:
        config: the :class:`PotentialConfig` of the backbone (its ``e0`` is ignored: set to zeros).
        pooling: ``"extensive"``, ``"intensive"`` or ``"dipole"`` (see the module docstring).
        shift: ``b``: one number, or one per element of ``config.atomic_numbers``
            (``"extensive"`` only); unused by ``"dipole"``.
        scale: ``sigma`` (> 0).

    Shapes: ``forward(batch)`` -> ``(B,)``; :meth:`dipole` -> ``(B, 3)`` (``"dipole"`` only).

    Example:
        >>> cfg = PotentialConfig(atomic_numbers=(1, 8), hidden_irreps="4x0e + 4x1o", max_ell=1,
        ...                       correlation=2, radial_mlp=(8,), cutoff=3.0)
        >>> model = MolecularProperty(cfg, "dipole", scale=0.1)
        >>> b = AtomsBatch.from_arrays(positions=torch.tensor([[0.0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]]),
        ...                            numbers=torch.tensor([8, 1, 1]), natoms=torch.tensor([3]), dtype=torch.float64)
        >>> model(b).shape, model.dipole(b).shape
        (torch.Size([1]), torch.Size([1, 3]))
    """

    def __init__(self, config: PotentialConfig, pooling: str, shift=0.0, scale: float = 1.0) -> None:
        super().__init__()
        where = "MolecularProperty"
        if not isinstance(config, PotentialConfig):
            raise TypeError(f"{where}: `config` must be a PotentialConfig, got {type(config).__name__}")
        if pooling not in POOLINGS:
            raise ValueError(f"{where}: `pooling` must be one of {list(POOLINGS)}, got {pooling!r}")
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not scale > 0:
            raise ValueError(f"{where}: `scale` must be a number > 0, got {scale!r}")
        shift = torch.as_tensor(shift, dtype=torch.float64).reshape(-1)
        n_el = len(config.atomic_numbers)
        if shift.numel() not in (1, n_el) or (shift.numel() == n_el > 1 and pooling != "extensive"):
            raise ValueError(f"{where}: `shift` must be one number (or, for pooling='extensive', one per element: "
                             f"{n_el}), got {shift.numel()} values")
        self.pooling = pooling
        self.backbone = Potential(PotentialConfig(**{**config.to_dict(), "e0": None,
                                                     "atomic_numbers": tuple(config.atomic_numbers),
                                                     "radial_mlp": tuple(config.radial_mlp)}))
        dtype = self.backbone.e0.dtype
        self.register_buffer("shift", shift.expand(n_el).clone().to(dtype) if pooling == "extensive"
                             else shift.to(dtype))
        self.scale = float(scale)

    def _atoms(self, batch: AtomsBatch) -> torch.Tensor:
        if not isinstance(batch, AtomsBatch):
            raise TypeError(f"MolecularProperty: `batch` must be an AtomsBatch, got {type(batch).__name__}")
        if batch.positions.dtype != self.shift.dtype:
            raise TypeError(f"MolecularProperty: positions are {batch.positions.dtype} but the model is "
                            f"{self.shift.dtype}; use batch.to(dtype={self.shift.dtype})")
        return self.backbone.node_energies(batch.positions, batch.cell, batch.batch, batch.numbers, batch.pbc)

    def dipole(self, batch: AtomsBatch) -> torch.Tensor:
        """The dipole vectors ``(B, 3)`` in Debye (``pooling="dipole"``)."""
        if self.pooling != "dipole":
            raise ValueError(f"MolecularProperty.dipole: needs pooling='dipole', this model has {self.pooling!r}")
        h = self._atoms(batch)
        n = batch.natoms.to(h.dtype)
        mean = torch.zeros_like(n).index_add_(0, batch.batch, h) / n
        q = self.scale * (h - mean[batch.batch])
        mu = torch.zeros(len(n), 3, dtype=h.dtype, device=h.device).index_add_(0, batch.batch,
                                                                               q[:, None] * batch.positions)
        return DEBYE_PER_E_ANGSTROM * mu

    def forward(self, batch: AtomsBatch) -> torch.Tensor:
        if self.pooling == "dipole":
            mu = self.dipole(batch)
            return (mu.pow(2).sum(-1) + 1e-12).sqrt()  # smooth at mu = 0 (shifts |mu| by < 1e-6 D)
        h = self._atoms(batch)
        total = torch.zeros(batch.num_graphs, dtype=h.dtype, device=h.device)
        if self.pooling == "extensive":
            element = self.backbone.element_index(batch.numbers)
            return total.index_add_(0, batch.batch, self.shift[element] + self.scale * h)
        return self.shift + self.scale * total.index_add_(0, batch.batch, h) / batch.natoms.to(h.dtype)


def property_statistics(frames: AtomsBatch, values: torch.Tensor, pooling: str,
                        atomic_numbers) -> tuple[torch.Tensor | float, float]:
    """``(shift, scale)`` for :class:`MolecularProperty` from training targets ``values (B,)``:
    extensive: per-element least squares on the composition, then the standard deviation of
    the residual per atom; intensive: mean and standard deviation; dipole: ``(0, 0.1)``
    (charges of a tenth of an electron to start).

    Example:
        >>> b = AtomsBatch.from_arrays(positions=torch.zeros(5, 3), numbers=torch.tensor([1, 8, 1, 1, 8]),
        ...                            natoms=torch.tensor([2, 3]))
        >>> shift, scale = property_statistics(b, torch.tensor([-3.0, -5.0]), "extensive", (1, 8))
        >>> [round(float(s), 6) for s in shift]
        [-2.0, -1.0]
    """
    from equikit.models.potential import fit_reference_energies

    values = torch.as_tensor(values, dtype=torch.float64)
    if values.shape != (len(frames),):
        raise ValueError(f"property_statistics: `values` must have shape ({len(frames)},), got {tuple(values.shape)}")
    if pooling == "dipole":
        return 0.0, 0.1
    if pooling == "intensive":
        return float(values.mean()), float(values.std().clamp_min(1e-12))
    if pooling != "extensive":
        raise ValueError(f"property_statistics: `pooling` must be one of {list(POOLINGS)}, got {pooling!r}")
    labelled = AtomsBatch(frames.positions, frames.numbers, frames.cell, frames.pbc, frames.batch, energy=values)
    shift = torch.tensor(fit_reference_energies(labelled, atomic_numbers), dtype=torch.float64)
    table = torch.zeros(119, dtype=torch.float64)
    table[list(atomic_numbers)] = shift
    base = torch.zeros(len(frames), dtype=torch.float64).index_add_(0, frames.batch, table[frames.numbers])
    residual = (values - base) / frames.natoms.double()
    return shift, float(residual.std().clamp_min(1e-12))


__all__ = ["DEBYE_PER_E_ANGSTROM", "MolecularProperty", "property_statistics"]
