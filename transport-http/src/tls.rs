//! TLS for both transports (HTTP/3 in transport-quic too): which roots are
//! trusted, key pinning, and why a handshake failed.
//!
//! [`TlsSetup`] loads the roots and pins of an [`HttpConfig`] once and makes
//! a rustls client configuration for any ALPN; [`tls_error`] turns rustls'
//! refusal into Ferry's error, and a [`Refusal`] keeps the verifier's reason
//! where a QUIC stack reports only the alert.
//!
//! Verification is rustls' webpki verifier, always on. Pinning wraps it: the
//! chain must verify *and* a pinned key must appear in it. A refused handshake
//! becomes a permanent [`ErrorKind::Tls`] naming the reason.

use std::collections::HashMap;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{VerifierBuilderError, WebPkiServerVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use sha2::{Digest, Sha256};
use transfer_core::{ErrorKind, TlsFailure, TransferError};

use crate::{ConfigError, HttpConfig, Roots};

/// The SHA-256 of a certificate's DER-encoded SubjectPublicKeyInfo: the value
/// [`HttpConfig::pin`] takes (the same as HPKP's and OkHttp's `sha256/` pins).
pub fn spki_sha256(cert: &CertificateDer<'_>) -> Result<[u8; 32], ConfigError> {
    let parsed = webpki::EndEntityCert::try_from(cert)
        .map_err(|e| ConfigError::Certificate(format!("{e:?}")))?;
    let spki = parsed.subject_public_key_info();
    Ok(Sha256::digest(spki.as_ref()).into())
}

/// The one crypto provider of this crate: ring, named explicitly so a process
/// never needs a default provider installed.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The trusted roots and pins of an [`HttpConfig`], loaded once: makes
/// rustls client configurations for any ALPN (HTTP/3 uses the same roots,
/// pins and verification as HTTP/1.1 and HTTP/2).
#[derive(Clone, Debug)]
pub struct TlsSetup {
    webpki: Arc<Verifier>,
    pins: HashMap<String, Vec<[u8; 32]>>,
}

impl TlsSetup {
    /// Takes the roots `config` asks for. The platform's (some hundreds of
    /// files) are read once a TLS connection begins (see
    /// [`prefetch`](Self::prefetch)) and the verifier built at the first
    /// certificate to check, so a process that speaks only plain HTTP never
    /// reads them, unless they are all there is to trust: then they are
    /// read now, to refuse an empty store at once.
    pub fn new(config: &HttpConfig) -> Result<TlsSetup, ConfigError> {
        let platform = matches!(config.roots, Roots::Platform | Roots::PlatformAndWebpki);
        let mut others = RootCertStore::empty();
        if matches!(config.roots, Roots::Webpki | Roots::PlatformAndWebpki) {
            others.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        }
        for cert in &config.extra_roots {
            others
                .add(cert.clone())
                .map_err(|e| ConfigError::Certificate(e.to_string()))?;
        }
        let verifier = Verifier {
            others,
            platform,
            built: std::sync::OnceLock::new(),
            supported: provider().signature_verification_algorithms,
        };
        if verifier.others.is_empty() || !platform {
            // Built now: whether anything is trusted depends on it, or it
            // costs nothing to read.
            let built = verifier.build().map_err(|e| match e {
                VerifierBuilderError::NoRootAnchors => ConfigError::NoRoots,
                e => ConfigError::Certificate(e.to_string()),
            })?;
            let _ = verifier.built.set(Ok(built));
        }
        Ok(TlsSetup {
            webpki: Arc::new(verifier),
            pins: config.pins.clone(),
        })
    }

    /// Starts reading the platform's roots on a thread of their own, if
    /// this setup trusts them and they have not been read: called as a TLS
    /// connection begins, so they are read while it connects.
    pub fn prefetch(&self) {
        if self.webpki.platform && self.webpki.built.get().is_none() {
            prefetch_platform_roots();
        }
    }

    /// A client configuration offering `alpn`. With a [`Refusal`], the
    /// reason the verifier refuses a certificate is also kept there (QUIC
    /// stacks report only the TLS alert).
    pub fn client_config(
        &self,
        alpn: Vec<Vec<u8>>,
        refusal: Option<Refusal>,
    ) -> Result<rustls::ClientConfig, ConfigError> {
        let verifier = Arc::new(PinningVerifier {
            inner: self.webpki.clone(),
            pins: self.pins.clone(),
            refusal,
        });
        let mut tls = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| ConfigError::Certificate(e.to_string()))?
            .dangerous() // only to install the pinning wrapper; it verifies first
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        tls.alpn_protocols = alpn;
        Ok(tls)
    }
}

/// webpki's verifier over a setup's roots, built when first needed.
#[derive(Debug)]
struct Verifier {
    /// The roots trusted besides the platform's.
    others: RootCertStore,
    /// Whether the platform's roots are trusted too.
    platform: bool,
    built: std::sync::OnceLock<Result<Arc<WebPkiServerVerifier>, String>>,
    /// The provider's signature algorithms (what the verifier would use).
    supported: WebPkiSupportedAlgorithms,
}

impl Verifier {
    fn build(&self) -> Result<Arc<WebPkiServerVerifier>, VerifierBuilderError> {
        let mut roots = if self.platform {
            platform_roots().clone()
        } else {
            RootCertStore::empty()
        };
        roots.roots.extend(self.others.roots.iter().cloned());
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider()).build()
    }

    /// The verifier, built now if it was not yet (waiting for the platform's
    /// roots if they are still being read).
    fn get(&self) -> Result<&WebPkiServerVerifier, rustls::Error> {
        self.built
            .get_or_init(|| self.build().map_err(|e| e.to_string()))
            .as_deref()
            .map_err(|e| rustls::Error::General(format!("no certificate verifier: {e}")))
    }
}

/// Starts reading the platform's roots on a thread of their own, once per
/// process, unless they have been read.
fn prefetch_platform_roots() {
    static STARTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if PLATFORM_ROOTS.get().is_none() && !STARTED.swap(true, std::sync::atomic::Ordering::AcqRel) {
        // If no thread can be made, the first handshake reads them.
        let _ = std::thread::Builder::new()
            .name("ferry-tls-roots".into())
            .spawn(|| {
                platform_roots();
            });
    }
}

static PLATFORM_ROOTS: std::sync::OnceLock<RootCertStore> = std::sync::OnceLock::new();

/// The platform's roots, read and parsed once per process (every transport
/// of a session, and each session, wants them; reading them is some
/// hundreds of files).
fn platform_roots() -> &'static RootCertStore {
    PLATFORM_ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        for e in &found.errors {
            tracing::debug!(error = %e, "platform root store: skipped an entry");
        }
        let mut roots = RootCertStore::empty();
        let (added, ignored) = roots.add_parsable_certificates(found.certs);
        tracing::debug!(added, ignored, "platform roots loaded");
        roots
    })
}

/// Where a verifier keeps why it refused a certificate.
#[derive(Clone, Debug, Default)]
pub struct Refusal(Arc<std::sync::Mutex<Option<rustls::Error>>>);

impl Refusal {
    /// An empty slot.
    pub fn new() -> Refusal {
        Refusal::default()
    }

    /// The refusal, if there was one (taken out).
    pub fn take(&self) -> Option<rustls::Error> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    fn keep(&self, e: &rustls::Error) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.clone());
    }
}

/// The setup of `config` and its client configuration for HTTP/1.1 and
/// HTTP/2.
/// The roots and pins of `config`, a client configuration for origins, and
/// one for `https://` proxies (HTTP/1.1 only: `CONNECT` and absolute-form
/// requests are HTTP/1.1's).
pub(crate) fn client_config(
    config: &HttpConfig,
) -> Result<(TlsSetup, rustls::ClientConfig, rustls::ClientConfig), ConfigError> {
    let alpn = if config.http1_only {
        vec![b"http/1.1".to_vec()]
    } else {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    };
    let setup = TlsSetup::new(config)?;
    let tls = setup.client_config(alpn, None)?;
    let proxy_tls = setup.client_config(vec![b"http/1.1".to_vec()], None)?;
    Ok((setup, tls, proxy_tls))
}

/// Why a pinned host was refused (carried inside rustls' error).
#[derive(Debug, thiserror::Error)]
#[error("no key in the chain of {host} matches its pins")]
struct PinMismatch {
    host: String,
}

#[derive(Debug)]
struct PinningVerifier {
    inner: Arc<Verifier>,
    pins: HashMap<String, Vec<[u8; 32]>>,
    refusal: Option<Refusal>,
}

impl PinningVerifier {
    fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verified = self.inner.get()?.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        let host = server_name.to_str().to_ascii_lowercase();
        if let Some(pins) = self.pins.get(&host) {
            let pinned = std::iter::once(end_entity)
                .chain(intermediates)
                .filter_map(|c| spki_sha256(c).ok())
                .any(|h| pins.contains(&h));
            if !pinned {
                return Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                    rustls::OtherError(Arc::new(PinMismatch { host })),
                )));
            }
        }
        Ok(verified)
    }
}

impl ServerCertVerifier for PinningVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verdict = self.check(end_entity, intermediates, server_name, ocsp_response, now);
        if let (Err(e), Some(refusal)) = (&verdict, &self.refusal) {
            refusal.keep(e);
        }
        verdict
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.inner.supported)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.inner.supported)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported.supported_schemes()
    }
}

/// Classifies a failed TLS handshake. rustls' own refusals are permanent TLS
/// errors with a reason; a connection that broke mid-handshake is transient.
pub(crate) fn handshake_error(host: &str, e: std::io::Error) -> TransferError {
    let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) else {
        return TransferError::new(
            ErrorKind::ConnectionLost,
            format!("TLS handshake with {host}: {e}"),
        );
    };
    tls_error(host, tls)
}

/// Classifies rustls' refusal of a handshake with `host`: a permanent
/// [`ErrorKind::Tls`] naming the reason (unknown issuer, expired, wrong
/// name, revoked, pin mismatch, or another bad certificate or handshake).
pub fn tls_error(host: &str, tls: &rustls::Error) -> TransferError {
    let failure = match tls {
        rustls::Error::InvalidCertificate(c) => match c {
            CertificateError::UnknownIssuer => TlsFailure::UnknownIssuer,
            CertificateError::Expired
            | CertificateError::ExpiredContext { .. }
            | CertificateError::NotValidYet
            | CertificateError::NotValidYetContext { .. } => TlsFailure::Expired,
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                TlsFailure::NameMismatch
            }
            CertificateError::Revoked => TlsFailure::Revoked,
            CertificateError::Other(o) if o.0.downcast_ref::<PinMismatch>().is_some() => {
                TlsFailure::PinMismatch
            }
            _ => TlsFailure::BadCertificate,
        },
        _ => TlsFailure::Handshake,
    };
    TransferError::new(
        ErrorKind::Tls(failure),
        format!("TLS handshake with {host}: {tls}"),
    )
}
