use super::*;

#[test]
fn tar_headers_follow_ustar() {
    let h = tar_entry_header("config.json", 1234, 1_700_000_000);
    assert_eq!(h.len(), 512, "a short ASCII name needs no pax header");
    assert_eq!(&h[..11], b"config.json");
    assert_eq!(&h[124..135], format!("{:011o}", 1234).as_bytes());
    assert_eq!(&h[257..263], b"ustar\0");
    let sum: u32 = h.iter().enumerate().map(|(i, &b)| if (148..156).contains(&i) { 32 } else { u32::from(b) }).sum();
    assert_eq!(&h[148..154], format!("{sum:06o}").as_bytes());
    let long = format!("{}/{}", "d".repeat(120), "f".repeat(90));
    let h = tar_entry_header(&long, 1, 0);
    assert_eq!(h.len(), 512);
    assert_eq!(&h[..90], "f".repeat(90).as_bytes());
    assert_eq!(&h[345..465], "d".repeat(120).as_bytes());
    assert_eq!(tar_entry_header(&"x".repeat(101), 1, 0).len(), 1536, "pax header, its data, the entry");
    for n in [1usize, 5, 90, 95, 96, 97, 990, 995, 996] {
        let record = pax_record("path", &"p".repeat(n));
        let text = String::from_utf8(record.clone()).unwrap();
        let length: usize = text.split(' ').next().unwrap().parse().unwrap();
        assert_eq!(length, record.len(), "{text:?}");
    }
}

/// Archives with long, deep and non-ASCII names (a multi-byte character across ustar's
/// 100- and 155-byte marks among them) unpack to the same names and bytes with GNU tar and
/// Python's tarfile.
#[test]
fn odd_names_round_trip_through_gnu_tar_and_python() {
    let names = [
        "config.json".to_string(),
        format!("{}é/{}", "d".repeat(154), "f".repeat(20)),
        format!("{}/{}ü.bin", "e".repeat(60), "g".repeat(99)),
        format!("{}/{}", "ß".repeat(80), "h".repeat(120)),
        "日本語/モデル.safetensors".to_string(),
        format!("{}/x", ["deep"; 60].join("/")),
    ];
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("model.tar");
    let mut bytes = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let content = format!("file {i}").repeat(i + 1);
        bytes.extend(tar_entry_header(name, content.len() as u64, 1_700_000_000));
        bytes.extend(content.as_bytes());
        bytes.resize(bytes.len().div_ceil(512) * 512, 0);
    }
    bytes.extend([0u8; 1024]);
    std::fs::write(&archive, &bytes).unwrap();
    let check = |out: &std::path::Path| {
        for (i, name) in names.iter().enumerate() {
            let got = std::fs::read_to_string(out.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(got, format!("file {i}").repeat(i + 1), "{name}");
        }
    };
    let gnu = dir.path().join("gnu");
    std::fs::create_dir(&gnu).unwrap();
    let status = std::process::Command::new("tar").arg("-xf").arg(&archive).arg("-C").arg(&gnu).status();
    match status {
        Ok(s) => {
            assert!(s.success(), "GNU tar refused the archive");
            check(&gnu);
        }
        Err(e) => eprintln!("skipping GNU tar: {e}"),
    }
    let py = dir.path().join("py");
    let script =
        "import sys, tarfile\nwith tarfile.open(sys.argv[1]) as t:\n    t.extractall(sys.argv[2], filter='data')\n";
    match std::process::Command::new("python3").args(["-c", script]).arg(&archive).arg(&py).status() {
        Ok(s) => {
            assert!(s.success(), "Python's tarfile refused the archive");
            check(&py);
        }
        Err(e) => eprintln!("skipping Python: {e}"),
    }
}

#[test]
fn csv_fields_are_quoted_and_formula_guarded() {
    assert_eq!(csv_field("plain", true), "plain");
    assert_eq!(csv_field("a,b", true), "\"a,b\"");
    assert_eq!(csv_field("say \"hi\"", true), "\"say \"\"hi\"\"\"");
    assert_eq!(csv_field("=cmd()", true), "'=cmd()");
    assert_eq!(csv_field("-0.5", false), "-0.5");
}

#[test]
fn revisions_grow_through_a_trial_life() {
    let mut t = crate::model::test_trial(0, Params::new(), TrialState::Pending);
    let mut seen = vec![revision(&t)];
    t.state = TrialState::Running;
    t.lease_token = 7;
    seen.push(revision(&t));
    t.intermediate.insert(1, Metrics::new());
    seen.push(revision(&t));
    t.state = TrialState::Pending; // lease lost, requeued
    t.archive_attempt();
    seen.push(revision(&t));
    t.state = TrialState::Running;
    t.lease_token = 9;
    seen.push(revision(&t));
    t.state = TrialState::Completed;
    seen.push(revision(&t));
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
}

fn evaluated(number: u32, interval: Option<(f64, f64)>) -> Trial {
    let mut t = crate::model::test_trial(number, Params::new(), TrialState::Completed);
    let predictions = bertsweep_testkit::dev_predictions(0.8, 2, 30, number);
    let mut e = crate::evaluation::evaluate(predictions, "eval_accuracy", 0).unwrap();
    e.interval = interval.map(|(low, high)| Interval { low, high });
    t.evaluation = Some(Arc::new(e));
    t
}

#[test]
fn rows_say_whether_their_interval_overlaps_the_bests() {
    let best = evaluated(0, Some((0.80, 0.90)));
    let best = BestInterval { number: best.number, interval: interval_of(&best) };
    let spec = crate::spec::parse_study(&bertsweep_testkit::random_study("r", 4, 1)).unwrap();
    let row = |t: &Trial| serde_json::to_value(TrialRow::new(&spec, t).compared(Some(&best), t)).unwrap();
    let itself = row(&evaluated(0, Some((0.80, 0.90))));
    assert_eq!((itself["ci"].clone(), itself["overlaps_best"].clone()), (json!([0.80, 0.90]), json!(false)));
    assert_eq!(row(&evaluated(1, Some((0.85, 0.95))))["overlaps_best"], json!(true));
    assert_eq!(row(&evaluated(2, Some((0.90, 0.91))))["overlaps_best"], json!(true), "touching ends share a point");
    assert_eq!(row(&evaluated(3, Some((0.70, 0.79))))["overlaps_best"], json!(false));
    let none = row(&evaluated(4, None));
    assert_eq!((none["ci"].clone(), none["overlaps_best"].clone()), (Value::Null, json!(false)));
    let plain = crate::model::test_trial(5, Params::new(), TrialState::Completed);
    assert_eq!(row(&plain)["overlaps_best"], json!(false));
    let no_best_interval = BestInterval { number: 0, interval: None };
    let t = evaluated(1, Some((0.85, 0.95)));
    assert!(!BestInterval::overlapped_by(Some(&no_best_interval), &t));
    assert!(!BestInterval::overlapped_by(None, &t));
    // Live events carry no view of the best: the field is left out.
    assert!(serde_json::to_value(TrialRow::new(&spec, &t)).unwrap().get("overlaps_best").is_none());
}

#[test]
fn rows_carry_the_objectives_test_score_only() {
    let spec = crate::spec::parse_study(&bertsweep_testkit::random_study("r", 4, 1)).unwrap();
    let row = |t: &Trial| serde_json::to_value(TrialRow::new(&spec, t)).unwrap();
    let mut t = crate::model::test_trial(0, Params::new(), TrialState::Completed);
    assert_eq!(row(&t)["test_value"], Value::Null, "no test scores");
    t.test_metrics = [("test_accuracy", 0.81), ("test_loss", 0.4)].map(|(k, v)| (k.to_string(), v)).into();
    assert_eq!(row(&t)["test_value"], json!(0.81), "eval_accuracy's counterpart");
    t.test_metrics.remove("test_accuracy");
    assert_eq!(row(&t)["test_value"], Value::Null, "scored, but not on the objective's metric");
    assert_eq!(test_counterpart("eval_f1").as_deref(), Some("test_f1"));
    assert_eq!(test_counterpart("accuracy"), None, "only eval_ metrics have a test counterpart");
}

#[test]
fn evaluations_show_per_class_scores_and_a_named_confusion_matrix() {
    let t = evaluated(1, Some((0.7, 0.9)));
    let e = t.evaluation.as_deref().unwrap();
    let v = evaluation_json("eval_accuracy", e);
    assert_eq!((v["epoch"].as_u64(), v["examples"].as_u64(), v["class_count"].as_u64()), (Some(2), Some(30), Some(3)));
    assert_eq!(v["ci"], json!([0.7, 0.9]));
    let per_class = v["per_class"].as_array().unwrap();
    assert_eq!(
        per_class.iter().map(|c| c["name"].as_str().unwrap()).collect::<Vec<_>>(),
        bertsweep_testkit::DEV_CLASSES
    );
    assert_eq!(per_class.iter().map(|c| c["support"].as_u64().unwrap()).sum::<u64>(), 30);
    assert_eq!(v["confusion"]["classes"], json!(bertsweep_testkit::DEV_CLASSES));
    let matrix = v["confusion"]["matrix"].as_array().unwrap();
    assert_eq!(matrix.len(), 3);
    let flat: Vec<u64> =
        matrix.iter().flat_map(|r| r.as_array().unwrap().iter().map(|c| c.as_u64().unwrap())).collect();
    assert_eq!(flat, e.predictions.confusion_matrix(), "rows are true classes, columns predicted");
    for (k, row) in matrix.iter().enumerate() {
        let total: u64 = row.as_array().unwrap().iter().map(|c| c.as_u64().unwrap()).sum();
        assert_eq!(total, per_class[k]["support"].as_u64().unwrap(), "row {k} sums to its support");
    }
    // Past 32 classes there is no matrix (and past 64 no per-class rows).
    let wide = crate::evaluation::evaluate(pb_predictions(40), "eval_accuracy", 0).unwrap();
    let v = evaluation_json("eval_accuracy", &wide);
    assert!(v["confusion"].is_null());
    assert_eq!(v["per_class"].as_array().unwrap().len(), 40);
    assert_eq!(v["per_class"][39]["name"], "39", "unnamed classes go by their id");
}

fn pb_predictions(classes: u32) -> bertsweep_proto::v1::DevPredictions {
    let n = classes as usize;
    let mut probabilities = vec![0.0f32; n * n];
    (0..n).for_each(|i| probabilities[i * n + i] = 1.0);
    bertsweep_proto::v1::DevPredictions {
        epoch: 1,
        classes,
        labels: (0..classes).collect(),
        probabilities,
        class_weights: vec![],
        class_names: vec![],
    }
}

#[test]
fn model_file_names_are_percent_encoded() {
    assert_eq!(percent_encode("model.safetensors"), "model.safetensors");
    assert_eq!(percent_encode("a b#?"), "a%20b%23%3F");
}
