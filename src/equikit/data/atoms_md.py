"""Offline atomistic data sets from molecular dynamics (DESIGN §6), cached with a manifest.

- :func:`generate_emt` / :func:`load_emt`: ASE's EMT potential for FCC metals (Cu, Ni, Al,
  and random CuNi alloys): Langevin MD (``ase.md.langevin``) of a supercell at each
  temperature, frames taken every ``stride`` steps after equilibration; energies, forces and
  stress.
- :func:`generate_mmff` / :func:`load_mmff`: RDKit MMFF94 for the MD17 molecules: an ETKDG
  conformer, then our own BAOAB Langevin integrator (:func:`langevin_baoab`) on MMFF
  energies and gradients at each temperature. MMFF works in kcal/mol and kcal/mol/A;
  ``1 kcal/mol = 0.0433641 eV`` (``ase.units.kcal / ase.units.mol``).
- :func:`relabel_xtb`: optional GFN2-xTB single points through ``tblite`` (Hartree and
  Hartree/Bohr converted to eV and eV/A).

Units: eV, Angstrom, eV/A, eV/A^3; MD in ASE's units (time unit ``A sqrt(amu/eV)``,
``ase.units.fs`` per femtosecond). Each recipe is a frozen dataclass; its fields and the
library versions go into the cache manifest.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from equikit._utils import check_int, check_positive
from equikit.data.atoms import AtomsBatch, import_ase, load_cached_atoms

__all__ = [
    "MD17_SMILES",
    "EMTConfig",
    "MMFFConfig",
    "generate_emt",
    "generate_mmff",
    "langevin_baoab",
    "load_emt",
    "load_mmff",
    "mmff_calculator",
    "relabel_xtb",
]

GENERATOR_VERSION = 1

#: the MD17 molecules as SMILES (hydrogens added by RDKit)
MD17_SMILES = {
    "ethanol": "CCO",
    "malonaldehyde": "O=CCC=O",
    "aspirin": "CC(=O)Oc1ccccc1C(=O)O",
    "uracil": "O=C1NC=CC(=O)N1",
    "toluene": "Cc1ccccc1",
}

#: FCC lattice constants (A) near the EMT minimum; alloys use Vegard's law
_LATTICE = {"Cu": 3.61, "Ni": 3.52, "Al": 4.05}


def _check_schedule(cfg, where: str, counts: tuple[str, ...]) -> None:
    """Validate the MD schedule fields of a recipe ``cfg``: ``frames_per_temperature`` and
    ``stride`` >= 1, the integer fields ``counts`` >= 0 (checked in that order), then
    ``timestep_fs`` and ``friction_per_fs`` > 0."""
    for name in ("frames_per_temperature", "stride"):
        check_int(getattr(cfg, name), name, where, minimum=1)
    for name in counts:
        check_int(getattr(cfg, name), name, where, minimum=0)
    check_positive(cfg.timestep_fs, "timestep_fs", where)
    check_positive(cfg.friction_per_fs, "friction_per_fs", where)


def _check_temperatures(temps, where: str) -> tuple[float, ...]:
    if isinstance(temps, (int, float)):
        temps = (temps,)
    temps = tuple(float(t) for t in temps)
    if not temps or any(not t > 0 for t in temps):
        raise ValueError(f"{where}: `temperatures` must be positive kelvin values, got {temps}")
    return temps


def _versions() -> dict:
    out = {}
    for name in ("ase", "rdkit", "tblite"):
        try:
            out[name] = __import__(name).__version__
        except (ImportError, AttributeError):
            pass
    return out


def _say(progress: bool, text: str) -> None:
    if progress:
        print(text, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- EMT
@dataclass(frozen=True)
class EMTConfig:
    """Recipe of an EMT metal data set.

    ``element`` is ``"Cu"``, ``"Ni"``, ``"Al"`` or ``"CuNi"`` (a random substitutional alloy
    with ``round(alloy_fraction * N)`` Ni atoms on the Cu lattice). The supercell is the
    4-atom cubic FCC cell repeated ``repeat`` times along each axis (3: 108 atoms, 4: 256).
    At each temperature: Maxwell-Boltzmann velocities, ``equilibration_steps`` Langevin steps,
    then ``frames_per_temperature`` frames every ``stride`` steps.

    Example:
        >>> from equikit.data.atoms_md import EMTConfig
        >>> EMTConfig(element="CuNi").natoms
        108
    """

    element: str = "Cu"
    alloy_fraction: float = 0.5
    repeat: int = 3
    lattice_constant: float | None = None
    temperatures: tuple[float, ...] = (300.0, 600.0, 1200.0)
    frames_per_temperature: int = 50
    stride: int = 20
    equilibration_steps: int = 200
    timestep_fs: float = 2.0
    friction_per_fs: float = 0.01
    seed: int = 0

    def __post_init__(self) -> None:
        where = "EMTConfig"
        if self.element not in ("Cu", "Ni", "Al", "CuNi"):
            raise ValueError(f"{where}: `element` must be 'Cu', 'Ni', 'Al' or 'CuNi', got {self.element!r}")
        if not 0.0 <= float(self.alloy_fraction) <= 1.0:
            raise ValueError(f"{where}: `alloy_fraction` must be in [0, 1], got {self.alloy_fraction}")
        check_int(self.repeat, "repeat", where, minimum=1)
        _check_schedule(self, where, ("equilibration_steps", "seed"))
        if self.lattice_constant is not None:
            check_positive(self.lattice_constant, "lattice_constant", where)
        object.__setattr__(self, "temperatures", _check_temperatures(self.temperatures, where))

    @property
    def natoms(self) -> int:
        return 4 * self.repeat**3

    @property
    def a(self) -> float:
        """The lattice constant used (A)."""
        if self.lattice_constant is not None:
            return float(self.lattice_constant)
        if self.element == "CuNi":
            x = float(self.alloy_fraction)
            return (1 - x) * _LATTICE["Cu"] + x * _LATTICE["Ni"]
        return _LATTICE[self.element]

    def recipe(self) -> dict:
        return {"system": "emt", "generator_version": GENERATOR_VERSION, **dataclasses.asdict(self),
                "lattice_constant_used": self.a, "versions": _versions()}


def _emt_supercell(cfg: EMTConfig, rng: np.random.Generator):
    from ase.build import bulk

    base = "Cu" if cfg.element == "CuNi" else cfg.element
    atoms = bulk(base, "fcc", a=cfg.a, cubic=True).repeat(cfg.repeat)
    if cfg.element == "CuNi":
        n_ni = round(float(cfg.alloy_fraction) * len(atoms))
        numbers = atoms.numbers.copy()
        numbers[rng.permutation(len(atoms))[:n_ni]] = 28
        atoms.numbers = numbers
    return atoms


def generate_emt(config: EMTConfig | None = None, *, progress: bool = False) -> AtomsBatch:
    """Run the EMT recipe (no caching; see :func:`load_emt`). ``info["temperature"]``
    holds each frame's thermostat temperature (K).

    Example:
        >>> from equikit.data.atoms_md import EMTConfig, generate_emt
        >>> cfg = EMTConfig(repeat=1, temperatures=(300.0,), frames_per_temperature=2, stride=2,
        ...                 equilibration_steps=2)
        >>> frames = generate_emt(cfg)
        >>> len(frames), tuple(frames.forces.shape), tuple(frames.stress.shape)
        (2, (8, 3), (2, 3, 3))
    """
    cfg = EMTConfig() if config is None else config
    if not isinstance(cfg, EMTConfig):
        raise TypeError(f"generate_emt: `config` must be an EMTConfig, got {type(cfg).__name__}")
    import_ase("generate_emt")
    from ase import units
    from ase.calculators.emt import EMT
    from ase.constraints import FixCom
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import Stationary, thermalize_momenta

    rng = np.random.default_rng(cfg.seed)
    template = _emt_supercell(cfg, rng)
    frames, temps = [], []
    for temp in cfg.temperatures:
        t0 = time.perf_counter()
        atoms = template.copy()
        atoms.calc = EMT()
        thermalize_momenta(atoms, temperature_K=temp, rng=rng)
        Stationary(atoms)
        atoms.set_constraint(FixCom())  # no drift of the centre of mass (ASE's recommended way)
        dyn = Langevin(atoms, cfg.timestep_fs * units.fs, temperature_K=temp,
                       friction=cfg.friction_per_fs / units.fs, fixcm=False, rng=rng)
        dyn.run(cfg.equilibration_steps)
        for _ in range(cfg.frames_per_temperature):
            dyn.run(cfg.stride)
            frames.append(_snapshot(atoms))
            temps.append(temp)
        _say(progress, f"EMT {cfg.element} {len(atoms)} atoms {temp:g} K: {cfg.frames_per_temperature} frames "
                       f"({time.perf_counter() - t0:.1f} s)")
    batch = AtomsBatch.from_atoms(frames, require=("energy", "forces", "stress"))
    batch.info["temperature"] = batch.positions.new_tensor(temps)
    return batch


def _snapshot(atoms):
    """A copy of ``atoms`` with its current energy, forces and stress frozen."""
    from ase.calculators.singlepoint import SinglePointCalculator

    snap = atoms.copy()
    snap.set_constraint()
    # apply_constraint=False: the physical EMT forces, not those projected by FixCom
    snap.calc = SinglePointCalculator(snap, energy=atoms.get_potential_energy(),
                                      forces=atoms.get_forces(apply_constraint=False),
                                      stress=atoms.get_stress(voigt=False, apply_constraint=False))
    return snap


def load_emt(config: EMTConfig | None = None, *, root=None, regenerate: bool = False,
             progress: bool = True) -> AtomsBatch:
    """The EMT frames of ``config`` from the cache (``<data dir>/atoms/emt-<hash>/``), generated
    on first use (about a minute for the default 108-atom recipe)."""
    cfg = EMTConfig() if config is None else config
    if not isinstance(cfg, EMTConfig):
        raise TypeError(f"load_emt: `config` must be an EMTConfig, got {type(cfg).__name__}")
    return load_cached_atoms("emt", cfg.recipe(), lambda: generate_emt(cfg, progress=progress), root=root,
                             regenerate=regenerate, progress=progress)


# --------------------------------------------------------------------------- Langevin
def langevin_baoab(
    positions: np.ndarray,
    velocities: np.ndarray,
    masses: np.ndarray,
    force_fn: Callable[[np.ndarray], tuple[float, np.ndarray]],
    *,
    timestep_fs: float,
    temperature_K: float,
    friction_per_fs: float,
    n_steps: int,
    rng: np.random.Generator,
    forces: np.ndarray | None = None,
):
    r"""Langevin dynamics with the BAOAB splitting (Leimkuhler & Matthews 2013), in ASE units.

    .. math::
        v \mathrel{+}= \tfrac{h}{2} F/m;\ x \mathrel{+}= \tfrac{h}{2} v;\
        v \leftarrow c_1 v + \sqrt{(1 - c_1^2) k_B T / m}\,\xi;\
        x \mathrel{+}= \tfrac{h}{2} v;\ F = F(x);\ v \mathrel{+}= \tfrac{h}{2} F/m

    with ``c1 = exp(-gamma h)``; ``friction_per_fs = 0`` is velocity Verlet.

    Args:
        positions, velocities: ``(..., n, 3)`` float64 (A, A per ASE time unit); not modified.
        masses: ``(n,)`` amu.
        force_fn: ``x -> (energy eV, forces (..., n, 3) eV/A)``.
        timestep_fs, temperature_K, friction_per_fs: the integrator's parameters.
        n_steps: steps to take.
        rng: the noise stream.
        forces: forces at ``positions`` when known (saves one call).

    Returns:
        ``(positions, velocities, energy, forces)`` after ``n_steps``.

    Example:
        >>> import numpy as np
        >>> from equikit.data.atoms_md import langevin_baoab
        >>> spring = lambda x: (0.5 * float((x**2).sum()), -x)
        >>> x, v, e, f = langevin_baoab(np.ones((1, 3)), np.zeros((1, 3)), np.ones(1), spring, timestep_fs=1.0,
        ...                             temperature_K=300.0, friction_per_fs=0.0, n_steps=10,
        ...                             rng=np.random.default_rng(0))
        >>> bool(abs(e + 0.5 * float((v**2).sum()) - 1.5) < 1e-2)  # energy conserved without friction
        True
    """
    from ase import units

    where = "langevin_baoab"
    check_int(n_steps, "n_steps", where, minimum=0)
    check_positive(timestep_fs, "timestep_fs", where)
    check_positive(temperature_K, "temperature_K", where)
    if float(friction_per_fs) < 0:
        raise ValueError(f"{where}: `friction_per_fs` must be >= 0, got {friction_per_fs}")
    h = timestep_fs * units.fs
    c1 = np.exp(-friction_per_fs / units.fs * h)
    inv_m = 1.0 / np.asarray(masses, dtype=np.float64)[:, None]
    sigma = np.sqrt((1.0 - c1 * c1) * units.kB * temperature_K * inv_m)
    x = np.array(positions, dtype=np.float64)
    v = np.array(velocities, dtype=np.float64)
    energy, f = force_fn(x) if forces is None else (np.nan, np.asarray(forces, dtype=np.float64))
    for _ in range(n_steps):
        v += 0.5 * h * f * inv_m
        x += 0.5 * h * v
        v = c1 * v + sigma * rng.standard_normal(v.shape)
        x += 0.5 * h * v
        energy, f = force_fn(x)
        v += 0.5 * h * f * inv_m
    return x, v, energy, f


# --------------------------------------------------------------------------- MMFF94
def _rdkit(where: str):
    try:
        from rdkit import Chem
        from rdkit.Chem import AllChem
    except ImportError as exc:  # pragma: no cover - rdkit is in the dev environment
        raise ImportError(f"{where} needs RDKit: pip install 'equikit[atoms]' (or pip install rdkit)") from exc
    return Chem, AllChem


def mmff_calculator(smiles: str, seed: int = 0):
    """An ETKDG conformer of ``smiles`` (hydrogens added) and its MMFF94 energy/forces.

    Returns ``(numbers (n,), positions (n, 3) A, masses (n,) amu, energy_forces)`` where
    ``energy_forces(x) -> (energy eV, forces (n, 3) eV/A)`` with ``forces = -CalcGrad``
    converted from kcal/mol/A.

    Example:
        >>> from equikit.data.atoms_md import mmff_calculator
        >>> numbers, pos, masses, energy_forces = mmff_calculator("CCO")
        >>> e, f = energy_forces(pos)
        >>> numbers.tolist(), f.shape
        ([6, 6, 8, 1, 1, 1, 1, 1, 1], (9, 3))
    """
    where = "mmff_calculator"
    Chem, AllChem = _rdkit(where)
    from ase import units

    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        raise ValueError(f"{where}: RDKit cannot parse the SMILES {smiles!r}")
    mol = Chem.AddHs(mol)
    params = AllChem.ETKDGv3()
    params.randomSeed = int(seed)
    if AllChem.EmbedMolecule(mol, params) != 0:
        raise RuntimeError(f"{where}: ETKDG found no conformer for {smiles!r} (seed {seed})")
    props = AllChem.MMFFGetMoleculeProperties(mol)
    if props is None:
        raise ValueError(f"{where}: MMFF94 has no parameters for {smiles!r}")
    ff = AllChem.MMFFGetMoleculeForceField(mol, props)
    kcal = units.kcal / units.mol  # eV per kcal/mol

    def energy_forces(x: np.ndarray) -> tuple[float, np.ndarray]:
        flat = np.asarray(x, dtype=np.float64).reshape(-1).tolist()
        energy = ff.CalcEnergy(flat) * kcal
        forces = -np.asarray(ff.CalcGrad(flat)).reshape(-1, 3) * kcal
        return energy, forces

    numbers = np.array([a.GetAtomicNum() for a in mol.GetAtoms()])
    masses = np.array([a.GetMass() for a in mol.GetAtoms()])
    positions = mol.GetConformer().GetPositions()
    return numbers, positions, masses, energy_forces


@dataclass(frozen=True)
class MMFFConfig:
    """Recipe of an MMFF94 molecular-dynamics data set.

    ``molecule`` is an MD17 name (:data:`MD17_SMILES`) or a SMILES string. One ETKDG
    conformer (seed ``seed``), relaxed for ``minimize_steps`` MMFF iterations; at each
    temperature: Maxwell-Boltzmann velocities, ``equilibration_steps`` BAOAB steps, then
    ``frames_per_temperature`` frames every ``stride`` steps.

    Example:
        >>> from equikit.data.atoms_md import MMFFConfig
        >>> MMFFConfig("aspirin").smiles
        'CC(=O)Oc1ccccc1C(=O)O'
    """

    molecule: str = "ethanol"
    temperatures: tuple[float, ...] = (300.0, 600.0, 1200.0)
    frames_per_temperature: int = 100
    stride: int = 10
    equilibration_steps: int = 500
    timestep_fs: float = 0.5
    friction_per_fs: float = 0.01
    minimize_steps: int = 200
    seed: int = 0

    def __post_init__(self) -> None:
        where = "MMFFConfig"
        if not isinstance(self.molecule, str) or not self.molecule:
            raise TypeError(f"{where}: `molecule` must be an MD17 name {sorted(MD17_SMILES)} or a SMILES string")
        _check_schedule(self, where, ("equilibration_steps", "minimize_steps", "seed"))
        object.__setattr__(self, "temperatures", _check_temperatures(self.temperatures, where))

    @property
    def smiles(self) -> str:
        return MD17_SMILES.get(self.molecule, self.molecule)

    def recipe(self) -> dict:
        return {"system": "mmff94", "generator_version": GENERATOR_VERSION, **dataclasses.asdict(self),
                "smiles": self.smiles, "versions": _versions()}


def _minimize(x, energy_forces, steps: int):
    """Steepest descent with a backtracking step (the conformer is already reasonable)."""
    e, f = energy_forces(x)
    step = 0.01
    for _ in range(steps):
        trial = x + step * f / max(1.0, float(np.abs(f).max()))
        e2, f2 = energy_forces(trial)
        if e2 < e:
            x, e, f, step = trial, e2, f2, step * 1.2
        else:
            step *= 0.5
    return x


def generate_mmff(config: MMFFConfig | None = None, *, progress: bool = False) -> AtomsBatch:
    """Run the MMFF94 recipe (no caching; see :func:`load_mmff`). Molecules have no cell
    (``pbc`` False); ``info["temperature"]`` holds each frame's temperature (K).

    Example:
        >>> from equikit.data.atoms_md import MMFFConfig, generate_mmff
        >>> cfg = MMFFConfig("ethanol", temperatures=(300.0,), frames_per_temperature=3, stride=2,
        ...                  equilibration_steps=5, minimize_steps=5)
        >>> frames = generate_mmff(cfg)
        >>> len(frames), tuple(frames.forces.shape), frames.stress is None
        (3, (27, 3), True)
    """
    cfg = MMFFConfig() if config is None else config
    if not isinstance(cfg, MMFFConfig):
        raise TypeError(f"generate_mmff: `config` must be an MMFFConfig, got {type(cfg).__name__}")
    from ase import units

    numbers, x0, masses, energy_forces = mmff_calculator(cfg.smiles, cfg.seed)
    x0 = _minimize(x0, energy_forces, cfg.minimize_steps)
    rng = np.random.default_rng(cfg.seed)
    pos, energies, forces, temps = [], [], [], []
    for temp in cfg.temperatures:
        t0 = time.perf_counter()
        v = rng.standard_normal(x0.shape) * np.sqrt(units.kB * temp / masses)[:, None]
        v -= (masses[:, None] * v).sum(0) / masses.sum()  # no centre-of-mass drift
        kw = {"timestep_fs": cfg.timestep_fs, "temperature_K": temp, "friction_per_fs": cfg.friction_per_fs,
              "rng": rng}
        x, v, e, f = langevin_baoab(x0, v, masses, energy_forces, n_steps=cfg.equilibration_steps, **kw)
        for _ in range(cfg.frames_per_temperature):
            x, v, e, f = langevin_baoab(x, v, masses, energy_forces, n_steps=cfg.stride, forces=f, **kw)
            pos.append(x.copy())
            energies.append(e)
            forces.append(f.copy())
            temps.append(temp)
        _say(progress, f"MMFF94 {cfg.molecule} {temp:g} K: {cfg.frames_per_temperature} frames "
                       f"({time.perf_counter() - t0:.1f} s)")
    m, n = len(pos), len(numbers)
    return AtomsBatch.from_arrays(
        positions=np.concatenate(pos), numbers=np.tile(numbers, m), natoms=np.full(m, n),
        energy=np.array(energies), forces=np.concatenate(forces), info={"temperature": np.array(temps)},
        dtype=torch.float64,
    )


def load_mmff(config: MMFFConfig | None = None, *, root=None, regenerate: bool = False,
              progress: bool = True) -> AtomsBatch:
    """The MMFF94 frames of ``config`` from the cache (``<data dir>/atoms/mmff94-<hash>/``),
    generated on first use."""
    cfg = MMFFConfig() if config is None else config
    if not isinstance(cfg, MMFFConfig):
        raise TypeError(f"load_mmff: `config` must be an MMFFConfig, got {type(cfg).__name__}")
    return load_cached_atoms("mmff94", cfg.recipe(), lambda: generate_mmff(cfg, progress=progress), root=root,
                             regenerate=regenerate, progress=progress)


# --------------------------------------------------------------------------- GFN2-xTB
def relabel_xtb(frames: AtomsBatch, *, method: str = "GFN2-xTB", charge: float = 0.0,
                progress: bool = False) -> AtomsBatch:
    """Energies and forces of every structure recomputed with tblite (``GFN2-xTB`` or
    ``GFN1-xTB``), converted from Hartree and Hartree/Bohr to eV and eV/A. Molecules only
    (no cell); ``stress`` is dropped.

    Example:
        >>> from equikit.data.atoms_md import MMFFConfig, generate_mmff, relabel_xtb
        >>> cfg = MMFFConfig("ethanol", temperatures=(300.0,), frames_per_temperature=1, stride=1,
        ...                  equilibration_steps=0, minimize_steps=0)
        >>> xtb = relabel_xtb(generate_mmff(cfg))
        >>> round(float(xtb.energy[0]) / 27.211386, 1)  # about -11.4 Hartree for ethanol
        -11.4
    """
    where = "relabel_xtb"
    if not isinstance(frames, AtomsBatch):
        raise TypeError(f"{where}: `frames` must be an AtomsBatch, got {type(frames).__name__}")
    if bool(frames.pbc.any()):
        raise ValueError(f"{where}: periodic structures are not supported here (molecules only)")
    try:
        from tblite.interface import Calculator
    except ImportError as exc:
        raise ImportError(f"{where} needs tblite: pip install 'equikit[atoms]' (or pip install tblite)") from exc
    from ase import units

    ptr = frames.ptr.tolist()
    energies, forces = [], []
    t0 = time.perf_counter()
    for b in range(len(frames)):
        sl = slice(ptr[b], ptr[b + 1])
        numbers = frames.numbers[sl].numpy()
        bohr = frames.positions[sl].detach().double().numpy() / units.Bohr
        calc = Calculator(method, numbers, bohr, charge=charge)
        calc.set("verbosity", 0)
        res = calc.singlepoint()
        energies.append(res.get("energy") * units.Hartree)
        forces.append(-np.asarray(res.get("gradient")) * units.Hartree / units.Bohr)
    _say(progress, f"{method}: {len(frames)} structures ({time.perf_counter() - t0:.1f} s)")
    out = frames[list(range(len(frames)))]
    out.energy = out.positions.new_tensor(energies)
    out.forces = out.positions.new_tensor(np.concatenate(forces))
    out.stress = None
    return out
