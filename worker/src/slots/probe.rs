//! Measurements admission runs on, taken by the supervisor (which never touches CUDA itself,
//! so it holds no device memory): free memory of a device and what each slot process holds
//! there. CUDA devices are read through NVML, found by the PCI bus id their slot reports (CUDA's
//! indices follow CUDA_VISIBLE_DEVICES and CUDA_DEVICE_ORDER, NVML's do not); the CPU "device"
//! is the host's memory (`MemAvailable`, each process's resident set).

use std::collections::HashMap;
use std::sync::OnceLock;

use nvml_wrapper::enums::device::UsedGpuMemory;
use nvml_wrapper::Nvml;
use tch::Device;

use super::ledger::{SlotId, Snapshot};
use crate::device_memory::kib_line;

/// NVML, loaded once; `None` without an NVIDIA driver.
fn nvml() -> Option<&'static Nvml> {
    static NVML: OnceLock<Option<Nvml>> = OnceLock::new();
    NVML.get_or_init(|| Nvml::init().ok()).as_ref()
}

/// How to find one device's memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// The host's memory.
    Host,
    /// A GPU by PCI bus id (from its slot's hello) or, until one arrives, by NVML index.
    Gpu {
        /// `00000000:3B:00.0`, when known.
        bus_id: Option<String>,
        /// NVML's index of the device (CUDA_VISIBLE_DEVICES mapped when it lists indices).
        nvml_index: u32,
    },
}

impl Probe {
    /// The probe of `device` before any slot said hello.
    pub fn for_device(device: Device) -> Probe {
        match device {
            Device::Cuda(i) => Probe::Gpu {
                bus_id: None,
                nvml_index: nvml_index(i, std::env::var("CUDA_VISIBLE_DEVICES").ok().as_deref()),
            },
            _ => Probe::Host,
        }
    }

    /// Free memory now and what each of `pids` holds (slots by their process id).
    pub fn snapshot(&self, pids: &HashMap<SlotId, u32>) -> Option<Snapshot> {
        match self {
            Probe::Host => {
                let free_bytes = meminfo_kib("MemAvailable")? * 1024;
                let used_by_slot = pids.iter().filter_map(|(&slot, &pid)| Some((slot, process_rss(pid)?))).collect();
                Some(Snapshot { free_bytes, used_by_slot })
            }
            Probe::Gpu { bus_id, nvml_index } => {
                let nvml = nvml()?;
                let device = match bus_id {
                    Some(bus) => nvml.device_by_pci_bus_id(bus.as_str()).ok()?,
                    None => nvml.device_by_index(*nvml_index).ok()?,
                };
                let free_bytes = device.memory_info().ok()?.free;
                let mut used: HashMap<u32, u64> = HashMap::new();
                for p in device.running_compute_processes().unwrap_or_default() {
                    if let UsedGpuMemory::Used(bytes) = p.used_gpu_memory {
                        *used.entry(p.pid).or_default() += bytes;
                    }
                }
                let used_by_slot = pids.iter().filter_map(|(&slot, pid)| Some((slot, *used.get(pid)?))).collect();
                Some(Snapshot { free_bytes, used_by_slot })
            }
        }
    }

    /// The device's whole memory (for `--slots auto`).
    pub fn total_bytes(&self) -> Option<u64> {
        match self {
            Probe::Host => meminfo_kib("MemTotal").map(|k| k * 1024),
            Probe::Gpu { bus_id, nvml_index } => {
                let nvml = nvml()?;
                let device = match bus_id {
                    Some(bus) => nvml.device_by_pci_bus_id(bus.as_str()).ok()?,
                    None => nvml.device_by_index(*nvml_index).ok()?,
                };
                device.memory_info().ok().map(|m| m.total)
            }
        }
    }
}

/// NVML's index of CUDA device `cuda_index`: CUDA_VISIBLE_DEVICES=2,3 makes cuda:0 NVML's 2.
/// (UUIDs in the variable, as container runtimes set them, leave NVML seeing only those
/// devices, in order.)
fn nvml_index(cuda_index: usize, visible: Option<&str>) -> u32 {
    let listed: Option<Vec<u32>> = visible.and_then(|v| {
        v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(|s| s.parse().ok()).collect::<Option<Vec<u32>>>()
    });
    match listed {
        Some(indices) => indices.get(cuda_index).copied().unwrap_or(cuda_index as u32),
        None => cuda_index as u32,
    }
}

/// A `Key: N kB` line of /proc/meminfo, in KiB.
fn meminfo_kib(key: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    kib_line(&text, key)
}

/// The resident set of process `pid`, in bytes.
fn process_rss(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    kib_line(&text, "VmRSS").map(|k| k * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuda_visible_devices_maps_indices() {
        assert_eq!(nvml_index(0, None), 0);
        assert_eq!(nvml_index(1, Some("2,3")), 3);
        assert_eq!(nvml_index(1, Some("GPU-1a2b,GPU-3c4d")), 1, "UUIDs: NVML sees only those");
        assert_eq!(nvml_index(5, Some("2,3")), 5);
    }

    #[test]
    fn the_host_probe_reads_this_machine() {
        let me = std::process::id();
        let snap = Probe::Host.snapshot(&HashMap::from([(1, me), (2, u32::MAX)])).expect("Linux /proc");
        assert!(snap.free_bytes > 0);
        assert!(snap.used_by_slot[&1] > 0, "this test's own resident set");
        assert!(!snap.used_by_slot.contains_key(&2), "no such process");
        assert!(Probe::Host.total_bytes().unwrap() >= snap.free_bytes);
    }
}
