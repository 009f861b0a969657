"""An ASE calculator around :class:`~equikit.models.potential.Potential`."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from equikit.data.atoms import AtomsBatch, import_ase
from equikit.data.neighbors import Neighbors, edge_vectors, radius_graph
from equikit.models.potential import Potential, PotentialConfig

import_ase("EquikitCalculator")
from ase.calculators import calculator as _calc  # noqa: E402 - after the friendly import check


def save_potential(model: Potential, path: str | Path) -> None:
    """Write ``{"config": dict, "state_dict": ...}`` that :func:`load_potential` reads."""
    torch.save({"config": model.config.to_dict(), "state_dict": model.state_dict()}, Path(path))


def load_potential(path: str | Path) -> Potential:
    """Rebuild a :class:`Potential` from a file written by :func:`save_potential`."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"load_potential: no checkpoint at {str(path)!r}")
    data = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(data, dict) or "config" not in data or "state_dict" not in data:
        raise ValueError(f"load_potential: {str(path)!r} is not a potential checkpoint (needs keys 'config', "
                         "'state_dict'; write one with save_potential)")
    model = Potential(PotentialConfig.from_dict(data["config"]))
    model.load_state_dict(data["state_dict"])
    return model


@contextlib.contextmanager
def _frozen(model: torch.nn.Module):
    """Parameters with ``requires_grad`` False inside the block (restored after, also on error), so
    autograd records only the path to the positions and the strain."""
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def _same(a: np.ndarray, b: np.ndarray, tol: float) -> bool:
    """``np.allclose(a, b, rtol=0, atol=tol)`` with equal shapes (ASE's test), exact equality first."""
    if a.shape != b.shape:
        return False
    if np.array_equal(a, b):
        return True
    try:
        with np.errstate(invalid="ignore"):
            return bool(a.size == 0 or np.abs(a.astype(np.float64) - b.astype(np.float64)).max() <= tol)
    except (TypeError, ValueError):  # a non-numeric array (ASE allows any): different is changed
        return False


class EquikitCalculator(_calc.Calculator):
    """ASE calculator: ``energy``, ``free_energy`` (= energy), ``forces`` and, for periodic
    cells, ``stress`` (Voigt 6-vector as ASE expects, eV/A^3, ASE's sign convention).

    Neighbour list with a Verlet skin: the pairs within ``cutoff + skin`` are searched once and
    reused while no atom has moved more than ``skin / 2`` since (and the cell, periodicity and
    atomic numbers are unchanged); each call keeps the pairs shorter than the cutoff, so energies
    and forces are those of a fresh search (same edges; only the summation order may differ).

    Args:
        model: a :class:`Potential`, or a path to a checkpoint of :func:`save_potential`.
        device: where to run (default CPU).
        skin: Verlet skin (Angstrom, >= 0); 0 searches the neighbours on every call.
        compile: run the model's energy through ``torch.compile`` (inductor), the forces and
            stress by autograd through the compiled graph: the first call compiles (tens of
            seconds on CPU; once more when the number of edges first changes, then with dynamic
            shapes), later calls skip most of the per-op overhead (measured in
            docs/potentials.md). Needs a C++ compiler on CPU.

    >>> from ase.build import molecule
    >>> cfg = PotentialConfig(atomic_numbers=(1, 8), hidden_irreps="4x0e + 4x1o", max_ell=1, correlation=2,
    ...                       radial_mlp=(8,))
    >>> atoms = molecule("H2O")
    >>> atoms.calc = EquikitCalculator(Potential(cfg))
    >>> atoms.get_forces().shape
    (3, 3)
    """

    implemented_properties: ClassVar[list[str]] = ["energy", "free_energy", "forces", "stress"]

    def __init__(self, model: Potential | str | Path, device: str | torch.device = "cpu", skin: float = 0.5,
                 compile: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not isinstance(compile, bool):
            raise TypeError(f"EquikitCalculator: `compile` must be a bool, got {compile!r}")
        if isinstance(skin, bool) or not isinstance(skin, (int, float)) or not skin >= 0:
            raise ValueError(f"EquikitCalculator: `skin` must be a number >= 0 (Angstrom), got {skin!r}")
        self.skin = float(skin)
        self._verlet: tuple | None = None  # (positions, cell, pbc, numbers, Neighbors within cutoff + skin)
        self.rebuilds = 0  # neighbour searches so far
        if isinstance(model, (str, Path)):
            model = load_potential(model)
        if not isinstance(model, Potential):
            raise TypeError(f"EquikitCalculator: `model` must be a Potential or a checkpoint path, got "
                            f"{type(model).__name__}")
        self.model = model.to(device).eval()
        self.device = torch.device(device)
        self.dtype = model.e0.dtype
        self._energies = torch.compile(self.model.node_energies) if compile else None

    def check_state(self, atoms, tol: float = 1e-15) -> list[str]:
        """The system changes since the last calculation: ASE's :func:`~ase.calculators.calculator.
        compare_atoms` result (a property changed when its shape differs or an entry differs by more
        than ``tol``), computed with exact comparisons first and a tolerance check only for arrays
        that differ (ASE's ``np.allclose`` per property was ~1 ms of a 9-atom MD step, three checks
        a step)."""
        if self.atoms is None:
            return list(_calc.all_changes)
        old, new = self.atoms, atoms
        check = set(_calc.all_changes) - set(self.ignored_changes)
        changes = []
        for prop in ("cell", "pbc"):
            if prop in check:
                check.discard(prop)
                if not _same(np.asarray(getattr(old, prop)), np.asarray(getattr(new, prop)), tol):
                    changes.append(prop)
        a1, a2 = set(old.arrays), set(new.arrays)
        changes += sorted(check & (a1 ^ a2))
        changes += [p for p in sorted(check & a1 & a2) if not _same(old.arrays[p], new.arrays[p], tol)]
        return changes

    def calculate(self, atoms=None, properties=("energy",), system_changes=_calc.all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        a = self.atoms  # from_arrays, not from_atoms: that would ask this calculator for labels
        batch = AtomsBatch.from_arrays(positions=a.get_positions(), numbers=a.get_atomic_numbers(),
                                       natoms=[len(a)], cell=np.asarray(a.cell)[None], pbc=np.asarray(a.pbc)[None],
                                       dtype=self.dtype).to(device=self.device)
        want_stress = "stress" in properties and bool(np.all(self.atoms.pbc))
        with _frozen(self.model):  # results are detached: no graph towards the parameters (~10% faster)
            out = self.model(batch, compute_forces=True, compute_stress=want_stress, neighbors=self._neighbors(batch),
                             node_energies=self._energies)
        e = float(out["energy"].detach()[0])
        self.results = {"energy": e, "free_energy": e,
                        "forces": out["forces"].detach().cpu().numpy().astype(np.float64)}
        if want_stress:
            s = out["stress"].detach().cpu().numpy()[0].astype(np.float64)
            self.results["stress"] = np.array([s[0, 0], s[1, 1], s[2, 2], s[1, 2], s[0, 2], s[0, 1]])
        elif "stress" in properties:
            raise _calc.PropertyNotImplementedError(
                "EquikitCalculator: stress needs a periodic cell in all three directions (atoms.pbc all True)")

    def _neighbors(self, batch: AtomsBatch) -> Neighbors | None:
        """The pairs shorter than the cutoff, from the Verlet list (rebuilt when needed); ``None``
        without a skin (the model searches itself)."""
        if self.skin == 0:  # the model searches, unless compiled: the search stays outside the graph
            return None if self._energies is None else radius_graph(
                batch.positions, float(self.model.config.cutoff), batch=batch.batch, cell=batch.cell, pbc=batch.pbc)
        cutoff = float(self.model.config.cutoff)
        pos = batch.positions
        v = self._verlet
        stale = (v is None or v[0].shape != pos.shape or not torch.equal(v[1], batch.cell)
                 or not torch.equal(v[2], batch.pbc) or not torch.equal(v[3], batch.numbers)
                 or float((pos - v[0]).norm(dim=1).max()) > self.skin / 2)
        if stale:
            nb = radius_graph(pos, cutoff + self.skin, batch=batch.batch, cell=batch.cell, pbc=batch.pbc)
            v = self._verlet = (pos.clone(), batch.cell.clone(), batch.pbc.clone(), batch.numbers.clone(), nb)
            self.rebuilds += 1
        nb = v[4]
        vec = edge_vectors(pos, nb.edge_index, nb.shifts, batch.cell, batch.batch)
        keep = vec.norm(dim=1) < cutoff
        return Neighbors(nb.edge_index[:, keep], nb.shifts[keep], vec[keep])
