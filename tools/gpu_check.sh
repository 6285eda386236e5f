#!/usr/bin/env bash
# tools/gpu_check.sh [SECONDS]: everything this project checks on a CUDA GPU, in one go, within about
# SECONDS (default 560), each part cut off at its own limit so that a slow part cannot take the
# rest's time:
#   1. the CUDA tests (the graph-replayed decode step equals the eager one)
#   2. bench.py on a GPT-2-small shape in bf16: training tokens/s and MFU, then new tokens/s at
#      batch 1, 64 and 256 against transformers and the bandwidth bound
#   3. the gpu preset of the whole pipeline, for the time left (it reports how far it got)
#   (compiled, only when PARTS names it) the compiled decode step's tests, then bench.py at
#      batch 1 and 256: the graph rows, plain and compiled, against transformers' static cache
#   (profile, only when PARTS names it) profile_decode.py --compile at batch 256: the compiled
#      step's kernels, generate with and without the whole step in the graph, attention kernels
# Logs go to $LOG_DIR (default out/gpu-check): tests.txt, bench.txt, compiled-tests.txt,
# compiled.txt, profile.txt, gpu-preset.txt and gpu-run.tar.gz (the run's metrics.jsonl, plots
# and summary).
# Uses the python3 on the PATH (PYTHON=... to change): a GPU machine's own torch, not .venv's.
# PARTS="tests bench preset" (the default) picks the parts and their order, each part cut off at
# the smaller of its limit and the time left: PARTS=preset gives the pipeline all the time,
# PARTS="tests preset compiled" tries the compiled decode step in what the pipeline leaves.
# The preset starts over (--force) unless CONTINUE=1: then, on the same machine, a second call
# continues a run that the first one's limit cut off (stages done are skipped, the interrupted
# one resumes), and summary.json's seconds add up both calls.
set -u
cd "$(dirname "$0")/.." || exit 1  # the project root: the paths below start there
PY=${PYTHON:-python3}
PARTS=${PARTS:-tests bench preset}
FORCE=--force
[ "${CONTINUE:-0}" = 1 ] && FORCE=
LOG_DIR=${LOG_DIR:-out/gpu-check}
RUN_DIR=${RUN_DIR:-out/gpu}
budget=${1:-560}
start=$(date +%s)
mkdir -p "$LOG_DIR"
export PYTHONUNBUFFERED=1
left() { echo $((budget - ($(date +%s) - start))); }

part() {  # part NAME LIMIT_SECONDS COMMAND...: run it, log it, say how it ended
    local name=$1 limit=$2 t0
    shift 2
    t0=$(date +%s)
    echo "== $name: $* (limit ${limit}s)"
    timeout "$limit" "$@" 2>&1 | tee "$LOG_DIR/$name.txt"
    echo "== $name: exit ${PIPESTATUS[0]} after $(($(date +%s) - t0))s"
}

nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv,noheader
$PY -c "import sys, torch; print('python', sys.version.split()[0], 'torch', torch.__version__)"
lim() { local l; l=$(($(left) - 10)); [ "$l" -lt "$1" ] && echo "$l" || echo "$1"; }  # lim N: N, or less if less is left
for p in $PARTS; do
    if [ "$(left)" -lt 60 ]; then echo "== $p: skipped, $(left)s left"; continue; fi
    case $p in
    tests)
        part tests "$(lim 120)" $PY -m pytest -q -rs -p no:cacheprovider tests/test_engine.py \
            -k "(cuda or graph or bucket) and not compiled" ;;
    bench)
        part bench "$(lim 270)" $PY tools/bench.py --device cuda --shape gpt2 --dtype bfloat16 --batch 1 64 256 \
            --naive-max-batch 64 --train --compile ;;
    compiled)  # its tests here, not in "tests": compiling may take a while
        part compiled-tests "$(lim 150)" $PY -m pytest -q -rs -p no:cacheprovider tests/test_engine.py -k compiled
        part compiled "$(lim 300)" $PY tools/bench.py --device cuda --shape gpt2 --dtype bfloat16 --batch 1 256 \
            --naive-max-batch 0 --compile-decode --skip kv-cache+compile transformers-dynamic ;;
    preset)
        part gpu-preset $(($(left) - 20)) $PY train_all.py --preset gpu --out-dir "$RUN_DIR" $FORCE --quiet
        (cd "$RUN_DIR" 2>/dev/null && tar czf - metrics.jsonl summary.json report.md ./*.png 2>/dev/null) \
            >"$LOG_DIR/gpu-run.tar.gz" ;;
    profile)  # where the compiled step's time goes: replay vs eager, kernels by device time
        part profile "$(lim 200)" $PY tools/profile_decode.py --compile --batch 256 ;;
    *) echo "== $p: no such part (tests, bench, compiled, preset, profile)" ;;
    esac
done
echo "== done in $(($(date +%s) - start))s"
