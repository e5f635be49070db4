"""Sorts two `perf report --sort dso,sym` listings (worker, PyTorch) into the same categories
and prints seconds of CPU time per category side by side (see scripts/profile_step.sh)."""
import json
import re
import sys

# First match wins; patterns are tried against "dso symbol".
CATEGORIES = [
    ("matrix products (oneDNN/MKL GEMM)", r"gemm|mkl_blas|dnnl|brgemm|jit_|mkldnn|sgemm|_mkl_|avx512_kernel|avx2_kernel"),
    ("OpenMP waits and barriers", r"libgomp|libiomp|__kmp|kmp_|gomp_|omp_"),
    ("softmax", r"softmax"),
    ("layer norm", r"layer_norm|LayerNorm|layernorm"),
    ("GELU", r"gelu"),
    ("dropout and random numbers", r"bernoulli|dropout|mt19937|philox|random_"),
    ("optimizer (AdamW)", r"adam|_foreach|lerp|addcdiv|addcmul"),
    ("embedding", r"embedding|index_select|index_add|gather|scatter"),
    ("reductions and norms", r"reduce|sum_kernel|norm_kernel|_norm|mean_kernel|max_kernel"),
    ("elementwise and copies", r"copy_|cpu_kernel|vectorized|Vectorized|BinaryOp|unary|add_kernel|mul_kernel|div_kernel|fill|where_kernel|masked|clamp|TensorIterator|loop2d|Loop"),
    ("memory: allocation, memset, memcpy", r"malloc|free|memset|memcpy|memmove|alloc|Allocator|mmap|munmap|page_fault|clear_page"),
    ("autograd engine", r"autograd|Engine::|Node::|SavedVariable|grad_fn|AccumulateGrad"),
    ("dispatcher and tensor bookkeeping", r"c10::|Dispatcher|OperatorHandle|boxed|Boxed|TensorImpl|intrusive_ptr|at::_ops|at::Tensor|TensorBase|Storage"),
    ("Python interpreter", r"libpython|python3|_Py|Py[A-Z]"),
    ("tokenizer and data", r"tokenizers|onig|csv|serde|unicode"),
    ("operating system", r"\[kernel|\[k\]|libc\.so|ld-linux"),
]


def load(path):
    rows = []
    with open(path, errors="replace") as f:
        for line in f:
            m = re.match(r"\s*([\d.]+)%\s+(\d+)\s+(\S+)\s+(.*)$", line)
            if m:
                rows.append((int(m.group(2)), m.group(3) + " " + m.group(4)))
    return rows


def categorise(rows):
    out = {name: 0 for name, _ in CATEGORIES}
    out["other"] = 0
    for samples, text in rows:
        for name, pattern in CATEGORIES:
            if re.search(pattern, text):
                out[name] += samples
                break
        else:
            out["other"] += samples
    return out


def main():
    worker_txt, pytorch_txt, freq = sys.argv[1], sys.argv[2], float(sys.argv[3])
    runs = []
    for path in sys.argv[4:6]:
        with open(path) as f:
            lines = [json.loads(l) for l in f if l.startswith("{")]
        runs.append(lines[-1])
    w, p = categorise(load(worker_txt)), categorise(load(pytorch_txt))
    tw, tp = sum(w.values()) / freq, sum(p.values()) / freq
    print(f"{'category (CPU seconds, both threads)':<40} {'worker':>8} {'pytorch':>8} {'diff':>8}")
    for name in sorted(w, key=lambda n: -(w[n] + p[n])):
        a, b = w[name] / freq, p[name] / freq
        if a + b >= 0.05:
            print(f"{name:<40} {a:8.2f} {b:8.2f} {a - b:+8.2f}")
    print(f"{'total (whole process)':<40} {tw:8.2f} {tp:8.2f} {tw - tp:+8.2f}")
    speed = runs[1].get("train_samples_per_second")
    print(f"pytorch: {speed:.1f} train samples/s" if speed else "")
    print("worker best epoch:", json.dumps(runs[0].get("best_metrics", {}).get("train_samples_per_second")))


if __name__ == "__main__":
    sys.exit(main())
