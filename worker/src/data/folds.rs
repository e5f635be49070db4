//! K-fold cross-validation splits: stratified by label and shuffled with a seed, so that every
//! trial of a study, on any worker of any version, cuts the training file the same way.
//!
//! Each class's examples are shuffled (Fisher–Yates over SplitMix64, fixed here forever rather
//! than borrowed from a crate whose shuffle may change) and dealt to the folds in turn, each
//! class starting where the previous one stopped, so every fold gets ⌊n_c/K⌋ or ⌈n_c/K⌉ of
//! each class and the folds' sizes differ by at most one.

/// Which fold of how many a trial validates on, and how the folds are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FoldSpec {
    /// The fold this trial validates on (0-based, below `count`).
    pub index: usize,
    /// How many folds the training file is cut into (2–20).
    pub count: usize,
    /// Seed of the shuffle (the study's `algorithm.seed`).
    pub seed: u64,
}

/// The fold (0..`count`) of each example, given each example's class id.
pub fn assign_folds(label_ids: &[i64], count: usize, seed: u64) -> Vec<usize> {
    let count = count.max(1);
    let mut by_class: std::collections::BTreeMap<i64, Vec<usize>> = std::collections::BTreeMap::new();
    for (i, &y) in label_ids.iter().enumerate() {
        by_class.entry(y).or_default().push(i);
    }
    let mut folds = vec![0usize; label_ids.len()];
    let mut next = 0usize;
    for (class, mut members) in by_class {
        let mut rng = SplitMix64(seed ^ (class as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        for i in (1..members.len()).rev() {
            let j = rng.below(i + 1);
            members.swap(i, j);
        }
        for member in members {
            folds[member] = next;
            next = (next + 1) % count;
        }
    }
    folds
}

struct SplitMix64(u64);

impl SplitMix64 {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (((z ^ (z >> 31)) as u128 * n as u128) >> 64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_are_stratified_balanced_seeded_and_cover_every_example_once() {
        // 70 of class 0, 23 of class 1, 7 of class 2.
        let labels: Vec<i64> = (0..100)
            .map(|i| {
                if i < 70 {
                    0
                } else if i < 93 {
                    1
                } else {
                    2
                }
            })
            .collect();
        let folds = assign_folds(&labels, 5, 42);
        assert_eq!(folds.len(), 100);
        for fold in 0..5 {
            let size = folds.iter().filter(|&&f| f == fold).count();
            assert_eq!(size, 20, "fold {fold}");
            for (class, n) in [(0, 70), (1, 23), (2, 7)] {
                let in_fold = (0..100).filter(|&i| folds[i] == fold && labels[i] == class).count();
                assert!(in_fold == n / 5 || in_fold == n.div_ceil(5), "class {class} in fold {fold}: {in_fold}");
            }
        }
        assert_eq!(folds, assign_folds(&labels, 5, 42), "the same seed, the same folds");
        assert_ne!(folds, assign_folds(&labels, 5, 43), "another seed, other folds");
        // Shuffled, not in file order.
        assert_ne!(&folds[..5], &[0, 1, 2, 3, 4]);
    }
}
