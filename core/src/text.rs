//! Names and error text: which names are safe, and how much of a caller's input an error may
//! quote.
//!
//! Every error a caller sees passes through [`bounded`] (the gRPC status conversion and the
//! CLI's local validation), and code that echoes an input uses [`quote`], so a 1 MB study name
//! or worker id never comes back inside a message (gRPC clients refuse status messages larger
//! than their metadata limit).

/// Most characters of one input an error message quotes.
pub const MAX_QUOTED_CHARS: usize = 64;

/// Longest error message sent back, whatever it quotes.
pub const MAX_MESSAGE_CHARS: usize = 600;

pub use bertsweep_proto::contract::is_study_name;

/// Metric names: `[a-z0-9_]{1,64}` (the Hugging Face names are all of this form).
pub fn is_metric_name(name: &str) -> bool {
    (1..=64).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// `input` as a quoted string for an error message: whole when short, else its first
/// [`MAX_QUOTED_CHARS`] characters and its size.
pub fn quote(input: &str) -> String {
    if input.chars().count() <= MAX_QUOTED_CHARS {
        return format!("{input:?}");
    }
    let head: String = input.chars().take(MAX_QUOTED_CHARS).collect();
    format!("{head:?}… ({} bytes)", input.len())
}

/// `input` as it reads in a message: bare when it is a short plain word (a key, a name), else
/// [`quote`]d.
pub fn shown(input: &str) -> String {
    let plain = !input.is_empty()
        && input.len() <= MAX_QUOTED_CHARS
        && input.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if plain {
        input.to_string()
    } else {
        quote(input)
    }
}

/// Caps a finished message: no word longer than [`MAX_QUOTED_CHARS`] characters (a quoted
/// input that slipped through [`quote`]) and at most [`MAX_MESSAGE_CHARS`] in all.
pub fn bounded(message: &str) -> String {
    let mut out = String::with_capacity(message.len().min(MAX_MESSAGE_CHARS + 8));
    let mut total = 0;
    for (i, word) in message.split(' ').enumerate() {
        let n = word.chars().count();
        let piece: String = if n > MAX_QUOTED_CHARS {
            let head: String = word.chars().take(MAX_QUOTED_CHARS).collect();
            format!("{head}…")
        } else {
            word.to_string()
        };
        let sep = usize::from(i > 0);
        if total + sep + piece.chars().count() > MAX_MESSAGE_CHARS {
            out.push_str(" …");
            break;
        }
        if sep == 1 {
            out.push(' ');
        }
        total += sep + piece.chars().count();
        out.push_str(&piece);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn study_names_are_one_safe_path_component() {
        for good in ["a", "sst2-minilm", "A.b_c-9", &"x".repeat(64)] {
            assert!(is_study_name(good), "{good}");
        }
        for bad in ["", ".", "..", "...", "-rf", "--help", "_x", "a/b", "a b", "é", &"x".repeat(65)] {
            assert!(!is_study_name(bad), "{bad}");
        }
    }

    #[test]
    fn metric_names() {
        assert!(is_metric_name("eval_accuracy") && is_metric_name("f1"));
        for bad in ["", "Eval", "a-b", "a.b", &"m".repeat(65)] {
            assert!(!is_metric_name(bad), "{bad}");
        }
    }

    #[test]
    fn quotes_and_messages_stay_short() {
        assert_eq!(quote("abc"), "\"abc\"");
        let long = "n".repeat(1 << 20);
        let q = quote(&long);
        assert!(q.len() < 100 && q.contains("1048576 bytes"), "{q}");
        let msg = bounded(&format!("unknown study {long}; list them"));
        assert!(msg.chars().count() <= MAX_MESSAGE_CHARS + 2, "{}", msg.len());
        assert!(msg.starts_with("unknown study nnnn") && msg.ends_with("list them"), "{msg}");
        let many = "word ".repeat(1000);
        assert!(bounded(&many).chars().count() <= MAX_MESSAGE_CHARS + 2);
        assert_eq!(bounded("short and sweet"), "short and sweet");
        assert_eq!(shown("num_epochs"), "num_epochs");
        assert_eq!(shown("a b"), "\"a b\"");
        assert!(shown(&long).len() < 100);
    }
}
