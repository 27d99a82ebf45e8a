//! Certificates for the origin: a root CA made at start-up and a leaf for
//! `localhost`, `127.0.0.1` and `::1` signed by it.

use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    PublicKeyData,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::{Digest, Sha256};

use crate::Error;

/// A root CA and a server certificate chain signed by it.
pub(crate) struct Certs {
    pub(crate) root_pem: String,
    /// The leaf (PEM), for servers other than the origin.
    pub(crate) leaf_pem: String,
    /// The leaf's private key (PKCS#8 PEM).
    pub(crate) key_pem: String,
    pub(crate) root_der: CertificateDer<'static>,
    pub(crate) chain: Vec<CertificateDer<'static>>,
    pub(crate) key: PrivatePkcs8KeyDer<'static>,
    /// SHA-256 of the leaf's SubjectPublicKeyInfo (its pin).
    pub(crate) leaf_spki_sha256: [u8; 32],
    /// A leaf for the same names, signed by the same root, that expired in 2021.
    pub(crate) expired_chain: Vec<CertificateDer<'static>>,
    pub(crate) expired_key: PrivatePkcs8KeyDer<'static>,
}

pub(crate) fn generate() -> Result<Certs, Error> {
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "Ferry testkit root");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);

    let leaf_params = || -> Result<CertificateParams, rcgen::Error> {
        let mut leaf = CertificateParams::new(vec![
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
            "::1".to_owned(),
        ])?;
        leaf.distinguished_name
            .push(DnType::CommonName, "localhost");
        leaf.use_authority_key_identifier_extension = true;
        Ok(leaf)
    };
    let leaf_key = KeyPair::generate()?;
    let leaf_cert = leaf_params()?.signed_by(&leaf_key, &issuer)?;

    let mut expired = leaf_params()?;
    expired.not_before = rcgen::date_time_ymd(2020, 1, 1);
    expired.not_after = rcgen::date_time_ymd(2021, 1, 1);
    let expired_key = KeyPair::generate()?;
    let expired_cert = expired.signed_by(&expired_key, &issuer)?;

    Ok(Certs {
        root_pem: ca_cert.pem(),
        leaf_pem: leaf_cert.pem(),
        key_pem: leaf_key.serialize_pem(),
        root_der: ca_cert.der().clone(),
        chain: vec![leaf_cert.der().clone(), ca_cert.der().clone()],
        key: PrivatePkcs8KeyDer::from(leaf_key.serialize_der()),
        leaf_spki_sha256: Sha256::digest(leaf_key.subject_public_key_info()).into(),
        expired_chain: vec![expired_cert.der().clone(), ca_cert.der().clone()],
        expired_key: PrivatePkcs8KeyDer::from(expired_key.serialize_der()),
    })
}

/// A fresh root CA and a leaf for `localhost`, `127.0.0.1` and `::1` signed
/// by it, in PEM, for servers the origin does not run (nginx, caddy).
#[derive(Clone, Debug)]
pub struct PemCertificates {
    /// The root CA certificate a client trusts.
    pub root: String,
    /// The server's leaf certificate.
    pub leaf: String,
    /// The leaf's private key (PKCS#8).
    pub key: String,
}

/// Makes a new root and leaf; see [`PemCertificates`].
pub fn pem_certificates() -> Result<PemCertificates, Error> {
    let certs = generate()?;
    Ok(PemCertificates {
        root: certs.root_pem,
        leaf: certs.leaf_pem,
        key: certs.key_pem,
    })
}

/// The ring provider, named explicitly so nothing depends on a process default.
pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

pub(crate) fn server_config(
    chain: &[CertificateDer<'static>],
    key: &PrivatePkcs8KeyDer<'static>,
) -> Result<rustls::ServerConfig, Error> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain.to_vec(), PrivateKeyDer::Pkcs8(key.clone_key()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// A client configuration that trusts only `root` and offers `alpn`.
pub(crate) fn client_config(
    root: &CertificateDer<'static>,
    alpn: &[&[u8]],
) -> Result<rustls::ClientConfig, Error> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root.clone())?;
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}
