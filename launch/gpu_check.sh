#!/usr/bin/env bash
# The prepared GPU check: on a machine with one CUDA GPU, every path a GPU run takes, at
# configs/debug.yaml size, in about 4 minutes.
#   launch/gpu_check.sh [LOG_DIR]        (or: make gpu-check)
# One PASS/FAIL line per step, then a summary; each step's output is LOG_DIR/NN_step.log
# (default LOG_DIR: gpu_check_logs/<date-time>). Exit 0: all passed; 1: a step failed; 2: no CUDA GPU.
# Environment: PYTHON (default .venv/bin/python, else python3), STEP_TIMEOUT (seconds a step, default 150).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
LOG=${1:-gpu_check_logs/$(date +%Y%m%d-%H%M%S)}
STEP_TIMEOUT=${STEP_TIMEOUT:-150}
mkdir -p "$LOG"
LOG=$(cd "$LOG" && pwd)

if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" >"$LOG/00_cuda.log" 2>&1; then
    echo "gpu-check: torch finds no CUDA GPU here ($("$PY" -c 'import torch; print("torch", torch.__version__, "built for CUDA", torch.version.cuda)' 2>&1 | tail -1)); nothing was run" >&2
    exit 2
fi
"$PY" -c "import torch; print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name(0))" >>"$LOG/00_cuda.log" 2>&1
echo "gpu-check: $(tail -1 "$LOG/00_cuda.log"); logs in $LOG"

RUNS=$LOG/runs
# Every training step: debug data (built by the first step under $LOG), one epoch of at most 4 steps, on the GPU.
ARGS=(configs/debug.yaml "data.raw_dir=$LOG/data/raw" "data.bundle_dir=$LOG/data/bundle"
      train.epochs=1 train.max_steps=4 train.resume=never run.progress=false dist.device=cuda)
TRAIN=("$PY" -m graphrec_dist train "${ARGS[@]}")
TORCHRUN=("$PY" -m torch.distributed.run --standalone --nproc_per_node=1 -m graphrec_dist.train "${ARGS[@]}")
# What the demo trains (configs/demo.yaml): the options whose dtypes differ under autocast.
FULL_GRAPH=(train.mode=full_graph train.loss=softmax train.softmax_per_user=true train.mask_seen=true
            model.score=cosine model.temperature=0.2 model.item_bias=true model.id_dropout=0.1
            "model.path=[similar]" model.path_edge_weights=false "train.num_neighbors=[1]")
MF=(model.name=mf train.loss=softmax train.softmax_per_user=true train.mask_seen=true)
NO_GPU=(env CUDA_VISIBLE_DEVICES=)  # a machine without a GPU, for reading a GPU-trained run

N=0
PASSED=()
FAILED=()
BOUNDED=(timeout "$STEP_TIMEOUT")
step() {  # step NAME COMMAND...: run it (bounded), log it, print PASS or FAIL
    local name=$1 start=$SECONDS rc=0 log
    shift
    N=$((N + 1))
    log=$(printf '%s/%02d_%s.log' "$LOG" "$N" "$name")
    echo "\$ $*" >"$log"
    if declare -F "$1" >/dev/null; then  # a function below: timeout(1) cannot run it, it bounds each command
        "$@" >>"$log" 2>&1 || rc=$?
    else
        "${BOUNDED[@]}" "$@" >>"$log" 2>&1 || rc=$?
    fi
    if [ "$rc" -eq 0 ]; then
        printf 'PASS  %-24s %4ds\n' "$name" $((SECONDS - start))
        PASSED+=("$name")
    else
        printf 'FAIL  %-24s %4ds  exit %d (124: timed out), see %s\n' "$name" $((SECONDS - start)) "$rc" "$log"
        FAILED+=("$name")
    fi
}

mid_epoch_resume() {  # a run failing after step 3 (checkpoint at step 2, mid-epoch) resumes there and finishes
    local out=$RUNS/resume
    local run=("${TRAIN[@]}" "${FULL_GRAPH[@]}" train.amp=true train.max_steps=8 train.checkpoint_every=2
               "run.out_dir=$out")
    if "${BOUNDED[@]}" "${run[@]}" train.fail_after_step=3; then
        echo "gpu-check: the injected failure did not happen"; return 1
    fi
    echo "gpu-check: the failure above was injected (train.fail_after_step=3); resuming"
    "${BOUNDED[@]}" "${run[@]}" train.resume=auto 2>&1 | tee "$LOG/resume_second_run.txt"
    [ "${PIPESTATUS[0]}" -eq 0 ] && grep -q "resumed from .* at epoch 0 step 2" "$LOG/resume_second_run.txt"
}

evaluate_on_cpu() {  # the bf16 full-graph run, read on "a machine without a GPU"
    local run=$RUNS/bf16_full_graph
    "${BOUNDED[@]}" "${NO_GPU[@]}" "$PY" -m graphrec_dist evaluate --run "$run" --split test >"$LOG/evaluate_cpu.json" \
        && "${BOUNDED[@]}" "$PY" launch/gpu_check_probe.py same-metrics "$run" "$LOG/evaluate_cpu.json"
}

for precision in fp32 bf16; do
    amp=$([ "$precision" = bf16 ] && echo true || echo false)
    step "${precision}_full_graph" "${TRAIN[@]}" "${FULL_GRAPH[@]}" "train.amp=$amp" "run.out_dir=$RUNS/${precision}_full_graph"
    step "${precision}_blocks" "${TRAIN[@]}" train.mode=sampled train.sampler=blocks "train.amp=$amp" \
        "run.out_dir=$RUNS/${precision}_blocks"
    step "${precision}_lightgcn" "${TRAIN[@]}" model.name=lightgcn "train.amp=$amp" "run.out_dir=$RUNS/${precision}_lightgcn"
    step "${precision}_mf_mask_seen" "${TRAIN[@]}" "${MF[@]}" "train.amp=$amp" "run.out_dir=$RUNS/${precision}_mf"
done
step bf16_pyg_sampler "${TRAIN[@]}" train.mode=sampled train.sampler=pyg train.amp=true "run.out_dir=$RUNS/pyg"
step ease "${TRAIN[@]}" model.name=ease "run.out_dir=$RUNS/ease"
step nccl_collectives "$PY" launch/gpu_check_probe.py nccl
# A world of one under torchrun: LOCAL_RANK and the device from torchrun's environment; no
# collective runs at world size 1 (nccl_collectives above puts them through NCCL).
step torchrun_1proc_nccl "${TORCHRUN[@]}" "${FULL_GRAPH[@]}" train.amp=true dist.backend=nccl \
    "run.out_dir=$RUNS/torchrun"
step torchrun_sharded_users "${TORCHRUN[@]}" "${FULL_GRAPH[@]}" train.amp=true dist.backend=nccl dist.sharding=users \
    "run.out_dir=$RUNS/sharded"
step mid_epoch_resume mid_epoch_resume
step ray_use_gpu "${TRAIN[@]}" "${FULL_GRAPH[@]}" train.amp=true --launcher ray dist.num_workers=1 dist.use_gpu=true \
    "run.out_dir=$RUNS/ray"
step evaluate_on_cpu evaluate_on_cpu
step export_on_cpu "${NO_GPU[@]}" "$PY" -m graphrec_dist export --run "$RUNS/bf16_full_graph" --out "$LOG/export" --k 10
step recommend_on_cpu "${NO_GPU[@]}" "$PY" -m graphrec_dist recommend --run "$RUNS/bf16_full_graph" --index 0 --k 5
step serve_on_cpu "${NO_GPU[@]}" "$PY" launch/gpu_check_probe.py serve "$RUNS/bf16_full_graph"

echo "gpu-check: ${#PASSED[@]} passed, ${#FAILED[@]} failed in ${SECONDS}s${FAILED[*]:+ (failed: ${FAILED[*]})}; logs in $LOG"
[ "${#FAILED[@]}" -eq 0 ]
