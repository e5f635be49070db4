"""Optuna on the same recorded curves, by the same rules as bertsweep's search benchmark.

Called by coordinator/benches/search_efficiency.rs (so both run in one command); it can also
run alone:  .venv/bin/python bench/curves/optuna_replay.py --table bench/curves/sst2-minilm-curves.json

The rules, shared with the Rust side:
- the space is learning_rate x num_train_epochs x batch size from the table (categorical);
- every configuration runs with each recorded seed as its own trial (bertsweep's
  `algorithm.repeats`): Optuna asks for a configuration, and its other seeds are enqueued with
  the same parameters, as bertsweep hands out trial n as configuration n // repeats with seed
  n % repeats;
- WORKERS simulated workers run trials in parallel, one epoch per tick each, reporting the
  recorded per-epoch dev accuracy (a pruner may stop a trial after any epoch); a trial that
  completes reports its best epoch, as bertsweep's worker does;
- cost is epochs reported; the budget is the same number of trials;
- the pick at any moment is the configuration with the best mean over its completed trials
  (bertsweep's `best` with repeats); a run has found the optimum once its pick's true quality
  (mean best-epoch accuracy over the seeds in the table) is within 0.5 point of the table's
  best configuration.
Each strategy runs once per sampler seed; the output is one JSON line per strategy with the
median epochs to the target, how many runs got there, and the final pick's quality.
Optuna's own defaults are kept otherwise (TPE: 10 start-up trials, no constant liar), as a user
would get them.
"""
import argparse
import collections
import json
import math
import statistics
import sys

import optuna


def load(path):
    with open(path) as f:
        records = json.load(f)["records"]
    curves = {}
    for r in records:
        cfg = (r["learning_rate"], r["num_train_epochs"], r["per_device_train_batch_size"])
        curves.setdefault(cfg, {})[r["seed"]] = [e["eval_accuracy"] for e in r["epochs"]]
    return curves


def strategies(seed):
    tpe = lambda: optuna.samplers.TPESampler(seed=seed)
    return [
        ("optuna random", lambda: optuna.samplers.RandomSampler(seed=seed), optuna.pruners.NopPruner),
        ("optuna tpe", tpe, optuna.pruners.NopPruner),
        ("optuna tpe+successive_halving", tpe,
         lambda: optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)),
        ("optuna tpe+hyperband", tpe,
         lambda: optuna.pruners.HyperbandPruner(min_resource=1, max_resource=4, reduction_factor=3)),
        ("optuna tpe+median", tpe, lambda: optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=0)),
    ]


def run_once(curves, quality, target, sampler, pruner, budget, workers, repeats):
    lrs = sorted({c[0] for c in curves})
    epochs_choices = sorted({c[1] for c in curves})
    batches = sorted({c[2] for c in curves})
    # A fixed name: HyperbandPruner assigns brackets by hashing the study name.
    study = optuna.create_study(study_name="replay", direction="maximize", sampler=sampler, pruner=pruner)
    asked = 0
    running = []  # [trial, cfg, seed, epochs done]
    cost = 0
    done = collections.defaultdict(list)  # cfg -> completed values
    hit = None

    # Enqueued repeats are asked lazily so that Optuna sees them in order.
    pending_repeats = collections.deque()

    def acquire():
        nonlocal asked
        if pending_repeats:
            cfg, seed = pending_repeats.popleft()
            trial = study.ask()
            trial.suggest_categorical("learning_rate", lrs)
            trial.suggest_categorical("num_train_epochs", epochs_choices)
            trial.suggest_categorical("per_device_train_batch_size", batches)
            asked += 1
            return [trial, cfg, seed, 0]
        if asked >= budget:
            return None
        trial = study.ask()
        cfg = (trial.suggest_categorical("learning_rate", lrs),
               trial.suggest_categorical("num_train_epochs", epochs_choices),
               trial.suggest_categorical("per_device_train_batch_size", batches))
        asked += 1
        for s in range(1, repeats):
            study.enqueue_trial({"learning_rate": cfg[0], "num_train_epochs": cfg[1],
                                 "per_device_train_batch_size": cfg[2]})
            pending_repeats.append((cfg, s))
        return [trial, cfg, 0, 0]

    def pick_quality():
        means = {cfg: statistics.mean(v) for cfg, v in done.items() if v}
        if not means:
            return float("nan")
        best = max(means, key=lambda c: means[c])
        return quality[best]

    while True:
        while len(running) < workers:
            job = acquire()
            if job is None:
                break
            running.append(job)
        if not running:
            break
        # One tick: every running trial trains one epoch, in worker order.
        still = []
        for job in running:
            trial, cfg, seed, i = job
            curve = curves[cfg][seed]
            cost += 1
            trial.report(curve[i], i + 1)
            if i + 1 < len(curve) and trial.should_prune():
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                continue
            if i + 1 == len(curve):
                value = max(curve)
                study.tell(trial, value)
                done[cfg].append(value)
                q = pick_quality()
                if hit is None and q >= target:
                    hit = cost
                continue
            job[3] = i + 1
            still.append(job)
        running = still
    return hit, pick_quality(), cost


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--table", required=True)
    p.add_argument("--seeds", type=int, default=20)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--trials", type=int, default=24)
    args = p.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    curves = load(args.table)
    repeats = min(len(s) for s in curves.values())
    quality = {cfg: statistics.mean(max(c) for c in seeds.values()) for cfg, seeds in curves.items()}
    target = max(quality.values()) - 0.005
    names = [name for name, _, _ in strategies(0)]
    for index, name in enumerate(names):
        hits, finals, totals = [], [], []
        for seed in range(args.seeds):
            _, make_sampler, make_pruner = strategies(seed)[index]
            hit, final, total = run_once(curves, quality, target, make_sampler(), make_pruner(),
                                         args.trials, args.workers, repeats)
            hits.append(hit if hit is not None else math.inf)
            finals.append(final)
            totals.append(total)
        median_hit = statistics.median(hits)
        print(json.dumps({
            "strategy": name,
            "runs": args.seeds,
            "median_epochs_to_within_0.5pt": median_hit if math.isfinite(median_hit) else None,
            "reached": f"{sum(math.isfinite(h) for h in hits)}/{args.seeds}",
            "median_final_pick_quality": round(statistics.median(finals), 4),
            "median_total_epochs": statistics.median(totals),
            "optuna": optuna.__version__,
        }), flush=True)


if __name__ == "__main__":
    sys.exit(main())
