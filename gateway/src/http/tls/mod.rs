//! TLS on the listen port (`serve --tls-cert --tls-key`): rustls with the ring provider, TLS 1.2 and 1.3 only,
//! HTTP/2 and HTTP/1.1 offered by ALPN, and a certificate that follows its files without a restart.

mod pair;
mod reload;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

pub use pair::TlsError;

/// How often the certificate and key files are read again to see whether they changed.
const RELOAD_INTERVAL: Duration = Duration::from_secs(1);

/// Where the certificate chain and its private key are (PEM).
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Reads the pair (refusing an unreadable, unparsable or mismatched one), and returns the acceptor for new
/// connections; a background task then reloads the pair whenever its files change, until `shutdown`.
pub async fn acceptor(files: TlsFiles, shutdown: CancellationToken) -> Result<TlsAcceptor, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let (certified, seen) = pair::read(&files, &provider).await?;
    let resolver = Arc::new(reload::CurrentCertificate::new(certified));
    let mut config = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(TlsError::Rejected)?
        .with_no_client_auth()
        .with_cert_resolver(resolver.clone());
    // h2 first: clients that speak both get HTTP/2 (one connection, many streams).
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    tokio::spawn(reload::follow(files, provider, resolver, seen, RELOAD_INTERVAL, shutdown));
    Ok(TlsAcceptor::from(Arc::new(config)))
}
