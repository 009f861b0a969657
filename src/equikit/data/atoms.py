"""Atomic structures as a typed batch, with ASE interop, extxyz and ASE-database IO, and a
cache for generated data sets.

Units (DESIGN §4): positions and cell in Angstrom, energy in eV, forces in eV/Angstrom,
stress in eV/Angstrom^3 with ASE's sign convention (``stress = (1/V) dE/d(strain)``,
positive under tension), stored as full ``3 x 3`` matrices.

- :class:`AtomsBatch`: many structures as one disjoint set of atoms (``batch`` vector),
  built from a list of :class:`ase.Atoms` (:meth:`AtomsBatch.from_atoms`) and back
  (:meth:`AtomsBatch.to_atoms`); :meth:`AtomsBatch.neighbors` gives the periodic radius graph.
- :class:`AtomsDataset` and :func:`collate_atoms`: one structure per item, batched by a
  ``DataLoader``.
- :func:`read_extxyz`, :func:`write_extxyz`, :func:`read_ase_db`, :func:`write_ase_db`:
  bring your own data; ``require=("energy", "forces")`` fails early, naming the frames that
  lack labels. Labels are looked up in the calculator results (where ASE puts ``energy=``,
  ``forces`` and ``stress=`` of extxyz files) and in ``atoms.info`` / ``atoms.arrays`` under
  ``energy_key`` etc. (for files written with e.g. ``REF_energy``).

ASE is imported lazily; install the ``atoms`` extra (``pip install equikit[atoms]``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from equikit.data._cache import data_dir, load_arrays, read_manifest, save_arrays, write_manifest
from equikit.data.neighbors import Neighbors, radius_graph

__all__ = [
    "AtomsBatch",
    "AtomsDataset",
    "collate_atoms",
    "load_cached_atoms",
    "read_ase_db",
    "read_extxyz",
    "write_ase_db",
    "write_extxyz",
]

LABELS = ("energy", "forces", "stress")


def import_ase(where: str):
    try:
        import ase
    except ImportError as exc:  # pragma: no cover - ase is in the dev environment
        raise ImportError(f"{where} needs ASE: pip install 'equikit[atoms]' (or pip install ase)") from exc
    return ase


# --------------------------------------------------------------------------- the batch
@dataclass
class AtomsBatch:
    """Structures as one disjoint set of atoms.

    Shapes (``N`` atoms in ``B`` structures): ``positions (N, 3)``; ``numbers (N,)`` int64
    atomic numbers; ``cell (B, 3, 3)`` lattice vectors as rows (zeros for molecules);
    ``pbc (B, 3)`` bool; ``batch (N,)`` int64 structure of each atom (sorted); ``energy
    (B,)`` eV, ``forces (N, 3)`` eV/A, ``stress (B, 3, 3)`` eV/A^3, each ``None`` when
    absent; ``info``: per-structure extras ``{name: (B, ...)}`` (e.g. the MD temperature,
    QM9 targets).

    Example:
        >>> import torch
        >>> from equikit.data.atoms import AtomsBatch
        >>> b = AtomsBatch.from_arrays(positions=torch.zeros(3, 3), numbers=torch.tensor([8, 1, 1]),
        ...                            natoms=torch.tensor([1, 2]))
        >>> len(b), b.batch.tolist(), b.natoms.tolist()
        (2, [0, 1, 1], [1, 2])
    """

    positions: torch.Tensor
    numbers: torch.Tensor
    cell: torch.Tensor
    pbc: torch.Tensor
    batch: torch.Tensor
    energy: torch.Tensor | None = None
    forces: torch.Tensor | None = None
    stress: torch.Tensor | None = None
    info: dict[str, torch.Tensor] = field(default_factory=dict)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_arrays(
        cls,
        *,
        positions,
        numbers,
        natoms,
        cell=None,
        pbc=None,
        energy=None,
        forces=None,
        stress=None,
        info: dict | None = None,
        dtype: torch.dtype | None = None,
    ) -> AtomsBatch:
        """Build from flat arrays (numpy or torch) and the atom count of each structure;
        validates every shape. ``cell``/``pbc`` default to zeros/False (molecules)."""
        where = "AtomsBatch.from_arrays"
        natoms = torch.as_tensor(natoms, dtype=torch.long)
        if natoms.ndim != 1 or (natoms.numel() and int(natoms.min()) < 1):
            raise ValueError(f"{where}: `natoms` must be (B,) counts >= 1, got {natoms.tolist()}")
        pos = torch.as_tensor(positions)
        dtype = dtype or (pos.dtype if pos.is_floating_point() else torch.get_default_dtype())
        pos = pos.to(dtype)
        n, b = int(natoms.sum()), len(natoms)
        _shape(pos, (n, 3), "positions", where)
        numbers = torch.as_tensor(numbers).long()
        _shape(numbers, (n,), "numbers", where)
        cell = torch.zeros(b, 3, 3, dtype=dtype) if cell is None else torch.as_tensor(cell).to(dtype)
        _shape(cell, (b, 3, 3), "cell", where)
        pbc = torch.zeros(b, 3, dtype=torch.bool) if pbc is None else torch.as_tensor(pbc).bool()
        _shape(pbc, (b, 3), "pbc", where)
        out = cls(pos, numbers, cell, pbc, torch.repeat_interleave(torch.arange(b), natoms))
        for name, value, shape in (("energy", energy, (b,)), ("forces", forces, (n, 3)),
                                   ("stress", stress, (b, 3, 3))):
            if value is not None:
                value = torch.as_tensor(value).to(dtype)
                _shape(value, shape, name, where)
                setattr(out, name, value)
        for key, value in (info or {}).items():
            value = torch.as_tensor(value)
            if value.ndim == 0 or value.shape[0] != b:
                raise ValueError(f"{where}: info[{key!r}] must have a leading dim of B = {b}, got {tuple(value.shape)}")
            out.info[key] = value.to(dtype) if value.is_floating_point() else value
        return out

    @classmethod
    def from_atoms(
        cls,
        images,
        *,
        dtype: torch.dtype = torch.float64,
        require: Sequence[str] = (),
        energy_key: str = "energy",
        forces_key: str = "forces",
        stress_key: str = "stress",
        info_keys: Sequence[str] = (),
        source: str = "",
    ) -> AtomsBatch:
        """Collate a list of :class:`ase.Atoms`. Labels come from each structure's calculator
        results (key ``energy``/``forces``/``stress``) or from ``atoms.info`` /
        ``atoms.arrays`` under the given keys. A label is kept when every structure has it;
        one that only some have raises, as does a missing label named in ``require``.

        Example:
            >>> from ase.build import bulk
            >>> from ase.calculators.emt import EMT
            >>> from equikit.data.atoms import AtomsBatch
            >>> a = bulk("Cu", cubic=True)
            >>> a.calc = EMT()
            >>> b = AtomsBatch.from_atoms([a, a], require=("energy", "forces", "stress"))
            >>> tuple(b.positions.shape), tuple(b.stress.shape), b.pbc.tolist()[0]
            ((8, 3), (2, 3, 3), [True, True, True])
        """
        where = f"AtomsBatch.from_atoms{' (' + source + ')' if source else ''}"
        ase = import_ase(where)
        if isinstance(images, ase.Atoms):
            images = [images]
        images = list(images)
        if not images:
            raise ValueError(f"{where}: no structures given")
        for k, a in enumerate(images):
            if not isinstance(a, ase.Atoms):
                raise TypeError(f"{where}: item {k} must be an ase.Atoms, got {type(a).__name__}")
        bad = set(require) - set(LABELS)
        if bad:
            raise ValueError(f"{where}: `require` may name {LABELS}, got {sorted(bad)}")
        keys = {"energy": energy_key, "forces": forces_key, "stress": stress_key}
        labels = {}
        for name in LABELS:
            values = [_label(a, name, keys[name]) for a in images]
            missing = [k for k, v in enumerate(values) if v is None]
            if len(missing) == len(values) and name not in require:
                labels[name] = None
                continue
            if missing:
                shown = missing[:10] + (["..."] if len(missing) > 10 else [])
                raise ValueError(
                    f"{where}: {len(missing)} of {len(values)} structures have no {name} (structures "
                    f"{shown}); looked in the calculator results and in atoms."
                    f"{'arrays' if name == 'forces' else 'info'}[{keys[name]!r}]. "
                    + (f"Training on {name} needs them: pass {name}_key= if they are stored under another "
                       f"name, or leave {name!r} out of `require`." if name in require else
                       "Drop those structures or add the label to all.")
                )
            labels[name] = values
        natoms = [len(a) for a in images]
        info = {}
        for key in info_keys:
            if not all(key in a.info for a in images):
                raise ValueError(f"{where}: info key {key!r} is missing from some structures")
            info[key] = np.array([a.info[key] for a in images])
        return cls.from_arrays(
            positions=np.concatenate([a.positions for a in images]),
            numbers=np.concatenate([a.numbers for a in images]),
            natoms=natoms,
            cell=np.stack([a.cell.array for a in images]),
            pbc=np.stack([a.pbc for a in images]),
            energy=None if labels["energy"] is None else np.array(labels["energy"], dtype=np.float64),
            forces=None if labels["forces"] is None else np.concatenate(labels["forces"]),
            stress=None if labels["stress"] is None else np.stack(labels["stress"]),
            info=info,
            dtype=dtype,
        )

    def to_atoms(self) -> list:
        """One :class:`ase.Atoms` per structure, labels attached as a
        ``SinglePointCalculator`` (energy, forces, stress), ``info`` entries in
        ``atoms.info``."""
        import_ase("AtomsBatch.to_atoms")
        from ase import Atoms
        from ase.calculators.singlepoint import SinglePointCalculator

        out = []
        ptr = self.ptr.tolist()
        for b in range(len(self)):
            sl = slice(ptr[b], ptr[b + 1])
            atoms = Atoms(numbers=self.numbers[sl].numpy(), positions=self.positions[sl].detach().double().numpy(),
                          cell=self.cell[b].detach().double().numpy(), pbc=self.pbc[b].numpy())
            results = {}
            if self.energy is not None:
                results["energy"] = float(self.energy[b])
            if self.forces is not None:
                results["forces"] = self.forces[sl].detach().double().numpy()
            if self.stress is not None:
                results["stress"] = self.stress[b].detach().double().numpy()
            if results:
                atoms.calc = SinglePointCalculator(atoms, **results)
            for key, value in self.info.items():
                v = value[b]
                atoms.info[key] = v.item() if v.ndim == 0 else v.numpy()
            out.append(atoms)
        return out

    # ------------------------------------------------------------------ views
    def __len__(self) -> int:
        return int(self.cell.shape[0])

    @property
    def num_graphs(self) -> int:
        return len(self)

    @property
    def natoms(self) -> torch.Tensor:
        """``(B,)`` atoms per structure."""
        return torch.bincount(self.batch, minlength=len(self))

    @property
    def ptr(self) -> torch.Tensor:
        """``(B + 1,)`` offsets: structure ``b`` holds atoms ``ptr[b]:ptr[b + 1]``."""
        return torch.cat([torch.zeros(1, dtype=torch.long), torch.cumsum(self.natoms, 0)])

    @property
    def volume(self) -> torch.Tensor:
        """``(B,)`` ``|det cell|`` (0 for molecules without a cell)."""
        return torch.linalg.det(self.cell).abs()

    def __getitem__(self, index) -> AtomsBatch:
        """The structures ``index`` (an int, a slice, or a sequence/tensor of ints)."""
        if isinstance(index, int):
            index = [index if index >= 0 else len(self) + index]
        elif isinstance(index, slice):
            index = list(range(len(self)))[index]
        idx = torch.as_tensor(index, dtype=torch.long).reshape(-1)
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= len(self)):
            raise IndexError(f"AtomsBatch: index out of range for {len(self)} structures: {idx.tolist()}")
        ptr, natoms = self.ptr, self.natoms
        atoms = torch.cat([torch.arange(int(ptr[b]), int(ptr[b + 1])) for b in idx.tolist()]) if idx.numel() \
            else torch.zeros(0, dtype=torch.long)
        return AtomsBatch(
            positions=self.positions[atoms], numbers=self.numbers[atoms], cell=self.cell[idx], pbc=self.pbc[idx],
            batch=torch.repeat_interleave(torch.arange(len(idx)), natoms[idx]),
            energy=None if self.energy is None else self.energy[idx],
            forces=None if self.forces is None else self.forces[atoms],
            stress=None if self.stress is None else self.stress[idx],
            info={k: v[idx] for k, v in self.info.items()},
        )

    def to(self, device=None, dtype: torch.dtype | None = None) -> AtomsBatch:
        """Move to ``device``; cast floating tensors (not ``numbers``/``batch``) to ``dtype``."""

        def move(t):
            if t is None:
                return None
            return t.to(device=device, dtype=dtype if t.is_floating_point() else None)

        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "info"}
        return AtomsBatch(**{k: move(v) for k, v in fields.items()}, info={k: move(v) for k, v in self.info.items()})

    def neighbors(self, cutoff: float, self_interaction: bool = False) -> Neighbors:
        """The periodic radius graph of every structure (see
        :func:`equikit.data.neighbors.radius_graph`); directions with ``pbc`` False are open."""
        return radius_graph(self.positions, cutoff, batch=self.batch, cell=self.cell, pbc=self.pbc,
                            self_interaction=self_interaction)

    # ------------------------------------------------------------------ storage
    def to_numpy(self) -> dict[str, np.ndarray]:
        """Flat arrays for ``np.savez`` (``info`` entries as ``info.<key>``)."""
        out = {"positions": self.positions, "numbers": self.numbers, "cell": self.cell, "pbc": self.pbc,
               "natoms": self.natoms}
        for name in LABELS:
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        out.update({f"info.{k}": v for k, v in self.info.items()})
        return {k: v.detach().cpu().numpy() for k, v in out.items()}

    @classmethod
    def from_numpy(cls, arrays: dict[str, np.ndarray], dtype: torch.dtype | None = None) -> AtomsBatch:
        info = {k[5:]: v for k, v in arrays.items() if k.startswith("info.")}
        return cls.from_arrays(**{k: arrays.get(k) for k in ("positions", "numbers", "natoms", "cell", "pbc",
                                                            *LABELS)},
                               info=info, dtype=dtype)

    @staticmethod
    def cat(batches: Sequence[AtomsBatch]) -> AtomsBatch:
        """Concatenate batches (labels kept when all have them; ``info`` keys common to all)."""
        return collate_atoms(batches)


def _shape(t: torch.Tensor, shape: tuple, name: str, where: str) -> None:
    if tuple(t.shape) != shape:
        raise ValueError(f"{where}: `{name}` must have shape {shape}, got {tuple(t.shape)}")


def _label(atoms, name: str, key: str):
    """A label from the calculator (its results, or computed by a live calculator) or
    from info/arrays."""
    calc = atoms.calc
    value = None
    if key == name and calc is not None and name in getattr(calc, "results", {}):
        value = calc.results[name]
    elif key == name and calc is not None and name in getattr(calc, "implemented_properties", ()):
        from ase.calculators.calculator import PropertyNotImplementedError

        try:
            value = calc.get_property(name, atoms)  # a live calculator: compute the label
        except PropertyNotImplementedError:
            # a stored-results calculator that lists the property without holding it (mace-torch's
            # MACECalculator appends to the implemented_properties list ASE calculators share)
            value = None
    if value is None and name == "forces" and key in atoms.arrays:
        value = atoms.arrays[key]
    elif value is None and name != "forces" and key in atoms.info:
        value = atoms.info[key]
    if value is None:
        return None
    value = np.asarray(value, dtype=np.float64)
    if name == "energy":
        return float(value.reshape(()))
    if name == "stress":
        if value.shape == (6,):  # Voigt xx yy zz yz xz xy -> 3 x 3
            xx, yy, zz, yz, xz, xy = value
            value = np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])
        return value.reshape(3, 3)
    return value.reshape(len(atoms), 3)


def collate_atoms(batches: Sequence[AtomsBatch]) -> AtomsBatch:
    """Concatenate :class:`AtomsBatch` items (e.g. single structures from an
    :class:`AtomsDataset`) into one batch. Use as ``DataLoader(ds, collate_fn=collate_atoms)``.

    Example:
        >>> import torch
        >>> from equikit.data.atoms import AtomsBatch, collate_atoms
        >>> one = AtomsBatch.from_arrays(positions=torch.zeros(2, 3), numbers=[1, 1], natoms=[2],
        ...                              energy=[-1.0])
        >>> b = collate_atoms([one, one])
        >>> b.batch.tolist(), b.energy.tolist()
        ([0, 0, 1, 1], [-1.0, -1.0])
    """
    if not isinstance(batches, (list, tuple)) or not batches:
        raise ValueError("collate_atoms: `batches` must be a non-empty list of AtomsBatch")
    for k, b in enumerate(batches):
        if not isinstance(b, AtomsBatch):
            raise TypeError(f"collate_atoms: item {k} must be an AtomsBatch, got {type(b).__name__}")
    sizes = torch.tensor([len(b) for b in batches])
    offsets = torch.cumsum(sizes, 0) - sizes
    labels = {}
    for name in LABELS:
        present = [getattr(b, name) is not None for b in batches]
        if any(present) and not all(present):
            raise ValueError(f"collate_atoms: some items have {name} and others do not; label all or none")
        labels[name] = torch.cat([getattr(b, name) for b in batches]) if all(present) else None
    keys = set.intersection(*(set(b.info) for b in batches))
    return AtomsBatch(
        positions=torch.cat([b.positions for b in batches]),
        numbers=torch.cat([b.numbers for b in batches]),
        cell=torch.cat([b.cell for b in batches]),
        pbc=torch.cat([b.pbc for b in batches]),
        batch=torch.cat([b.batch + int(o) for b, o in zip(batches, offsets)]),
        info={k: torch.cat([b.info[k] for b in batches]) for k in sorted(keys)},
        **labels,
    )


class AtomsDataset(torch.utils.data.Dataset):
    """Structures from an :class:`AtomsBatch`, one per item (each a one-structure
    ``AtomsBatch``); batch them with ``collate_fn=collate_atoms``.

    Example:
        >>> import torch
        >>> from equikit.data.atoms import AtomsBatch, AtomsDataset, collate_atoms
        >>> frames = AtomsBatch.from_arrays(positions=torch.rand(5, 3), numbers=[1] * 5, natoms=[2, 3])
        >>> ds = AtomsDataset(frames)
        >>> loader = torch.utils.data.DataLoader(ds, batch_size=2, collate_fn=collate_atoms)
        >>> len(ds), next(iter(loader)).natoms.tolist()
        (2, [2, 3])
    """

    def __init__(self, frames: AtomsBatch) -> None:
        if not isinstance(frames, AtomsBatch):
            raise TypeError(f"AtomsDataset: `frames` must be an AtomsBatch, got {type(frames).__name__}")
        self.frames = frames
        self._ptr = frames.ptr

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, i: int) -> AtomsBatch:
        return self.frames[int(i)]


# --------------------------------------------------------------------------- files
def _check_path(path, where: str) -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{where}: `path` must be a path, got {type(path).__name__}")
    return Path(path)


def read_extxyz(
    path,
    *,
    index=":",
    require: Sequence[str] = (),
    dtype: torch.dtype = torch.float64,
    energy_key: str = "energy",
    forces_key: str = "forces",
    stress_key: str = "stress",
    info_keys: Sequence[str] = (),
) -> AtomsBatch:
    """Read an extended XYZ file (through ``ase.io.read``) into an :class:`AtomsBatch`.

    ``require=("energy", "forces")`` raises a ValueError naming the frames without them
    (what training on energies and forces needs).

    Example:
        >>> import tempfile, os
        >>> from ase.build import molecule
        >>> from equikit.data.atoms import AtomsBatch, read_extxyz, write_extxyz
        >>> b = AtomsBatch.from_atoms([molecule("H2O")])
        >>> with tempfile.TemporaryDirectory() as d:
        ...     write_extxyz(os.path.join(d, "w.xyz"), b)
        ...     back = read_extxyz(os.path.join(d, "w.xyz"))
        >>> back.numbers.tolist()
        [8, 1, 1]
    """
    where = "read_extxyz"
    path = _check_path(path, where)
    import_ase(where)
    from ase.io import read

    if not path.exists():
        raise FileNotFoundError(f"{where}: no file {str(path)!r}")
    images = read(path, index=index, format="extxyz")
    return AtomsBatch.from_atoms(images, dtype=dtype, require=require, energy_key=energy_key, forces_key=forces_key,
                                 stress_key=stress_key, info_keys=info_keys, source=str(path))


def write_extxyz(path, frames: AtomsBatch, *, append: bool = False) -> None:
    """Write an :class:`AtomsBatch` as extended XYZ (``energy=``, ``stress=`` in the comment
    line, ``forces`` as columns; ``info`` entries as key=value)."""
    where = "write_extxyz"
    path = _check_path(path, where)
    if not isinstance(frames, AtomsBatch):
        raise TypeError(f"{where}: `frames` must be an AtomsBatch, got {type(frames).__name__}")
    from ase.io import write

    write(path, frames.to_atoms(), format="extxyz", append=append)


def read_ase_db(
    path,
    selection=None,
    *,
    require: Sequence[str] = (),
    dtype: torch.dtype = torch.float64,
    info_keys: Sequence[str] = (),
    **query,
) -> AtomsBatch:
    """Read the rows of an ASE database (``ase.db``, e.g. SQLite ``.db``) matching
    ``selection`` / ``query`` (``ase.db`` syntax) into an :class:`AtomsBatch`. Key-value pairs
    named in ``info_keys`` become ``info`` entries.

    Example:
        >>> import tempfile, os
        >>> from ase.build import molecule
        >>> from equikit.data.atoms import AtomsBatch, read_ase_db, write_ase_db
        >>> b = AtomsBatch.from_atoms([molecule("CH4"), molecule("NH3")])
        >>> with tempfile.TemporaryDirectory() as d:
        ...     write_ase_db(os.path.join(d, "m.db"), b)
        ...     back = read_ase_db(os.path.join(d, "m.db"), natoms=4)
        >>> back.numbers.tolist()
        [7, 1, 1, 1]
    """
    where = "read_ase_db"
    path = _check_path(path, where)
    import_ase(where)
    from ase.db import connect

    if not path.exists():
        raise FileNotFoundError(f"{where}: no database {str(path)!r}")
    images = []
    with connect(path) as db:
        for row in db.select(selection, **query):
            atoms = row.toatoms()
            for key in info_keys:
                if key in row.key_value_pairs:
                    atoms.info[key] = row.key_value_pairs[key]
            images.append(atoms)
    if not images:
        raise ValueError(f"{where}: no rows of {str(path)!r} match selection={selection!r} {query or ''}")
    return AtomsBatch.from_atoms(images, dtype=dtype, require=require, info_keys=info_keys, source=str(path))


def write_ase_db(path, frames: AtomsBatch, *, append: bool = True) -> None:
    """Write each structure as a row of an ASE database (energy, forces, stress as the
    row's calculator results; scalar ``info`` entries as key-value pairs)."""
    where = "write_ase_db"
    path = _check_path(path, where)
    if not isinstance(frames, AtomsBatch):
        raise TypeError(f"{where}: `frames` must be an AtomsBatch, got {type(frames).__name__}")
    from ase.db import connect

    if not append and path.exists():
        path.unlink()
    with connect(path) as db:
        for atoms in frames.to_atoms():
            kv = {k: v for k, v in atoms.info.items() if isinstance(v, (int, float, str, bool))}
            atoms.info = {}
            db.write(atoms, key_value_pairs=kv)


# --------------------------------------------------------------------------- cache
def recipe_key(recipe: dict) -> str:
    """A short hash of a JSON-ready recipe (the cache folder name)."""
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]


def load_cached_atoms(
    kind: str,
    recipe: dict,
    generate: Callable[[], AtomsBatch],
    *,
    root=None,
    regenerate: bool = False,
    progress: bool = False,
) -> AtomsBatch:
    """``generate()``'s frames from ``<data dir>/atoms/<kind>-<hash of recipe>/frames.npz``
    when the manifest there matches ``recipe``, else generated, saved atomically and the
    manifest (recipe, sizes, generation time) written last."""
    recipe = json.loads(json.dumps(recipe, sort_keys=True))  # tuples -> lists, as the manifest stores it
    folder = data_dir(root) / "atoms" / f"{kind}-{recipe_key(recipe)}"
    manifest_path, frames_path = folder / "manifest.json", folder / "frames.npz"
    manifest = read_manifest(manifest_path)
    if (not regenerate and manifest is not None and manifest.get("recipe") == recipe and frames_path.exists()
            and frames_path.stat().st_size == manifest.get("bytes")):
        return AtomsBatch.from_numpy(load_arrays(frames_path))
    t0 = time.perf_counter()
    frames = generate()
    seconds = time.perf_counter() - t0
    if manifest_path.exists():
        manifest_path.unlink()  # must not vouch for a half-written file
    save_arrays(frames_path, frames.to_numpy())
    write_manifest(manifest_path, {
        "recipe": recipe, "bytes": frames_path.stat().st_size, "structures": len(frames),
        "atoms": int(frames.positions.shape[0]), "generation_seconds": round(seconds, 2),
        "labels": [n for n in LABELS if getattr(frames, n) is not None], "info": sorted(frames.info),
    })
    if progress:
        print(f"{kind}: {len(frames)} structures cached in {folder} ({seconds:.1f} s)", file=sys.stderr, flush=True)
    return frames
