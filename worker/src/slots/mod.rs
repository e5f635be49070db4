//! Several trials per device (`--slots N|auto`): one process per slot under a supervisor.
//!
//! Why processes and not threads: libtorch runs a device's backward passes on one autograd
//! thread per process, and its random seeds are process-wide, so trials in threads of one
//! process would serialise their backward passes and share dropout streams.
//!
//! - [`supervisor`]: starts this executable once per slot, restarts a slot that dies (its
//!   trial handed back to the coordinator at once), closes every slot's stdin on SIGTERM
//!   (each hands its trial back and exits), serves per-slot metrics ([`telemetry`]).
//! - [`link`]: the slot process's end of the [`protocol`] (JSON lines on its stdin/stdout).
//! - [`ledger`]: admission — a trial starts beside others only when the device's free memory
//!   covers its expected peak and a margin; [`probe`] measures (NVML by PCI bus id, or the
//!   host's memory for CPU slots); [`estimate`] is the conservative peak of a shape no trial
//!   has measured yet.

pub mod estimate;
pub mod ledger;
pub mod link;
pub mod probe;
pub mod protocol;
pub mod supervisor;
pub mod telemetry;

use tch::Device;

/// Set in a slot process: its name (`cuda:0#1`). Its presence makes the process a slot.
pub const SLOT_ENV: &str = "BERTSWEEP_SLOT";
/// Set in a slot process: the one device it trains on.
pub const SLOT_DEVICE_ENV: &str = "BERTSWEEP_SLOT_DEVICE";
/// Set in a slot process: its CPU threads.
pub const SLOT_THREADS_ENV: &str = "BERTSWEEP_SLOT_THREADS";

/// Most slots per device `auto` starts (admission decides how many train at once).
const AUTO_MAX: usize = 8;
/// Device memory per slot `auto` assumes when choosing the count.
const AUTO_BYTES_PER_SLOT: u64 = 10 << 30;

/// `--slots`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotCount {
    /// This many per device.
    Fixed(usize),
    /// From each device's memory: one per 10 GiB, at most 8 (one on the CPU, whose trials
    /// already use every core).
    Auto,
}

/// A `--slots` value that is neither a count from 1 to 64 nor `auto`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--slots {0:?}: expected a number of slots per device from 1 to 64, or auto")]
pub struct BadSlotCount(pub String);

impl std::str::FromStr for SlotCount {
    type Err = BadSlotCount;

    fn from_str(text: &str) -> Result<Self, BadSlotCount> {
        match text.trim() {
            "auto" => Ok(SlotCount::Auto),
            n => match n.parse::<usize>() {
                Ok(n @ 1..=64) => Ok(SlotCount::Fixed(n)),
                _ => Err(BadSlotCount(text.to_string())),
            },
        }
    }
}

impl SlotCount {
    /// Slots per device for `devices` (`auto` reads the first device's memory; the devices of
    /// one machine are alike).
    pub fn per_device(self, devices: &[Device]) -> usize {
        match self {
            SlotCount::Fixed(n) => n,
            SlotCount::Auto => match devices.first() {
                Some(d @ Device::Cuda(_)) => probe::Probe::for_device(*d)
                    .total_bytes()
                    .map_or(1, |total| ((total / AUTO_BYTES_PER_SLOT) as usize).clamp(1, AUTO_MAX)),
                _ => 1,
            },
        }
    }
}

/// CPU threads per slot: `--threads` if given, else the cores this process may use (CPU
/// affinity and cgroup quota, as the standard library reads them) shared among `slots`.
pub fn threads_per_slot(threads: Option<usize>, slots: usize) -> usize {
    threads.filter(|&n| n > 0).unwrap_or_else(|| {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        (cores / slots.max(1)).max(1)
    })
}

/// The directory a CUDA MPS control daemon listens in, if one is running: its `control`
/// socket under `$CUDA_MPS_PIPE_DIRECTORY` (default `/tmp/nvidia-mps`). CUDA clients use MPS
/// by themselves when it runs; this only tells the log.
pub fn mps_pipe_directory() -> Option<std::path::PathBuf> {
    let dir = std::env::var_os("CUDA_MPS_PIPE_DIRECTORY")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| "/tmp/nvidia-mps".into());
    use std::os::unix::fs::FileTypeExt;
    std::fs::metadata(dir.join("control")).ok().filter(|m| m.file_type().is_socket()).map(|_| dir)
}

/// The settings a slot process was started with, when this process is one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotSettings {
    /// `cuda:0#1`.
    pub name: String,
    /// Its device.
    pub device: String,
    /// Its CPU threads.
    pub threads: usize,
}

impl SlotSettings {
    /// Read from the environment the supervisor set; `None` in a process it did not start.
    pub fn from_env() -> Option<SlotSettings> {
        let name = std::env::var(SLOT_ENV).ok()?;
        let device = std::env::var(SLOT_DEVICE_ENV).ok()?;
        let threads = std::env::var(SLOT_THREADS_ENV).ok()?.parse().ok()?;
        Some(SlotSettings { name, device, threads })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_slot_counts() {
        assert_eq!("3".parse::<SlotCount>().unwrap(), SlotCount::Fixed(3));
        assert_eq!("auto".parse::<SlotCount>().unwrap(), SlotCount::Auto);
        for bad in ["0", "-1", "65", "many", ""] {
            let err = bad.parse::<SlotCount>().unwrap_err().to_string();
            assert!(err.contains("1 to 64, or auto"), "{err}");
        }
        assert_eq!(SlotCount::Auto.per_device(&[Device::Cpu]), 1);
        assert_eq!(SlotCount::Fixed(2).per_device(&[Device::Cpu]), 2);
    }

    #[test]
    fn threads_are_shared_among_slots() {
        assert_eq!(threads_per_slot(Some(3), 4), 3, "--threads wins");
        let cores = std::thread::available_parallelism().unwrap().get();
        assert_eq!(threads_per_slot(None, 1), cores);
        assert_eq!(threads_per_slot(None, cores * 2), 1, "never zero");
    }
}
