//! Status codes for requests that tonic refuses before any handler runs.
//!
//! tonic answers an undecodable request with INTERNAL and an over-size one with OUT_OF_RANGE.
//! Both are the caller's fault, and gRPC clients treat INTERNAL as a server bug and
//! OUT_OF_RANGE as a range error in the request's values: the gRPC status-code guide gives
//! RESOURCE_EXHAUSTED for a message over the receive limit, and a request that is not a valid
//! message is an invalid argument. Our handlers never answer INTERNAL or OUT_OF_RANGE (every
//! domain error maps to another code in [`super::convert`]), so a trailers-only response
//! carrying either in its headers comes from tonic's request decoding and is renamed here.

use http::header::HeaderValue;

const INTERNAL: &[u8] = b"13";
const OUT_OF_RANGE: &[u8] = b"11";

/// Renames the status of a request refused while decoding (see the module docs).
pub fn caller_error_codes<B>(mut response: http::Response<B>) -> http::Response<B> {
    let headers = response.headers_mut();
    let renamed = match headers.get("grpc-status").map(HeaderValue::as_bytes) {
        Some(INTERNAL) => Some(tonic::Code::InvalidArgument),
        Some(OUT_OF_RANGE) => Some(tonic::Code::ResourceExhausted),
        _ => None,
    };
    if let Some(code) = renamed {
        headers.insert("grpc-status", HeaderValue::from(code as i32));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status_of(code: &'static str) -> String {
        let response = http::Response::builder().header("grpc-status", code).body(()).unwrap();
        caller_error_codes(response).headers()["grpc-status"].to_str().unwrap().to_string()
    }

    #[test]
    fn decoding_refusals_get_caller_codes_and_the_rest_pass() {
        assert_eq!(status_of("13"), "3");
        assert_eq!(status_of("11"), "8");
        for other in ["0", "3", "5", "9", "14", "16"] {
            assert_eq!(status_of(other), other);
        }
    }
}
