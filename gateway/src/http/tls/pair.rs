//! Reading a certificate chain and its private key from PEM files into what rustls serves, with an error that
//! names the file and what is wrong with it.

use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::TlsFiles;

/// Why a certificate and key cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the TLS {what} {path}")]
    Read { what: &'static str, path: String, source: std::io::Error },
    #[error("the TLS certificate file {path} holds no PEM certificate (`-----BEGIN CERTIFICATE-----`)")]
    NoCertificate { path: String },
    #[error("the TLS certificate file {path} is not valid PEM: {reason}")]
    BadCertificate { path: String, reason: String },
    #[error("the TLS key file {path} holds no PEM private key (PKCS#8, PKCS#1 or SEC1): {reason}")]
    BadKey { path: String, reason: String },
    #[error("the TLS key {key} does not belong to the certificate {cert}")]
    Mismatch { cert: String, key: String },
    #[error("the TLS certificate {cert} and key {key} cannot be used: {reason}")]
    Unusable { cert: String, key: String, reason: rustls::Error },
    #[error("the TLS settings were refused: {0}")]
    Rejected(rustls::Error),
}

/// The files' bytes as last read, to notice a change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    cert: Vec<u8>,
    key: Vec<u8>,
}

/// Reads both files and checks that they make a usable pair.
pub async fn read(files: &TlsFiles, provider: &CryptoProvider) -> Result<(Arc<CertifiedKey>, Seen), TlsError> {
    let seen = read_bytes(files).await?;
    let certified = parse(files, &seen, provider)?;
    Ok((certified, seen))
}

/// The files' bytes, both read (the key file's contents are never logged).
pub async fn read_bytes(files: &TlsFiles) -> Result<Seen, TlsError> {
    let cert = read_file("certificate", &files.cert).await?;
    let key = read_file("key", &files.key).await?;
    Ok(Seen { cert, key })
}

async fn read_file(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    tokio::fs::read(path).await.map_err(|source| TlsError::Read { what, path: path.display().to_string(), source })
}

/// The pair in `seen`, checked: at least one certificate, a private key rustls can sign with, and the key the one
/// the leaf certificate names.
pub fn parse(files: &TlsFiles, seen: &Seen, provider: &CryptoProvider) -> Result<Arc<CertifiedKey>, TlsError> {
    let cert_path = files.cert.display().to_string();
    let key_path = files.key.display().to_string();
    let chain = CertificateDer::pem_slice_iter(&seen.cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::BadCertificate { path: cert_path.clone(), reason: e.to_string() })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate { path: cert_path });
    }
    let key = PrivateKeyDer::from_pem_slice(&seen.key)
        .map_err(|e| TlsError::BadKey { path: key_path.clone(), reason: e.to_string() })?;
    match CertifiedKey::from_der(chain, key, provider) {
        Ok(certified) => Ok(Arc::new(certified)),
        Err(rustls::Error::InconsistentKeys(_)) => Err(TlsError::Mismatch { cert: cert_path, key: key_path }),
        Err(reason) => Err(TlsError::Unusable { cert: cert_path, key: key_path, reason }),
    }
}
