//! Study files for tests and benchmarks (compiled only for tests and with the `testing`
//! feature, which only dev-dependencies turn on: none of it is in the product).

use std::fmt;

/// A study file built from the parts tests vary; everything else is the smallest valid study.
///
/// Defaults: the grid sampler without a seed, `objective.metric = "eval_accuracy"`, an empty
/// `[budget]` (so its defaults), inputs the workers open themselves (`worker:/models/m`,
/// `worker:/data/train.tsv`, `worker:/data/dev.tsv`) and no parameters; a study needs at least
/// one, so add some with [`StudyToml::parameters`]. `Display` renders the TOML.
#[derive(Debug, Clone)]
pub struct StudyToml {
    name: String,
    sampler: String,
    seed: Option<u64>,
    repeats: Option<u32>,
    budget: String,
    inputs: [String; 3],
    task: String,
    parameters: String,
    sections: String,
}

impl StudyToml {
    /// A grid study named `name` with the defaults above.
    pub fn new(name: &str) -> Self {
        StudyToml {
            name: name.to_string(),
            sampler: "grid".into(),
            seed: None,
            repeats: None,
            budget: String::new(),
            inputs: ["worker:/models/m".into(), "worker:/data/train.tsv".into(), "worker:/data/dev.tsv".into()],
            task: String::new(),
            parameters: String::new(),
            sections: String::new(),
        }
    }

    /// `algorithm.sampler`: `grid`, `random` or `tpe`.
    pub fn sampler(mut self, sampler: &str) -> Self {
        self.sampler = sampler.to_string();
        self
    }

    /// `algorithm.seed`.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// `algorithm.repeats`: each configuration runs with seeds 0..n.
    pub fn repeats(mut self, n: u32) -> Self {
        self.repeats = Some(n);
        self
    }

    /// Lines of the `[budget]` table, e.g. `"max_trials = 8\nparallel_trials = 2"`.
    pub fn budget(mut self, lines: &str) -> Self {
        self.budget = lines.trim_end().to_string();
        self
    }

    /// `task.model`, `task.train_file` and `task.validation_file`.
    pub fn inputs(mut self, model: &str, train_file: &str, validation_file: &str) -> Self {
        self.inputs = [model.to_string(), train_file.to_string(), validation_file.to_string()];
        self
    }

    /// Further lines of the `[task]` table, e.g. `"max_seq_length = 64"`.
    pub fn task(mut self, lines: &str) -> Self {
        self.task = lines.trim_end().to_string();
        self
    }

    /// Appends `[parameters.NAME]` tables.
    pub fn parameters(mut self, tables: &str) -> Self {
        self.parameters.push_str(tables.trim_end());
        self.parameters.push('\n');
        self
    }

    /// Appends other tables, e.g. `[early_stopping]`.
    pub fn section(mut self, tables: &str) -> Self {
        self.sections.push_str(tables.trim_end());
        self.sections.push('\n');
        self
    }
}

impl fmt::Display for StudyToml {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [model, train, validation] = &self.inputs;
        writeln!(f, "name = \"{}\"", self.name)?;
        writeln!(f, "[objective]\nmetric = \"eval_accuracy\"")?;
        writeln!(f, "[algorithm]\nsampler = \"{}\"", self.sampler)?;
        if let Some(seed) = self.seed {
            writeln!(f, "seed = {seed}")?;
        }
        if let Some(repeats) = self.repeats {
            writeln!(f, "repeats = {repeats}")?;
        }
        writeln!(f, "[budget]")?;
        if !self.budget.is_empty() {
            writeln!(f, "{}", self.budget)?;
        }
        writeln!(f, "[task]\nmodel = \"{model}\"\ntrain_file = \"{train}\"\nvalidation_file = \"{validation}\"")?;
        if !self.task.is_empty() {
            writeln!(f, "{}", self.task)?;
        }
        write!(f, "{}{}", self.parameters, self.sections)
    }
}

/// A random-search study file named `name` allowing `max_trials` trials of `epochs` epochs.
pub fn random_study(name: &str, max_trials: u32, epochs: u32) -> String {
    StudyToml::new(name)
        .sampler("random")
        .seed(0)
        .budget(&format!("max_trials = {max_trials}\nparallel_trials = {max_trials}"))
        .inputs("/models/minilm", "train.tsv", "dev.tsv")
        .parameters(SEARCH_SPACE)
        .parameters(&format!("[parameters.num_train_epochs]\nvalue = {epochs}"))
        .to_string()
}

/// Learning rate (log-uniform 1e-5–5e-5) × batch size {16, 32}: the README's example space.
pub const SEARCH_SPACE: &str = "[parameters.learning_rate]
distribution = \"log_uniform\"
min = 1e-5
max = 5e-5
[parameters.per_device_train_batch_size]
values = [16, 32]
";
