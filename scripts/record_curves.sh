#!/usr/bin/env bash
# Records the SST-2 learning-curve table (bench/curves/sst2-minilm-curves.json) with the real
# coordinator and worker on this machine's CPU: 48 configurations, per-epoch dev metrics.
# Resumable: the study lives in runs/curves/bertsweep.db; run the script again after an
# interruption and it continues where it stopped (a trial cut off mid-way is requeued).
#   make setup && cargo build -p bertsweep-coordinator -p bertsweep-worker && scripts/record_curves.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/debug}
RUN=runs/curves
SST2=${SST2_DIR:-$(cd .. && pwd)/shared/data/sst2}
MODEL=$(cd .venv/minilm && pwd -P)
STUDY=sst2-minilm-curves
OUT=bench/curves/sst2-minilm-curves.json
mkdir -p "$RUN"

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
"$BIN/bertsweep" serve --listen 127.0.0.1:0 --lease-ttl 60s --db "sqlite://$RUN/bertsweep.db" >"$RUN/serve.out" 2>>"$RUN/serve.log" &
pids+=($!)
for _ in $(seq 300); do grep -q "listening on" "$RUN/serve.out" 2>/dev/null && break; sleep 0.1; done
export BERTSWEEP_COORDINATOR="http://$(awk '/listening on/ {print $5}' "$RUN/serve.out")"

if ! "$BIN/bertsweep" study show "$STUDY" >/dev/null 2>&1; then
  sed -e "s|@MODEL@|$MODEL|" -e "s|@SST2@|$SST2|" bench/curves/sst2-minilm-curves.toml >"$RUN/study.toml"
  "$BIN/bertsweep" study create "$RUN/study.toml"
fi
if [ "$("$BIN/bertsweep" study show "$STUDY" --format json | python3 -c 'import json,sys; print(json.load(sys.stdin)["state"])')" = RUNNING ]; then
  "$BIN/bertsweep-worker" --study "$STUDY" --device cpu --threads "${THREADS:-2}" --artifacts "$RUN/artifacts" \
    --no-export >>"$RUN/worker.log" 2>&1 &
  pids+=($!)
  wait "${pids[1]}"
fi
"$BIN/bertsweep" trials "$STUDY" --format json >"$RUN/trials.json"
python3 bench/curves/compact.py "$RUN/trials.json" >"$OUT"
echo "wrote $OUT"
