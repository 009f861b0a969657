#!/usr/bin/env bash
# One prepared run on the device machine (an H100/H200 lent to the session). Sections, in order,
# each under its own time limit so the whole run fits one call:
#   tp     tensor products: equikit vs e3nn vs cuEquivariance's CUDA kernels (tp_device.py)
#   atoms  the MACE-style potential vs mace-torch: forces, training step, MD (atoms_mace_speed_device.py)
#   nbody  the PONITA-style model at the published n-body size and protocol, 3 seeds in parallel
#          processes (nbody_long.py --device cuda), for what is left of DEADLINE_S (540 s) since the start
#   tests  the gpu-marked tests
#   sh     (older) harmonics vs e3nn, checker overhead, Cayley growth vs cayleypy
# Usage there, from the repository root (OUT set by the tool):
#   bash benchmarks/device_run.sh tp atoms tests nbody
# Carried (ignored here, see .gitignore): .whl/ (mace-torch 0.3.16, e3nn 0.4.4 and their needs:
# ase, matscipy, torch-ema, configargparse, prettytable, wcwidth, lmdb, orjson, python-hostlist,
# GitPython, gitdb, smmap; cuequivariance(-torch) 0.13.0 and platformdirs, which cuequivariance-ops
# imports; cueops.tar.xz: the cuequivariance-ops(-torch)-cu13 0.13.0 wheels unpacked, their
# triton/cache folder dropped, tar | xz -6: 29 MB instead of 73 MB, to fit the 64 MiB transfer),
# benchmarks/device_frames/ (MMFF frames and
# the n-body protocol splits, written here by
#   .venv/bin/python benchmarks/atoms_mace_speed_device.py --write-frames benchmarks/device_frames
#   .venv/bin/python benchmarks/nbody_long.py --export-data benchmarks/device_frames/nbody_protocol.pt).
# Results: $OUT/device_results.tgz -> benchmarks/results/device_<kind>/; the n-body run folders come
# back as $OUT/ponita-s<seed>.tar.part-<n> (15 MiB parts): put them into benchmarks/device_frames/ to
# resume next time (without .whl in carry: 64 MiB travel at most).
# Run it as it is: the device copy's .git is the session's starting commit, so a `git checkout`
# there brings back old files (seen: it cost one call).
set -u
OUT=${OUT:-/tmp/equikit_device}
W=$OUT/work
mkdir -p "$W"
SECTIONS=${*:-tp atoms tests nbody}
TP_S=${TP_S:-90}
ATOMS_S=${ATOMS_S:-130}
PY=${PY:-python3}
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
T0=$(date +%s)
stamp() { echo "[$(( $(date +%s) - T0 )) s] $*" | tee -a "$W/timeline.txt"; }

# ---- carried wheels: one site per need (mace-torch pins e3nn 0.4.4; the tp run uses the image's e3nn)
CUE=""
MACE=""
if [ -d .whl ]; then
  {
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/cue-site \
      .whl/cuequivariance-0*.whl .whl/cuequivariance_torch-*.whl .whl/platformdirs-*.whl && CUE=/tmp/cue-site
    if [ -f .whl/cueops.tar.xz ]; then
      mkdir -p /tmp/cueops && tar -xJf .whl/cueops.tar.xz -C /tmp/cueops && CUE=$CUE:/tmp/cueops/a:/tmp/cueops/b
    fi
    ls .whl/*.whl | grep -v cuequivariance > /tmp/mace-wheels.txt
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/mace-site \
      $(cat /tmp/mace-wheels.txt) && MACE=/tmp/mace-site
  } > "$W/wheels.log" 2>&1
fi
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  $PY -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__)"
  $PY -c "import e3nn; print('image e3nn', e3nn.__version__)" || true
  PYTHONPATH=$PYTHONPATH:$CUE $PY -c "import cuequivariance_torch as c, cuequivariance_ops_torch as o; print('cueq', c.__version__, 'ops ok')" || true
  PYTHONPATH=$MACE:$PYTHONPATH $PY -c "import mace, e3nn; print('mace', mace.__version__, 'e3nn', e3nn.__version__)" || true
  nproc; uptime
} > "$W/device_info.txt" 2>&1
stamp "setup done: cue=[$CUE] mace=[$MACE]"

for s in $SECTIONS; do
  case $s in
    tp)
      stamp "tp start"
      PYTHONPATH=$PYTHONPATH:$CUE timeout $((TP_S + 40)) $PY benchmarks/tp_device.py --out "$W" --budget "$TP_S" \
        ${TP_ARGS:-} > "$W/tp_device.log" 2>&1
      stamp "tp end rc=$?" ;;
    atoms)
      stamp "atoms start"
      PYTHONPATH=$MACE:$PYTHONPATH timeout $((ATOMS_S + 60)) $PY benchmarks/atoms_mace_speed_device.py --out "$W" \
        --budget "$ATOMS_S" ${ATOMS_ARGS:-} > "$W/atoms_device.log" 2>&1
      stamp "atoms end rc=$?" ;;
    nbody)
      NBODY_S=${NBODY_S:-$(( ${DEADLINE_S:-540} - $(date +%s) + T0 ))}  # what is left of the call
      stamp "nbody start: $NBODY_S s"
      [ "$NBODY_S" -lt 90 ] && { stamp "nbody skipped: too little time"; continue; }
      KW_DEFAULT='{"ponita": {"hidden": 128, "n_layers": 5, "n_orientations": 20, "basis": 256, "degree": 3, "widening": 4}}'
      KW=${NBODY_KW:-$KW_DEFAULT}
      R=/tmp/nbody-runs; rm -rf $R
      for seed in 0 1 2; do
        mkdir -p $R/s$seed
        # resume a run carried back from an earlier session (benchmarks/device_frames/ponita-s<seed>.tar)
        # (whole, or in parts ponita-s<seed>.tar.part-0, -1, ... as it comes back)
        if ls benchmarks/device_frames/ponita-s$seed.tar* > /dev/null 2>&1; then
          cat $(ls benchmarks/device_frames/ponita-s$seed.tar* | sort) | tar -xf - -C $R/s$seed
        fi
        timeout $((NBODY_S + 15)) $PY benchmarks/nbody_long.py --models ponita --seeds $seed --device ${NBODY_DEVICE:-cuda} \
          --chunk-epochs ${NBODY_CHUNK:-5} --rounds 100000 --eval-every 5 --patience 1000 --runs $R/s$seed \
          --out $R/s$seed/out --name nbody_ponita_gpu --model-kwargs "$KW" \
          --data-file benchmarks/device_frames/nbody_protocol.pt ${NBODY_ARGS:-} > "$W/nbody_s$seed.log" 2>&1 &
      done
      sleep $((NBODY_S - ${NBODY_LAST_ROUND_S:-45}))
      touch $R/s0/STOP $R/s1/STOP $R/s2/STOP
      wait
      mkdir -p $R/all
      for seed in 0 1 2; do
        cp -r $R/s$seed/ponita-s$seed $R/all/ 2>/dev/null
        # the run folder (checkpoint, best weights, metrics: ~17 MB) back to this machine, to resume later
        # in parts of 15 MiB: a file coming back from the device is at most 16 MiB
        tar -cf - -C $R/s$seed ponita-s$seed rounds.json 2>/dev/null | split -b 15M -d -a 1 - "$OUT/ponita-s$seed.tar.part-"
      done
      cp $R/s0/rounds.json $R/all/ 2>/dev/null
      $PY benchmarks/nbody_long.py --models ponita --seeds 0 1 2 --render-only --runs $R/all --out "$W" \
        --name nbody_ponita_gpu --device ${NBODY_DEVICE:-cuda} --model-kwargs "$KW" --eval-every 5 \
        --chunk-epochs ${NBODY_CHUNK:-5} > "$W/nbody_render.log" 2>&1
      stamp "nbody end rc=$?" ;;
    tests)
      stamp "tests start"
      # test modules import ase at collection (without it: 12 collection errors, session 6); only
      # ase, not the whole mace site, whose e3nn 0.4.4 would shadow the image's e3nn (its
      # torch.load fails under weights_only: 14 collection errors, session 7)
      $PY -m pip install -q --no-index --no-deps --no-compile --target /tmp/ase-site .whl/ase-*.whl > /dev/null 2>&1
      PYTHONPATH=$PYTHONPATH:/tmp/ase-site timeout 60 $PY -m pytest -q -p no:cacheprovider -m gpu tests > "$W/pytest_gpu.log" 2>&1
      stamp "tests end rc=$?" ;;
    sh)
      timeout 150 $PY benchmarks/device_sh.py --out "$W" > "$W/device_sh.log" 2>&1
      timeout 120 $PY benchmarks/check_overhead.py --device cuda --threads 8 --out "$W" > "$W/check_overhead_cuda.log" 2>&1
      PYTHONPATH=$PYTHONPATH:/tmp/mace-site timeout 260 $PY benchmarks/cayley_gpu.py --device cuda --time-budget 200 \
        --out "$W" > "$W/cayley_gpu.log" 2>&1 ;;
  esac
done
tar czf "$OUT/device_results.tgz" -C "$W" . && rm -rf "$W"
ls -la "$OUT"
