"""The sweep benchmark: the same study run end to end by bertsweep and by what users run today.

One grid of configurations (learning rates x batch sizes, a fixed number of epochs) on the same
model, the same training sentences and the same dev set, run as:

  one        bertsweep, one trial at a time per GPU (a plain worker)
  slots      bertsweep, `--slots SLOTS` (default auto) on one GPU
  slots-nockpt  as `slots` with `budget.checkpoints = false` (what resumability costs)
  optuna     Optuna's GridSampler driving transformers' Trainer one trial at a time (bf16 on a
             GPU, adamw_torch_fused, dynamic padding, evaluation every epoch, no saving): the
             reference

and reports for each: wall time from start to the last trial's end, trials per GPU-hour, and
each configuration's best-epoch dev accuracy, with the rank correlation (Spearman) of every
bertsweep run's configurations to the reference's and whether they agree on the best one.
Models are not exported on either side (`--no-export`, `save_strategy="no"`).

Same data and settings on both sides: the first --samples rows of --train, all of --dev,
max_seq_length 128, no warm-up, weight decay 0, seed 0, evaluation after every epoch.
Runs offline (HF_HUB_OFFLINE=1). Works on the CPU too (tiny settings, for a smoke test).

  python bench/sweep_benchmark.py --bin target/release --model runs/gpu-check/bert-base \
      --train ../shared/data/sst2/train.tsv --dev ../shared/data/sst2/dev.tsv --samples 8000 \
      --device cuda --modes one,slots,slots-nockpt,optuna --out runs/sweep
"""
import argparse
import contextlib
import csv
import json
import os
import subprocess
import sys
import time


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bin", default="target/debug", help="directory holding bertsweep and bertsweep-worker")
    p.add_argument("--model", required=True)
    p.add_argument("--train", required=True)
    p.add_argument("--dev", required=True)
    p.add_argument("--samples", type=int, default=8000)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--lrs", default="1e-5,2e-5,3e-5,4e-5,5e-5,6e-5")
    p.add_argument("--batches", default="16,32")
    p.add_argument("--max-seq-length", type=int, default=128)
    p.add_argument("--device", default="cuda", help="cuda (one GPU: cuda:0) or cpu")
    p.add_argument("--slots", default="auto")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: default)")
    p.add_argument("--modes", default="one,slots,optuna")
    p.add_argument("--out", default="runs/sweep")
    return p.parse_args()


def grid(args):
    lrs = [float(x) for x in args.lrs.split(",")]
    batches = [int(x) for x in args.batches.split(",")]
    return lrs, batches


def key(lr, batch):
    return f"lr={lr:g} batch={batch}"


# --- bertsweep --------------------------------------------------------------------------------

def run_bertsweep(args, mode, out):
    os.makedirs(out, exist_ok=True)
    db = os.path.join(out, "sweep.db")
    serve_log = open(os.path.join(out, "serve.log"), "w")
    serve = subprocess.Popen(
        [os.path.join(args.bin, "bertsweep"), "serve", "--listen", "127.0.0.1:0", "--db", f"sqlite://{db}"],
        stdout=subprocess.PIPE, stderr=serve_log, text=True)
    try:
        url = None
        deadline = time.time() + 60
        while time.time() < deadline and url is None:
            line = serve.stdout.readline()
            if "listening on" in line:
                url = "http://" + line.split("listening on")[1].split()[0]
        if url is None:
            raise SystemExit(f"{mode}: the coordinator did not start (see {out}/serve.log)")
        env = dict(os.environ, BERTSWEEP_COORDINATOR=url, RUST_LOG=os.environ.get("RUST_LOG", "info"))
        lrs, batches = grid(args)
        absolute = lambda p: "worker:" + os.path.realpath(p)
        study = f"""name = "sweep"
[objective]
metric = "eval_accuracy"
[algorithm]
sampler = "grid"
[budget]
parallel_trials = {len(lrs) * len(batches)}
checkpoints = {"false" if mode.endswith("nockpt") else "true"}
[task]
model = "{absolute(args.model)}"
train_file = "{absolute(args.train)}"
validation_file = "{absolute(args.dev)}"
max_seq_length = {args.max_seq_length}
max_train_samples = {args.samples}
[parameters.learning_rate]
values = [{", ".join(repr(x) for x in lrs)}]
[parameters.per_device_train_batch_size]
values = [{", ".join(str(x) for x in batches)}]
[parameters.num_train_epochs]
value = {args.epochs}
[parameters.warmup_ratio]
value = 0.0
[parameters.weight_decay]
value = 0.0
[parameters.seed]
value = 0
"""
        path = os.path.join(out, "sweep.toml")
        open(path, "w").write(study)
        subprocess.run([os.path.join(args.bin, "bertsweep"), "study", "create", path], env=env, check=True,
                       stdout=subprocess.DEVNULL)
        device = "cuda:0" if args.device.startswith("cuda") else "cpu"
        worker = [os.path.join(args.bin, "bertsweep-worker"), "--device", device, "--study", "sweep", "--no-export",
                  "--cache-dir", os.path.join(out, "cache")]
        if mode.startswith("slots"):
            worker += ["--slots", args.slots]
        if args.threads:
            worker += ["--threads", str(args.threads)]
        started = time.time()
        with open(os.path.join(out, "worker.log"), "w") as log:
            subprocess.run(worker, env=env, check=True, stdout=log, stderr=log)
        wall = time.time() - started
        trials = json.loads(subprocess.run([os.path.join(args.bin, "bertsweep"), "trials", "sweep", "--format", "json"],
                                           env=env, check=True, capture_output=True, text=True).stdout)
    finally:
        serve.terminate()
        serve.wait()
    accuracy, peaks = {}, {}
    for t in trials:
        if t["state"] != "COMPLETED":
            raise SystemExit(f"{mode}: trial {t['number']} ended {t['state']}: {t.get('error', '')}")
        p = t["params"]
        k = key(float(p["learning_rate"]), int(p["per_device_train_batch_size"]))
        accuracy[k] = max(e["metrics"]["eval_accuracy"] for e in t["epochs"])
        peaks[k] = t.get("peak_device_memory_bytes", 0)
    return {"mode": mode, "wall_seconds": wall, "trials": len(trials), "accuracy": accuracy, "peak_bytes": peaks}


# --- Optuna + Trainer -------------------------------------------------------------------------

def read_tsv(path, limit=None):
    rows = []
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE):
            if limit is not None and len(rows) >= limit:
                break
            rows.append((row["sentence"], int(row["label"])))
    return rows


def run_optuna(args, out):
    os.makedirs(out, exist_ok=True)
    import numpy as np
    import optuna
    import torch
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding,
                              Trainer, TrainingArguments)

    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = args.device.startswith("cuda")
    started = time.time()
    tok = AutoTokenizer.from_pretrained(args.model)

    class Encoded(torch.utils.data.Dataset):
        def __init__(self, rows):
            enc = tok([t for t, _ in rows], truncation=True, max_length=args.max_seq_length)
            self.items = [{"input_ids": enc["input_ids"][i], "attention_mask": enc["attention_mask"][i],
                           "token_type_ids": enc["token_type_ids"][i], "labels": rows[i][1]} for i in range(len(rows))]

        def __len__(self):
            return len(self.items)

        def __getitem__(self, i):
            return self.items[i]

    train = Encoded(read_tsv(args.train, args.samples))
    dev = Encoded(read_tsv(args.dev))

    def accuracy(p):
        return {"accuracy": float((np.argmax(p.predictions, axis=-1) == p.label_ids).mean())}

    results = {}

    def objective(trial):
        lr = trial.suggest_float("learning_rate", 1e-6, 1e-3, log=True)
        batch = trial.suggest_categorical("per_device_train_batch_size", grid(args)[1])
        model = AutoModelForSequenceClassification.from_pretrained(args.model, num_labels=2)
        targs = TrainingArguments(
            output_dir=os.path.join(out, "trainer"), learning_rate=lr, per_device_train_batch_size=batch,
            per_device_eval_batch_size=64, num_train_epochs=args.epochs, weight_decay=0.0, warmup_steps=0,
            eval_strategy="epoch", save_strategy="no", logging_strategy="no", report_to=[], seed=0,
            bf16=cuda, use_cpu=not cuda, optim="adamw_torch_fused", disable_tqdm=True)
        trainer = Trainer(model=model, args=targs, train_dataset=train, eval_dataset=dev,
                          data_collator=DataCollatorWithPadding(tok), compute_metrics=accuracy)
        best = 0.0

        from transformers import TrainerCallback

        class Best(TrainerCallback):
            def on_evaluate(self, _args, _state, _control, metrics=None, **kw):
                nonlocal best
                best = max(best, metrics.get("eval_accuracy", 0.0))

        trainer.add_callback(Best())
        trainer.train()
        results[key(lr, batch)] = best
        del trainer, model
        if cuda:
            torch.cuda.empty_cache()
        return best

    lrs, batches = grid(args)
    sampler = optuna.samplers.GridSampler({"learning_rate": lrs, "per_device_train_batch_size": batches})
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.optimize(objective, n_trials=len(lrs) * len(batches))
    wall = time.time() - started
    return {"mode": "optuna", "wall_seconds": wall, "trials": len(results), "accuracy": results, "peak_bytes": {}}


# --- report -----------------------------------------------------------------------------------

def spearman(a, b):
    keys = sorted(set(a) & set(b))
    if len(keys) < 2:
        return float("nan")

    def ranks(xs):
        order = sorted(range(len(xs)), key=lambda i: xs[i])
        r = [0.0] * len(xs)
        i = 0
        while i < len(order):
            j = i
            while j + 1 < len(order) and xs[order[j + 1]] == xs[order[i]]:
                j += 1
            for k in range(i, j + 1):
                r[order[k]] = (i + j) / 2 + 1
            i = j + 1
        return r

    ra, rb = ranks([a[k] for k in keys]), ranks([b[k] for k in keys])
    n = len(keys)
    ma, mb = sum(ra) / n, sum(rb) / n
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    va = sum((x - ma) ** 2 for x in ra) ** 0.5
    vb = sum((y - mb) ** 2 for y in rb) ** 0.5
    return cov / (va * vb) if va and vb else float("nan")


def main():
    args = parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.makedirs(args.out, exist_ok=True)
    runs = []
    for mode in args.modes.split(","):
        mode = mode.strip()
        out = os.path.join(args.out, mode)
        if mode == "optuna":
            os.makedirs(out, exist_ok=True)
            # Trainer prints its logs and load reports on stdout: keep them out of the summary.
            with open(os.path.join(out, "trainer.log"), "w") as log, contextlib.redirect_stdout(log):
                run = run_optuna(args, out)
        else:
            run = run_bertsweep(args, mode, out)
        run["trials_per_gpu_hour"] = run["trials"] / (run["wall_seconds"] / 3600)
        runs.append(run)
        print(json.dumps(run), file=open(os.path.join(args.out, f"{mode}.json"), "w"))
        print(f"{mode}: {run['trials']} trials in {run['wall_seconds']:.1f} s = {run['trials_per_gpu_hour']:.0f} trials per "
              f"GPU-hour", flush=True)
    reference = next((r for r in runs if r["mode"] == "optuna"), None)
    lines = []
    for r in runs:
        best = max(r["accuracy"], key=r["accuracy"].get)
        line = (f"{r['mode']:>13}: {r['trials']} trials, {r['wall_seconds']:.1f} s, {r['trials_per_gpu_hour']:.0f} trials/GPU-hour; "
                f"best {best} ({r['accuracy'][best]:.4f})")
        if reference is not None and r is not reference:
            ref_best = max(reference["accuracy"], key=reference["accuracy"].get)
            line += (f"; {r['trials_per_gpu_hour'] / reference['trials_per_gpu_hour']:.2f}x the reference, "
                     f"Spearman {spearman(r['accuracy'], reference['accuracy']):.2f} to its ranking, "
                     f"same best: {'yes' if best == ref_best else 'no (' + ref_best + ')'}")
        lines.append(line)
    summary = "\n".join(lines)
    print(summary)
    open(os.path.join(args.out, "summary.txt"), "w").write(summary + "\n")


if __name__ == "__main__":
    sys.exit(main())
