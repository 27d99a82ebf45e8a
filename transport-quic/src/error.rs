//! QUIC and HTTP/3 failures as Ferry's error kinds: a lost connection or a
//! reset stream is transient; a refused certificate is reported from the
//! verifier's own reason (see `Refusal`), not from the TLS alert.

use transfer_core::{ErrorKind, TimeoutKind, TransferError};

/// A QUIC connection that failed or ended.
pub(crate) fn connection_error(e: &quinn::ConnectionError, doing: &str) -> TransferError {
    let kind = match e {
        quinn::ConnectionError::TimedOut => ErrorKind::Timeout(TimeoutKind::Idle),
        quinn::ConnectionError::VersionMismatch | quinn::ConnectionError::TransportError(_) => {
            ErrorKind::Quic
        }
        _ => ErrorKind::ConnectionLost,
    };
    TransferError::new(kind, format!("{doing}: {e}"))
}

/// An HTTP/3 stream that failed: the peer reset it, the connection went, or
/// the response broke the protocol.
pub(crate) fn stream_error(e: &h3::error::StreamError, doing: &str) -> TransferError {
    let kind = match e {
        h3::error::StreamError::HeaderTooBig { .. } => ErrorKind::Protocol,
        _ => ErrorKind::ConnectionLost,
    };
    TransferError::new(kind, format!("{doing}: {e}"))
}
