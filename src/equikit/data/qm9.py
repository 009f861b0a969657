"""QM9 from the ``qm9pack`` wheel (130,831 molecules with B3LYP/6-31G(2df,p) geometries and
properties), read offline and cached as arrays.

The wheel ships the data as CSV files (``qm9pack/data/qm9_part{1,2,3}.csv``); we read them
with the csv module (not ``qm9pack.get_data``, which needs pandas and pkg_resources) and
convert units: every energy (HOMO, LUMO, gap, ZPVE, U0, U, H, G) from Hartree to eV with
``ase.units.Hartree`` (27.211386 eV), so ``energy`` is U0 in eV. Kept as in QM9: ``mu`` in
Debye, ``alpha`` in bohr^3, ``r2`` in bohr^2, ``cv`` in cal/(mol K), rotational constants in
GHz. Molecules have no cell and no forces.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
import torch

from equikit._utils import check_int
from equikit.data.atoms import AtomsBatch, load_cached_atoms

__all__ = ["QM9_TARGETS", "load_qm9", "qm9_files", "read_qm9"]

GENERATOR_VERSION = 1
HARTREE_EV = 27.211386024367243  # ase.units.Hartree (CODATA 2014), written here to avoid importing ase

#: target name -> (CSV column, factor to our unit, our unit)
QM9_TARGETS = {
    "mu": ("Dipole_debye", 1.0, "D"),
    "alpha": ("Polarizability_bohr3", 1.0, "bohr^3"),
    "homo": ("HOMO_au", HARTREE_EV, "eV"),
    "lumo": ("LUMO_au", HARTREE_EV, "eV"),
    "gap": ("HOMO_LUMO_gap_au", HARTREE_EV, "eV"),
    "r2": ("R2_bohr2", 1.0, "bohr^2"),
    "zpve": ("ZPVE_au", HARTREE_EV, "eV"),
    "U0": ("InternalEnergy_0K_au", HARTREE_EV, "eV"),
    "U": ("InternalEnergy_298K_au", HARTREE_EV, "eV"),
    "H": ("Enthalphy_298K_au", HARTREE_EV, "eV"),
    "G": ("GibbsFreeEnergy_298K_au", HARTREE_EV, "eV"),
    "cv": ("Heatcapacity_Cv_cal_mol_K", 1.0, "cal/(mol K)"),
    "A": ("RotA_GHz", 1.0, "GHz"),
    "B": ("RotB_GHz", 1.0, "GHz"),
    "C": ("RotC_GHz", 1.0, "GHz"),
}
_STRIP = str.maketrans("", "", "[] ")
_Z = {"H": 1, "C": 6, "N": 7, "O": 8, "F": 9}


def qm9_files() -> list[Path]:
    """The CSV files of the installed ``qm9pack`` wheel (ImportError naming the extra when
    it is missing)."""
    try:
        import importlib.util

        spec = importlib.util.find_spec("qm9pack")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("QM9 needs the qm9pack wheel: pip install 'equikit[atoms]' (or pip install qm9pack)")
    folder = Path(next(iter(spec.submodule_search_locations))) / "data"
    files = [folder / f"qm9_part{k}.csv" for k in (1, 2, 3)]
    missing = [str(f) for f in files if not f.exists()]
    if missing:
        raise FileNotFoundError(f"qm9pack is installed but its data files are missing: {missing}")
    return files


def read_qm9(max_molecules: int | None = None, *, progress: bool = False) -> AtomsBatch:
    """Parse QM9 from the wheel's CSV files (about a minute for all 130,831 molecules; see
    :func:`load_qm9` for the cached version). ``info`` holds every target of
    :data:`QM9_TARGETS` in our units plus ``index`` (the QM9 molecule id, 1-based).

    Example:
        >>> from equikit.data.qm9 import read_qm9
        >>> mols = read_qm9(max_molecules=3)
        >>> mols.natoms.tolist(), mols.numbers[:5].tolist()  # CH4, NH3, H2O
        ([5, 4, 3], [6, 1, 1, 1, 1])
        >>> round(float(mols.info["homo"][0]), 3)  # -0.3877 Hartree in eV
        -10.55
    """
    if max_molecules is not None:
        check_int(max_molecules, "max_molecules", "read_qm9", minimum=1)
    csv.field_size_limit(1 << 24)
    pos, numbers, natoms = [], [], []
    cols = {k: [] for k in QM9_TARGETS}
    index = []
    for path in qm9_files():
        with open(path, newline="") as fh:
            for row in csv.DictReader(fh):
                elements = row["Elements"].translate(_STRIP).replace("'", "").split(",")
                # numbers such as "0." and "1." are valid floats but not JSON: split by hand
                xyz = np.array(row["XYZ_Ang"].translate(_STRIP).split(","), dtype=np.float64).reshape(-1, 3)
                if xyz.shape != (len(elements), 3):
                    raise ValueError(f"read_qm9: {path.name}: molecule {row['Index']} has {len(elements)} "
                                     f"elements but coordinates of shape {xyz.shape}")
                pos.append(xyz)
                numbers.extend(_Z[e] for e in elements)
                natoms.append(len(elements))
                index.append(int(row["Index"]))
                for key, (col, factor, _) in QM9_TARGETS.items():
                    cols[key].append(float(row[col]) * factor)
                if max_molecules is not None and len(natoms) >= max_molecules:
                    break
        if progress:
            print(f"QM9: {len(natoms)} molecules read ({path.name})", file=sys.stderr, flush=True)
        if max_molecules is not None and len(natoms) >= max_molecules:
            break
    info = {k: np.array(v) for k, v in cols.items()}
    info["index"] = np.array(index, dtype=np.int64)
    return AtomsBatch.from_arrays(positions=np.concatenate(pos), numbers=np.array(numbers), natoms=natoms,
                                  energy=info["U0"], info=info, dtype=torch.float64)


def load_qm9(max_molecules: int | None = None, *, root=None, regenerate: bool = False,
             progress: bool = True) -> AtomsBatch:
    """QM9 as an :class:`AtomsBatch` from the cache (``<data dir>/atoms/qm9-<hash>/``),
    parsed from the wheel on first use. ``energy`` is U0 in eV; targets in ``info``."""
    import importlib.metadata

    files = qm9_files()
    recipe = {"system": "qm9", "generator_version": GENERATOR_VERSION, "max_molecules": max_molecules,
              "qm9pack": importlib.metadata.version("qm9pack"), "bytes": [f.stat().st_size for f in files],
              "hartree_ev": HARTREE_EV}
    return load_cached_atoms("qm9", recipe, lambda: read_qm9(max_molecules, progress=progress), root=root,
                             regenerate=regenerate, progress=progress)
