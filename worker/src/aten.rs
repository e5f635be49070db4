//! Safe wrappers over `csrc/aten_ops.cpp`: ATen operators tch does not expose. The
//! multi-tensor ones replace loops of small per-tensor operations (about ten per parameter for
//! AdamW), which matters on the CPU, where each AdamW pass is memory-bound and fusing reads
//! each tensor once, and on a GPU, where each small operation is a kernel launch;
//! [`upload`] keeps the GPU's queue full by not waiting for it.
//!
//! The only unsafe code in the worker: calls across the C ABI with tch's own tensor handles.
#![allow(unsafe_code)]

use std::ffi::{c_char, c_int, CStr};

use tch::{Device, TchError, Tensor};
use torch_sys::C_tensor;

extern "C" {
    fn bertsweep_fused_adamw(
        params: *const *mut C_tensor,
        exp_avgs: *const *mut C_tensor,
        exp_avg_sqs: *const *mut C_tensor,
        steps: *const *mut C_tensor,
        n: usize,
        lr: f64,
        beta1: f64,
        beta2: f64,
        weight_decay: f64,
        eps: f64,
        err: *mut c_char,
        err_len: usize,
    ) -> c_int;
    fn bertsweep_clip_grad_norm(
        params: *const *mut C_tensor,
        n: usize,
        max_norm: f64,
        total: *mut *mut C_tensor,
        err: *mut c_char,
        err_len: usize,
    ) -> c_int;
    fn bertsweep_clear_grads(params: *const *mut C_tensor, n: usize, err: *mut c_char, err_len: usize) -> c_int;
    fn bertsweep_upload_async(
        host: *const C_tensor,
        device_index: i64,
        out: *mut *mut C_tensor,
        err: *mut c_char,
        err_len: usize,
    ) -> c_int;
    fn bertsweep_cuda_peak_reserved(device_index: i64, out: *mut u64, err: *mut c_char, err_len: usize) -> c_int;
    fn bertsweep_cuda_reset_peak(device_index: i64, err: *mut c_char, err_len: usize) -> c_int;
    fn bertsweep_cuda_empty_cache(err: *mut c_char, err_len: usize) -> c_int;
    fn bertsweep_cuda_pci_bus_id(
        device_index: i64,
        out: *mut c_char,
        out_len: usize,
        err: *mut c_char,
        err_len: usize,
    ) -> c_int;
}

/// Room for ATen's message (without its backtrace).
const ERR_LEN: usize = 1024;

/// tch's handle of `tensor` (`at::Tensor*`), valid while `tensor` lives.
fn handle(tensor: &Tensor) -> *mut C_tensor {
    tensor.as_ptr() as *mut C_tensor
}

/// tch's handles of `tensors`, valid while they live.
fn handles(tensors: &[&Tensor]) -> Vec<*mut C_tensor> {
    tensors.iter().map(|t| handle(t)).collect()
}

/// Runs one C++ call with an error buffer, turning a failure into `TchError::Torch`.
fn checked(call: impl FnOnce(*mut c_char, usize) -> c_int) -> Result<(), TchError> {
    let mut err = [0 as c_char; ERR_LEN];
    if call(err.as_mut_ptr(), ERR_LEN) == 0 {
        return Ok(());
    }
    // SAFETY: the C++ side always NUL-terminates within ERR_LEN.
    let message = unsafe { CStr::from_ptr(err.as_ptr()) }.to_string_lossy().into_owned();
    Err(TchError::Torch(message))
}

/// The moments and step counter of one parameter, as `torch.optim.AdamW` keeps them.
pub struct AdamWState<'a> {
    /// The parameter (skipped, counter included, when it has no gradient, as torch does).
    pub param: &'a Tensor,
    /// First moment.
    pub exp_avg: &'a Tensor,
    /// Second moment.
    pub exp_avg_sq: &'a Tensor,
    /// 0-d float step counter on the parameter's device, incremented before the update.
    pub step: &'a Tensor,
}

/// Hyper-parameters of one fused AdamW call (one parameter group).
#[derive(Clone, Copy, Debug)]
pub struct AdamWHyper {
    /// Learning rate.
    pub lr: f64,
    /// β₁.
    pub beta1: f64,
    /// β₂.
    pub beta2: f64,
    /// Decoupled weight decay.
    pub weight_decay: f64,
    /// ε.
    pub eps: f64,
}

/// One `torch._fused_adamw_` step over those of `states` whose parameter has a gradient
/// (same device and dtype).
pub fn adamw_step(states: &[AdamWState<'_>], hyper: AdamWHyper) -> Result<(), TchError> {
    if states.is_empty() {
        return Ok(());
    }
    let params: Vec<_> = states.iter().map(|s| handle(s.param)).collect();
    let exp_avgs: Vec<_> = states.iter().map(|s| handle(s.exp_avg)).collect();
    let exp_avg_sqs: Vec<_> = states.iter().map(|s| handle(s.exp_avg_sq)).collect();
    let steps: Vec<_> = states.iter().map(|s| handle(s.step)).collect();
    checked(|err, len| unsafe {
        // SAFETY: four arrays of `states.len()` live tensor handles, borrowed for the call.
        bertsweep_fused_adamw(
            params.as_ptr(),
            exp_avgs.as_ptr(),
            exp_avg_sqs.as_ptr(),
            steps.as_ptr(),
            states.len(),
            hyper.lr,
            hyper.beta1,
            hyper.beta2,
            hyper.weight_decay,
            hyper.eps,
            err,
            len,
        )
    })
}

/// `torch.nn.utils.clip_grad_norm_(params, max_norm)`: scales the defined gradients so their
/// joint L2 norm is at most `max_norm`, with no host synchronisation; returns the norm before
/// clipping (a 0-d tensor on the gradients' device).
pub fn clip_grad_norm(params: &[&Tensor], max_norm: f64) -> Result<Tensor, TchError> {
    let params = handles(params);
    let mut total: *mut C_tensor = std::ptr::null_mut();
    checked(|err, len| unsafe {
        // SAFETY: live handles borrowed for the call; `total` receives a new `at::Tensor*`.
        bertsweep_clip_grad_norm(params.as_ptr(), params.len(), max_norm, &mut total, err, len)
    })?;
    // SAFETY: on success the C++ side allocated `total` with `new`, which tch's drop frees.
    Ok(unsafe { Tensor::from_ptr(total) })
}

/// Drops the gradients of `params` (`zero_grad(set_to_none=True)`), so the next backward pass
/// hands over fresh gradients instead of adding into zeroed ones.
pub fn clear_grads(params: &[&Tensor]) -> Result<(), TchError> {
    let params = handles(params);
    checked(|err, len| unsafe {
        // SAFETY: live handles borrowed for the call.
        bertsweep_clear_grads(params.as_ptr(), params.len(), err, len)
    })
}

/// `host` (a CPU tensor) on `device`. On CUDA the copy goes through pinned memory without
/// waiting for the GPU (a copy from pageable memory would synchronise the stream, so the CPU
/// could not queue the next step while the GPU runs this one); on the CPU it is `host` itself.
pub fn upload(host: Tensor, device: Device) -> Result<Tensor, TchError> {
    let index = match device {
        Device::Cuda(index) => index as i64,
        Device::Cpu => return Ok(host),
        other => return host.f_to_device(other),
    };
    let mut out: *mut C_tensor = std::ptr::null_mut();
    checked(|err, len| unsafe {
        // SAFETY: a live handle borrowed for the call; `out` receives a new `at::Tensor*`.
        bertsweep_upload_async(host.as_ptr(), index, &mut out, err, len)
    })?;
    // SAFETY: on success the C++ side allocated `out` with `new`, which tch's drop frees.
    Ok(unsafe { Tensor::from_ptr(out) })
}

/// The CUDA caching allocator's peak reserved bytes on device `index` since the last
/// [`cuda_reset_peak`] (`torch.cuda.max_memory_reserved`).
pub fn cuda_peak_reserved(index: usize) -> Result<u64, TchError> {
    let mut out = 0u64;
    checked(|err, len| unsafe {
        // SAFETY: `out` is a live u64 the C++ side writes once.
        bertsweep_cuda_peak_reserved(index as i64, &mut out, err, len)
    })?;
    Ok(out)
}

/// Starts a new peak on CUDA device `index` (`torch.cuda.reset_peak_memory_stats`).
pub fn cuda_reset_peak(index: usize) -> Result<(), TchError> {
    checked(|err, len| unsafe {
        // SAFETY: no pointers but the error buffer.
        bertsweep_cuda_reset_peak(index as i64, err, len)
    })
}

/// Hands the caching allocator's unused blocks back to the driver (`torch.cuda.empty_cache`).
pub fn cuda_empty_cache() -> Result<(), TchError> {
    checked(|err, len| unsafe {
        // SAFETY: no pointers but the error buffer.
        bertsweep_cuda_empty_cache(err, len)
    })
}

/// The PCI bus id of CUDA device `index` (e.g. `00000000:3B:00.0`), as NVML names devices.
pub fn cuda_pci_bus_id(index: usize) -> Result<String, TchError> {
    let mut out = [0 as c_char; 64];
    checked(|err, len| unsafe {
        // SAFETY: `out` is a live buffer of the length passed; the CUDA runtime NUL-terminates.
        bertsweep_cuda_pci_bus_id(index as i64, out.as_mut_ptr(), out.len(), err, len)
    })?;
    // SAFETY: written and NUL-terminated above (the buffer starts zeroed).
    Ok(unsafe { CStr::from_ptr(out.as_ptr()) }.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Kind;

    fn param_with_grad(values: &[f32], grad: &[f32]) -> Tensor {
        let p = Tensor::from_slice(values).set_requires_grad(true);
        (&p * Tensor::from_slice(grad)).sum(Kind::Float).backward();
        p
    }

    #[test]
    fn clear_grads_drops_them_and_the_next_backward_starts_fresh() {
        let p = param_with_grad(&[1.0, 2.0], &[3.0, 4.0]);
        clear_grads(&[&p]).unwrap();
        assert!(!p.grad().defined());
        (&p * 2.0).sum(Kind::Float).backward();
        assert_eq!(Vec::<f32>::try_from(p.grad()).unwrap(), vec![2.0, 2.0], "not added to the old gradient");
    }

    #[test]
    fn a_failing_kernel_is_a_one_line_error_and_changes_nothing() {
        let p = param_with_grad(&[1.0, 2.0], &[3.0, 4.0]);
        let wrong = Tensor::zeros([2], (Kind::Double, Device::Cpu));
        let step = Tensor::zeros([], (Kind::Float, Device::Cpu));
        let states = [AdamWState { param: &p, exp_avg: &wrong, exp_avg_sq: &wrong, step: &step }];
        let hyper = AdamWHyper { lr: 0.1, beta1: 0.9, beta2: 0.999, weight_decay: 0.0, eps: 1e-8 };
        let err = adamw_step(&states, hyper).unwrap_err().to_string();
        assert!(!err.trim().is_empty() && !err.trim().contains('\n'), "one line: {err:?}");
        assert_eq!(Vec::<f32>::try_from(&p).unwrap(), vec![1.0, 2.0]);
        assert_eq!(f64::try_from(&step).unwrap(), 0.0, "the step counter is unchanged");
    }

    #[test]
    fn cuda_memory_calls_fail_in_one_line_without_a_gpu_and_measure_with_one() {
        if !tch::Cuda::is_available() {
            let err = cuda_peak_reserved(0).unwrap_err().to_string();
            assert!(!err.trim().is_empty() && !err.trim().contains('\n'), "one line: {err:?}");
            return;
        }
        cuda_empty_cache().unwrap();
        cuda_reset_peak(0).unwrap();
        let before = cuda_peak_reserved(0).unwrap();
        let big = Tensor::zeros([64, 1024, 1024], (tch::Kind::Float, Device::Cuda(0)));
        let after = cuda_peak_reserved(0).unwrap();
        assert!(after >= before + 256 * 1024 * 1024, "{before} → {after}");
        drop(big);
        cuda_empty_cache().unwrap();
        assert!(cuda_pci_bus_id(0).unwrap().contains(':'));
    }

    #[test]
    fn upload_keeps_values_on_the_cpu_and_on_a_gpu() {
        let host = Tensor::from_slice(&[1i64, 2, 3]);
        let same = upload(host.shallow_clone(), Device::Cpu).unwrap();
        assert_eq!(same.data_ptr(), host.data_ptr(), "no copy on the CPU");
        if !tch::Cuda::is_available() {
            return; // the CUDA half runs only on a machine with a GPU
        }
        let on_gpu = upload(host.shallow_clone(), Device::Cuda(0)).unwrap();
        assert_eq!(on_gpu.device(), Device::Cuda(0));
        assert_eq!(Vec::<i64>::try_from(on_gpu.to_device(Device::Cpu)).unwrap(), vec![1, 2, 3]);
    }
}
