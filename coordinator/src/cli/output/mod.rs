//! Output formats: aligned tables for people; json and csv that scripts can rely on.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Result;
use bertsweep_proto::v1 as pb;
use serde_json::{json, Map, Value};

use super::{BestFormat, Format};
use crate::params::ParamValue;

mod best_trial;
mod study_list;
mod trial_list;

pub use best_trial::*;
pub use study_list::*;
pub use trial_list::*;

fn param_value(v: &pb::ParamValue) -> ParamValue {
    match &v.kind {
        Some(pb::param_value::Kind::IntValue(i)) => ParamValue::Int(*i),
        Some(pb::param_value::Kind::FloatValue(f)) => ParamValue::Float(*f),
        Some(pb::param_value::Kind::StringValue(s)) => ParamValue::Str(s.clone()),
        None => ParamValue::Str(String::new()),
    }
}

/// A trial's parameters as domain values (for computations over trials on the CLI side).
pub fn params_of(t: &pb::Trial) -> crate::params::Params {
    params_sorted(t)
}

fn params_sorted(t: &pb::Trial) -> BTreeMap<String, ParamValue> {
    t.params.iter().map(|(k, v)| (k.clone(), param_value(v))).collect()
}

fn trial_state(code: i32) -> &'static str {
    match pb::TrialState::try_from(code).unwrap_or(pb::TrialState::Unspecified) {
        pb::TrialState::Pending => "PENDING",
        pb::TrialState::Running => "RUNNING",
        pb::TrialState::Completed => "COMPLETED",
        pb::TrialState::Pruned => "PRUNED",
        pb::TrialState::Failed => "FAILED",
        pb::TrialState::Stopped => "STOPPED",
        pb::TrialState::Paused => "PAUSED",
        pb::TrialState::Unspecified => "UNKNOWN",
    }
}

fn study_state(code: i32) -> &'static str {
    match pb::StudyState::try_from(code).unwrap_or(pb::StudyState::Unspecified) {
        pb::StudyState::Running => "RUNNING",
        pb::StudyState::Completed => "COMPLETED",
        pb::StudyState::Failed => "FAILED",
        pb::StudyState::Stopped => "STOPPED",
        pb::StudyState::Unspecified => "UNKNOWN",
    }
}

fn fmt_value(v: Option<f64>) -> String {
    v.map(|x| format!("{x:.4}")).unwrap_or_else(|| "-".into())
}

/// A trial's peak device memory for people: "-" when none was reported.
fn fmt_peak(bytes: u64) -> String {
    if bytes == 0 {
        "-".into()
    } else {
        bertsweep_transfer::human_bytes(bytes)
    }
}

fn last_epoch(t: &pb::Trial) -> u32 {
    t.intermediate.iter().map(|e| e.epoch).max().unwrap_or(0)
}

/// Left-aligned columns separated by two spaces, header first.
fn table(header: &[String], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let padded: Vec<String> = cells.iter().enumerate().map(|(i, c)| format!("{c:<w$}", w = widths[i])).collect();
        padded.join("  ").trim_end().to_string() + "\n"
    };
    let mut out = line(header);
    for row in rows {
        out.push_str(&line(row));
    }
    out
}

fn csv_cell(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn csv_line(cells: &[String]) -> String {
    cells.iter().map(|c| csv_cell(c)).collect::<Vec<_>>().join(",") + "\n"
}

fn param_json(v: &ParamValue) -> Value {
    match v {
        ParamValue::Int(i) => json!(i),
        ParamValue::Float(f) => json!(f),
        ParamValue::Str(s) => json!(s),
    }
}

fn metrics_json(m: &std::collections::HashMap<String, f64>) -> Value {
    let sorted: BTreeMap<_, _> = m.iter().collect();
    json!(sorted)
}

/// Trial number → its configuration, built once per listing (studies reach 100,000 trials).
struct ConfigIndex<'a>(std::collections::HashMap<u32, &'a pb::Configuration>);

impl<'a> ConfigIndex<'a> {
    fn new(configs: &'a [pb::Configuration]) -> Self {
        ConfigIndex(configs.iter().flat_map(|c| c.trials.iter().map(move |&n| (n, c))).collect())
    }

    /// The configuration a trial belongs to, if the listing has one.
    fn of(&self, number: u32) -> Option<&'a pb::Configuration> {
        self.0.get(&number).copied()
    }
}

fn config_json(c: Option<&pb::Configuration>) -> Value {
    match c {
        Some(c) => json!({"mean": c.mean, "std": c.std, "completed": c.completed, "trials": c.trials}),
        None => Value::Null,
    }
}

/// `bertsweep importance`: one row per searched parameter, most important first.
pub fn importances(list: &[crate::importance::ParamImportance], format: Format) -> Result<String> {
    Ok(match format {
        Format::Json => {
            let rows: Vec<Value> = list
                .iter()
                .map(|p| json!({"parameter": p.name, "importance": p.importance, "stddev": p.stddev}))
                .collect();
            serde_json::to_string_pretty(&rows)? + "\n"
        }
        Format::Csv => {
            let mut out = csv_line(&["parameter".into(), "importance".into(), "stddev".into()]);
            for p in list {
                out.push_str(&csv_line(&[p.name.clone(), p.importance.to_string(), p.stddev.to_string()]));
            }
            out
        }
        Format::Table => {
            let header = ["parameter".to_string(), "importance".to_string(), String::new()];
            let rows: Vec<Vec<String>> = list
                .iter()
                .map(|p| {
                    let bar = "#".repeat((p.importance * 40.0).round().clamp(0.0, 40.0) as usize);
                    vec![p.name.clone(), format!("{:.3} ± {:.3}", p.importance, p.stddev), bar]
                })
                .collect();
            table(&header, &rows)
        }
    })
}
