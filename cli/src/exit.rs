//! Exit codes, curl's where the failure is one curl knows (so scripts
//! written for curl read them the same), documented in the README's table.

use std::process::ExitCode;

use transfer_core::{ErrorKind, Outcome, TlsFailure};

/// Every transfer completed.
pub(crate) const OK: u8 = 0;
/// A failure curl has no code for (a checksum mismatch, a cancelled task).
pub(crate) const OTHER: u8 = 1;

/// The exit code for a transfer that failed with `kind`.
pub(crate) fn code_of(kind: ErrorKind) -> u8 {
    use ErrorKind::*;
    match kind {
        InvalidRequest => 3,
        NoSuchHost | Dns | Timeout(transfer_core::TimeoutKind::Dns) => 6,
        ConnectFailed | NoConnectivity | NetworkUnavailable => 7,
        Protocol => 8,
        Status(_) => 22,
        StorageFull | Storage | InsufficientStorage => 23,
        SourceChanged => 26,
        Timeout(_) | DeadlineExceeded => 28,
        Tls(TlsFailure::Handshake) => 35,
        TooManyRedirects | RedirectRefused => 47,
        ConnectionLost | StorageUnavailable => 56,
        Tls(_) => 60,
        SizeLimitExceeded => 63,
        DestinationExists => 73,
        Quic => 95,
        ProxyRefused => 97,
        _ => OTHER,
    }
}

/// The exit code for how one transfer ended.
pub(crate) fn code_of_outcome(outcome: &Outcome) -> u8 {
    match outcome {
        Outcome::Completed { .. } => OK,
        Outcome::Failed { error } => code_of(error.kind()),
        Outcome::Cancelled { .. } => OTHER,
    }
}

/// The exit code of a command whose transfers ended with `codes` (0 for a
/// completed one): 0 when all completed, else the first failure's.
pub(crate) fn exit(codes: impl IntoIterator<Item = u8>) -> ExitCode {
    ExitCode::from(codes.into_iter().find(|&c| c != OK).unwrap_or(OK))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_curl_knows_get_curls_codes() {
        use transfer_core::TimeoutKind;
        assert_eq!(code_of(ErrorKind::NoSuchHost), 6);
        assert_eq!(code_of(ErrorKind::ConnectFailed), 7);
        assert_eq!(code_of(ErrorKind::Status(404)), 22);
        assert_eq!(code_of(ErrorKind::Timeout(TimeoutKind::Connect)), 28);
        assert_eq!(code_of(ErrorKind::DeadlineExceeded), 28);
        assert_eq!(code_of(ErrorKind::Tls(TlsFailure::Handshake)), 35);
        assert_eq!(code_of(ErrorKind::Tls(TlsFailure::UnknownIssuer)), 60);
        assert_eq!(code_of(ErrorKind::SizeLimitExceeded), 63);
        assert_eq!(code_of(ErrorKind::ChecksumMismatch), OTHER);
        assert_eq!(exit([0, 22, 6]), ExitCode::from(22));
        assert_eq!(exit([0, 0]), ExitCode::SUCCESS);
    }
}
