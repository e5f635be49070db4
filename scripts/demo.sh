#!/usr/bin/env bash
# The main job in one command (run by `make demo` after `make setup build`): start a
# coordinator on SQLite, create the demo study, run two local CPU workers, follow the trials,
# print the best trial and download its model. `study create` uploads the study's model and
# data to the coordinator, the workers fetch them into their cache and upload the best models
# back, as they would on other machines. Everything it writes goes under runs/demo/.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${BIN:-target/debug}  # what `make build` makes; BIN=target/release after `make build-release`
RUN=runs/demo
STUDY=demo-reviews
rm -rf "$RUN"
mkdir -p "$RUN"

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

"$BIN/bertsweep" serve --listen 127.0.0.1:0 --http "${DEMO_HTTP:-127.0.0.1:0}" --db "sqlite://$RUN/bertsweep.db" >"$RUN/serve.out" 2>"$RUN/serve.log" &
pids+=($!)
for _ in $(seq 300); do
  grep -q "listening on" "$RUN/serve.out" 2>/dev/null && break
  sleep 0.1
done
addr=$(awk '/listening on/ {print $5}' "$RUN/serve.out")
[ -n "$addr" ] || { echo "error: the coordinator did not start; see $RUN/serve.log" >&2; exit 1; }
export BERTSWEEP_COORDINATOR="http://$addr"
echo "coordinator: $BERTSWEEP_COORDINATOR (database $RUN/bertsweep.db, log $RUN/serve.log)"
for _ in $(seq 50); do grep -q "dashboard at" "$RUN/serve.out" 2>/dev/null && break; sleep 0.1; done
echo "dashboard: $(awk '/dashboard at/ {print $3}' "$RUN/serve.out")studies/demo-reviews (open it while the sweep runs; DEMO_HTTP=ADDR picks the address)"

"$BIN/bertsweep" study create examples/demo.toml

# Two workers, one core each (this machine has two).
for i in 1 2; do
  "$BIN/bertsweep-worker" --study "$STUDY" --device cpu --threads 1 --cache-dir "$RUN/worker-cache" \
    >"$RUN/worker$i.log" 2>&1 &
  pids+=($!)
done
echo "workers: 2 on cpu (logs $RUN/worker1.log, $RUN/worker2.log)"

"$BIN/bertsweep" trials "$STUDY" --follow
echo
"$BIN/bertsweep" trials "$STUDY"
echo
"$BIN/bertsweep" best "$STUDY"
echo
"$BIN/bertsweep" download "$STUDY" "$RUN/best-model"
