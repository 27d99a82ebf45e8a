//! Classifying hyper's errors into Ferry's [`TransferError`] kinds.

use std::error::Error as _;

use transfer_core::{ErrorKind, TransferError};

/// The error and its sources, joined: hyper's own messages are terse.
pub(crate) fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = s.source();
    }
    out
}

/// A malformed response (bad framing, header floods, HTTP/2 protocol errors)
/// is [`ErrorKind::Protocol`]; a connection that closed or reset is
/// [`ErrorKind::ConnectionLost`]. Both are transient.
pub(crate) fn from_hyper(e: &hyper::Error, doing: &str) -> TransferError {
    let h2_protocol = {
        let mut src = e.source();
        let mut found = false;
        while let Some(s) = src {
            if let Some(io) = s.downcast_ref::<std::io::Error>() {
                found |= io.kind() == std::io::ErrorKind::InvalidData;
            }
            src = s.source();
        }
        found
    };
    let kind = if e.is_parse() || e.is_parse_status() || e.is_parse_too_large() || h2_protocol {
        ErrorKind::Protocol
    } else {
        ErrorKind::ConnectionLost
    };
    TransferError::new(kind, format!("{doing}: {}", chain(e)))
}
