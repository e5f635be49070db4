"""Curve benchmark: does bertsweep-worker learn like PyTorch + transformers?

For each configuration and each of N seeds, fine-tunes MiniLM on the first 1,000 SST-2 training
sentences twice, once with `bertsweep-worker train` and once with the PyTorch + transformers
reference (worker/bench/hf_train_throughput.py, Trainer's defaults: shuffled batches, AdamW with
decay groups, linear schedule, clipping at 1.0, dropout on), and evaluates the full dev set
after every epoch. Seeds start each side's own random streams (classifier initialisation,
dropout, batch order), so single runs differ; the claim is about the mean. Per epoch it prints
the mean dev accuracy of each side, their difference and two pooled standard errors of that
difference, sqrt(sd_w^2/n + sd_p^2/n); an epoch passes when |difference| <= 2 pooled SE.

Every run's result is kept under --work (default runs/curve-bench), so an interrupted benchmark
resumes where it stopped. Writes the summary to --out and exits 1 if any epoch fails.

    make bench-curves          (or: python3 bench/curves/compare_pytorch.py --help)
"""
import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# (learning rate, batch size, epochs): a small learning rate with large batches (where the old
# length-sorted batching under-trained most) and a large one with small batches.
CONFIGS = [(2e-5, 32, 3), (5e-5, 16, 2)]


def run_json_lines(cmd, env):
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd[:2])} failed ({proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}")
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def worker_run(args, lr, bs, epochs, seed, env):
    lines = run_json_lines([
        os.path.join(args.bin, "bertsweep-worker"), "train",
        "--model", args.model, "--train-file", args.train, "--validation-file", args.dev,
        "--max-train-samples", str(args.samples), "--max-seq-length", "128",
        "--learning-rate", repr(lr), "--batch-size", str(bs), "--epochs", str(epochs),
        "--seed", str(seed), "--threads", str(args.threads), "--device", "cpu", "--json",
    ], env)
    accuracies = [line["eval_accuracy"] for line in lines if "eval_accuracy" in line]
    if len(accuracies) != epochs:
        sys.exit(f"worker printed {len(accuracies)} epochs, expected {epochs}")
    return accuracies


def pytorch_run(args, lr, bs, epochs, seed, env):
    lines = run_json_lines([
        args.python, os.path.join(ROOT, "worker/bench/hf_train_throughput.py"),
        "--model", args.model, "--train", args.train, "--dev", args.dev,
        "--samples", str(args.samples), "--max-seq-length", "128",
        "--lr", repr(lr), "--batch-size", str(bs), "--epochs", str(epochs),
        "--seed", str(seed), "--threads", str(args.threads), "--eval-every-epoch",
    ], env)
    return lines[-1]["epoch_eval_accuracy"]


def cached(path, compute):
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    started = time.perf_counter()
    value = compute()
    with open(path + ".tmp", "w") as f:
        json.dump(value, f)
    os.replace(path + ".tmp", path)
    print(f"  {os.path.basename(path)}: {[round(a, 4) for a in value]} ({time.perf_counter() - started:.0f} s)",
          flush=True)
    return value


def main():
    sst2 = os.environ.get("SST2_DIR", os.path.join(os.path.dirname(ROOT), "shared/data/sst2"))
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--samples", type=int, default=1000)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--model", default=os.path.join(ROOT, ".venv/minilm"))
    p.add_argument("--train", default=os.path.join(sst2, "train.tsv"))
    p.add_argument("--dev", default=os.path.join(sst2, "dev.tsv"))
    p.add_argument("--bin", default=os.path.join(ROOT, "target/debug"))
    p.add_argument("--python", default=os.path.join(ROOT, ".venv/bin/python"))
    p.add_argument("--work", default=os.path.join(ROOT, "runs/curve-bench"))
    p.add_argument("--out", default=os.path.join(ROOT, "bench/curves/pytorch-parity.json"))
    args = p.parse_args()
    for path, what in [(args.model, "--model"), (args.train, "--train"), (args.dev, "--dev"),
                       (os.path.join(args.bin, "bertsweep-worker"), "--bin"), (args.python, "--python")]:
        if not os.path.exists(path):
            sys.exit(f"{what} {path} does not exist; run `make setup` and `cargo build -p bertsweep-worker`, or pass {what}")
    os.makedirs(args.work, exist_ok=True)
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", RUST_LOG="warn")

    rows = []
    for lr, bs, epochs in CONFIGS:
        name = f"lr{lr:g}-bs{bs}-ep{epochs}"
        print(f"{name}: {args.seeds} seeds per side", flush=True)
        runs = {"worker": [], "pytorch": []}
        for seed in range(args.seeds):
            for side, fn in (("worker", worker_run), ("pytorch", pytorch_run)):
                path = os.path.join(args.work, f"{side}-{name}-s{seed}-n{args.samples}.json")
                runs[side].append(cached(path, lambda fn=fn, seed=seed: fn(args, lr, bs, epochs, seed, env)))
        for epoch in range(epochs):
            w = [r[epoch] for r in runs["worker"]]
            t = [r[epoch] for r in runs["pytorch"]]
            n = len(w)
            se = math.sqrt(statistics.variance(w) / n + statistics.variance(t) / n) if n > 1 else 0.0
            diff = statistics.mean(w) - statistics.mean(t)
            rows.append({
                "config": name, "learning_rate": lr, "batch_size": bs, "num_train_epochs": epochs,
                "epoch": epoch + 1, "seeds": n,
                "worker_mean": statistics.mean(w), "worker_sd": statistics.stdev(w) if n > 1 else 0.0,
                "pytorch_mean": statistics.mean(t), "pytorch_sd": statistics.stdev(t) if n > 1 else 0.0,
                "difference": diff, "two_pooled_se": 2 * se, "within": abs(diff) <= 2 * se + 1e-12,
                "worker_runs": w, "pytorch_runs": t,
            })

    print()
    print(f"{'configuration':<20} {'epoch':>5} {'worker':>15} {'pytorch':>15} {'diff':>7} {'2·SE':>6}  verdict")
    for r in rows:
        print(f"{r['config']:<20} {r['epoch']:>5} {r['worker_mean']:.4f}±{r['worker_sd']:.4f} "
              f"{r['pytorch_mean']:.4f}±{r['pytorch_sd']:.4f} {r['difference']:+.4f} {r['two_pooled_se']:.4f}  "
              f"{'within' if r['within'] else 'OUTSIDE'}")
    summary = {
        "description": f"mean dev accuracy per epoch over {args.seeds} seeds, MiniLM, first {args.samples} "
                       f"SST-2 train sentences, full dev set, CPU with {args.threads} threads; "
                       "worker = bertsweep-worker train, pytorch = worker/bench/hf_train_throughput.py",
        "command": "make bench-curves",
        "rows": rows,
    }
    with open(args.out, "w") as f:
        json.dump(summary, f, indent=1)
        f.write("\n")
    print(f"wrote {os.path.relpath(args.out, ROOT)}")
    return 0 if all(r["within"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
