#!/usr/bin/env bash
# The GPU check of issue #20, as one bounded script (at most BUDGET_S seconds, default 480 = 8 minutes).
#
#   benchmarks/gpu_check.sh                  # on a machine with an NVIDIA GPU; results in $OUT/gpu_results.md
#   DRY_RUN=1 benchmarks/gpu_check.sh        # the same steps on the CPU with tiny models: checks this script
#
# Steps, in priority order (each timed and bounded by `timeout`; a step that no longer fits the budget is
# skipped and says so; STEPS="tests core ..." picks a subset):
#   tests      pytest -m gpu (tests/perceiver_core/test_gpu.py: every CUDA attention plan, heads on CUDA vs CPU)
#   core       benchmarks/bench_core.py --device cuda on every head (transformers fp32 / bf16 / fp16 vs ours)
#   jobs       video and flow jobs (tiny models) with --num-gpus 1 against the same job on the CPU, GPU utilisation
#   train      benchmarks/bench_train.py --device cuda (training steps; loss and gradients against a CPU step)
#   published  video and flow jobs with the published-size random models, GPU against CPU, GPU utilisation
#   traincmd   perceiver-jobs train --use-gpu --precision bf16 (tiny optical-flow and MLM runs)
#   compile    bench_core.py --compile bf16 on two heads
# Output: $OUT/gpu_results.md (Markdown for benchmarks/RESULTS.md, section "GPU", as is), $OUT/logs/<step>.*,
# $OUT/work/ (job outputs). OUT defaults to ./gpu_out. Installs nothing unless .venv is missing; then it makes
# one that sees the system's packages (a CUDA torch already installed is reused) and pip-installs the rest.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 2
OUT=${OUT:-./gpu_out}
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd)
DRY_RUN=${DRY_RUN:-0}
BUDGET_S=${BUDGET_S:-480}
STEPS=${STEPS:-"tests core jobs train published traincmd compile"}
PY=${PY:-$ROOT/.venv/bin/python}
PJ=("$PY" -m jobs)
MD=$OUT/gpu_results.md
LOGS=$OUT/logs
WORK=$OUT/work
T0=$(date +%s)
mkdir -p "$LOGS" "$WORK"
: > "$MD"
STATUS=()  # one Markdown table row per step

log() { echo "[gpu_check $(($(date +%s) - T0))s] $*" >&2; }
md() { printf '%s\n' "$@" >> "$MD"; }
remaining() { echo $((BUDGET_S - ($(date +%s) - T0))); }
want() { [[ " $STEPS " == *" $1 "* ]]; }

# run_step NAME LIMIT_S CMD...: runs CMD under `timeout` (LIMIT_S, cut to what is left of the budget) and
# `time`; stdout/stderr in $LOGS/NAME.out / .err; records exit status and seconds. Returns CMD's status,
# 124 on timeout, 99 when skipped for lack of time.
run_step() {
    local name=$1 limit=$2
    shift 2
    local left
    left=$(($(remaining) - 5))
    ((limit > left)) && limit=$left
    if ((limit < 20)); then
        log "$name: skipped (${left}s of the budget left)"
        STATUS+=("| $name | \`$*\` | skipped: time budget | - |")
        return 99
    fi
    log "$name: $* (limit ${limit}s)"
    echo "\$ $*" > "$LOGS/$name.out"
    local start end rc
    start=$(date +%s.%N)
    { time timeout -k 10 "$limit" "$@" >> "$LOGS/$name.out" 2> "$LOGS/$name.err"; } 2>> "$LOGS/$name.time"
    rc=$?
    end=$(date +%s.%N)
    local secs
    secs=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }')
    local verdict=$rc
    ((rc == 124 || rc == 137)) && verdict="$rc (timed out after ${limit}s)"
    STATUS+=("| $name | \`$*\` | $verdict | $secs |")
    log "$name: exit $rc in ${secs}s"
    return $rc
}

# GPU utilisation sampling around a job: util_start FILE; ...; util_stop; util_summary FILE
UTIL_PID=""
util_start() {
    UTIL_PID=""
    [[ $DRY_RUN == 1 ]] && return 0
    nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader,nounits -lms 250 > "$1" 2>/dev/null &
    UTIL_PID=$!
}
util_stop() {
    if [[ -n $UTIL_PID ]]; then
        kill "$UTIL_PID" 2>/dev/null
        wait "$UTIL_PID" 2>/dev/null
    fi
    UTIL_PID=""
}
util_summary() {
    [[ $DRY_RUN == 1 ]] && { echo "GPU utilisation: not sampled (dry run)"; return; }
    "$PY" - "$1" <<'EOF'
import sys
rows = []
for line in open(sys.argv[1]):
    try:
        util, mem = (float(x) for x in line.split(","))
    except ValueError:
        continue
    rows.append((util, mem))
if not rows:
    print("GPU utilisation: no samples")
    raise SystemExit
busy = [i for i, (u, _) in enumerate(rows) if u > 0]
span = rows[busy[0]:busy[-1] + 1] if busy else []
mean = sum(u for u, _ in rows) / len(rows)
steady = sum(u for u, _ in span) / len(span) if span else 0.0
print(f"GPU utilisation (nvidia-smi, every 250 ms, {len(rows)} samples): mean {mean:.0f} % over the whole job "
      f"(Ray start, model load and warm-up included), {steady:.0f} % from the first to the last busy sample "
      f"({len(span)} samples), peak memory used {max(m for _, m in rows):.0f} MiB")
EOF
}

# ------------------------------------------------------------------------------------------------ setup
if [[ $DRY_RUN != 1 ]]; then
    if ! nvidia-smi -L > "$LOGS/nvidia-smi.txt" 2>&1; then
        echo "gpu_check: nvidia-smi failed (no NVIDIA GPU or driver): $(head -c 300 "$LOGS/nvidia-smi.txt")" >&2
        exit 3
    fi
fi
if [[ ! -x $PY ]]; then
    log "no $PY: creating .venv (system site packages visible, so an installed CUDA torch is reused)"
    if ! { python3 -m venv --system-site-packages "$ROOT/.venv" && "$ROOT/.venv/bin/pip" install -q -e ".[dev]"; } \
            > "$LOGS/venv.txt" 2>&1; then
        echo "gpu_check: venv setup failed, see $LOGS/venv.txt" >&2
        exit 4
    fi
fi
if [[ $DRY_RUN == 1 ]]; then
    DEVICE=cpu; NUM_GPUS=0; TITLE="GPU (DRY RUN on the CPU with tiny models: not a GPU result)"
else
    DEVICE=cuda; NUM_GPUS=1; TITLE="GPU"
    if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
        echo "gpu_check: torch in $PY sees no CUDA device ($("$PY" -c 'import torch; print(torch.__version__)'))" >&2
        exit 5
    fi
fi
SETUP_S=$(($(date +%s) - T0))
T0=$(date +%s)  # the budget counts from here: a venv made above is not part of the check
ENV_LINE=$("$PY" - "$DEVICE" <<'EOF'
import os, platform, sys
import torch, transformers
dev = sys.argv[1]
if dev == "cuda":
    p = torch.cuda.get_device_properties(0)
    gpu = (f"{torch.cuda.get_device_name(0)} ({p.total_memory / 2**30:.0f} GiB, compute capability "
           f"{p.major}.{p.minor}), CUDA {torch.version.cuda} (torch build), cuDNN {torch.backends.cudnn.version()}")
else:
    gpu = "no GPU (dry run)"
print(f"{gpu}; torch {torch.__version__}; transformers {transformers.__version__}; python "
      f"{platform.python_version()}; {os.cpu_count()} CPU cores")
EOF
)
DRIVER=""
[[ $DRY_RUN != 1 ]] && DRIVER="; driver $(nvidia-smi --query-gpu=driver_version --format=csv,noheader | head -1)"
log "environment: $ENV_LINE$DRIVER"

md "## $TITLE" "" \
   "\`benchmarks/gpu_check.sh\` on $(date -u +%Y-%m-%dT%H:%MZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet 2>/dev/null || echo ' (+ uncommitted changes)'):" \
   "$ENV_LINE$DRIVER." ""

SECTIONS=$OUT/sections
mkdir -p "$SECTIONS"
rm -f "$SECTIONS"/*.md

# ------------------------------------------------------------------------------------------------ 1. tests
if want tests; then
    TESTS=(tests)
    [[ $DRY_RUN == 1 ]] && TESTS=(tests/perceiver_core/test_gpu.py)
    run_step tests 150 "$PY" -m pytest -m gpu -q -rfE --tb=line -p no:cacheprovider "${TESTS[@]}"
    {
        echo "### 1. GPU tests: \`pytest -m gpu\`"
        echo
        grep -E '^(FAILED|ERROR) ' "$LOGS/tests.out" | head -40 | sed 's/^/- /'
        echo
        echo "Result: $(grep -E '(passed|failed|skipped|error)' "$LOGS/tests.out" | tail -1)"
        echo
    } > "$SECTIONS/1-tests.md"
fi

# ------------------------------------------------------------------------------------------------ 2. inference
if want core; then
    CORE=(--device "$DEVICE" --repeats 3 --heavy-repeats 2 --markdown "$OUT/core.md")
    if [[ $DRY_RUN == 1 ]]; then CORE+=(--tiny); else CORE+=(--clip-all-chunks); fi
    run_step core 170 "$PY" benchmarks/bench_core.py "${CORE[@]}"
    {
        echo "### 2. Inference: \`python benchmarks/bench_core.py ${CORE[*]//$OUT\//}\`"
        echo
        if [[ -s $OUT/core.md ]]; then cat "$OUT/core.md"; else echo "No result; last lines of its log:"; echo;
            echo '```'; tail -15 "$LOGS/core.err"; echo '```'; fi
        echo
    } > "$SECTIONS/2-core.md"
fi

# ------------------------------------------------------------------------------------------------ 3. jobs
# job_pair NAME UNIT RTOL ATOL SUBSET LIMIT_S GPU_ARGS -- CPU_ARGS: one job on the GPU (utilisation sampled)
# and on the CPU, rows compared (SUBSET=1: the CPU run is shorter). --output and --num-gpus are added.
job_pair() {
    local name=$1 unit=$2 rtol=$3 atol=$4 subset=$5 limit=$6
    shift 6
    local gpu_args=() cpu_args=() side=gpu
    for arg in "$@"; do
        if [[ $arg == "--" ]]; then side=cpu; continue; fi
        if [[ $side == gpu ]]; then gpu_args+=("$arg"); else cpu_args+=("$arg"); fi
    done
    rm -rf "$WORK/$name-gpu" "$WORK/$name-cpu"
    util_start "$LOGS/$name-util.csv"
    run_step "$name-gpu" "$limit" "${PJ[@]}" "${gpu_args[@]}" --output "$WORK/$name-gpu" --num-gpus "$NUM_GPUS" --no-progress
    util_stop
    run_step "$name-cpu" "$limit" "${PJ[@]}" "${cpu_args[@]}" --output "$WORK/$name-cpu" --num-gpus 0 --no-progress
    local extra=()
    [[ $subset == 1 ]] && extra=(--subset)
    {
        echo "#### $name: \`perceiver-jobs ${gpu_args[*]} --num-gpus $NUM_GPUS\` against \`--num-gpus 0\`"
        echo
        "$PY" benchmarks/compare_runs.py "$WORK/$name-gpu" "$WORK/$name-cpu" --rtol "$rtol" --atol "$atol" \
            --label "$name" --unit "$unit" "${extra[@]}" 2>&1 || true
        echo
        util_summary "$LOGS/$name-util.csv"
        echo
    } > "$SECTIONS/3-$name.md"
}

VIDEOS=tests/data/videos
FLOW_IN=(tests/data/flow/sintel tests/data/videos/torchcodec__h265_video.mp4)
if want jobs; then
    job_pair video-tiny clips 1e-3 1e-4 0 100 video --input $VIDEOS --model multimodal --random-init --tiny \
        --clips-per-video 2 --batch-size 4 -- video --input $VIDEOS --model multimodal --random-init --tiny \
        --clips-per-video 2 --batch-size 4
    job_pair flow-tiny pairs 1e-3 1e-3 0 100 flow --input "${FLOW_IN[@]}" --model optical-flow --random-init --tiny \
        --max-pairs 4 -- flow --input "${FLOW_IN[@]}" --model optical-flow --random-init --tiny --max-pairs 4
fi

# ------------------------------------------------------------------------------------------------ 4. training
if want train; then
    TRAIN=(--device "$DEVICE" --markdown "$OUT/train.md")
    if [[ $DRY_RUN == 1 ]]; then TRAIN+=(--tiny); else TRAIN+=(--repeats 2 --flow-size 184x248 --grad-check tiny); fi
    run_step train 130 "$PY" benchmarks/bench_train.py "${TRAIN[@]}"
    {
        echo "### 4. Training steps: \`python benchmarks/bench_train.py ${TRAIN[*]//$OUT\//}\`"
        echo
        if [[ -s $OUT/train.md ]]; then cat "$OUT/train.md"; else echo "No result; last lines of its log:"; echo;
            echo '```'; tail -15 "$LOGS/train.err"; echo '```'; fi
        echo
    } > "$SECTIONS/4-train.md"
fi

# ------------------------------------------------------------------------------------------------ 3b. published
if want published && [[ $DRY_RUN != 1 ]]; then
    job_pair video-published clips 2e-3 1e-3 1 90 video --input $VIDEOS --model multimodal --random-init \
        --clips-per-video 2 --batch-size 2 --cpus-per-worker 8 -- video --input $VIDEOS --model multimodal --random-init \
        --clips-per-video 1 --limit 1 --batch-size 1
    job_pair flow-published pairs 2e-3 1e-2 1 75 flow --input "${FLOW_IN[@]}" --model optical-flow --random-init \
        --max-pairs 4 -- flow --input "${FLOW_IN[@]}" --model optical-flow --random-init --max-pairs 1 --limit 1
elif want published; then
    echo "#### published-size jobs: not run in a dry run (CPU only)" > "$SECTIONS/3-published.md"
fi

# ------------------------------------------------------------------------------------------------ 4b. train command
if want traincmd; then
    GPU_FLAGS=(--use-gpu --precision bf16)
    [[ $DRY_RUN == 1 ]] && GPU_FLAGS=(--precision bf16)
    COMMON=(--tiny --max-steps 3 --batch-size 2 --log-every 1 --checkpoint-every 3 --warmup-steps 1
            --num-workers 0 --output-dir "$WORK/train-runs")
    rm -rf "$WORK/train-runs"
    run_step traincmd-flow 90 "${PJ[@]}" train --task optical-flow --name flow "${COMMON[@]}" "${GPU_FLAGS[@]}" \
        --synthetic-pairs 8 --model-config 'train_size=[24,32]' --flow-output-points 64
    run_step traincmd-mlm 90 "${PJ[@]}" train --task mlm --name mlm --data tests/data/text/udhr/eng.txt "${COMMON[@]}" \
        "${GPU_FLAGS[@]}"
    {
        echo "#### \`perceiver-jobs train ${GPU_FLAGS[*]}\` (tiny models, 3 steps, in-process)"
        echo
        for run in flow mlm; do
            "$PY" - "$WORK/train-runs/$run/metrics.csv" "$run" <<'EOF'
import csv, math, sys
path, run = sys.argv[1], sys.argv[2]
try:
    rows = [r for r in csv.DictReader(open(path)) if r.get("split") == "train"]
except OSError:
    print(f"- {run}: no metrics.csv (the run failed; see logs/traincmd-{run}.err)")
    raise SystemExit
losses = [float(r["loss"]) for r in rows if r.get("loss")]
ok = bool(losses) and all(math.isfinite(x) for x in losses)
print(f"- {run}: {len(rows)} steps, losses {', '.join(f'{x:.4f}' for x in losses)}: "
      f"{'finite' if ok else '**NOT FINITE**'}")
EOF
        done
        echo
    } > "$SECTIONS/4-traincmd.md"
fi

# ------------------------------------------------------------------------------------------------ 2b. compile
if want compile; then
    COMPILE=(--device "$DEVICE" --heads "vision-conv,language" --dtypes "fp32,bf16" --compile bf16 --repeats 3
             --markdown "$OUT/compile.md")
    [[ $DRY_RUN == 1 ]] && COMPILE+=(--tiny)
    run_step compile 120 "$PY" benchmarks/bench_core.py "${COMPILE[@]}"
    {
        echo "### 2b. torch.compile: \`python benchmarks/bench_core.py ${COMPILE[*]//$OUT\//}\`"
        echo
        if [[ -s $OUT/compile.md ]]; then cat "$OUT/compile.md"; else echo "No result; last lines of its log:"; echo;
            echo '```'; tail -15 "$LOGS/compile.err"; echo '```'; fi
        echo
    } > "$SECTIONS/2b-compile.md"
fi

# ------------------------------------------------------------------------------------------------ report
TOTAL=$(($(date +%s) - T0))
md "Total wall time ${TOTAL} s (budget ${BUDGET_S} s; setup before it ${SETUP_S} s)." "" "| step | command | exit | seconds |" "|---|---|---|---|"
for row in "${STATUS[@]}"; do md "${row//$OUT\//}"; done
md ""
if [[ -f $SECTIONS/1-tests.md ]]; then cat "$SECTIONS/1-tests.md" >> "$MD"; fi
for f in "$SECTIONS"/2-core.md "$SECTIONS"/2b-compile.md; do [[ -f $f ]] && cat "$f" >> "$MD"; done
if compgen -G "$SECTIONS/3-*.md" > /dev/null; then
    md "### 3. Jobs on the GPU against the same job on the CPU" ""
    for f in "$SECTIONS"/3-video-tiny.md "$SECTIONS"/3-flow-tiny.md "$SECTIONS"/3-video-published.md \
             "$SECTIONS"/3-flow-published.md "$SECTIONS"/3-published.md; do
        [[ -f $f ]] && cat "$f" >> "$MD"
    done
fi
for f in "$SECTIONS"/4-train.md "$SECTIONS"/4-traincmd.md; do [[ -f $f ]] && cat "$f" >> "$MD"; done
sed -i -e "s#$OUT/##g" -e "s#$ROOT/##g" "$MD"
log "done in ${TOTAL}s: $MD"
FAILED=0
for row in "${STATUS[@]}"; do [[ $row == *"| 0 |"* || $row == *skipped* ]] || FAILED=1; done
exit $FAILED
