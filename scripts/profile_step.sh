#!/usr/bin/env bash
# Where a training step's time goes, worker against PyTorch + transformers: both train MiniLM
# on the same sentences with the same settings (random order, batch 32, 2 threads, one epoch)
# under `perf record` (software clock, as hardware counters are often unavailable), evaluating
# on only 32 dev sentences so that the training loop dominates, and
# scripts/perf_categories.py sorts each side's self time into the same categories (matrix
# products, attention softmax, layer norm, GELU, dropout, optimizer, elementwise, allocator,
# autograd and dispatch, Python, OpenMP waits, …). Both sides run the same libtorch, so a
# category's difference is a difference in what each side asks libtorch to do.
# GROUP=1 profiles transformers' length grouping on both sides instead of random order.
#   make setup && cargo build -p bertsweep-worker && scripts/profile_step.sh [SAMPLES]
set -euo pipefail
cd "$(dirname "$0")/.."
SAMPLES=${1:-1000}
BIN=${BIN:-target/debug}
SST2=${SST2_DIR:-$(cd .. && pwd)/shared/data/sst2}
MODEL=$(cd .venv/minilm && pwd -P)
OUT=${OUT:-runs/profile}
GROUPING=()
[ "${GROUP:-0}" = 1 ] && GROUPING=(--group-by-length)
command -v perf >/dev/null || { echo "perf is missing: apt-get install linux-perf" >&2; exit 1; }
mkdir -p "$OUT"
head -n 33 "$SST2/dev.tsv" >"$OUT/dev32.tsv"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 RUST_LOG=warn
perf record -q -F 499 -o "$OUT/worker.data" -- "$BIN/bertsweep-worker" train --model "$MODEL" \
  --train-file "$SST2/train.tsv" --validation-file "$OUT/dev32.tsv" --max-train-samples "$SAMPLES" \
  --learning-rate 5e-5 --batch-size 32 --epochs 1 --threads 2 --seed 42 --json "${GROUPING[@]}" >"$OUT/worker.json"
perf record -q -F 499 -o "$OUT/pytorch.data" -- .venv/bin/python worker/bench/hf_train_throughput.py \
  --model "$MODEL" --train "$SST2/train.tsv" --dev "$OUT/dev32.tsv" --samples "$SAMPLES" \
  --batch-size 32 --epochs 1 --threads 2 --seed 42 "${GROUPING[@]}" >"$OUT/pytorch.json"
for side in worker pytorch; do
  perf report -q -i "$OUT/$side.data" --no-children --sort dso,sym --stdio -F overhead,sample,dso,sym \
    2>/dev/null >"$OUT/$side.txt"
done
python3 scripts/perf_categories.py "$OUT/worker.txt" "$OUT/pytorch.txt" 499 "$OUT/worker.json" "$OUT/pytorch.json"
