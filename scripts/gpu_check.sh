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
# Then real SST-2 sentences as they come (padded batches, where unpadding acts): samples/s,
# real tokens/s and MFU on real tokens, worker and PyTorch (Trainer's defaults: dynamic padding,
# fused AdamW, bf16); slots (`--slots N` under one supervisor, all slots' throughput over one
# common time window read from the supervisor's per-slot counters, each slot's peak memory);
# and the sweep benchmark (bench/sweep_benchmark.py: a 12-trial BERT-base study on 8,000 SST-2
# sentences, one trial per GPU, `--slots auto`, `--slots auto` without checkpoints, and Optuna
# driving transformers' Trainer one trial at a time: trials per GPU-hour and the rankings).
# PARTS="speed profile concurrency oom all sst2 slots sweep" (the default) picks the parts;
# SWEEP_MODES (default "one,slots,slots-nockpt,optuna") the sweep's runs.
# Targets: worker >= 1.25x PyTorch, >= 40 % MFU for BERT-base; >= 2,500 samples/s for one
# BERT-base trial at batch 32; sweep >= 3x the Optuna + Trainer reference.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${BIN:-target/debug}
PY=${PY:-.venv/bin/python}
SST2_DIR=${SST2_DIR:-$(cd .. && pwd)/shared/data/sst2}
PEAK_TFLOPS=${PEAK_TFLOPS:-989}
# Which parts run (all by default): speed profile concurrency oom all.
PARTS=" ${PARTS:-speed profile concurrency oom all sst2 slots sweep} "
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

# Real SST-2 sentences as they come (first 8,000; mean about 13 tokens, so padded batches where
# unpadding acts): samples/s, real tokens/s and MFU counted on real tokens, both sides.
if part sst2; then
  for batch in 32 128; do
    tag="sst2-bs$batch"
    "$BIN/bertsweep-worker" train --model "$OUT/bert-base" --train-file "$SST2_DIR/train.tsv" \
      --validation-file "$SST2_DIR/dev.tsv" --max-seq-length 128 --max-train-samples 8000 --batch-size $batch \
      --epochs 2 --learning-rate 5e-5 --device cuda --json >"$OUT/worker-$tag.json" 2>"$OUT/worker-$tag.log" || true
    "$PY" worker/bench/hf_train_throughput.py --model "$OUT/bert-base" --train "$SST2_DIR/train.tsv" \
      --dev "$SST2_DIR/dev.tsv" --samples 8000 --batch-size $batch --max-seq-length 128 --lr 5e-5 \
      --epochs 2 --device cuda --bf16 >"$OUT/pytorch-$tag.json" 2>"$OUT/pytorch-$tag.log" || true
    "$PY" - "$OUT/bert-base" "$SST2_DIR/train.tsv" "$OUT/worker-$tag.json" "$OUT/pytorch-$tag.json" "$PEAK_TFLOPS" $batch <<'PY' | tee -a "$OUT/summary.txt"
import csv, json, sys
from transformers import AutoConfig, AutoTokenizer
d, train, worker, torch_, peak, batch = sys.argv[1:]
c, tok = AutoConfig.from_pretrained(d), AutoTokenizer.from_pretrained(d)
rows = [r["sentence"] for _, r in zip(range(8000), csv.DictReader(open(train, newline=""), delimiter="\t", quoting=csv.QUOTE_NONE))]
lengths = [len(ids) for ids in tok(rows, truncation=True, max_length=128)["input_ids"]]
mean = sum(lengths) / len(lengths)
h, L, ff = c.hidden_size, c.num_hidden_layers, c.intermediate_size
params = L * (4 * h * h + 2 * h * ff)
# Attention on real tokens: each token attends to the real tokens of its own sentence.
flops_per_token = 6 * params + 6 * L * 2 * (sum(n * n for n in lengths) / sum(lengths)) * h
try:
    ours = [j["train_samples_per_second"] for j in map(json.loads, open(worker)) if "train_samples_per_second" in j][-1]
except Exception:
    ours = float("nan")
try:
    theirs = json.loads(open(torch_).read().splitlines()[-1])["epoch_samples_per_second"][-1]
except Exception:
    theirs = float("nan")
tps = lambda sps: sps * mean
mfu = lambda sps: tps(sps) * flops_per_token / (float(peak) * 1e12)
print(f"bert-base on real SST-2 (mean {mean:.1f} tokens), batch {batch}: worker {ours:.0f} samples/s, "
      f"{tps(ours):.0f} real tokens/s, MFU {mfu(ours):.1%}; pytorch {theirs:.0f} samples/s, {tps(theirs):.0f} "
      f"real tokens/s, MFU {mfu(theirs):.1%}; ratio {ours / theirs:.2f}x")
PY
  done
fi

# Slots, measured over one common window: a study of long trials, `--slots N` on cuda:0; once
# every slot trains, the supervisor's per-slot sample counters are read twice, 30 s apart.
start_coordinator() {  # start_coordinator NAME: a coordinator on a fresh database; sets COORD
  "$BIN/bertsweep" serve --listen 127.0.0.1:0 --db "sqlite://$OUT/$1.db" >"$OUT/$1-serve.out" 2>"$OUT/$1-serve.log" &
  echo $! >"$OUT/$1-serve.pid"
  for _ in $(seq 100); do grep -q "listening on" "$OUT/$1-serve.out" 2>/dev/null && break; sleep 0.1; done
  COORD="http://$(awk '/listening on/ {print $5}' "$OUT/$1-serve.out")"
}
if part slots; then
  for n in 1 2 4; do
    start_coordinator "slots$n"
    cat >"$OUT/slots$n.toml" <<TOML
name = "slots$n"
[objective]
metric = "eval_accuracy"
[budget]
parallel_trials = $n
checkpoints = false
[task]
model = "worker:$(cd "$OUT/bert-base" && pwd -P)"
train_file = "worker:$(cd "$OUT" && pwd -P)/long-train.tsv"
validation_file = "worker:$(cd "$OUT" && pwd -P)/long-dev.tsv"
[algorithm]
sampler = "grid"
[parameters.learning_rate]
value = 5e-5
[parameters.per_device_train_batch_size]
value = 32
[parameters.num_train_epochs]
value = 20
[parameters.seed]
values = [$(seq -s, 1 "$n")]
TOML
    BERTSWEEP_COORDINATOR=$COORD "$BIN/bertsweep" study create "$OUT/slots$n.toml" >/dev/null
    BERTSWEEP_COORDINATOR=$COORD "$BIN/bertsweep-worker" --device cuda:0 --study "slots$n" --no-export \
      --slots $n --metrics-listen 127.0.0.1:0 >"$OUT/slots$n-worker.log" 2>&1 &
    worker=$!
    addr=""
    for _ in $(seq 300); do
      addr=$(grep -o 'metrics at http://[0-9.:]*' "$OUT/slots$n-worker.log" | head -1 | sed 's|metrics at http://||') || true
      busy=$(curl -s "http://$addr/metrics" 2>/dev/null | grep -c '^bertsweep_worker_slot_busy{.*} 1' || true)
      [ -n "$addr" ] && [ "${busy:-0}" -ge "$n" ] && break
      sleep 1
    done
    sleep 20  # past the first steps (CUDA context, allocator warm-up)
    curl -s "http://$addr/metrics" >"$OUT/slots$n-t0.prom"; t0=$(date +%s.%N)
    sleep 30
    curl -s "http://$addr/metrics" >"$OUT/slots$n-t1.prom"; t1=$(date +%s.%N)
    kill -TERM $worker; wait $worker || true
    kill "$(cat "$OUT/slots$n-serve.pid")" 2>/dev/null || true
    "$PY" - "$n" "$OUT/slots$n-t0.prom" "$OUT/slots$n-t1.prom" "$t0" "$t1" <<'PY' | tee -a "$OUT/summary.txt"
import re, sys
n, a, b, t0, t1 = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), float(sys.argv[5])
def series(path, name):
    out = {}
    for line in open(path):
        m = re.match(name + r'\{slot="([^"]+)"\} (\S+)', line)
        if m:
            out[m.group(1)] = float(m.group(2))
    return out
s0, s1 = series(a, "bertsweep_worker_slot_train_samples_total"), series(b, "bertsweep_worker_slot_train_samples_total")
peaks = series(b, "bertsweep_worker_slot_trial_peak_memory_bytes")
rates = {k: (s1[k] - s0.get(k, 0)) / (t1 - t0) for k in s1}
print(f"bert-base batch 32, --slots {n} on one GPU, one {t1 - t0:.0f} s window: {sum(rates.values()):.0f} samples/s together ("
      + ", ".join(f"{k} {v:.0f}/s peak {peaks.get(k, 0) / 2**30:.1f} GiB" for k, v in sorted(rates.items())) + ")")
PY
  done
fi

# The sweep benchmark (about 6 minutes on an H200 with the default modes).
if part sweep; then
  "$PY" bench/sweep_benchmark.py --bin "$BIN" --model "$OUT/bert-base" --train "$SST2_DIR/train.tsv" \
    --dev "$SST2_DIR/dev.tsv" --samples 8000 --epochs 2 --device cuda \
    --modes "${SWEEP_MODES:-one,slots,slots-nockpt,optuna}" --out "$OUT/sweep" 2>"$OUT/sweep.log" | tee -a "$OUT/summary.txt" || \
    echo "sweep: FAILED (see $OUT/sweep.log)" | tee -a "$OUT/summary.txt"
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
