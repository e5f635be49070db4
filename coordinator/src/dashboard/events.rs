//! `GET /api/studies/{name}/events`: server-sent events for one open page, fed by the same
//! committed-change broadcast as WatchStudy. A trial change becomes a `trial` event (its row)
//! followed by a `study` event (counts and best); a page that fell behind gets `resync` and
//! refetches; the study's end is an `end` event, after which the stream closes (the page
//! refetches once more then: the registry can be a change ahead of the broadcast).
//!
//! Each stream costs one task and a small queue; a client that stops reading stalls only its
//! own task, which then falls behind the broadcast and is told to resync instead of queueing.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use tokio::sync::{broadcast, mpsc, OwnedSemaphorePermit};
use tokio_stream::wrappers::ReceiverStream;

use super::api::{check_name, ApiError, StudyRow, TrialRow};
use super::{AppState, MAX_LIVE_STREAMS};
use crate::model::StudyState;
use crate::store::CommittedChange;

/// Events queued for one page before its task waits for the browser.
const QUEUE: usize = 64;

/// A comment line this often keeps proxies from closing an idle stream.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// Opens the stream (404 for an unknown study, 503 when too many are open).
pub async fn stream(
    State(app): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    check_name(&name)?;
    app.shared.lock().study(&name)?;
    let permit = app.streams.clone().try_acquire_owned().map_err(|_| {
        ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{MAX_LIVE_STREAMS} live pages are open on this coordinator; close some and reload"),
        )
    })?;
    // Subscribed before the first event is read, so nothing committed after this is missed.
    let changes = app.shared.events.subscribe();
    let (tx, rx) = mpsc::channel(QUEUE);
    tokio::spawn(pump(app, name, changes, tx, permit));
    Ok(Sse::new(ReceiverStream::new(rx)).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)))
}

type Sink = mpsc::Sender<Result<Event, Infallible>>;

fn event(kind: &str, data: &impl serde::Serialize) -> Option<Event> {
    Event::default().event(kind).json_data(data).ok()
}

/// The study's row as an event of `kind`, and whether the study is still running.
fn study_event(app: &AppState, name: &str, kind: &str) -> Option<(Event, bool)> {
    let registry = app.shared.lock();
    let running = registry.study_state(name).ok()? == StudyState::Running;
    let row = StudyRow::read(&registry, name).ok()?;
    Some((event(kind, &row)?, running))
}

async fn send(tx: &Sink, event: Event) -> bool {
    tx.send(Ok(event)).await.is_ok()
}

/// Forwards the study's changes until it ends, the page goes, or the coordinator stops.
async fn pump(
    app: Arc<AppState>,
    name: String,
    mut changes: broadcast::Receiver<CommittedChange>,
    tx: Sink,
    _permit: OwnedSemaphorePermit,
) {
    let mut stop = app.stop.clone();
    // The first event says the stream is live and where the study stands.
    let Some((first, running)) = study_event(&app, &name, "study") else { return };
    if !send(&tx, first).await {
        return;
    }
    if !running {
        if let Some((end, _)) = study_event(&app, &name, "end") {
            send(&tx, end).await;
        }
        return;
    }
    loop {
        let change = tokio::select! {
            change = changes.recv() => change,
            _ = super::stopped(&mut stop) => return,
            _ = tx.closed() => return,
        };
        match change {
            Ok(CommittedChange::Trial { trial, .. }) if trial.study == name => {
                let row = match app.shared.lock().with_trials(&name, |spec, _| TrialRow::new(spec, &trial)) {
                    Ok(row) => row,
                    Err(_) => return,
                };
                let Some(trial_event) = event("trial", &row) else { continue };
                if !send(&tx, trial_event).await {
                    return;
                }
                let Some((study, _)) = study_event(&app, &name, "study") else { return };
                if !send(&tx, study).await {
                    return;
                }
            }
            Ok(CommittedChange::Study(record)) if record.name == name && record.state != StudyState::Running => {
                if let Some((end, _)) = study_event(&app, &name, "end") {
                    send(&tx, end).await;
                }
                return;
            }
            Ok(_) => {}
            Err(broadcast::error::RecvError::Lagged(skipped)) => {
                crate::store::warn_lagged(skipped);
                let Some(resync) = event("resync", &serde_json::json!({})) else { return };
                if !send(&tx, resync).await {
                    return;
                }
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}
