//! The dashboard's pages in a real headless Chromium against a real `bertsweep serve`
//! process, following the scripted sweep of `common/dashboard_sweep.rs` live: every chart drawn, the
//! table virtualised, tied marks, trial pages, no console errors.

mod common;

use bertsweep_testkit::browser::Browser;
use bertsweep_testkit::ServeProcess;
use common::dashboard_sweep::*;
use serde_json::Value;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_render_in_chromium_and_follow_the_sweep_live() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, TOKEN).unwrap();
    let serve = ServeProcess::start(
        env!("CARGO_BIN_EXE_bertsweep"),
        &dir.path().join("b.db"),
        &["--http", "127.0.0.1:0", "--token-file", token_file.to_str().unwrap()],
    )
    .unwrap();
    let base = serve.dashboard.clone().expect("the banner names the dashboard");
    let mut sweep = sweep(&serve.url, Some(TOKEN)).await;
    let shots = screenshots();

    let browser = Browser::launch(1400, 2200).expect("headless Chromium and chromedriver");
    // Without the token: the login form, no data.
    let study_url = format!("{base}studies/{STUDY}");
    browser.goto(&study_url).unwrap();
    let text = browser.eval("return document.body.innerText;", vec![]).unwrap();
    assert!(text.as_str().unwrap().contains("Log in") && !text.as_str().unwrap().contains("COMPLETED"));
    assert_eq!(browser.eval("return !!document.querySelector('#login-form');", vec![]).unwrap(), Value::Bool(true));
    browser.screenshot(&shots.join("login.png")).unwrap();
    // A wrong token: the form again, saying so.
    let submit = "document.querySelector('#token').value = arguments[0]; document.querySelector('#login-form').submit(); return true;";
    browser.eval(submit, vec![Value::from("wrong-token")]).unwrap();
    browser
        .wait_for(
            "the wrong-token message",
            "return !!document.querySelector('#login-error');",
            Duration::from_secs(10),
        )
        .unwrap();
    // The right one: on to the study page.
    browser.eval(submit, vec![Value::from(TOKEN)]).unwrap();
    browser.wait_for("the study page", READY, Duration::from_secs(30)).unwrap();
    assert_eq!(browser.url().unwrap(), study_url);
    // The two refused documents (the study before login, the wrong token) are logged as
    // failed loads with their 401; nothing else may be.
    let refused = browser.console_errors().unwrap();
    assert!(refused.len() == 2 && refused.iter().all(|e| e.contains("status of 401")), "{refused:#?}");
    assert_no_console_errors(&browser, "study");

    let drawn = series(&browser);
    let searched = 2; // learning_rate, per_device_train_batch_size (seed and epochs are not searched)
    assert_eq!(drawn.get("history"), Some(&2), "{drawn:?}");
    assert_eq!(drawn.get("curves"), Some(&8), "6 completed, 1 pruned, 1 running: {drawn:?}");
    assert_eq!(drawn.get("parallel"), Some(&7), "trials with a value: {drawn:?}");
    assert_eq!(drawn.get("slice"), Some(&searched), "{drawn:?}");
    assert_eq!(drawn.get("importance"), Some(&searched), "{drawn:?}");
    let configs_with_points = browser
        .eval("return fetch('/api/studies/' + arguments[0] + '/configurations').then(r => r.json()).then(j => j.configurations.filter(c => c.points.length > 0).length);", vec![Value::from(STUDY)])
        .unwrap();
    assert_eq!(drawn.get("seeds").copied(), configs_with_points.as_u64(), "{drawn:?}");
    let rows =
        browser.eval("return document.querySelectorAll('#trials-table tr[data-trial]').length;", vec![]).unwrap();
    assert_eq!(rows.as_u64(), Some(8));
    // Peak device memory, in binary units: every trial reported one (1 GB + 100 MB per example
    // of batch: about 2.4 or 3.9 GiB).
    let headers = browser
        .eval("return Array.from(document.querySelectorAll('#trials-table th')).map(th => th.textContent);", vec![])
        .unwrap();
    assert!(headers.as_array().unwrap().iter().any(|h| h.as_str().unwrap().contains("Peak memory")), "{headers}");
    let first_row =
        browser.eval("return document.querySelector('#trials-table tr[data-trial=\"0\"]').innerText;", vec![]).unwrap();
    assert!(first_row.as_str().unwrap().contains(" GiB"), "{first_row}");
    // The objective's 95% interval has its own column, and the trials whose interval overlaps
    // the best's (which may be tied with it) are marked, as the API computes it.
    assert!(headers.as_array().unwrap().iter().any(|h| h.as_str().unwrap().contains("95% CI")), "{headers}");
    let tied = browser.eval(&format!("return ({TIED_ROWS})(arguments[0]);"), vec![Value::from(STUDY)]).unwrap();
    assert_eq!(tied["same"], true, "{tied}");
    assert!(!tied["expected"].as_array().unwrap().is_empty(), "some trial may be tied with the best: {tied}");
    assert_eq!(tied["badges"].as_u64(), Some(tied["shown"].as_array().unwrap().len() as u64), "{tied}");
    assert_eq!(tied["cis"].as_u64(), Some(6), "every completed trial's interval: {tied}");
    let best_row = browser
        .eval("return document.querySelector('#trials-table tr.is-best').dataset.overlapsBest || '';", vec![])
        .unwrap();
    assert_eq!(best_row, "", "the best is not marked as tied with itself");
    // The seed spread marks configurations the same way (any seed's interval overlapping the
    // best trial's).
    let configs_tied = browser
        .eval("return fetch('/api/studies/' + arguments[0] + '/configurations').then(r => r.json()).then(j => j.configurations.filter(c => c.overlaps_best).length);", vec![Value::from(STUDY)])
        .unwrap();
    let marked = browser
        .eval("return Number(document.querySelector('[data-chart=\"seeds\"]').dataset.overlapping);", vec![])
        .unwrap();
    assert_eq!(marked, configs_tied);
    let note = browser.eval("return document.querySelector('#panel-seeds .panel-note').textContent;", vec![]).unwrap();
    if configs_tied.as_u64() > Some(0) {
        assert!(note.as_str().unwrap().contains("overlap the best trial's"), "{note}");
    }
    // The held-out test score of the objective: its own column beside Value, filled for the
    // trials that have one; and beside the best value in the header when the best has one.
    let labels: Vec<String> = headers
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h.as_str().unwrap().trim_end_matches(['▲', '▼']).to_string())
        .collect();
    let value_at = labels.iter().position(|l| l == "Value").expect("a Value column");
    assert_eq!(labels.get(value_at + 1).map(String::as_str), Some("Test"), "{labels:?}");
    let api_rows = browser
        .eval(
            "return fetch('/api/studies/' + arguments[0] + '/trials').then(r => r.json()).then(j => j.trials);",
            vec![Value::from(STUDY)],
        )
        .unwrap();
    for t in api_rows.as_array().unwrap() {
        let shown = browser
            .eval(
                "const c = document.querySelector(`#trials-table tr[data-trial=\"${arguments[0]}\"] td.test`); return c ? c.textContent : null;",
                vec![t["number"].clone()],
            )
            .unwrap();
        match t["test_value"].as_f64() {
            Some(test) => assert!((shown.as_str().unwrap().parse::<f64>().unwrap() - test).abs() < 1e-4, "{shown} {t}"),
            None => assert_eq!(shown, "—", "{t}"),
        }
    }
    let tested_rows = api_rows.as_array().unwrap().iter().filter(|t| t["test_value"].is_f64()).count();
    assert_eq!(tested_rows, TESTED as usize, "{api_rows}");
    let best_now = browser
        .eval(
            "return fetch('/api/studies/' + arguments[0]).then(r => r.json()).then(j => j.study.best_trial);",
            vec![Value::from(STUDY)],
        )
        .unwrap();
    let best_test = browser
        .eval("const e = document.querySelector('#best-test-value'); return e ? e.textContent : null;", vec![])
        .unwrap();
    assert_eq!(best_test.is_string(), best_now.as_u64().unwrap() < u64::from(TESTED), "{best_test} {best_now}");
    if let Some(text) = best_test.as_str() {
        // The gap is the best trial's own (not its configuration's mean's).
        assert!(text.contains("test 0.") && text.ends_with("(dev − test +0.0200)"), "{text}");
    }
    browser.screenshot(&shots.join("study.png")).unwrap();

    // A trial that completes while the page is open shows up without a reload.
    let running = sweep.running.clone();
    let row_state = format!(
        "const r = document.querySelector('#trials-table tr[data-trial=\"{}\"]'); return r ? r.innerText : '';",
        running.number
    );
    assert!(browser.eval(&row_state, vec![]).unwrap().as_str().unwrap().contains("RUNNING"));
    for epoch in 2..=3 {
        // Well above the median, so the rule lets it finish.
        assert!(!sweep.worker.report(&running, epoch, 0.95).await);
    }
    sweep.worker.complete(&running, 0.95).await;
    browser
        .wait_for(
            "the completed trial in the table",
            &format!(
                "const r = document.querySelector('#trials-table tr[data-trial=\"{}\"]'); return !!r && r.innerText.includes('COMPLETED');",
                running.number
            ),
            Duration::from_secs(20),
        )
        .unwrap();
    browser
        .wait_for(
            "the history to gain a point",
            "return Number(document.body.dataset.events || 0) > 0;",
            Duration::from_secs(5),
        )
        .unwrap();
    assert_eq!(series(&browser).get("parallel"), Some(&8), "the new value is drawn");
    // The new best has a test score: the header shows it beside the dev value, live.
    let best_test = browser
        .wait_for(
            "the new best's test value in the header",
            "const e = document.querySelector('#best-test-value'); return !!e && e.textContent.startsWith('test 0.9300') && e.closest('dd').textContent;",
            Duration::from_secs(10),
        )
        .unwrap();
    let best_test = best_test.as_str().unwrap();
    assert!(
        best_test.starts_with("0.9500 (trial ") && best_test.ends_with("test 0.9300 (dev − test +0.0200)"),
        "{best_test}"
    );
    // The marks follow the new trial (which may be the new best) without a reload.
    browser
        .wait_for(
            "the tied marks to follow the live change",
            &format!("return ({TIED_ROWS})('{STUDY}').then(x => x.same && x.cis === 7);"),
            Duration::from_secs(10),
        )
        .unwrap();
    assert_no_console_errors(&browser, "study (live)");

    // The trial page: every metric per epoch.
    browser.goto(&format!("{base}studies/{STUDY}/trials/0")).unwrap();
    browser.wait_for("the trial page", READY, Duration::from_secs(20)).unwrap();
    assert_eq!(series(&browser).get("metrics"), Some(&3), "eval_accuracy, eval_loss, train_loss");
    let peak = browser
        .eval("const e = document.querySelector('#trial-peak-memory'); return e ? e.textContent : '';", vec![])
        .unwrap();
    assert!(peak.as_str().unwrap().contains("Peak memory") && peak.as_str().unwrap().contains(" GiB"), "{peak}");
    // Its dev-set evaluation: the interval beside the value, per-class scores and the
    // confusion matrix, class names as text (one is markup).
    let detail = browser
        .eval(
            "return fetch('/api/studies/' + arguments[0] + '/trials/0').then(r => r.json());",
            vec![Value::from(STUDY)],
        )
        .unwrap();
    let ci =
        browser.eval("const e = document.querySelector('#trial-ci'); return e ? e.textContent : '';", vec![]).unwrap();
    assert!(ci.as_str().unwrap().contains("95% CI") && ci.as_str().unwrap().contains(" – "), "{ci}");
    let tied_badge = browser.eval("return !!document.querySelector('.subtitle .badge.tied');", vec![]).unwrap();
    assert_eq!(tied_badge, detail["overlaps_best"], "the trial page marks a possible tie as the API says");
    let per_class = browser
        .eval(
            "return Array.from(document.querySelectorAll('#trial-per-class tbody tr')).map(r => Array.from(r.children).map(c => c.textContent));",
            vec![],
        )
        .unwrap();
    let per_class: Vec<Vec<String>> = serde_json::from_value(per_class).unwrap();
    assert_eq!(per_class.iter().map(|r| r[0].as_str()).collect::<Vec<_>>(), ["negative", MARKUP_CLASS, "positive"]);
    assert_eq!(per_class.iter().map(|r| r[4].parse::<u64>().unwrap()).sum::<u64>(), 200, "{per_class:?}");
    for row in &per_class {
        for score in &row[1..4] {
            assert!((0.0..=1.0).contains(&score.parse::<f64>().unwrap()), "{row:?}");
        }
    }
    // Dev and held-out test side by side: one row per metric scored on both, the gap
    // labelled as selection optimism, and the test set never used to choose.
    let dev_test = browser
        .eval(
            "return Array.from(document.querySelectorAll('#trial-dev-test tbody tr')).map(r => Array.from(r.children).map(c => c.textContent));",
            vec![],
        )
        .unwrap();
    let dev_test: Vec<Vec<String>> = serde_json::from_value(dev_test).unwrap();
    let test = &detail["test_metrics"];
    let dev = &detail["metrics"];
    assert_eq!(dev_test.iter().map(|r| r[0].as_str()).collect::<Vec<_>>(), ["accuracy", "loss"], "{dev_test:?}");
    for row in &dev_test {
        let (d, t) =
            (dev[format!("eval_{}", row[0])].as_f64().unwrap(), test[format!("test_{}", row[0])].as_f64().unwrap());
        let shown: Vec<f64> = row[1..].iter().map(|c| c.parse::<f64>().unwrap()).collect();
        assert!(
            (shown[0] - d).abs() < 1e-4 && (shown[1] - t).abs() < 1e-4 && (shown[2] - (d - t)).abs() < 1e-4,
            "{row:?}"
        );
    }
    assert_eq!(
        (dev_test[0][3].as_str(), dev_test[1][3].as_str()),
        ("+0.0200", "-0.0200"),
        "scores lower, losses higher on test"
    );
    let labels = browser
        .eval(
            "const t = document.querySelector('#trial-dev-test'); return [t.querySelector('caption').textContent, Array.from(t.querySelectorAll('thead th')).pop().textContent, document.querySelector('#trial-dev-test-note').textContent];",
            vec![],
        )
        .unwrap();
    assert!(labels[0].as_str().unwrap().contains("selection optimism (dev − test)"), "{labels}");
    assert_eq!(labels[1], "selection optimism (dev − test)");
    assert_eq!(labels[2], "scored once on the held-out test set; never used to choose");
    let markup = browser.eval("return document.querySelectorAll('#evaluation-panel i').length;", vec![]).unwrap();
    assert_eq!(markup, 0, "class names are text, never markup");
    let cells = browser
        .eval(
            "return Array.from(document.querySelectorAll('#trial-confusion td.cm-cell')).map(c => [Number(c.dataset.true), Number(c.dataset.predicted), Number(c.textContent), getComputedStyle(c).backgroundColor]);",
            vec![],
        )
        .unwrap();
    let cells: Vec<(usize, usize, u64, String)> = serde_json::from_value(cells).unwrap();
    assert_eq!(cells.len(), 9, "3 true × 3 predicted classes");
    let matrix: Vec<Vec<u64>> = serde_json::from_value(detail["evaluation"]["confusion"]["matrix"].clone()).unwrap();
    for (t, p, count, shade) in &cells {
        assert_eq!(*count, matrix[*t][*p], "cell ({t}, {p})");
        let row: u64 = matrix[*t].iter().sum();
        let alpha: f64 = shade.rsplit(',').next().unwrap().trim_end_matches(')').trim().parse().unwrap_or(1.0);
        let expected = if *count == 0 { 0.0 } else { 0.85 * *count as f64 / row as f64 };
        assert!((alpha - expected).abs() < 0.01, "cell ({t}, {p}): {shade}, {count} of {row}");
    }
    let right: u64 = cells.iter().filter(|c| c.0 == c.1).map(|c| c.2).sum();
    let value = detail["value"].as_f64().unwrap();
    assert_eq!(right, (value * 200.0).round() as u64, "the diagonal holds the trial's accuracy");
    let headers = browser
        .eval(
            "return Array.from(document.querySelectorAll('#trial-confusion thead th')).map(th => th.textContent);",
            vec![],
        )
        .unwrap();
    assert_eq!(
        headers.as_array().unwrap()[1..4],
        [Value::from("negative"), Value::from(MARKUP_CLASS), Value::from("positive")]
    );
    browser
        .wait_for(
            "the trial page's live stream to open",
            "return document.body.dataset.live === '1';",
            Duration::from_secs(10),
        )
        .unwrap();
    assert_no_console_errors(&browser, "trial");
    browser.screenshot(&shots.join("trial.png")).unwrap();

    // The studies page.
    browser.goto(&base).unwrap();
    browser
        .wait_for(
            "the studies page",
            &format!("return document.body.innerText.includes('{STUDY}');"),
            Duration::from_secs(20),
        )
        .unwrap();
    assert_no_console_errors(&browser, "studies");
    browser.screenshot(&shots.join("studies.png")).unwrap();

    // An unknown study: a clear 404 page.
    browser.goto(&format!("{base}studies/no-such-study")).unwrap();
    let message =
        browser.eval("const e = document.querySelector('#not-found'); return e ? e.innerText : '';", vec![]).unwrap();
    assert!(message.as_str().unwrap().contains("There is no study named \"no-such-study\""), "{message}");
    browser.screenshot(&shots.join("not-found.png")).unwrap();
    // The 404 status itself shows as a console error for the document; nothing else may.
    let errors: Vec<String> = browser.console_errors().unwrap().into_iter().filter(|e| !e.contains("404")).collect();
    assert!(errors.is_empty(), "{errors:?}");
}
