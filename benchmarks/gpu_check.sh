#!/usr/bin/env bash
# GPU check of kappaflow's ph-ph engine (issue 15): one prepared script for a CUDA machine.
#
# Two modes:
#
#   benchmarks/gpu_check.sh --prepare      # HERE, with network to PyPI and the results below
#       Fills build/gpu-check/ (git-ignored, < 64 MiB with the tree):
#         wheels/      phono3py, phonopy, phonors, spglib, symfc, ase for CPython 3.12 (the GPU
#                      image has numpy, scipy, pandas, h5py, pyyaml, pytest, torch; not these)
#         reference/   phononDB-PBE-structures.extxyz (the tests' structures)
#         results/chgnet-0.3.0/{mp-22862,mp-804}/{relaxed.extxyz,fc2.hdf5,fc3.hdf5}
#                      CHGNet 0.3.0 force constants of NaCl-rs and GaN-wz, copied from
#                      results/ (regenerate them with
#                      `python -m kappaflow.cli kappa --model chgnet-0.3.0 --material mp-22862
#                       --out results/chgnet-0.3.0/mp-22862 --threads 2`, likewise mp-804)
#         wheels-forces/ (optional part) chgnet and its missing dependencies, if they fit
#
#   benchmarks/gpu_check.sh                # THERE (device run, carry build/gpu-check):
#       installs the wheels into /tmp/site, then, each step with its own time limit and log,
#       writing every figure to $OUT as soon as it exists (at most 8 files come back):
#         1. device.txt           nvidia-smi, torch/CUDA versions
#         2. gpu_tests.log        pytest -m gpu tests/test_phph.py (engine == phono3py C on CUDA)
#         3. phph_nacl.log        benchmarks/phph.py NaCl-rs 19^3, engine on cuda vs phono3py C
#                                 on all cores, 3 runs each, Rust reference
#         4. phph_gan.log         the same for GaN-wz 19x19x15 (no Rust run: time)
#         5. forces.log           (optional) benchmarks/forces.py CHGNet batched vs serial on
#                                 the GaN-wz fc3 set, if its wheels were prepared
#         summary.txt             the last two lines of each benchmark, the test verdict
#         gpu_check.log           this script's own log
#       Everything must end within BUDGET_S (default 470 s); a step that would not fit is
#       skipped and says so.
set -u -o pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 1
BUNDLE=${BUNDLE:-build/gpu-check}
MODEL=chgnet-0.3.0

download() { # download DEST NAME==VERSION...: CPython 3.12 x86-64 wheels, no dependencies
    local dest=$1
    shift
    python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
        --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 -d "$dest" "$@"
}

prepare() {
    set -e
    mkdir -p "$BUNDLE/wheels" "$BUNDLE/reference"
    download "$BUNDLE/wheels" phono3py==4.10.0 phonopy==4.10.0 phonors==0.8.0 spglib==2.8.0 \
        symfc==1.8.0 ase==3.29.0
    cp "${KAPPAFLOW_REFERENCE_DIR:-../shared/reference/phonondb-pbe}/phononDB-PBE-structures.extxyz" \
        "$BUNDLE/reference/"
    for mp in mp-22862 mp-804; do
        mkdir -p "$BUNDLE/results/$MODEL/$mp"
        for f in relaxed.extxyz fc2.hdf5 fc3.hdf5; do
            cp "results/$MODEL/$mp/$f" "$BUNDLE/results/$MODEL/$mp/$f"
        done
    done
    if [ "${WITH_FORCES:-0}" = 1 ]; then # optional part: CHGNet and what the image lacks
        mkdir -p "$BUNDLE/wheels-forces"
        download "$BUNDLE/wheels-forces" chgnet==0.4.2 ${FORCES_WHEELS:-pymatgen monty \
            ruamel.yaml ruamel.yaml.clib uncertainties palettable nvidia-ml-py}
    fi
    du -sh "$BUNDLE" "$BUNDLE"/*
    echo "tracked tree: $(git ls-files -z | xargs -0 du -cb | tail -n 1)"
}

if [ "${1:-}" = "--prepare" ]; then
    prepare
    exit $?
fi

OUT=${OUT:-$ROOT/build/gpu-check-out}
mkdir -p "$OUT"
LOG="$OUT/gpu_check.log"
SUMMARY="$OUT/summary.txt"
: >"$SUMMARY"
T0=$(date +%s)
BUDGET_S=${BUDGET_S:-470}
THREADS=${THREADS:-$(nproc)}
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg KAPPAFLOW_REFERENCE_DIR="$ROOT/$BUNDLE/reference"

log() { echo "[gpu_check +$(($(date +%s) - T0))s] $*" | tee -a "$LOG"; }
left() { echo $((BUDGET_S - ($(date +%s) - T0))); }

# step NAME LIMIT_S CMD...: run with a timeout (never past the budget), log to $OUT/NAME.log
step() {
    local name=$1 limit=$2 rc
    shift 2
    local remaining
    remaining=$(left)
    if [ "$remaining" -lt 30 ]; then
        log "SKIP $name: only ${remaining}s of the budget left"
        echo "$name: skipped (budget)" >>"$SUMMARY"
        return 0
    fi
    [ "$limit" -gt "$remaining" ] && limit=$remaining
    log "START $name (limit ${limit}s): $*"
    timeout --kill-after=10 "$limit" "$@" >"$OUT/$name.log" 2>&1
    rc=$?
    log "END $name rc=$rc$([ $rc -eq 124 ] && echo ' (timed out)')"
    tail -n 4 "$OUT/$name.log" | tee -a "$LOG"
    return 0
}

log "root=$ROOT bundle=$BUNDLE threads=$THREADS budget=${BUDGET_S}s"
{
    nvidia-smi -L 2>&1
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1
    python3 -c "import sys, torch; print(sys.version); print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available())" 2>&1
    nproc
    uptime
} >"$OUT/device.txt" 2>&1
log "device: $(head -n 1 "$OUT/device.txt")"

if [ ! -d "$BUNDLE/wheels" ]; then
    log "ERROR: $BUNDLE/wheels missing: run 'benchmarks/gpu_check.sh --prepare' here and carry $BUNDLE"
    exit 2
fi
SITE=/tmp/site
if ! timeout 120 python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
    --upgrade --target "$SITE" "$BUNDLE"/wheels/*.whl >>"$LOG" 2>&1; then
    log "ERROR: installing the wheels failed (see $LOG)"
    exit 3
fi
export PYTHONPATH="$ROOT/src:$SITE"
python3 -c "import phono3py, phonopy, torch, kappaflow.phph as p; print('phono3py', phono3py.__version__, 'phonopy', phonopy.__version__, 'torch', torch.__version__)" >>"$LOG" 2>&1 ||
    log "WARNING: import check failed (see $LOG)"
log "installed: $(tail -n 1 "$LOG")"

step gpu_tests 170 python3 -m pytest -p no:cacheprovider -p no:xdist -q -m gpu \
    tests/test_phph.py
echo "gpu_tests: $(tail -n 1 "$OUT/gpu_tests.log")" >>"$SUMMARY"

bench() { # bench NAME MATERIAL LIMIT EXTRA...
    local name=$1 mp=$2 limit=$3
    shift 3
    step "$name" "$limit" python3 benchmarks/phph.py --model "$MODEL" --material "$mp" \
        --device cuda --threads "$THREADS" --results "$BUNDLE/results" --repeats 3 \
        --memory-mb 40000 "$@"
    {
        echo "$name ($mp):"
        grep -E "^(median_|rust_s|max_rel_diff_kappa|speedup|run [0-9])" "$OUT/$name.log"
    } >>"$SUMMARY"
}
bench phph_nacl mp-22862 130
bench phph_gan mp-804 230 --no-rust

if [ -d "$BUNDLE/wheels-forces" ] && [ "$(left)" -gt 90 ]; then
    FSITE=/tmp/site-forces
    if timeout 90 python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
        --upgrade --target "$FSITE" "$BUNDLE"/wheels-forces/*.whl >>"$LOG" 2>&1; then
        PYTHONPATH="$ROOT/src:$SITE:$FSITE" step forces "$(($(left) - 5))" python3 \
            benchmarks/forces.py --model "$MODEL" --material mp-804 --device cuda \
            --threads "$THREADS" --repeats 3 --limit 192
        echo "forces: $(tail -n 1 "$OUT/forces.log")" >>"$SUMMARY"
    else
        log "optional forces part: wheel install failed"
    fi
else
    log "optional forces part: not prepared or no time left ($(left)s)"
fi
log "done in $(($(date +%s) - T0))s"
cat "$SUMMARY" | tee -a "$LOG"
