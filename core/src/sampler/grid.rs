//! Grid search: trial number `n` gets grid point `n`, so every point goes out exactly once and
//! in a stable order (the first parameter in the file varies slowest).

use super::Sampler;
use crate::model::Trial;
use crate::params::{ParamValue, Params};
use crate::spec::{Objective, StudySpec};

/// Enumerates the Cartesian product of the study's discrete axes.
pub struct GridSampler {
    /// (name, values) per parameter in file order.
    axes: Vec<(String, Vec<ParamValue>)>,
    /// Product of axis lengths.
    size: u64,
}

impl GridSampler {
    /// Builds the grid; a spec with a continuous, undiscretised range has an empty grid
    /// (validation rejects such specs for the grid sampler).
    pub fn new(spec: &StudySpec) -> Self {
        let axes = spec.grid_axes().unwrap_or_default();
        let size = if axes.is_empty() { 0 } else { axes.iter().map(|(_, v)| v.len() as u64).product() };
        GridSampler { axes, size }
    }

    /// Number of grid points.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The `index`-th point in mixed-radix order (last axis fastest).
    pub fn point(&self, index: u64) -> Option<Params> {
        if index >= self.size {
            return None;
        }
        let mut rest = index;
        let mut params = Params::new();
        for (name, values) in self.axes.iter().rev() {
            let n = values.len() as u64;
            params.insert(name.clone(), values[(rest % n) as usize].clone());
            rest /= n;
        }
        Some(params)
    }
}

impl Sampler for GridSampler {
    fn sample(&self, number: u32, _trials: &[Trial], _objective: &Objective) -> Option<Params> {
        self.point(number as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::parse_study;

    #[test]
    fn visits_every_point_once_in_a_stable_order() {
        let spec = parse_study(crate::spec::test_support::SMALL_GRID).unwrap();
        let grid = GridSampler::new(&spec);
        assert_eq!(grid.size(), 4);
        let points: Vec<String> = (0..4).map(|i| crate::params::format_params(&grid.point(i).unwrap())).collect();
        assert_eq!(
            points,
            [
                "learning_rate=3e-5 per_device_train_batch_size=16",
                "learning_rate=3e-5 per_device_train_batch_size=32",
                "learning_rate=5e-5 per_device_train_batch_size=16",
                "learning_rate=5e-5 per_device_train_batch_size=32",
            ]
        );
        assert!(grid.point(4).is_none());
    }
}
