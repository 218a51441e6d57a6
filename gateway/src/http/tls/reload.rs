//! The certificate new handshakes get, swapped when its files change: connections already open keep the one they
//! were made with, and a half-written or mismatched pair is refused (the previous one stays) until it is whole.

use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_util::sync::CancellationToken;

use super::TlsFiles;
use super::pair::{self, Seen};

/// The certificate served to every new handshake (there is one, whatever name the client asks for).
#[derive(Debug)]
pub struct CurrentCertificate(RwLock<Arc<CertifiedKey>>);

impl CurrentCertificate {
    pub fn new(certified: Arc<CertifiedKey>) -> Self {
        Self(RwLock::new(certified))
    }

    fn replace(&self, certified: Arc<CertifiedKey>) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = certified;
    }
}

impl ResolvesServerCert for CurrentCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.read().unwrap_or_else(PoisonError::into_inner).clone())
    }
}

/// Reads the files every `every`, and at once on SIGHUP (`systemctl reload`); when their bytes differ from the
/// pair in use, serves the new pair if it is whole, and otherwise warns once per new content (an operator mid-copy,
/// or a wrong key) and keeps the old one.
pub async fn follow(
    files: TlsFiles,
    provider: Arc<CryptoProvider>,
    current: Arc<CurrentCertificate>,
    mut seen: Seen,
    every: Duration,
    shutdown: CancellationToken,
) {
    let mut ticker = crate::background::periodic::Ticker::new(every, shutdown);
    let mut last_error: Option<String> = None;
    let mut reloads = flowork_common::signal::ReloadRequests::new();
    loop {
        tokio::select! {
            more = ticker.next() => if !more { return },
            () = reloads.next() => tracing::info!("SIGHUP: reading the TLS certificate and key again"),
        }
        let now = match pair::read_bytes(&files).await {
            Ok(now) => now,
            Err(error) => {
                warn_once(&mut last_error, error);
                continue;
            }
        };
        if now == seen {
            continue;
        }
        match pair::parse(&files, &now, &provider) {
            Ok(certified) => {
                current.replace(certified);
                seen = now;
                last_error = None;
                tracing::info!(cert = %files.cert.display(), "TLS certificate reloaded; new connections get it");
            }
            Err(error) => warn_once(&mut last_error, error),
        }
    }
}

fn warn_once(last_error: &mut Option<String>, error: pair::TlsError) {
    let text = error.to_string();
    if last_error.as_deref() != Some(text.as_str()) {
        tracing::warn!(error = %text, "TLS certificate not reloaded; still serving the previous one");
        *last_error = Some(text);
    }
}
