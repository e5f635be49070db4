//! Read-only views over the registry: studies and trials (whole or by page), the best trial,
//! configurations, the roots of blob collection and the metrics gauges.

use super::*;

impl Registry {
    /// What scoring a leased trial's dev-set predictions needs: its study's objective metric
    /// and the seed of the trial's bootstrap interval. Fails as `complete` would for a stale
    /// lease, so a worker learns of it before any resampling is done.
    pub fn evaluation_context(&self, trial_id: u64, token: u64) -> Result<(String, u64)> {
        let (si, number) = self.leased(trial_id, token)?;
        let study = &self.studies[si];
        Ok((study.spec().objective.metric.clone(), crate::evaluation::interval_seed(study.spec().seed, number)))
    }

    /// The seed of a study's paired comparisons (its `algorithm.seed`).
    pub fn study_seed(&self, name: &str) -> Result<u64> {
        Ok(self.studies[self.study_index(name)?].spec().seed)
    }

    /// A study's summary.
    pub fn study(&self, name: &str) -> Result<StudySummary> {
        Ok(self.studies[self.study_index(name)?].summary())
    }

    /// Every study, oldest first.
    pub fn studies(&self) -> Vec<StudySummary> {
        self.studies.iter().map(LiveStudy::summary).collect()
    }

    /// A study's trials in number order.
    pub fn trials(&self, name: &str) -> Result<Vec<Trial>> {
        Ok(self.studies[self.study_index(name)?].trials().to_vec())
    }

    /// Up to `limit` of a study's trials from number `from` on, and how many trials it has.
    pub fn trials_page(&self, name: &str, from: u32, limit: usize) -> Result<(Vec<Trial>, u32)> {
        let trials = &self.studies[self.study_index(name)?].trials();
        let start = (from as usize).min(trials.len());
        let end = start.saturating_add(limit).min(trials.len());
        Ok((trials[start..end].to_vec(), trials.len() as u32))
    }

    /// Runs `f` over a study's spec and its trials (in number order) without copying them: for
    /// readers that derive something from many trials (the dashboard's CSV, seed points,
    /// importance inputs) while holding the lock only as long as that takes.
    pub fn with_trials<R>(&self, name: &str, f: impl FnOnce(&StudySpec, &[Trial]) -> R) -> Result<R> {
        let study = &self.studies[self.study_index(name)?];
        Ok(f(study.spec(), study.trials()))
    }

    /// Up to `limit` studies whose id is at least `from_id` (in `state` only, when given),
    /// oldest first, and the id of the next such study when there are more.
    pub fn studies_page(
        &self,
        from_id: u64,
        limit: usize,
        state: Option<StudyState>,
    ) -> (Vec<StudySummary>, Option<u64>) {
        // Studies are pushed in id order; a deleted one leaves the rest in order.
        let start = self.studies.partition_point(|s| s.record().id < from_id);
        let mut matching = self.studies[start..].iter().filter(|s| state.is_none_or(|state| s.record().state == state));
        let page = matching.by_ref().take(limit).map(LiveStudy::summary).collect();
        (page, matching.next().map(|s| s.record().id))
    }

    /// `Some((state, reason))` when the study has ended.
    pub fn study_end(&self, name: &str) -> Result<Option<(StudyState, String)>> {
        let record = &self.studies[self.study_index(name)?].record();
        Ok((record.state != StudyState::Running).then(|| (record.state, record.reason.clone())))
    }

    /// The best COMPLETED trial of a study, or None when none has completed.
    pub fn best_trial(&self, name: &str) -> Result<Option<Trial>> {
        Ok(self.studies[self.study_index(name)?].best().cloned())
    }

    /// A study's configurations ranked by mean objective (see `algorithm.repeats`).
    pub fn configurations(&self, name: &str) -> Result<Vec<Configuration>> {
        Ok(self.studies[self.study_index(name)?].configurations())
    }

    /// Every blob a study or trial refers to (inputs and kept models): the roots of the blob
    /// store's garbage collection.
    pub fn blob_roots(&self) -> Vec<Digest> {
        self.studies.iter().flat_map(LiveStudy::blob_roots).collect()
    }

    /// What the metrics endpoint shows: every study's name, state, trial counts and demand,
    /// and how many workers asked for work or heartbeated since `seen_since` (wall-clock ms).
    pub fn gauges(&self, seen_since: i64) -> (Vec<StudyGauges<'_>>, usize) {
        let studies = self
            .studies
            .iter()
            .map(|s| StudyGauges {
                name: &s.record().name,
                state: s.record().state,
                counts: s.counts(),
                demand: s.demand(),
                finished_ms: s.record().finished_ms,
            })
            .collect();
        (studies, self.last_seen.values().filter(|&&at| at >= seen_since).count())
    }

    /// The state of a study (for streams deciding when to end).
    pub fn study_state(&self, name: &str) -> Result<StudyState> {
        Ok(self.studies[self.study_index(name)?].record().state)
    }
}
