//! Where a training step's wall time goes, phase by phase (opt-in diagnostics).
//!
//! With `BERTSWEEP_STEP_PROFILE=1` the trainer waits for the device at every phase boundary
//! (batch upload, forward, backward, clipping, optimizer) and adds the time since the previous
//! boundary to that phase. On a GPU a phase's time is then the longer of its kernels' run time
//! and the host's time to launch them, so a launch-bound step shows up as phases far slower
//! than their arithmetic. The waits cost throughput: a profiled epoch's samples/s is not a
//! benchmark figure. `worker/bench/hf_train_throughput.py --profile-steps` times PyTorch's
//! step the same way, so the two sides' tables compare.

use std::time::{Duration, Instant};

use tch::Device;

/// Environment variable that turns the per-phase clock on.
pub const ENV: &str = "BERTSWEEP_STEP_PROFILE";

/// The phases of one training step, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Building the batch and uploading it.
    Batch,
    /// Forward pass and loss.
    Forward,
    /// Dropping old gradients and the backward pass.
    Backward,
    /// Gradient clipping.
    Clip,
    /// The optimizer step (the last phase: it ends a step).
    Optimizer,
}

/// The phases' names, in [`Phase`] order.
pub const PHASES: [&str; 5] = ["batch", "forward", "backward", "clip", "optimizer"];

/// Accumulated wall time per phase over the steps of one epoch.
#[derive(Debug)]
pub struct PhaseClock {
    device: Device,
    totals: [Duration; PHASES.len()],
    steps: usize,
    last: Instant,
}

impl PhaseClock {
    /// A clock for steps on `device` when [`ENV`] is `1`, else `None` (no waits added).
    pub fn from_env(device: Device) -> Option<Self> {
        (std::env::var(ENV).as_deref() == Ok("1")).then(|| PhaseClock::new(device))
    }

    /// A running clock for steps on `device`.
    pub fn new(device: Device) -> Self {
        PhaseClock { device, totals: [Duration::ZERO; PHASES.len()], steps: 0, last: Instant::now() }
    }

    /// Waits for the device, then restarts the clock without charging any phase (call at
    /// the start of each step).
    pub fn start(&mut self) {
        self.sync();
        self.last = Instant::now();
    }

    /// Waits for the device and charges the time since the last mark to `phase`; the last
    /// phase also counts a finished step.
    pub fn mark(&mut self, phase: Phase) {
        self.sync();
        let now = Instant::now();
        self.totals[phase as usize] += now - self.last;
        self.last = now;
        if phase == Phase::Optimizer {
            self.steps += 1;
        }
    }

    /// One line: mean milliseconds per step for each phase and their sum, then restarts.
    pub fn report_and_reset(&mut self) -> String {
        let steps = self.steps.max(1) as f64;
        let ms = |d: Duration| d.as_secs_f64() * 1e3 / steps;
        let parts: Vec<String> =
            PHASES.iter().zip(self.totals).map(|(name, total)| format!("{name} {:.2}", ms(total))).collect();
        let sum: Duration = self.totals.iter().sum();
        let line = format!("ms per step over {} steps: {}, step {:.2}", self.steps, parts.join(", "), ms(sum));
        self.totals = [Duration::ZERO; PHASES.len()];
        self.steps = 0;
        line
    }

    fn sync(&self) {
        if let Device::Cuda(index) = self.device {
            tch::Cuda::synchronize(index as i64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_each_phase_and_counts_steps() {
        let mut clock = PhaseClock::new(Device::Cpu);
        for _ in 0..2 {
            clock.start();
            for phase in [Phase::Batch, Phase::Forward, Phase::Backward, Phase::Clip, Phase::Optimizer] {
                if phase == Phase::Backward {
                    std::thread::sleep(Duration::from_millis(5));
                }
                clock.mark(phase);
            }
        }
        assert_eq!(clock.steps, 2);
        assert!(clock.totals[2] >= Duration::from_millis(10));
        let line = clock.report_and_reset();
        assert!(line.starts_with("ms per step over 2 steps: batch "), "{line}");
        assert!(line.contains("backward "), "{line}");
        assert_eq!(clock.steps, 0);
        assert_eq!(clock.totals[2], Duration::ZERO);
    }

    #[test]
    fn is_off_unless_asked_for() {
        if std::env::var_os(ENV).is_none() {
            assert!(PhaseClock::from_env(Device::Cpu).is_none());
        }
    }
}
