//! The dashboard at scale: a 10,000-trial study (4 epochs of 8 metrics each, every trial
//! completed) served by the real `bertsweep serve --http`, measured two ways:
//! - API latency over HTTP/1.1 (median and worst of several runs): the study, every trial page
//!   of 2,000, the configurations, importance (first call computes it, later calls hit the
//!   cache), the CSV, and the first event of a live stream;
//! - the study page in headless Chromium, from navigation to every chart and the table drawn
//!   (`data-render-ms`, the page's own clock), median of 3 loads in fresh tabs' worth of state.
//!
//! Target: the study page draws in under 2 s. Prints one JSON line.
//! Run: `make bench-dashboard` (TRIALS overrides the size).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use bertsweep_testkit::browser::Browser;
use bertsweep_testkit::{populate, Population, ServeProcess};
use serde_json::json;

fn env_or(name: &str, default: u32) -> u32 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// GETs `path`; returns (milliseconds to the whole reply, body bytes).
fn get(addr: SocketAddr, path: &str, first_byte_only: bool) -> (f64, usize) {
    let t0 = Instant::now();
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    if first_byte_only {
        let mut buf = [0u8; 16384];
        loop {
            let n = stream.read(&mut buf).unwrap();
            raw.extend_from_slice(&buf[..n]);
            if n == 0 || String::from_utf8_lossy(&raw).contains("event: study") {
                break;
            }
        }
    } else {
        stream.read_to_end(&mut raw).unwrap();
    }
    let ms = t0.elapsed().as_secs_f64() * 1000.0;
    assert!(raw.starts_with(b"HTTP/1.1 200"), "{path}: {}", String::from_utf8_lossy(&raw[..raw.len().min(300)]));
    (ms, raw.len())
}

fn round(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// Median and maximum of `runs` timings of `f`.
fn timings(runs: usize, mut f: impl FnMut() -> f64) -> serde_json::Value {
    let mut all: Vec<f64> = (0..runs).map(|_| f()).collect();
    all.sort_by(f64::total_cmp);
    json!({ "median_ms": round(all[all.len() / 2]), "max_ms": round(*all.last().unwrap()) })
}

#[tokio::main]
async fn main() {
    let trials = env_or("TRIALS", 10_000);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("dashboard.db");
    populate(&format!("sqlite://{}", db.display()), Population { small_studies: 0, big_trials: trials, epochs: 4 })
        .await
        .unwrap();
    let serve = ServeProcess::start(env!("CARGO_BIN_EXE_bertsweep"), &db, &["--http", "127.0.0.1:0"]).unwrap();
    let base = serve.dashboard.clone().unwrap();
    let addr: SocketAddr = base.trim_start_matches("http://").trim_end_matches('/').parse().unwrap();

    let study = timings(5, || get(addr, "/api/studies/big", false).0);
    let mut page_bytes = 0;
    let all_pages = timings(5, || {
        let mut total = 0.0;
        page_bytes = 0;
        for from in (0..trials).step_by(2000) {
            let (ms, bytes) = get(addr, &format!("/api/studies/big/trials?from={from}&limit=2000"), false);
            total += ms;
            page_bytes = page_bytes.max(bytes);
        }
        total
    });
    let configurations = timings(5, || get(addr, "/api/studies/big/configurations", false).0);
    let importance_first = round(get(addr, "/api/studies/big/importance", false).0);
    let importance_cached = timings(5, || get(addr, "/api/studies/big/importance", false).0);
    let csv = timings(3, || get(addr, "/api/studies/big/trials.csv", false).0);
    let events = timings(5, || get(addr, "/api/studies/big/events", true).0);

    let browser = Browser::launch(1400, 2200)
        .expect("headless Chromium and chromedriver (apt-get install chromium chromium-driver)");
    let mut loads = Vec::new();
    for _ in 0..3 {
        browser.goto("about:blank").unwrap();
        browser.goto(&format!("{base}studies/big")).unwrap();
        let ms = browser
            .wait_for(
                "the study page",
                "return document.body.dataset.ready === '1' && Number(document.body.dataset.renderMs);",
                Duration::from_secs(60),
            )
            .unwrap();
        loads.push(ms.as_f64().unwrap());
    }
    let errors = browser.console_errors().unwrap();
    assert!(errors.is_empty(), "console errors: {errors:?}");
    let rows =
        browser.eval("return document.querySelectorAll('#trials-table tr[data-trial]').length;", vec![]).unwrap();
    loads.sort_by(f64::total_cmp);
    let line = json!({
        "bench": "dashboard",
        "trials": trials,
        "page_load_ms": { "median": round(loads[1]), "all": loads.iter().map(|x| round(*x)).collect::<Vec<_>>(), "target": 2000 },
        "table_rows_in_dom": rows,
        "api": {
            "study": study,
            "all_trial_pages": all_pages,
            "largest_trial_page_bytes": page_bytes,
            "configurations": configurations,
            "importance_first_ms": importance_first,
            "importance_cached": importance_cached,
            "csv": csv,
            "events_first_event": events,
        },
        "server_rss_mib": round(serve.rss_mib()),
    });
    println!("{line}");
}
