//! Admission: whether one more trial fits on a device that other slots are training on. Pure
//! bookkeeping, fed with measurements ([`Snapshot`]) by the supervisor; no I/O, no clock.
//!
//! The rule, per device:
//! - a trial alone on its device is always admitted (if it does not fit even then, it runs
//!   out of memory and is reported infeasible, as without slots);
//! - otherwise it needs `expected + margin` bytes out of the device's free memory less what
//!   the running trials have reserved but not yet taken (a trial in its first steps has not
//!   reached its peak);
//! - a shape that ran out of memory while sharing is held to fewer concurrent trials on that
//!   device from then on, and its expected peak is raised.

use std::collections::{BTreeMap, HashMap};

/// A slot, numbered across the whole supervisor.
pub type SlotId = usize;

/// The fixed part of the margin: a new CUDA context and cuBLAS workspaces, which the caching
/// allocator's peak does not count.
pub const MARGIN_FIXED: u64 = 1 << 30;
/// The proportional part of the margin, in percent of the expected peak.
pub const MARGIN_PERCENT: u64 = 10;
/// How much an out-of-memory while sharing raises a shape's expected peak, in percent.
const OOM_RAISE_PERCENT: u64 = 25;

/// What the supervisor measured just now on one device.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Free memory of the device (NVML on CUDA; MemAvailable on the CPU).
    pub free_bytes: u64,
    /// What each running slot's process holds now (absent: unknown, counted as nothing).
    pub used_by_slot: HashMap<SlotId, u64>,
}

/// A trial being trained on a device.
#[derive(Debug, Clone)]
struct Running {
    shape: String,
    /// What it is expected to reach (raised by measured peaks).
    reserved: u64,
    /// Another trial ran on the device at some point while this one did.
    shared: bool,
}

#[derive(Debug, Default)]
struct Device {
    running: BTreeMap<SlotId, Running>,
    /// Most concurrent trials of a shape, after that shape ran out of memory while sharing.
    shape_limit: HashMap<String, usize>,
    /// Least expected peak of a shape, after that shape ran out of memory while sharing.
    shape_floor: HashMap<String, u64>,
}

/// The decision on one trial.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Start it.
    Admit,
    /// Not now, and why (for the log).
    Defer(String),
}

/// Admission state of every device the supervisor runs slots on.
#[derive(Debug, Default)]
pub struct Ledger {
    devices: HashMap<usize, Device>,
}

/// `expected` with its margin.
pub fn with_margin(expected: u64) -> u64 {
    expected.saturating_add(expected / 100 * MARGIN_PERCENT).saturating_add(MARGIN_FIXED)
}

impl Ledger {
    /// Decides whether `slot` may start a trial of `shape` expected to peak at `expected`
    /// bytes on `device`, given `now`; records it as running when admitted.
    pub fn admit(&mut self, device: usize, slot: SlotId, shape: &str, expected: u64, now: &Snapshot) -> Admission {
        let d = self.devices.entry(device).or_default();
        d.running.remove(&slot);
        let expected = expected.max(d.shape_floor.get(shape).copied().unwrap_or(0));
        if !d.running.is_empty() {
            let same_shape = d.running.values().filter(|r| r.shape == shape).count();
            if let Some(&limit) = d.shape_limit.get(shape) {
                if same_shape + 1 > limit {
                    return Admission::Defer(format!(
                        "{same_shape} trial(s) of shape {shape} already run on this device, the most that fit since one ran out of memory"
                    ));
                }
            }
            let headroom: u64 = d
                .running
                .iter()
                .map(|(id, r)| r.reserved.saturating_sub(now.used_by_slot.get(id).copied().unwrap_or(0)))
                .sum();
            let available = now.free_bytes.saturating_sub(headroom);
            let needed = with_margin(expected);
            if needed > available {
                return Admission::Defer(format!(
                    "needs {} with margin, {} free of which {} is still to be taken by the {} trial(s) running",
                    bertsweep_transfer::human_bytes(needed),
                    bertsweep_transfer::human_bytes(now.free_bytes),
                    bertsweep_transfer::human_bytes(headroom),
                    d.running.len()
                ));
            }
        }
        let shared = !d.running.is_empty();
        for other in d.running.values_mut() {
            other.shared |= shared;
        }
        d.running.insert(slot, Running { shape: shape.to_string(), reserved: expected, shared });
        Admission::Admit
    }

    /// The running trial of `slot` has measured a peak of `bytes`: what it reserves rises to it.
    pub fn measured(&mut self, device: usize, slot: SlotId, bytes: u64) {
        if let Some(r) = self.devices.get_mut(&device).and_then(|d| d.running.get_mut(&slot)) {
            r.reserved = r.reserved.max(bytes);
        }
    }

    /// The trial of `slot` ended (`oom`: out of device memory). Returns whether it shared its
    /// device with another trial at any time; an out-of-memory while sharing lowers how many
    /// trials of its shape run together there and raises the shape's expected peak.
    pub fn ended(&mut self, device: usize, slot: SlotId, oom: bool) -> bool {
        let Some(d) = self.devices.get_mut(&device) else { return false };
        let Some(shape) = d.running.get(&slot).map(|me| me.shape.clone()) else { return false };
        let concurrent_same = d.running.values().filter(|r| r.shape == shape).count();
        let Some(me) = d.running.remove(&slot) else { return false };
        if oom && me.shared {
            let limit = concurrent_same.saturating_sub(1).max(1);
            let entry = d.shape_limit.entry(me.shape.clone()).or_insert(limit);
            *entry = (*entry).min(limit);
            let raised = me.reserved.saturating_add(me.reserved / 100 * OOM_RAISE_PERCENT);
            let floor = d.shape_floor.entry(me.shape).or_insert(0);
            *floor = (*floor).max(raised);
        }
        me.shared
    }

    /// Trials running on `device`.
    pub fn running(&self, device: usize) -> usize {
        self.devices.get(&device).map_or(0, |d| d.running.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    fn free(bytes: u64) -> Snapshot {
        Snapshot { free_bytes: bytes, used_by_slot: HashMap::new() }
    }

    #[test]
    fn a_trial_alone_on_its_device_is_always_admitted() {
        let mut l = Ledger::default();
        assert_eq!(l.admit(0, 1, "b32s128", 500 * GIB, &free(GIB)), Admission::Admit);
        assert_eq!(l.running(0), 1);
    }

    #[test]
    fn a_second_trial_needs_its_peak_and_margin_beyond_what_the_first_will_still_take() {
        let mut l = Ledger::default();
        assert_eq!(l.admit(0, 1, "b32s128", 10 * GIB, &free(80 * GIB)), Admission::Admit);
        // The first has taken 4 GiB of its 10 so far: 6 GiB more are spoken for.
        let mut now = Snapshot { free_bytes: 20 * GIB, used_by_slot: HashMap::from([(1, 4 * GIB)]) };
        // 14 GiB usable; 12 GiB + 10 % + 1 GiB = 14.2 GiB does not fit, 11 GiB does.
        assert!(
            matches!(l.admit(0, 2, "b32s128", 12 * GIB, &now), Admission::Defer(why) if why.contains("still to be taken"))
        );
        assert_eq!(l.admit(0, 2, "b32s128", 11 * GIB, &now), Admission::Admit);
        // Another device is independent.
        now.free_bytes = GIB;
        assert_eq!(l.admit(1, 3, "b32s128", 11 * GIB, &now), Admission::Admit);
    }

    #[test]
    fn measured_peaks_raise_the_reservation() {
        let mut l = Ledger::default();
        l.admit(0, 1, "b16s128", GIB, &free(80 * GIB));
        l.measured(0, 1, 30 * GIB);
        let now = Snapshot { free_bytes: 40 * GIB, used_by_slot: HashMap::from([(1, 10 * GIB)]) };
        // 40 free less 20 still to come leaves 20: 19 GiB + margin does not fit.
        assert!(matches!(l.admit(0, 2, "b16s128", 19 * GIB, &now), Admission::Defer(_)));
        assert_eq!(l.admit(0, 2, "b16s128", 15 * GIB, &now), Admission::Admit);
    }

    #[test]
    fn out_of_memory_while_sharing_lowers_that_shapes_concurrency_and_raises_its_peak() {
        let mut l = Ledger::default();
        let plenty = free(100 * GIB);
        for slot in 1..=3 {
            assert_eq!(l.admit(0, slot, "b32s512", 10 * GIB, &plenty), Admission::Admit);
        }
        assert!(l.ended(0, 3, true), "it shared its device");
        // At most two of that shape together from now on; another shape is unaffected.
        assert!(
            matches!(l.admit(0, 3, "b32s512", 10 * GIB, &plenty), Admission::Defer(why) if why.contains("ran out of memory"))
        );
        assert_eq!(l.admit(0, 4, "b16s128", GIB, &plenty), Admission::Admit);
        assert!(l.ended(0, 4, false), "it shared too");
        l.ended(0, 2, false);
        // One left running: a second of the shape fits again, budgeted at the raised peak.
        let tight = Snapshot { free_bytes: 12 * GIB, used_by_slot: HashMap::from([(1, 10 * GIB)]) };
        assert!(
            matches!(l.admit(0, 3, "b32s512", 10 * GIB, &tight), Admission::Defer(_)),
            "12.5 GiB + margin > 12 GiB"
        );
        let roomy = Snapshot { free_bytes: 16 * GIB, used_by_slot: HashMap::from([(1, 10 * GIB)]) };
        assert_eq!(l.admit(0, 3, "b32s512", 10 * GIB, &roomy), Admission::Admit);
    }

    #[test]
    fn a_trial_that_never_shared_reports_so() {
        let mut l = Ledger::default();
        l.admit(0, 1, "b32s128", GIB, &free(80 * GIB));
        assert!(!l.ended(0, 1, true), "alone: its out-of-memory is its own");
        assert!(!l.ended(0, 1, false), "ending twice is harmless");
        assert_eq!(l.admit(0, 1, "b32s128", GIB, &free(GIB)), Admission::Admit, "no limit was set");
    }
}
