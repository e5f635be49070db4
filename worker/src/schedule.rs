//! Learning-rate schedule of transformers' `get_linear_schedule_with_warmup`: linear warm-up
//! from 0 over `warmup_steps`, then linear decay to 0 at `total_steps`.

/// Linear warm-up then linear decay, as a factor of the peak learning rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinearSchedule {
    /// Optimizer steps in the whole training run.
    pub total_steps: usize,
    /// Steps of warm-up: `ceil(total_steps × warmup_ratio)`, as HF `get_warmup_steps`.
    pub warmup_steps: usize,
}

impl LinearSchedule {
    /// The schedule for `total_steps` with `warmup_ratio` of them warming up.
    pub fn new(total_steps: usize, warmup_ratio: f64) -> Self {
        let warmup_steps = (total_steps as f64 * warmup_ratio.max(0.0)).ceil() as usize;
        LinearSchedule { total_steps, warmup_steps }
    }

    /// Factor of the peak learning rate used by optimizer step `step` (0-based).
    pub fn factor(&self, step: usize) -> f64 {
        if step < self.warmup_steps {
            return step as f64 / self.warmup_steps.max(1) as f64;
        }
        let remaining = self.total_steps.saturating_sub(step) as f64;
        (remaining / self.total_steps.saturating_sub(self.warmup_steps).max(1) as f64).max(0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_warmup_decays_linearly_from_the_peak() {
        let s = LinearSchedule::new(4, 0.0);
        let f: Vec<f64> = (0..5).map(|i| s.factor(i)).collect();
        assert_eq!(f, [1.0, 0.75, 0.5, 0.25, 0.0]);
    }

    #[test]
    fn warmup_rounds_up_and_peaks_after_it() {
        let s = LinearSchedule::new(10, 0.25);
        assert_eq!(s.warmup_steps, 3);
        let f: Vec<f64> = (0..11).map(|i| s.factor(i)).collect();
        let expected =
            [0.0, 1.0 / 3.0, 2.0 / 3.0, 1.0, 6.0 / 7.0, 5.0 / 7.0, 4.0 / 7.0, 3.0 / 7.0, 2.0 / 7.0, 1.0 / 7.0, 0.0];
        for (a, b) in f.iter().zip(expected) {
            assert!((a - b).abs() < 1e-12, "{f:?}");
        }
    }
}
