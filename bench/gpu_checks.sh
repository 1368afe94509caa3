#!/usr/bin/env bash
# The GPU measurements for docs/performance.md (the speedrun preset with the seed's model size, the seed recipe,
# the throughput benchmark), in one go on a machine with one CUDA GPU:
#     bash bench/gpu_checks.sh [LOG_DIR]        (default /tmp/frosty-gpu; new run directories under /tmp)
# Each step is bounded by `timeout`, so one that hangs costs its own time only; logs, not checkpoints, land
# in LOG_DIR. PYTHON names the interpreter (default python3).
logs=${1:-/tmp/frosty-gpu}; mkdir -p "$logs"
export PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
runs=$(mktemp -d /tmp/frosty-gpu-runs.XXXXXX)  # train.py refuses to reuse a run's directory
step() { echo "== $(date +%T) $1"; }
summary() { grep -E "estimate|validation at|best val|training speed|time:" "$1" | sed 's/^.*INFO\] - //'; }

# The preset's Muon recipe at the seed's size, with lrs, batch and init tuned for 2 layers of 128 on a bf16 CPU
# (the preset's own are tuned for 1 layer of 64 in 30 s on an fp32 CPU: docs/performance.md).
step "speedrun preset, the seed's model size (6 layers, 6 heads, 384 wide, context 256), 1 and 2 minutes"
for t in 01 02; do
  timeout 200 "$py" train.py +experiment=speedrun trainer=gpu dataset=shakespeare model.n_layer=6 model.n_head=6 \
    model.n_embd=384 model.block_size=256 optim.lr=0.025 optim.adamw_lr=4e-3 data.batch_size=32 \
    model.zero_init_proj=false trainer.max_time=00:00:$t:00 hydra.run.dir=$runs/speedrun-large-$t \
    > "$logs/speedrun_large_$t.log" 2>&1; echo "rc=$?"; summary "$logs/speedrun_large_$t.log"
done

step "the seed's recipe on shakespeare"
timeout 300 "$py" train.py +experiment=seed_frosty trainer=gpu dataset=shakespeare hydra.run.dir=$runs/seed \
  > "$logs/seed.log" 2>&1; echo "rc=$?"; summary "$logs/seed.log"

step "training throughput against a plain loop and the seed-style reference"
timeout 120 "$py" bench/train_speed.py --model large --device cuda --batch-size 64 --block-size 256 --steps 40 \
  > "$logs/train_speed.log" 2>&1; echo "rc=$?"; tail -6 "$logs/train_speed.log"
