//! The slot process's side of [`super::protocol`]: requests to the supervisor over stdout,
//! answers and wakes from stdin, and "stop" when stdin closes (the supervisor is stopping, or
//! died: a slot never trains on without its supervisor).

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::sync::{mpsc, watch, Notify};
use tracing::warn;

use super::protocol::{decode, encode, ToSlot, ToSupervisor, MAX_LINE};

/// How often the slot tells its supervisor how far it got.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// What the supervisor decided about a trial.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Train it.
    Admit,
    /// Hand it back and wait for memory to be freed on the device.
    Defer(String),
    /// Hand it back and exit: `--max-trials` is reached.
    Stop,
}

/// A slot's connection to its supervisor.
pub struct SlotLink {
    /// One request in flight at a time (answers come back in order).
    request: tokio::sync::Mutex<mpsc::Receiver<ToSlot>>,
    /// Lines go out whole, whoever writes them.
    out: Mutex<()>,
    wake: Notify,
    samples: AtomicU64,
    peak: AtomicU64,
}

impl std::fmt::Debug for SlotLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlotLink").field("samples", &self.samples).field("peak", &self.peak).finish_non_exhaustive()
    }
}

impl SlotLink {
    /// Starts reading stdin: answers go to requests, wakes to [`SlotLink::wait_for_wake`], and
    /// end of file (or a line that does not parse) turns `stop` true. Sends the hello and then
    /// progress every few seconds.
    pub fn start(pci_bus_id: Option<String>, stop: watch::Sender<bool>) -> Arc<SlotLink> {
        let (answers, rx) = mpsc::channel(4);
        let link = Arc::new(SlotLink {
            request: tokio::sync::Mutex::new(rx),
            out: Mutex::new(()),
            wake: Notify::new(),
            samples: AtomicU64::new(0),
            peak: AtomicU64::new(0),
        });
        link.send(&ToSupervisor::Hello { pid: std::process::id(), pci_bus_id });
        let reader = link.clone();
        tokio::spawn(async move {
            let mut stdin = BufReader::new(tokio::io::stdin());
            let mut line = Vec::new();
            loop {
                line.clear();
                let read = (&mut stdin).take(MAX_LINE as u64 + 1).read_until(b'\n', &mut line).await;
                let message = match read {
                    Ok(0) | Err(_) => break,
                    Ok(_) => decode::<ToSlot>(&String::from_utf8_lossy(&line)),
                };
                match message {
                    Ok(ToSlot::Wake) => reader.wake.notify_one(),
                    Ok(answer) => {
                        if answers.send(answer).await.is_err() {
                            break;
                        }
                    }
                    Err(why) => {
                        warn!("the supervisor sent something this slot cannot read ({why}); stopping");
                        break;
                    }
                }
            }
            let _ = stop.send(true);
        });
        let ticker = Arc::downgrade(&link);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(PROGRESS_EVERY).await;
                let Some(link) = ticker.upgrade() else { return };
                link.send_progress();
            }
        });
        link
    }

    fn send(&self, message: &ToSupervisor) {
        let _guard = self.out.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = std::io::stdout().lock();
        // A supervisor gone is seen on stdin (end of file), which stops the slot.
        let _ = out.write_all(encode(message).as_bytes()).and_then(|()| out.flush());
    }

    fn send_progress(&self) {
        self.send(&ToSupervisor::Progress {
            samples: self.samples.load(Ordering::Relaxed),
            peak_bytes: self.peak.load(Ordering::Relaxed),
        });
    }

    /// Sends `message` and waits for its answer; `None` once the supervisor is gone.
    async fn ask(&self, message: ToSupervisor) -> Option<ToSlot> {
        let mut answers = self.request.lock().await;
        self.send(&message);
        answers.recv().await
    }

    /// Asks to start a leased trial of `shape` expected to need `bytes` at its peak.
    pub async fn admit(&self, trial_id: u64, lease_token: u64, label: &str, shape: &str, bytes: u64) -> Decision {
        self.peak.store(0, Ordering::Relaxed);
        let request = ToSupervisor::Admit { trial_id, lease_token, label: label.into(), shape: shape.into(), bytes };
        match self.ask(request).await {
            Some(ToSlot::Admitted { stop: true, .. }) | None => Decision::Stop,
            Some(ToSlot::Admitted { yes: true, .. }) => Decision::Admit,
            Some(ToSlot::Admitted { reason, .. }) => Decision::Defer(reason),
            Some(other) => {
                warn!("the supervisor answered {other:?} to an admission; stopping");
                Decision::Stop
            }
        }
    }

    /// Tells the supervisor the trial was handed back, then waits until memory is freed on
    /// the device (a wake) or `patience` passes.
    pub async fn defer_and_wait(&self, patience: Duration) {
        self.send(&ToSupervisor::Deferred);
        let _ = tokio::time::timeout(patience, self.wake.notified()).await;
    }

    /// The admitted trial ended; whether it shared its device at some point.
    pub async fn ended(&self, oom: bool) -> bool {
        self.send_progress();
        matches!(self.ask(ToSupervisor::Ended { oom }).await, Some(ToSlot::Ended { shared: true }))
    }

    /// Counts `n` more training examples (from the training thread).
    pub fn add_samples(&self, n: usize) {
        self.samples.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// The running trial's peak device memory so far.
    pub fn set_peak(&self, bytes: u64) {
        self.peak.fetch_max(bytes, Ordering::Relaxed);
    }
}
