//! Throw-away certificate authorities for the TLS tests (rcgen): a CA made in the test, and certificates for
//! `127.0.0.1` and `localhost` it signs, written as PEM files (private keys 0600).

use std::fs;
use std::path::Path;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose};

/// A certificate authority that exists for one test.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A server certificate and its key, as PEM.
pub struct ServerCert {
    pub cert_pem: String,
    pub key_pem: String,
    /// The certificate, DER-encoded (to recognise it in a handshake).
    pub der: Vec<u8>,
}

impl TestCa {
    pub fn new(name: &str) -> anyhow::Result<Self> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        Ok(Self { issuer: CertifiedIssuer::self_signed(params, KeyPair::generate()?)? })
    }

    /// The CA certificate, PEM (what clients are told to trust).
    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// The CA certificate, DER (for a rustls root store).
    pub fn der(&self) -> Vec<u8> {
        self.issuer.der().to_vec()
    }

    /// Writes the CA certificate to `path`.
    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        Ok(fs::write(path, self.pem())?)
    }

    /// A certificate for the loopback names (`127.0.0.1`, `::1`, `localhost`), with `common_name` as its subject.
    pub fn issue(&self, common_name: &str) -> anyhow::Result<ServerCert> {
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "::1".to_string(), "localhost".to_string()])?;
        params.distinguished_name.push(DnType::CommonName, common_name);
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(ServerCert { cert_pem: cert.pem(), key_pem: key.serialize_pem(), der: cert.der().to_vec() })
    }
}

impl ServerCert {
    /// Writes the certificate and key (the key 0600, as an operator should keep it).
    pub fn write(&self, cert: &Path, key: &Path) -> anyhow::Result<()> {
        write_private(key, self.key_pem.as_bytes())?;
        write_private(cert, self.cert_pem.as_bytes())
    }
}

/// Writes a file only its owner may read, from its creation on (an existing file is replaced by a rename, so a
/// reader sees the old contents or the new, never half).
pub fn write_private(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let staged = path.with_extension("new");
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&staged)?;
    file.write_all(contents)?;
    file.sync_all()?;
    fs::rename(&staged, path)?;
    Ok(())
}
