use super::*;

const GOOD: &str = r#"
name = "sst2-minilm"
[objective]
metric = "eval_accuracy"
direction = "maximize"
[algorithm]
sampler = "grid"
seed = 0
[budget]
parallel_trials = 4
max_failed_trials = 3
max_attempts = 3
[task]
model = "/models/bert"
train_file = "data/train.tsv"
validation_file = "data/dev.tsv"
[parameters.learning_rate]
distribution = "log_uniform"
min = 1e-5
max = 5e-5
grid_points = 3
[parameters.num_train_epochs]
values = [2, 3, 4]
[parameters.per_device_train_batch_size]
values = [16, 32]
"#;

fn err(text: &str) -> String {
    parse_study(text).unwrap_err().to_string()
}

#[test]
fn parses_the_design_example() {
    let spec = parse_study(GOOD).unwrap();
    assert_eq!(spec.grid_size(), 18);
    assert_eq!(spec.budget.max_trials, 18);
    assert_eq!(spec.task.text_column, "sentence");
    let axes = spec.grid_axes().unwrap();
    assert_eq!(axes[0].0, "learning_rate");
    assert_eq!(axes[0].1[0], ParamValue::Float(1e-5));
    assert_eq!(axes[0].1[2], ParamValue::Float(5e-5));
    assert_eq!(axes[1].1, vec![ParamValue::Int(2), ParamValue::Int(3), ParamValue::Int(4)]);
}

#[test]
fn rejects_unknown_and_misspelled_keys_with_a_line() {
    let e = err(&GOOD.replace("max_attempts = 3", "max_atempts = 3"));
    assert!(e.contains("unknown field `max_atempts`"), "{e}");
    assert!(e.starts_with("line "), "{e}");
    assert!(err(&format!("{GOOD}\n[extra]\nx = 1\n")).contains("unknown field `extra`"));
}

#[test]
fn rejects_wrong_types() {
    let e = err(&GOOD.replace("parallel_trials = 4", "parallel_trials = \"four\""));
    assert!(e.contains("invalid type"), "{e}");
    let e = err(&GOOD.replace("values = [16, 32]", "values = [16, \"big\"]"));
    assert!(e.contains("expected an integer"), "{e}");
}

#[test]
fn rejects_bad_ranges() {
    assert!(err(&GOOD.replace("max = 5e-5", "max = 1e-5")).contains("empty or inverted"));
    assert!(err(&GOOD.replace("max = 5e-5", "max = 1e-6")).contains("empty or inverted"));
    let e = err(&GOOD.replace("min = 1e-5\nmax = 5e-5", "min = 0.0\nmax = 5e-5"));
    assert!(e.contains("out of range"), "{e}");
    let text = GOOD
        .replace("[parameters.learning_rate]", "[parameters.warmup_ratio]")
        .replace("min = 1e-5", "min = 0.0")
        .replace("max = 5e-5", "max = 0.2");
    assert!(err(&text).contains("log_uniform needs min > 0"));
    assert!(err(&GOOD.replace("values = [2, 3, 4]", "values = []")).contains("is empty"));
}

#[test]
fn rejects_unknown_parameters_and_huge_grids() {
    let e = err(&GOOD.replace("[parameters.num_train_epochs]", "[parameters.num_epochs]"));
    assert!(e.contains("parameters.num_epochs: unknown parameter"), "{e}");
    let e = err(&GOOD.replace("grid_points = 3", "grid_points = 50000"));
    assert!(e.contains("more than the limit of 100000"), "{e}");
    let e = err(&GOOD.replace("grid_points = 3\n", ""));
    assert!(e.contains("needs grid_points or step"), "{e}");
}

#[test]
fn random_needs_max_trials_and_accepts_continuous_ranges() {
    let text = GOOD.replace("sampler = \"grid\"", "sampler = \"random\"").replace("grid_points = 3\n", "");
    assert!(err(&text).contains("max_trials is required"));
    let spec = parse_study(&text.replace("[budget]", "[budget]\nmax_trials = 7")).unwrap();
    assert_eq!(spec.budget.max_trials, 7);
    assert_eq!(spec.sampler, SamplerKind::Random);
}

#[test]
fn class_weights_are_balanced_or_absent() {
    assert!(!parse_study(GOOD).unwrap().task.balanced_class_weights);
    let with = |v: &str| GOOD.replace("[task]\n", &format!("[task]\nclass_weights = {v}\n"));
    assert!(parse_study(&with("\"balanced\"")).unwrap().task.balanced_class_weights);
    assert!(!parse_study(&with("\"none\"")).unwrap().task.balanced_class_weights);
    let e = err(&with("\"inverse\""));
    assert!(e.contains("task.class_weights \"inverse\" is not valid") && e.contains("balanced"), "{e}");
}

#[test]
fn text_pair_column_is_optional_and_distinct() {
    assert_eq!(parse_study(GOOD).unwrap().task.text_pair_column, None);
    let with = |v: &str| GOOD.replace("[task]\n", &format!("[task]\ntext_column = \"sentence1\"\n{v}\n"));
    let spec = parse_study(&with("text_pair_column = \"sentence2\"")).unwrap();
    assert_eq!(
        (spec.task.text_column.as_str(), spec.task.text_pair_column.as_deref()),
        ("sentence1", Some("sentence2"))
    );
    assert!(err(&with("text_pair_column = \" \"")).contains("task.text_pair_column is empty"));
    let e = err(&with("text_pair_column = \"sentence1\""));
    assert!(e.contains("task.text_pair_column \"sentence1\" is also task.text_column"), "{e}");
    let e = err(&with("text_pair_column = \"label\""));
    assert!(e.contains("is also task.label_column"), "{e}");
}

#[test]
fn example_study_files_parse() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut parsed = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let text = std::fs::read_to_string(&path).unwrap();
            parse_study(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            parsed += 1;
        }
    }
    assert!(parsed >= 4, "only {parsed} study files in {}", dir.display());
}

#[test]
fn every_reported_metric_can_be_the_objective_with_its_natural_direction() {
    for metric in OBJECTIVE_METRICS {
        let spec =
            parse_study(&GOOD.replace("eval_accuracy", metric).replace("direction = \"maximize\"\n", "")).unwrap();
        let lower = ["eval_loss", "eval_log_loss", "eval_ece"].contains(metric);
        assert_eq!(spec.objective.maximize, !lower, "{metric}");
    }
}

#[test]
fn rejects_unknown_sampler_metric_and_budget_zero() {
    assert!(err(&GOOD.replace("sampler = \"grid\"", "sampler = \"bayes\"")).contains("not a known sampler"));
    assert!(err(&GOOD.replace("eval_accuracy", "accuracy")).contains("not a metric"));
    assert!(err(&GOOD.replace("parallel_trials = 4", "parallel_trials = 0")).contains("at least 1"));
}

#[test]
fn folds_replace_the_validation_file_and_multiply_the_trials() {
    let folded = GOOD.replace("validation_file = \"data/dev.tsv\"\n", "") + "[evaluation]\nfolds = 5\n";
    let spec = parse_study(&folded).unwrap();
    assert_eq!((spec.folds, spec.trials_per_configuration()), (5, 5));
    assert_eq!(spec.budget.max_trials, 18 * 5, "grid × folds");
    assert!(spec.task.validation_file.is_empty());
    assert_eq!(spec.task.inputs().iter().map(|i| i.key).collect::<Vec<_>>(), ["model", "train_file"]);
    let both = parse_study(
        &folded
            .replace("[evaluation]", "[algorithm.x]\n[evaluation]")
            .replace("[algorithm.x]\n", "")
            .replace("seed = 0", "seed = 0\nrepeats = 2"),
    )
    .unwrap();
    assert_eq!((both.trials_per_configuration(), both.budget.max_trials), (10, 180));
    assert!(err(&GOOD.replace("validation_file = \"data/dev.tsv\"\n", "")).contains("task.validation_file is missing"));
    assert!(err(&format!("{GOOD}[evaluation]\nfolds = 5\n")).contains("cannot be used with evaluation.folds"));
    for bad in ["1", "21", "-3"] {
        let e = err(&folded.replace("folds = 5", &format!("folds = {bad}")));
        assert!(e.contains("evaluation.folds must be between 2 and 20"), "{e}");
    }
    assert!(err(&folded.replace("[budget]", "[budget]\nmax_trials = 12")).contains("multiple of evaluation.folds (5)"));
    assert!(err(&format!("{folded}[parameters.fold]\nvalues = [0, 1]\n"))
        .contains("parameters.fold is not a hyperparameter"));
    let promotion = format!("{folded}[early_stopping]\ntype = \"asha\"\nmode = \"promotion\"\n");
    assert!(err(&promotion).contains("cannot be combined with evaluation.folds"));
    assert!(err(&folded.replace("folds = 5", "folds = 5\nshuffle = true")).contains("shuffle"));
}

#[test]
fn tpe_repeats_and_early_stopping() {
    let tpe = GOOD
        .replace("sampler = \"grid\"", "sampler = \"tpe\"\nrepeats = 2")
        .replace("[budget]", "[budget]\nmax_trials = 20");
    let spec = parse_study(&format!("{tpe}\n[early_stopping]\ntype = \"asha\"\nreduction_factor = 2\n")).unwrap();
    assert_eq!((spec.sampler, spec.repeats, spec.startup_trials), (SamplerKind::Tpe, 2, 5));
    assert_eq!(spec.early_stopping, EarlyStopping::Asha { min_epochs: 1, reduction_factor: 2, promotion: false });
    let promoting = parse_study(&format!("{tpe}\n[early_stopping]\ntype = \"asha\"\nmode = \"promotion\"\n")).unwrap();
    assert_eq!(promoting.early_stopping, EarlyStopping::Asha { min_epochs: 1, reduction_factor: 3, promotion: true });
    let refused = |extra: &str| parse_study(&format!("{tpe}\n{extra}")).unwrap_err().to_string();
    assert!(refused("[early_stopping]\ntype = \"asha\"\nmode = \"pause\"\n").contains("\"promotion\""));
    assert!(refused("[early_stopping]\ntype = \"median\"\nmode = \"promotion\"\n").contains("only applies"));
    let no_checkpoints = tpe.replace("[budget]", "[budget]\ncheckpoints = false");
    let err = parse_study(&format!("{no_checkpoints}\n[early_stopping]\ntype = \"asha\"\nmode = \"promotion\"\n"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("checkpoints"), "{err}");
    let grid = parse_study(&GOOD.replace("seed = 0", "seed = 0\nrepeats = 3")).unwrap();
    assert_eq!(grid.budget.max_trials, 54, "grid × repeats");
    let median =
        parse_study(&format!("{GOOD}\n[early_stopping]\ntype = \"median\"\nwarmup_trials = 2\nmin_epochs = 1\n"))
            .unwrap();
    assert_eq!(median.early_stopping, EarlyStopping::Median { min_epochs: 1, warmup_trials: 2 });
}

#[test]
fn rejects_bad_search_settings() {
    let es = |body: &str| err(&format!("{GOOD}\n[early_stopping]\n{body}\n"));
    assert!(es("type = \"hyperband\"").contains("early_stopping.type \"hyperband\" is not known"));
    assert!(es("type = \"asha\"\nreduction_factor = 1").contains("reduction_factor must be at least 2"));
    assert!(es("type = \"asha\"\nmin_epochs = 0").contains("min_epochs must be at least 1"));
    assert!(es("type = \"asha\"\nmin_epochs = 4").contains("needs a per-epoch objective"));
    assert!(es("type = \"median\"\nreduction_factor = 3").contains("only applies to type = \"asha\""));
    assert!(es("type = \"asha\"\npatience = 3").contains("unknown field `patience`"));
    assert!(err(&GOOD.replace("seed = 0", "seed = 0\nrepeats = 0")).contains("repeats must be between 1 and 1000"));
    assert!(err(&GOOD.replace("sampler = \"grid\"", "sampler = \"optuna\"")).contains("not a known sampler"));
    let seeded = GOOD.replace("seed = 0", "seed = 0\nrepeats = 2") + "[parameters.seed]\nvalues = [1, 2]\n";
    assert!(err(&seeded).contains("cannot be searched together with algorithm.repeats"));
    let odd = GOOD.replace("seed = 0", "seed = 0\nrepeats = 2").replace("[budget]", "[budget]\nmax_trials = 5");
    assert!(err(&odd).contains("multiple of algorithm.repeats"));
}

#[test]
fn int_steps_and_defaults() {
    let text = GOOD.replace("values = [2, 3, 4]", "distribution = \"int_uniform\"\nmin = 2\nmax = 4");
    let spec = parse_study(&text).unwrap();
    assert_eq!(spec.grid_size(), 18);
    let text = GOOD.replace("values = [16, 32]", "distribution = \"int_uniform\"\nmin = 16\nmax = 32\nstep = 16");
    assert_eq!(parse_study(&text).unwrap().grid_size(), 18);
}
