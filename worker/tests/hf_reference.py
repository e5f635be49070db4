"""Reference answers from PyTorch + transformers for the worker's integration tests.

    hf_reference.py logits MODEL_DIR INPUTS.safetensors OUT.safetensors NUM_LABELS [CLASSIFIER.safetensors]
        BertForSequenceClassification.from_pretrained(MODEL_DIR) in eval mode, the classifier
        optionally replaced, run on input_ids/attention_mask from INPUTS; logits written to OUT.
    hf_reference.py tokenize MODEL_DIR MAX_LEN TEXT...
        AutoTokenizer(MODEL_DIR) ids, truncated to MAX_LEN, one JSON list per line.
    hf_reference.py to_bin IN.safetensors OUT.bin
        The same tensors saved with torch.save, as an old pytorch_model.bin.

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


def to_bin(source, target):
    torch.save(load_file(source), target)


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    {"logits": logits, "tokenize": tokenize, "to_bin": to_bin}[command](*args)
