//! Paged replies: every list the API returns grows with the database, so each is cut into pages
//! bounded in count and in encoded size, well under gRPC's 4 MiB default message limit.

use tonic::Status;

/// Most encoded bytes of items in one reply (a single larger item still goes out alone).
pub const MAX_PAGE_BYTES: usize = 1 << 20;

/// Most items one page holds, whatever the caller asks for.
pub const MAX_PAGE_SIZE: usize = 1000;

/// Items in a page when the caller does not say.
pub const DEFAULT_PAGE_SIZE: usize = 500;

/// Where a page starts and how many items it may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    /// Position of the first item (a trial number, a study id, a configuration rank).
    pub start: u64,
    /// Items wanted, already capped at [`MAX_PAGE_SIZE`].
    pub size: usize,
}

/// Reads `page_size` / `page_token`. Tokens are positions this server handed out; anything else
/// is refused rather than silently restarting the listing.
pub fn page_request(page_size: u32, page_token: &str) -> Result<PageRequest, Status> {
    let size = match page_size {
        0 => DEFAULT_PAGE_SIZE,
        n => (n as usize).min(MAX_PAGE_SIZE),
    };
    let start = if page_token.is_empty() {
        0
    } else {
        page_token.parse::<u64>().map_err(|_| {
            Status::invalid_argument(format!(
                "page_token {} is not one this server issued; pass the next_page_token of the previous reply, or none to start over",
                crate::text::quote(page_token)
            ))
        })?
    };
    Ok(PageRequest { start, size })
}

/// The token of the page starting at `next` (empty when the listing is done).
pub fn next_token(next: Option<u64>) -> String {
    next.map(|n| n.to_string()).unwrap_or_default()
}

/// Where the next page of an offset-addressed listing starts, when the page that began at
/// `start` kept `kept` of `total` items (None when it was the last).
pub fn next_offset(start: u64, kept: usize, total: u64) -> Option<u64> {
    let next = start + kept as u64;
    (next < total).then_some(next)
}

/// Keeps the leading items whose encoded size fits in [`MAX_PAGE_BYTES`] (at least one), and
/// says how many were kept.
pub fn fit<T: prost::Message>(mut items: Vec<T>) -> (Vec<T>, usize) {
    let mut bytes = 0usize;
    let mut keep = items.len();
    for (i, item) in items.iter().enumerate() {
        bytes += item.encoded_len() + 8;
        if bytes > MAX_PAGE_BYTES && i > 0 {
            keep = i;
            break;
        }
    }
    items.truncate(keep);
    (items, keep)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_capped_and_tokens_checked() {
        assert_eq!(page_request(0, "").unwrap(), PageRequest { start: 0, size: DEFAULT_PAGE_SIZE });
        assert_eq!(page_request(1_000_000, "42").unwrap(), PageRequest { start: 42, size: MAX_PAGE_SIZE });
        assert_eq!(page_request(5, "x").unwrap_err().code(), tonic::Code::InvalidArgument);
        assert_eq!(next_token(None), "");
        assert_eq!(next_token(Some(7)), "7");
        assert_eq!((next_offset(0, 500, 1200), next_offset(1000, 200, 1200)), (Some(500), None));
    }

    #[test]
    fn fit_bounds_the_encoded_size_but_keeps_one() {
        let big = vec!["x".repeat(600 << 10); 3];
        let (kept, n) = fit(big);
        assert_eq!((kept.len(), n), (1, 1));
        let small = vec!["y".to_string(); 10];
        assert_eq!(fit(small).1, 10);
    }
}
