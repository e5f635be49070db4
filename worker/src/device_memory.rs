//! How much memory a trial holds on its device, measured rather than guessed: on CUDA the
//! caching allocator's peak of reserved bytes (what the trial kept from every other process,
//! cache included), on the CPU the process's peak resident set (`VmHWM`, which Linux lets a
//! process reset by writing 5 to `/proc/self/clear_refs`).
//!
//! The CPU figure is the kernel's high-water mark, read at each epoch's end and at the trial's
//! end; some kernels lower it when memory is unmapped before it is read, so on the CPU it can
//! understate a short-lived peak (CUDA's allocator counts every block).
//!
//! Workers report the peak with every epoch; the coordinator keeps the largest per trial and
//! hands it to later trials of the same shape, which is what slot admission
//! ([`crate::slots`]) budgets with.

use tch::Device;

/// Starts a new peak for the trial about to run on `device` (best effort: a failure leaves
/// the earlier, larger peak, which only overstates).
pub fn reset_peak(device: Device) {
    match device {
        Device::Cuda(index) => {
            let _ = crate::aten::cuda_reset_peak(index);
        }
        Device::Cpu => {
            let _ = std::fs::write("/proc/self/clear_refs", "5");
        }
        _ => {}
    }
}

/// The most memory held on `device` since [`reset_peak`], in bytes; `None` when it cannot
/// be measured here.
pub fn peak_bytes(device: Device) -> Option<u64> {
    match device {
        Device::Cuda(index) => crate::aten::cuda_peak_reserved(index).ok().filter(|&b| b > 0),
        Device::Cpu => status_kib("VmHWM").map(|kib| kib * 1024),
        _ => None,
    }
}

/// The resident set of this process now, in bytes (Linux).
pub fn resident_bytes() -> Option<u64> {
    status_kib("VmRSS").map(|kib| kib * 1024)
}

/// Gives the device's cached memory back once a trial has ended, so other trials sharing the
/// device can use it (CUDA: `torch.cuda.empty_cache`; the CPU allocator returns memory
/// itself).
pub fn release_cached(device: Device) {
    if let Device::Cuda(_) = device {
        if let Err(e) = crate::aten::cuda_empty_cache() {
            tracing::warn!("could not empty the CUDA cache: {e}");
        }
    }
}

/// A `Key:   123 kB` line of `/proc/self/status`, in KiB.
fn status_kib(key: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    kib_line(&text, key)
}

/// The number of a `Key:   123 kB` line (`/proc/<pid>/status`, `/proc/meminfo`), in KiB.
pub(crate) fn kib_line(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_kib_lines_of_proc_status() {
        let text = "Name:\tworker\nVmHWM:\t  204800 kB\nVmRSS:\t  102400 kB\n";
        assert_eq!(kib_line(text, "VmHWM"), Some(204_800));
        assert_eq!(kib_line(text, "VmRSS"), Some(102_400));
        assert_eq!(kib_line(text, "VmSwap"), None);
    }

    #[test]
    fn the_cpu_peak_follows_a_large_allocation_and_resets() {
        reset_peak(Device::Cpu);
        let before = peak_bytes(Device::Cpu).expect("Linux reports VmHWM");
        // Touch 256 MiB so it is resident, then let it go.
        let big = vec![1u8; 256 << 20];
        std::hint::black_box(&big);
        let during = peak_bytes(Device::Cpu).unwrap();
        assert!(during >= before + (200 << 20), "{before} → {during}");
        drop(big);
        reset_peak(Device::Cpu);
        let after = peak_bytes(Device::Cpu).unwrap();
        assert!(after < during, "reset to the current resident set: {after} vs {during}");
    }
}
