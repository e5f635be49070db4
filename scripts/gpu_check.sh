#!/usr/bin/env bash
# GPU readiness check (run on a machine with an NVIDIA GPU; about 4 minutes on an H200).
#
# Needs: a built worker (`make build`, or BIN=dir holding bertsweep and bertsweep-worker) linked
# against a CUDA libtorch, and .venv (`make setup`: torch 2.11 CUDA wheel, transformers, MiniLM)
# or PY=python with those. SST2_DIR as for the tests. Writes everything to runs/gpu-check/.
#
# Measures, on the same card, the worker against PyTorch + transformers (bf16 autocast, TF32,
# fused AdamW) fine-tuning a BERT-base-sized model (random weights, MiniLM's tokenizer) and
# MiniLM on sequences of exactly 128 tokens, batch 32 (and BERT-base at 128): train samples/s of
# the warm second epoch (and of the first), the ratio, model FLOP utilisation (6 × parameters
# + attention per token, against PEAK_TFLOPS, default 989 = H100 SXM dense bf16) and peak
# memory (nvidia-smi, sampled every 100 ms, for both). Then shows where a step's time goes on
# both sides, what 1, 2 and 4 worker processes sharing one GPU train together, checks that an
# out-of-memory batch ends a trial as infeasible and that `--device all` trains on every GPU.
# PARTS="speed profile concurrency oom all" (the default) picks the parts to run.
# Targets: worker >= 1.25x PyTorch, >= 40 % MFU for BERT-base.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${BIN:-target/debug}
PY=${PY:-.venv/bin/python}
SST2_DIR=${SST2_DIR:-$(cd .. && pwd)/shared/data/sst2}
PEAK_TFLOPS=${PEAK_TFLOPS:-989}
# Which parts run (all by default): speed profile concurrency oom all.
PARTS=" ${PARTS:-speed profile concurrency oom all} "
part() { [[ $PARTS == *" $1 "* ]]; }
OUT=runs/gpu-check
rm -rf "$OUT"
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv,noheader | tee "$OUT/card.txt"
"$PY" -c 'import torch; assert torch.cuda.is_available(), "this torch has no CUDA"; print("torch", torch.__version__, "cuda", torch.version.cuda)'

# Data of exactly-128-token examples (SST-2 sentences joined), a BERT-base with random weights,
# and MiniLM (random weights of its shape when only its config and tokenizer are present).
"$PY" - "$SST2_DIR" "$OUT" .venv/minilm <<'PY'
import csv, os, shutil, sys
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification
sst2, out, minilm = sys.argv[1:]
tok = AutoTokenizer.from_pretrained(minilm)
rows = list(csv.DictReader(open(os.path.join(sst2, "train.tsv"), newline=""), delimiter="\t", quoting=csv.QUOTE_NONE))
def write(path, n, start):
    with open(path, "w") as f:
        f.write("sentence\tlabel\n")
        i = start
        for _ in range(n):
            words, label = [], rows[i % len(rows)]["label"]
            while len(tok(" ".join(words))["input_ids"]) < 140:
                words.append(rows[i % len(rows)]["sentence"]); i += 1
            f.write(" ".join(words).replace("\t", " ") + "\t" + label + "\n")
write(os.path.join(out, "long-train.tsv"), 4096, 0)
write(os.path.join(out, "long-dev.tsv"), 512, 200000)
base = os.path.join(out, "bert-base")
BertForSequenceClassification(BertConfig(num_labels=2)).save_pretrained(base)
def tokenizer_files(dest):
    for f in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if os.path.exists(os.path.join(minilm, f)):
            shutil.copy(os.path.join(minilm, f), dest)
tokenizer_files(base)
# MiniLM itself, or (where its weights did not travel: speed does not depend on their values)
# a model of MiniLM's shape with random weights.
mini = os.path.join(out, "minilm")
if any(os.path.exists(os.path.join(minilm, w)) for w in ("model.safetensors", "pytorch_model.bin")):
    os.symlink(os.path.realpath(minilm), mini)
else:
    config = BertConfig.from_pretrained(minilm)
    config.num_labels = 2
    BertForSequenceClassification(config).save_pretrained(mini)
    tokenizer_files(mini)
    print("MiniLM weights not found: MiniLM-shaped random weights", file=open(os.path.join(out, "minilm-note.txt"), "w"))
PY

peak_memory() {  # runs "$@" while sampling GPU memory; prints the peak MiB to $OUT/peak
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 >"$OUT/mem.log" &
  local sampler=$!
  "$@"
  local rc=$?
  kill "$sampler" 2>/dev/null || true
  sort -n "$OUT/mem.log" | tail -1 >"$OUT/peak"
  return $rc
}

# train_throughput MODEL BATCH: two epochs each side (the second one warm: CUDA context,
# cuBLAS handles and allocator caches are set up during the first), peak memory of each, and
# one summary line: the warm epoch's samples/s, the ratio and MFU, the first epoch's in brackets.
train_throughput() {
  local model=$1 batch=$2 dir="$OUT/$1" tag="$1-bs$2"
  peak_memory "$BIN/bertsweep-worker" train --model "$dir" --train-file "$OUT/long-train.tsv" \
    --validation-file "$OUT/long-dev.tsv" --max-seq-length 128 --batch-size "$batch" --epochs 2 \
    --learning-rate 5e-5 --device cuda --json >"$OUT/worker-$tag.json" 2>"$OUT/worker-$tag.log"
  local worker_mib; worker_mib=$(cat "$OUT/peak")
  peak_memory "$PY" worker/bench/hf_train_throughput.py --model "$dir" --train "$OUT/long-train.tsv" \
    --dev "$OUT/long-dev.tsv" --samples 4096 --batch-size "$batch" --max-seq-length 128 --lr 5e-5 \
    --epochs 2 --device cuda --bf16 >"$OUT/pytorch-$tag.json" 2>"$OUT/pytorch-$tag.log"
  local torch_mib; torch_mib=$(cat "$OUT/peak")
  "$PY" - "$dir" "$OUT/worker-$tag.json" "$OUT/pytorch-$tag.json" "$PEAK_TFLOPS" "$model" "$batch" "$worker_mib" "$torch_mib" <<'PY'
import json, sys
from transformers import AutoConfig
d, worker, torch_, peak, model, batch, wmib, tmib = sys.argv[1:]
c = AutoConfig.from_pretrained(d)
h, L, S, ff = c.hidden_size, c.num_hidden_layers, 128, c.intermediate_size
params = L * (4 * h * h + 2 * h * ff)                  # matmul weights of the encoder
flops_per_token = 6 * params + 6 * L * 2 * S * h        # + QK^T and AV, forward and backward
ours = [j["train_samples_per_second"] for j in map(json.loads, open(worker)) if "train_samples_per_second" in j]
theirs = json.loads(open(torch_).read().splitlines()[-1])["epoch_samples_per_second"]
mfu = lambda sps: sps * S * flops_per_token / (float(peak) * 1e12)
print(f"{model} batch {batch}: worker {ours[-1]:.0f} samples/s (MFU {mfu(ours[-1]):.1%}; first epoch {ours[0]:.0f}; "
      f"peak {wmib} MiB), pytorch {theirs[-1]:.0f} samples/s (MFU {mfu(theirs[-1]):.1%}; first epoch {theirs[0]:.0f}; "
      f"peak {tmib} MiB), ratio {ours[-1] / theirs[-1]:.2f}x warm ({ours[0] / theirs[0]:.2f}x first epoch)")
PY
}

part speed && {
  for run in "bert-base 32" "minilm 32" "bert-base 128"; do
    # (batch 128: is batch 32 bound by launching kernels? Four times the work per launch.)
    train_throughput $run || echo "$run: FAILED (see $OUT/*-${run// /-bs}.log)"
  done
} | tee "$OUT/summary.txt"

# Where a step's time goes, phase by phase, on both sides (device waits at each boundary, so
# these runs are slower than the ones above; the second epoch's line is the warm one).
part profile && for batch in 32 128; do
  BERTSWEEP_STEP_PROFILE=1 "$BIN/bertsweep-worker" train --model "$OUT/bert-base" \
    --train-file "$OUT/long-train.tsv" --validation-file "$OUT/long-dev.tsv" --max-seq-length 128 \
    --batch-size $batch --epochs 2 --learning-rate 5e-5 --device cuda --json >/dev/null \
    2>"$OUT/profile-worker-bs$batch.log" || true
  "$PY" worker/bench/hf_train_throughput.py --model "$OUT/bert-base" --train "$OUT/long-train.tsv" \
    --dev "$OUT/long-dev.tsv" --samples 4096 --batch-size $batch --max-seq-length 128 --lr 5e-5 \
    --epochs 2 --device cuda --bf16 --profile-steps >/dev/null 2>"$OUT/profile-pytorch-bs$batch.log" || true
  {
    echo "bert-base batch $batch, warm epoch, device waits at phase boundaries:"
    echo "  worker:  $(grep 'step profile' "$OUT/profile-worker-bs$batch.log" | tail -1 | sed 's/.*step profile[^:]*: //')"
    echo "  pytorch: $(grep 'step profile' "$OUT/profile-pytorch-bs$batch.log" | tail -1 | sed 's/.*step profile: //')"
  } | tee -a "$OUT/summary.txt"
done
[ -f "$OUT/minilm-note.txt" ] && tee -a "$OUT/summary.txt" <"$OUT/minilm-note.txt"

# Trials per GPU: at batch 32 a step is bound by the host launching kernels, so the GPU idles
# most of the time. N worker processes (as N workers started on one GPU would be) train at
# once on cuda:0; each process has its own autograd thread. Sum of their warm epochs' samples/s.
if part concurrency; then
  for n in 1 2 4; do
    for i in $(seq "$n"); do
      "$BIN/bertsweep-worker" train --model "$OUT/bert-base" --train-file "$OUT/long-train.tsv" \
        --validation-file "$OUT/long-dev.tsv" --max-seq-length 128 --batch-size 32 --epochs 2 \
        --learning-rate 5e-5 --device cuda:0 --seed "$i" --json >"$OUT/together-$n-$i.json" 2>/dev/null &
    done
    wait
    "$PY" - "$n" "$OUT"/together-"$n"-*.json <<'PY' | tee -a "$OUT/summary.txt"
import json, sys
n, files = sys.argv[1], sys.argv[2:]
warm = [[j["train_samples_per_second"] for j in map(json.loads, open(f)) if "train_samples_per_second" in j][-1] for f in files]
print(f"bert-base batch 32, {n} worker process(es) on one GPU: {sum(warm):.0f} samples/s together "
      f"({', '.join(f'{w:.0f}' for w in warm)})")
PY
  done
fi

# An out-of-memory batch: the trial must end as infeasible (one line, exit non-zero).
if part oom; then
  if "$BIN/bertsweep-worker" train --model "$OUT/bert-base" --train-file "$OUT/long-train.tsv" \
    --validation-file "$OUT/long-dev.tsv" --max-seq-length 512 --batch-size 16384 --epochs 1 \
    --learning-rate 5e-5 --device cuda >"$OUT/oom.out" 2>"$OUT/oom.err"; then
    echo "FAIL: a 16384 x 512 batch did not run out of memory" | tee -a "$OUT/summary.txt"; exit 1
  fi
  if grep -q "^frame #\|Exception raised from" "$OUT/oom.err"; then
    echo "FAIL: the out-of-memory error carries libtorch's C++ backtrace (see $OUT/oom.err)" | tee -a "$OUT/summary.txt"; exit 1
  fi
  grep -qi "out of memory" "$OUT/oom.err" && echo "out-of-memory batch: refused as infeasible ($(tail -1 "$OUT/oom.err"))" | tee -a "$OUT/summary.txt"
fi

part all || { echo "figures: $OUT/summary.txt"; exit 0; }
# --device all: one trial per visible GPU through a coordinator.
"$BIN/bertsweep" serve --listen 127.0.0.1:0 --db "sqlite://$OUT/all.db" >"$OUT/serve.out" 2>"$OUT/serve.log" &
serve=$!
trap 'kill $serve 2>/dev/null || true' EXIT
for _ in $(seq 100); do grep -q "listening on" "$OUT/serve.out" 2>/dev/null && break; sleep 0.1; done
export BERTSWEEP_COORDINATOR="http://$(awk '/listening on/ {print $5}' "$OUT/serve.out")"
gpus=$(nvidia-smi -L | wc -l)
cat >"$OUT/all.toml" <<TOML
name = "all-gpus"
[objective]
metric = "eval_accuracy"
[budget]
parallel_trials = $gpus
[task]
model = "worker:$(cd "$OUT/minilm" && pwd -P)"
train_file = "worker:$(pwd)/$OUT/long-train.tsv"
validation_file = "worker:$(pwd)/$OUT/long-dev.tsv"
max_train_samples = 512
[algorithm]
sampler = "grid"
[parameters.learning_rate]
value = 3e-5
[parameters.seed]
values = [$(seq -s, 1 "$gpus")]
TOML
"$BIN/bertsweep" study create "$OUT/all.toml"
"$BIN/bertsweep-worker" --device all --study all-gpus --no-export >"$OUT/all-worker.log" 2>&1
"$BIN/bertsweep" trials all-gpus | tee -a "$OUT/summary.txt"
echo "figures: $OUT/summary.txt"
