//! `--device cpu|cuda|cuda:N|all` and per-device settings.
//!
//! Asking for CUDA where torch sees none is an error, never a silent fall-back to the CPU.

use tch::{Cuda, Device};

/// Why a `--device` value cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceError {
    /// Not one of the accepted forms.
    #[error("--device {0:?}: expected cpu, cuda, cuda:N or all")]
    Invalid(String),
    /// CUDA was asked for but torch reports no device.
    #[error(
        "--device {spec}: CUDA is not available on this machine (torch reports {count} devices); use --device cpu"
    )]
    CudaUnavailable {
        /// The value given.
        spec: String,
        /// What torch reports.
        count: i64,
    },
    /// `cuda:N` with N beyond the devices present.
    #[error("--device {spec}: there is no CUDA device {index} (torch reports {count})")]
    NoSuchGpu {
        /// The value given.
        spec: String,
        /// The index asked for.
        index: usize,
        /// What torch reports.
        count: i64,
    },
}

/// The devices a `--device` value names: one for `cpu`, `cuda` (= `cuda:0`) and `cuda:N`,
/// every GPU for `all`.
pub fn parse_devices(spec: &str) -> Result<Vec<Device>, DeviceError> {
    parse_with(spec, Cuda::device_count())
}

fn parse_with(spec: &str, count: i64) -> Result<Vec<Device>, DeviceError> {
    let trimmed = spec.trim().to_ascii_lowercase();
    let unavailable = || DeviceError::CudaUnavailable { spec: spec.to_owned(), count };
    match trimmed.as_str() {
        "cpu" => Ok(vec![Device::Cpu]),
        "cuda" | "gpu" if count > 0 => Ok(vec![Device::Cuda(0)]),
        "cuda" | "gpu" => Err(unavailable()),
        "all" if count > 0 => Ok((0..count as usize).map(Device::Cuda).collect()),
        "all" => Err(unavailable()),
        other => {
            let index = other
                .strip_prefix("cuda:")
                .and_then(|n| n.parse::<usize>().ok())
                .ok_or_else(|| DeviceError::Invalid(spec.to_owned()))?;
            if count <= 0 {
                Err(unavailable())
            } else if index as i64 >= count {
                Err(DeviceError::NoSuchGpu { spec: spec.to_owned(), index, count })
            } else {
                Ok(vec![Device::Cuda(index)])
            }
        }
    }
}

/// Sets the intra-op threads torch uses on the CPU (`None`: every core). Process-wide.
pub fn set_cpu_threads(threads: Option<usize>) {
    let threads = threads
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
    tch::set_num_threads(threads as i32);
}

/// Process-wide settings for training on CUDA: TF32 for any fp32 matrix product left, cuDNN
/// autotuning. Call before the first CUDA operation (the TF32 switch is read once).
pub fn prepare_cuda() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // tch has no binding for `torch.backends.cuda.matmul.allow_tf32`; ATen reads this
        // override the first time it asks.
        if std::env::var_os("TORCH_ALLOW_TF32_CUBLAS_OVERRIDE").is_none() {
            std::env::set_var("TORCH_ALLOW_TF32_CUBLAS_OVERRIDE", "1");
        }
        Cuda::cudnn_set_benchmark(true);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form() {
        assert_eq!(parse_with("cpu", 0).unwrap(), [Device::Cpu]);
        assert_eq!(parse_with("cuda", 2).unwrap(), [Device::Cuda(0)]);
        assert_eq!(parse_with("cuda:1", 2).unwrap(), [Device::Cuda(1)]);
        assert_eq!(parse_with("all", 2).unwrap(), [Device::Cuda(0), Device::Cuda(1)]);
    }

    #[test]
    fn cuda_without_gpus_is_a_clear_error() {
        for spec in ["cuda", "cuda:0", "all"] {
            let err = parse_with(spec, 0).unwrap_err().to_string();
            assert!(err.contains("CUDA is not available") && err.contains("--device cpu"), "{err}");
        }
        let err = parse_with("cuda:3", 2).unwrap_err().to_string();
        assert!(err.contains("no CUDA device 3"), "{err}");
        assert!(matches!(parse_with("tpu", 1), Err(DeviceError::Invalid(_))));
        assert!(matches!(parse_with("cuda:x", 1), Err(DeviceError::Invalid(_))));
    }

    #[test]
    fn this_machine_answers_consistently() {
        match parse_devices("cuda") {
            Ok(devices) => assert!(Cuda::is_available() && devices == [Device::Cuda(0)]),
            Err(e) => assert!(e.to_string().contains("CUDA is not available"), "{e}"),
        }
    }
}
