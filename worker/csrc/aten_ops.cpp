// ATen operators that tch does not wrap (its generator skips in-place operators over tensor
// lists, and its `pin_memory` passes a deprecated device argument): the fused AdamW step (the
// kernel PyTorch's `AdamW(fused=True)` and transformers' default `adamw_torch_fused` run),
// gradient clipping over all gradients in one `_foreach` pass, dropping gradients
// (`set_to_none`), and uploads from pinned memory that do not wait for the GPU.
//
// Every tensor arrives as tch's handle, a `torch::Tensor*` (= `at::Tensor*`). Functions
// return 0, or 1 with ATen's message (without its C++ backtrace) in `err`.

#include <ATen/core/Tensor.h>
#include <ATen/ops/_foreach_add.h>
#include <ATen/ops/_foreach_mul.h>
#include <ATen/ops/_foreach_norm.h>
#include <ATen/ops/_fused_adamw.h>
#include <ATen/ops/linalg_vector_norm.h>
#include <ATen/ops/stack.h>
#include <ATen/ops/zeros.h>
#include <c10/core/CachingDeviceAllocator.h>
#include <c10/core/GradMode.h>
#include <c10/util/Exception.h>

#include <dlfcn.h>

#include <cstring>
#include <exception>
#include <vector>

namespace {

// The defined gradients of `params`.
std::vector<at::Tensor> grads_of(at::Tensor* const* params, size_t n) {
  std::vector<at::Tensor> out;
  out.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    const at::Tensor& grad = params[i]->grad();
    if (grad.defined()) out.push_back(grad);
  }
  return out;
}

void write_error(const char* message, char* err, size_t err_len) {
  if (err == nullptr || err_len == 0) return;
  std::strncpy(err, message, err_len - 1);
  err[err_len - 1] = '\0';
}

template <typename F>
int guarded(char* err, size_t err_len, F&& body) {
  try {
    c10::NoGradGuard no_grad;
    body();
    return 0;
  } catch (const c10::Error& e) {
    write_error(e.what_without_backtrace(), err, err_len);
  } catch (const std::exception& e) {
    write_error(e.what(), err, err_len);
  } catch (...) {
    write_error("unknown C++ exception", err, err_len);
  }
  return 1;
}

}  // namespace

extern "C" {

// One AdamW step over those of `n` parameters (same device and dtype) that have a gradient
// (the others are left alone, as torch does), with their moments and per-parameter step
// counters (0-d float tensors), which are incremented first, as
// `torch.optim.adam._fused_adam` does before it calls the kernel (which reads them).
int bertsweep_fused_adamw(at::Tensor* const* params, at::Tensor* const* exp_avgs,
                          at::Tensor* const* exp_avg_sqs, at::Tensor* const* steps, size_t n,
                          double lr, double beta1, double beta2, double weight_decay, double eps,
                          char* err, size_t err_len) {
  return guarded(err, err_len, [&] {
    std::vector<at::Tensor> p, g, m, v, counters;
    for (size_t i = 0; i < n; ++i) {
      const at::Tensor& grad = params[i]->grad();
      if (!grad.defined()) continue;
      p.push_back(*params[i]);
      g.push_back(grad);
      m.push_back(*exp_avgs[i]);
      v.push_back(*exp_avg_sqs[i]);
      counters.push_back(*steps[i]);
    }
    if (p.empty()) return;
    at::_foreach_add_(counters, 1);
    try {
      at::_fused_adamw_(p, g, m, v, {}, counters, lr, beta1, beta2, weight_decay, eps,
                        /*amsgrad=*/false, /*maximize=*/false);
    } catch (...) {
      at::_foreach_add_(counters, -1);  // a refused step leaves the counters as they were
      throw;
    }
  });
}

// `torch.nn.utils.clip_grad_norm_` over the gradients of `params` (those without one are
// skipped): the joint L2 norm before clipping goes to `*total` (a new tensor on the
// gradients' device), and every gradient is scaled by min(1, max_norm / (norm + 1e-6))
// without a host synchronisation.
int bertsweep_clip_grad_norm(at::Tensor* const* params, size_t n, double max_norm,
                             at::Tensor** total, char* err, size_t err_len) {
  return guarded(err, err_len, [&] {
    std::vector<at::Tensor> grads = grads_of(params, n);
    if (grads.empty()) {
      *total = new at::Tensor(at::zeros({}, at::kFloat));
      return;
    }
    std::vector<at::Tensor> norms = at::_foreach_norm(grads, 2);
    at::Tensor norm = at::linalg_vector_norm(at::stack(norms), 2);
    at::Tensor coef = norm.add(1e-6).reciprocal().mul(max_norm).clamp_max(1.0);
    at::_foreach_mul_(grads, coef);
    *total = new at::Tensor(norm);
  });
}

// Drops the gradients of `params` (`zero_grad(set_to_none=True)`): the next backward pass
// then hands each parameter its freshly computed gradient instead of adding it to zeros.
int bertsweep_clear_grads(at::Tensor* const* params, size_t n, char* err, size_t err_len) {
  return guarded(err, err_len, [&] {
    for (size_t i = 0; i < n; ++i) params[i]->mutable_grad().reset();
  });
}

// Copies the host tensor `*host` to CUDA device `device_index` through pinned memory with
// `non_blocking`: a copy from pageable memory synchronises the stream, so the CPU would wait
// for the previous step to finish before it could queue the next. The pinned block is reused
// only once the copy is done (PyTorch's caching host allocator records the copy's event).
int bertsweep_upload_async(at::Tensor* host, int64_t device_index, at::Tensor** out, char* err,
                           size_t err_len) {
  return guarded(err, err_len, [&] {
    at::Tensor pinned = host->is_pinned() ? *host : host->pin_memory();
    *out = new at::Tensor(pinned.to(at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(device_index)),
                                    /*non_blocking=*/true));
  });
}

// The CUDA caching allocator's peak of reserved bytes on `device_index` since the last reset
// (`torch.cuda.max_memory_reserved`): what the trial held of the device, cache included.
int bertsweep_cuda_peak_reserved(int64_t device_index, uint64_t* out, char* err, size_t err_len) {
  return guarded(err, err_len, [&] {
    auto* allocator = c10::getDeviceAllocator(c10::DeviceType::CUDA);
    auto stats = allocator->getDeviceStats(static_cast<c10::DeviceIndex>(device_index));
    const auto& all = stats.reserved_bytes[static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE)];
    *out = static_cast<uint64_t>(all.peak < 0 ? 0 : all.peak);
  });
}

// Starts a new peak (`torch.cuda.reset_peak_memory_stats`): the peak then covers one trial.
int bertsweep_cuda_reset_peak(int64_t device_index, char* err, size_t err_len) {
  return guarded(err, err_len, [&] {
    c10::getDeviceAllocator(c10::DeviceType::CUDA)->resetPeakStats(static_cast<c10::DeviceIndex>(device_index));
  });
}

// Returns the cached, unused blocks to the driver (`torch.cuda.empty_cache`), so a trial
// that ended leaves its memory to the other trials sharing the device.
int bertsweep_cuda_empty_cache(char* err, size_t err_len) {
  return guarded(err, err_len, [&] { c10::getDeviceAllocator(c10::DeviceType::CUDA)->emptyCache(); });
}

// The PCI bus id ("0000:3B:00.0") of CUDA device `device_index`, from the CUDA runtime torch
// loaded (looked up by name: the worker is built without CUDA's headers). NVML names devices
// by bus id, while CUDA's indices follow CUDA_VISIBLE_DEVICES and CUDA_DEVICE_ORDER.
int bertsweep_cuda_pci_bus_id(int64_t device_index, char* out, size_t out_len, char* err, size_t err_len) {
  return guarded(err, err_len, [&] {
    using GetBusId = int (*)(char*, int, int);
    auto get = reinterpret_cast<GetBusId>(dlsym(RTLD_DEFAULT, "cudaDeviceGetPCIBusId"));
    TORCH_CHECK(get != nullptr, "the CUDA runtime is not loaded (no cudaDeviceGetPCIBusId)");
    TORCH_CHECK(out != nullptr && out_len >= 16, "bus id buffer too small");
    int code = get(out, static_cast<int>(out_len), static_cast<int>(device_index));
    TORCH_CHECK(code == 0, "cudaDeviceGetPCIBusId(", device_index, ") failed with CUDA error ", code);
  });
}

}  // extern "C"
