"""Reference answers from PyTorch + transformers for the worker's integration tests.

    hf_reference.py logits MODEL_DIR INPUTS.safetensors OUT.safetensors NUM_LABELS [CLASSIFIER.safetensors]
        BertForSequenceClassification.from_pretrained(MODEL_DIR) in eval mode, the classifier
        optionally replaced, run on input_ids/attention_mask from INPUTS; logits written to OUT.
    hf_reference.py tokenize MODEL_DIR MAX_LEN TEXT...
        AutoTokenizer(MODEL_DIR) ids, truncated to MAX_LEN, one JSON list per line.
    hf_reference.py pairs MODEL_DIR PAIRS.tsv MAX_LEN OUT.safetensors NUM_LABELS CLASSIFIER.safetensors
        Sentence pairs as transformers runs GLUE's MRPC/RTE/QNLI: the sentence1/sentence2 columns of
        PAIRS.tsv (header row, no quoting) through AutoTokenizer(MODEL_DIR)(sentence1, sentence2,
        truncation=True, max_length=MAX_LEN, padding=True), then BertForSequenceClassification in
        eval mode with the classifier replaced; writes input_ids, token_type_ids, attention_mask and
        logits to OUT.
    hf_reference.py to_bin IN.safetensors OUT.bin
        The same tensors saved with torch.save, as an old pytorch_model.bin.
    hf_reference.py train_steps MODEL_DIR BATCHES.safetensors CLASSIFIER.safetensors OUT.safetensors
                    LR WEIGHT_DECAY WARMUP_RATIO STEPS MISTAKE [CLASS_WEIGHTS]
        Fine-tunes as transformers' Trainer does (dropout 0, AdamW with its decay groups,
        get_linear_schedule_with_warmup, clip_grad_norm_ 1.0) on the explicit batches
        input_ids_K / attention_mask_K / labels_K; writes per-step loss and grad_norm and every
        parameter after step 1 (step1.NAME) and the last step (last.NAME). MISTAKE (none,
        schedule, decay, clip, bias) plants one error, so tests can show they would catch it.
        CLASS_WEIGHTS "balanced": the loss is torch.nn.CrossEntropyLoss(weight=w) with w from
        scikit-learn's compute_class_weight("balanced") over all the batches' labels (what a
        Trainer subclass for imbalanced data computes).

Never downloads anything (run with HF_HUB_OFFLINE=1).
"""
import json
import sys

import torch
from safetensors.torch import load_file, save_file


def logits(model_dir, inputs, out, num_labels, classifier=None):
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=int(num_labels))
    model.eval()
    if classifier:
        weights = load_file(classifier)
        with torch.no_grad():
            model.classifier.weight.copy_(weights["classifier.weight"])
            model.classifier.bias.copy_(weights["classifier.bias"])
    batch = load_file(inputs)
    with torch.no_grad():
        result = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    save_file({"logits": result.float().contiguous()}, out)


def tokenize(model_dir, max_len, *texts):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    for text in texts:
        print(json.dumps(tokenizer(text, truncation=True, max_length=int(max_len))["input_ids"]))


def pairs(model_dir, pairs_tsv, max_len, out, num_labels, classifier):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    with open(pairs_tsv, encoding="utf-8") as f:
        header, *rows = [line.rstrip("\n").split("\t") for line in f if line.strip()]
    first, second = header.index("sentence1"), header.index("sentence2")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    batch = tokenizer(
        [row[first] for row in rows],
        [row[second] for row in rows],
        truncation=True,
        max_length=int(max_len),
        padding=True,
        return_tensors="pt",
    )
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=int(num_labels))
    model.eval()
    weights = load_file(classifier)
    with torch.no_grad():
        model.classifier.weight.copy_(weights["classifier.weight"])
        model.classifier.bias.copy_(weights["classifier.bias"])
        result = model(**batch).logits
    saved = {name: batch[name].to(torch.int64).contiguous() for name in ("input_ids", "token_type_ids", "attention_mask")}
    saved["logits"] = result.float().contiguous()
    save_file(saved, out)


def to_bin(source, target):
    torch.save(load_file(source), target)


def train_steps(model_dir, batches, classifier, out, lr, weight_decay, warmup_ratio, steps, mistake,
                class_weights="none"):
    import math

    from transformers import AutoModelForSequenceClassification, get_linear_schedule_with_warmup
    from transformers.trainer_pt_utils import get_parameter_names

    lr, weight_decay, warmup_ratio, steps = float(lr), float(weight_decay), float(warmup_ratio), int(steps)
    data = load_file(batches)
    head = load_file(classifier)
    model = AutoModelForSequenceClassification.from_pretrained(
        model_dir, num_labels=head["classifier.bias"].shape[0], hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0
    )
    with torch.no_grad():
        model.classifier.weight.copy_(head["classifier.weight"])
        model.classifier.bias.copy_(head["classifier.bias"])
    model.train()
    # Trainer.create_optimizer: no decay for biases and LayerNorm weights.
    decay = set(get_parameter_names(model, [torch.nn.LayerNorm]))
    decay = {n for n in decay if "bias" not in n}
    if mistake == "decay":
        decay = {n for n, _ in model.named_parameters()}
    groups = [
        {"params": [p for n, p in model.named_parameters() if n in decay], "weight_decay": weight_decay},
        {"params": [p for n, p in model.named_parameters() if n not in decay], "weight_decay": 0.0},
    ]
    # Trainer's default optimizer (`adamw_torch_fused`).
    optimizer = torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999), eps=1e-8, fused=True)
    # The planted schedule mistake: no schedule at all (the peak learning rate throughout).
    schedule = None if mistake == "schedule" else get_linear_schedule_with_warmup(
        optimizer, math.ceil(steps * warmup_ratio), steps
    )
    loss_fn = None
    if class_weights == "balanced":
        import numpy as np
        from sklearn.utils.class_weight import compute_class_weight
        every = torch.cat([data[f"labels_{k}"] for k in range(steps)]).numpy()
        classes = np.arange(head["classifier.bias"].shape[0])
        weight = compute_class_weight("balanced", classes=classes, y=every)
        loss_fn = torch.nn.CrossEntropyLoss(weight=torch.tensor(weight, dtype=torch.float32))
    moments = {}
    record = {"loss": [], "grad_norm": []}
    saved = {}
    for k in range(steps):
        output = model(
            input_ids=data[f"input_ids_{k}"], attention_mask=data[f"attention_mask_{k}"], labels=data[f"labels_{k}"]
        )
        if loss_fn is not None:
            output.loss = loss_fn(output.logits, data[f"labels_{k}"])
        output.loss.backward()
        if mistake == "clip":
            norm = torch.norm(torch.stack([p.grad.norm() for p in model.parameters() if p.grad is not None]))
        else:
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        if mistake == "bias":
            # AdamW by hand without bias correction.
            with torch.no_grad():
                for group in optimizer.param_groups:
                    for p in group["params"]:
                        m, v = moments.setdefault(p, (torch.zeros_like(p), torch.zeros_like(p)))
                        m.mul_(0.9).add_(p.grad, alpha=0.1)
                        v.mul_(0.999).addcmul_(p.grad, p.grad, value=0.001)
                        p.mul_(1 - group["lr"] * group["weight_decay"])
                        p.addcdiv_(m, v.sqrt().add_(1e-8), value=-group["lr"])
        else:
            optimizer.step()
        if schedule is not None:
            schedule.step()
        optimizer.zero_grad()
        record["loss"].append(output.loss.item())
        record["grad_norm"].append(float(norm))
        if k == 0 or k == steps - 1:
            prefix = "step1" if k == 0 else "last"
            for n, p in model.named_parameters():
                saved[f"{prefix}.{n}"] = p.detach().clone().contiguous()
    saved["loss"] = torch.tensor(record["loss"], dtype=torch.float64)
    saved["grad_norm"] = torch.tensor(record["grad_norm"], dtype=torch.float64)
    save_file(saved, out)


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    commands = {"logits": logits, "tokenize": tokenize, "pairs": pairs, "to_bin": to_bin, "train_steps": train_steps}
    commands[command](*args)
