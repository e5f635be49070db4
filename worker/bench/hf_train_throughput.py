"""Reference for worker/benches/train_throughput.rs: fine-tune a BERT checkpoint with
PyTorch + transformers in eager mode, the way transformers' Trainer does by default, and
print one JSON line with train samples/s and dev accuracy.

What it mirrors from Trainer (transformers 5 defaults): AdamW as `adamw_torch_fused`
(betas 0.9/0.999, eps 1e-8; weight decay not on biases/LayerNorm weights), linear schedule
without warm-up, grad-norm clipping at 1.0, a shuffled RandomSampler, dynamic padding with
DataCollatorWithPadding, no length grouping (unless --group-by-length), fp32 on the CPU.
Throughput counts the training loop only (data loading and collation included, evaluation
excluded), as Trainer's train_samples_per_second does apart from its set-up.
Never downloads anything: run with HF_HUB_OFFLINE=1.
"""
import argparse
import csv
import json
import sys
import time

import torch


def read_tsv(path, limit=None):
    texts, labels = [], []
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        for row in reader:
            if limit is not None and len(texts) >= limit:
                break
            texts.append(row["sentence"])
            labels.append(int(row["label"]))
    return texts, labels


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--train", required=True)
    parser.add_argument("--dev", required=True)
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-seq-length", type=int, default=128)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument("--group-by-length", action="store_true")
    parser.add_argument("--no-fused", action="store_true", help="plain for-loop AdamW")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument("--bf16", action="store_true", help="autocast matrix products to bf16 (as Trainer --bf16)")
    parser.add_argument("--profile-steps", action="store_true",
                        help="wait for the device at each phase boundary and print mean ms per phase "
                             "(as the worker's BERTSWEEP_STEP_PROFILE=1; slows the run)")
    parser.add_argument("--eval-every-epoch", action="store_true",
                        help="also evaluate after every epoch (outside the timed loop) and print the accuracies")
    args = parser.parse_args()

    from torch.utils.data import DataLoader, RandomSampler
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer,
                              DataCollatorWithPadding, get_linear_schedule_with_warmup, set_seed)
    from transformers.trainer_pt_utils import LengthGroupedSampler

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    set_seed(args.seed)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    train_texts, train_labels = read_tsv(args.train, args.samples)
    dev_texts, dev_labels = read_tsv(args.dev)
    label_list = sorted(set(train_labels) | set(dev_labels))
    model = AutoModelForSequenceClassification.from_pretrained(args.model, num_labels=len(label_list)).to(device)

    def encode(texts, labels):
        enc = tokenizer(texts, truncation=True, max_length=args.max_seq_length)
        return [{"input_ids": ids, "attention_mask": mask, "labels": label_list.index(y)}
                for ids, mask, y in zip(enc["input_ids"], enc["attention_mask"], labels)]

    train = encode(train_texts, train_labels)
    dev = encode(dev_texts, dev_labels)
    collator = DataCollatorWithPadding(tokenizer)
    generator = torch.Generator().manual_seed(args.seed)
    if args.group_by_length:
        sampler = LengthGroupedSampler(args.batch_size, dataset=train,
                                       lengths=[len(x["input_ids"]) for x in train], generator=generator)
    else:
        sampler = RandomSampler(train, generator=generator)
    loader = DataLoader(train, batch_size=args.batch_size, sampler=sampler, collate_fn=collator)

    no_decay = [n for n, _ in model.named_parameters() if n.endswith("bias") or "LayerNorm" in n]
    groups = [
        {"params": [p for n, p in model.named_parameters() if n not in no_decay], "weight_decay": args.weight_decay},
        {"params": [p for n, p in model.named_parameters() if n in no_decay], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.999), eps=1e-8,
                                  fused=not args.no_fused)
    total_steps = len(loader) * args.epochs
    scheduler = get_linear_schedule_with_warmup(optimizer, 0, total_steps)

    def synchronize():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16)

    def evaluate():
        model.eval()
        correct = 0
        with torch.no_grad():
            for i in range(0, len(dev), 64):
                batch = {k: v.to(device) for k, v in collator(dev[i:i + 64]).items()}
                labels = batch.pop("labels")
                with autocast:
                    correct += (model(**batch).logits.argmax(-1) == labels).sum().item()
        model.train()
        return correct / len(dev)

    phases = ["batch", "forward", "backward", "clip", "optimizer"]
    phase_seconds = [0.0] * len(phases)
    clock = [time.perf_counter()]

    def mark(phase):
        # Only when profiling: wait for the device, charge the time since the last mark.
        if args.profile_steps:
            synchronize()
            now = time.perf_counter()
            if phase is not None:
                phase_seconds[phase] += now - clock[0]
            clock[0] = now

    epoch_accuracy = []
    epoch_samples_per_second = []
    model.train()
    losses = []
    samples = 0
    synchronize()
    start = time.perf_counter()
    for _ in range(args.epochs):
        epoch_start, epoch_samples, epoch_steps = time.perf_counter(), 0, 0
        phase_seconds[:] = [0.0] * len(phases)
        mark(None)
        for batch in loader:
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            mark(0)
            with autocast:
                loss = model(**batch).loss
            mark(1)
            loss.backward()
            mark(2)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            mark(3)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            mark(4)
            losses.append(loss.detach())
            samples += batch["input_ids"].shape[0]
            epoch_samples += batch["input_ids"].shape[0]
            epoch_steps += 1
        synchronize()
        epoch_samples_per_second.append(epoch_samples / (time.perf_counter() - epoch_start))
        if args.profile_steps:
            steps = max(epoch_steps, 1)
            parts = ", ".join(f"{name} {1e3 * t / steps:.2f}" for name, t in zip(phases, phase_seconds))
            print(f"epoch {len(epoch_samples_per_second)} step profile: ms per step over {steps} steps: {parts}, "
                  f"step {1e3 * sum(phase_seconds) / steps:.2f}", file=sys.stderr)
        if args.eval_every_epoch:
            # Evaluation stays out of the throughput figure: the clock pauses around it.
            synchronize()
            paused = time.perf_counter()
            epoch_accuracy.append(evaluate())
            start += time.perf_counter() - paused
    synchronize()
    seconds = time.perf_counter() - start
    losses = [l.item() for l in losses]

    print(json.dumps({
        "train_samples_per_second": samples / seconds,
        "train_seconds": seconds,
        "train_loss": sum(losses) / len(losses),
        "eval_accuracy": epoch_accuracy[-1] if epoch_accuracy else evaluate(),
        "epoch_eval_accuracy": epoch_accuracy,
        "epoch_samples_per_second": epoch_samples_per_second,
        "group_by_length": args.group_by_length,
        "optimizer": "adamw (for-loop)" if args.no_fused else "adamw fused (HF default adamw_torch_fused)",
        "torch": torch.__version__,
        "device": str(device),
        "peak_memory_bytes": torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None,
    }))


if __name__ == "__main__":
    sys.exit(main())
