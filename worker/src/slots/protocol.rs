//! What a slot process and its supervisor say to each other: one JSON object per line, the
//! slot writing to its stdout and reading its stdin (its logs go to stderr). A request that
//! wants an answer gets exactly one before the slot sends another; [`ToSlot::Wake`] may come
//! at any time. End of file on the slot's stdin means "stop": release the trial and exit.
//!
//! Lines are bounded ([`MAX_LINE`]); anything that does not parse is logged and ignored by
//! the supervisor, and ends a slot (its stdin is no longer trustworthy).

use serde::{Deserialize, Serialize};

/// The longest line either side accepts.
pub const MAX_LINE: usize = 4096;

/// A slot's message to its supervisor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ToSupervisor {
    /// Sent once at start: the slot's process and, on CUDA, its device's PCI bus id (how NVML
    /// names it), so the supervisor reads the right device's free memory.
    Hello {
        /// The slot's process id.
        pid: u32,
        /// `0000:3B:00.0`-style bus id of the slot's CUDA device; `None` on the CPU.
        pci_bus_id: Option<String>,
    },
    /// The slot holds a leased trial and wants to start it. Answer: [`ToSlot::Admitted`].
    Admit {
        /// The trial's id and lease token: what the supervisor releases should the slot die.
        trial_id: u64,
        /// The lease's fencing token.
        lease_token: u64,
        /// `study/number`, for logs.
        label: String,
        /// Batch size and sequence length (`b32s128`): trials of one shape need alike memory.
        shape: String,
        /// The memory the trial is expected to need at its peak.
        bytes: u64,
    },
    /// Progress of the running trial, a few times a minute: cumulative training examples of
    /// this slot process, and the trial's peak memory so far.
    Progress {
        /// Training examples this process has stepped through since it started.
        samples: u64,
        /// The running trial's peak device memory so far (0: not measured).
        peak_bytes: u64,
    },
    /// The admitted trial ended (whichever way). Answer: [`ToSlot::Ended`].
    Ended {
        /// It ran out of device memory.
        oom: bool,
    },
    /// A trial was not admitted and was handed back; the slot waits for a wake.
    Deferred,
}

/// The supervisor's message to a slot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ToSlot {
    /// Answer to [`ToSupervisor::Admit`].
    Admitted {
        /// false: the device cannot hold it now; hand the trial back and wait for a wake.
        yes: bool,
        /// Why not, for the log.
        reason: String,
        /// The worker has started `--max-trials` trials (all slots together): hand the trial
        /// back and exit.
        stop: bool,
    },
    /// Answer to [`ToSupervisor::Ended`].
    Ended {
        /// Another trial ran on the same device meanwhile: an out-of-memory error may be the
        /// neighbours' doing, so the trial is requeued rather than called infeasible.
        shared: bool,
    },
    /// Memory was freed on the slot's device (a trial ended there): try again.
    Wake,
}

/// One message as a line (no newline inside; serde_json escapes them).
pub fn encode<T: Serialize>(message: &T) -> String {
    let mut line = serde_json::to_string(message).unwrap_or_default();
    line.push('\n');
    line
}

/// Why a line is not a message of the protocol.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Longer than [`MAX_LINE`].
    #[error("a line of {0} bytes (at most {MAX_LINE})")]
    TooLong(usize),
    /// Not JSON, or not one of the messages.
    #[error("{error} in {excerpt:?}")]
    NotAMessage {
        /// What serde_json says.
        error: serde_json::Error,
        /// The line's first 120 characters.
        excerpt: String,
    },
}

/// Parses one line (without or with its newline).
pub fn decode<T: for<'de> Deserialize<'de>>(line: &str) -> Result<T, DecodeError> {
    if line.len() > MAX_LINE {
        return Err(DecodeError::TooLong(line.len()));
    }
    serde_json::from_str(line.trim_end())
        .map_err(|error| DecodeError::NotAMessage { error, excerpt: line.chars().take(120).collect() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_message_round_trips_as_one_line() {
        let up = [
            ToSupervisor::Hello { pid: 7, pci_bus_id: Some("00000000:3B:00.0".into()) },
            ToSupervisor::Admit {
                trial_id: 1,
                lease_token: 2,
                label: "s/3\nx".into(),
                shape: "b32s128".into(),
                bytes: 5 << 30,
            },
            ToSupervisor::Progress { samples: 10, peak_bytes: 3 },
            ToSupervisor::Ended { oom: true },
            ToSupervisor::Deferred,
        ];
        for m in up {
            let line = encode(&m);
            assert_eq!(line.matches('\n').count(), 1, "{line}");
            assert_eq!(decode::<ToSupervisor>(&line).unwrap(), m);
        }
        let down = [
            ToSlot::Admitted { yes: true, reason: String::new(), stop: false },
            ToSlot::Ended { shared: true },
            ToSlot::Wake,
        ];
        for m in down {
            assert_eq!(decode::<ToSlot>(&encode(&m)).unwrap(), m);
        }
    }

    #[test]
    fn junk_and_oversized_lines_are_refused() {
        assert!(decode::<ToSupervisor>("hello").is_err());
        assert!(decode::<ToSupervisor>(r#"{"op":"launch_missiles"}"#).is_err());
        let long = format!(r#"{{"op":"admit","label":"{}"}}"#, "x".repeat(MAX_LINE));
        assert!(decode::<ToSupervisor>(&long).unwrap_err().to_string().contains("at most"));
    }
}
