//! TLS (`[tls]`): the certificate and key files, the rustls server
//! configuration built on them, and their reload.
//!
//! The certificate in use sits behind an [`ArcSwap`] that rustls asks at
//! every handshake ([`CurrentCert`]), so a reload is one pointer swap: new
//! handshakes get the new certificate, open connections keep theirs. A
//! reload is triggered by a change in either file's directory (watching the
//! directory, not the file, sees a rename over the file and Kubernetes'
//! symlink swap) or by SIGHUP. A file that fails to load is logged and the
//! old certificate keeps serving; at start-up it is an error naming the file.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use notify::RecursiveMode;
use notify_debouncer_full::{DebounceEventResult, Debouncer, RecommendedCache, new_debouncer};
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::config::TlsConfig;

/// Quiet time after the last change before the files are read. Longer than
/// the plugin watch's: a deploy often writes the certificate and the key as
/// two steps, and reading between them would log a spurious mismatch.
pub const DEBOUNCE: Duration = Duration::from_millis(300);

/// ALPN protocols offered, most preferred first.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// Why a certificate or key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{}: {message}", path.display())]
    Pem { path: PathBuf, message: String },
    #[error("{}: no certificate in it (expected a PEM block -----BEGIN CERTIFICATE-----)", path.display())]
    NoCertificate { path: PathBuf },
    #[error(
        "{}: no private key in it (expected a PEM block -----BEGIN PRIVATE KEY-----, RSA PRIVATE KEY or EC PRIVATE KEY)",
        path.display()
    )]
    NoKey { path: PathBuf },
    #[error("{}: unusable private key: {message}", path.display())]
    BadKey { path: PathBuf, message: String },
    #[error("{}: not a usable certificate: {message}", path.display())]
    BadCertificate { path: PathBuf, message: String },
    #[error("{}: the private key does not match the certificate in {}", key.display(), cert.display())]
    Mismatch { cert: PathBuf, key: PathBuf },
    #[error("cannot watch {}: {source}", dir.display())]
    Watch { dir: PathBuf, source: notify::Error },
    #[error("cannot set up TLS: {0}")]
    Setup(rustls::Error),
}

/// The TLS side of the listener: its rustls configuration and the
/// certificate that configuration serves.
pub struct Tls {
    pub acceptor: tokio_rustls::TlsAcceptor,
    current: Arc<CurrentCert>,
    files: Files,
    provider: Arc<CryptoProvider>,
}

#[derive(Debug, Clone)]
struct Files {
    cert: PathBuf,
    key: PathBuf,
}

/// What rustls asks for a certificate at each handshake.
#[derive(Debug)]
struct CurrentCert {
    key: ArcSwap<CertifiedKey>,
    /// The bytes of both files as last loaded, so an event that changed
    /// neither (another file in the directory) reloads nothing.
    loaded_from: ArcSwap<PemBytes>,
}

/// The bytes of the certificate file and of the key file.
type PemBytes = (Vec<u8>, Vec<u8>);

impl ResolvesServerCert for CurrentCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.key.load_full())
    }
}

impl Tls {
    /// Loads the certificate and key; the error names the file at fault.
    pub fn load(config: &TlsConfig) -> Result<Option<Arc<Self>>, TlsError> {
        let (Some(cert), Some(key)) = (&config.cert, &config.key) else { return Ok(None) };
        let files = Files { cert: cert.clone(), key: key.clone() };
        // Explicit, not the process default: nothing else picks a provider.
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let (certified, bytes) = load_pair(&files, &provider)?;
        tracing::info!(cert = %files.cert.display(), sha256 = %fingerprint(&certified), "TLS certificate loaded");
        let current =
            Arc::new(CurrentCert { key: ArcSwap::from_pointee(certified), loaded_from: ArcSwap::from_pointee(bytes) });
        let mut server = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Setup)?
            .with_no_client_auth()
            .with_cert_resolver(current.clone());
        server.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        Ok(Some(Arc::new(Self { acceptor, current, files, provider })))
    }

    /// Reads the files again; if they changed and load, new handshakes get
    /// them. A failure is logged and the certificate in use stays.
    pub fn reload(&self, why: &str) {
        let bytes = match read_pair(&self.files) {
            Ok(bytes) => bytes,
            Err(e) => {
                tracing::error!("TLS certificate not reloaded ({why}): {e}; still serving the previous one");
                return;
            }
        };
        if **self.current.loaded_from.load() == bytes {
            tracing::debug!("TLS files unchanged ({why})");
            return;
        }
        match parse_pair(&self.files, &bytes, &self.provider) {
            Ok(certified) => {
                let sha256 = fingerprint(&certified);
                self.current.key.store(Arc::new(certified));
                self.current.loaded_from.store(Arc::new(bytes));
                tracing::info!(cert = %self.files.cert.display(), %sha256, "TLS certificate reloaded ({why})");
            }
            Err(e) => {
                tracing::error!("TLS certificate not reloaded ({why}): {e}; still serving the previous one");
            }
        }
    }

    /// [`Tls::reload`] on a blocking thread: the files may sit on a slow
    /// filesystem.
    pub async fn reload_off_runtime(self: Arc<Self>, why: &'static str) {
        if let Err(e) = tokio::task::spawn_blocking(move || self.reload(why)).await {
            tracing::error!("TLS certificate reload failed: {e}");
        }
    }

    /// Reloads when either file's directory changes, until the returned
    /// watcher is dropped.
    pub fn watch(self: &Arc<Self>) -> Result<TlsWatcher, TlsError> {
        // One slot is enough: a pending reload reads the files afresh.
        let (tx, mut rx) = mpsc::channel::<()>(1);
        let handler = move |result: DebounceEventResult| match result {
            Ok(events) => {
                if events.iter().any(|e| e.kind.is_create() || e.kind.is_modify() || e.kind.is_remove()) {
                    let _ = tx.try_send(());
                }
            }
            Err(errors) => {
                for e in errors {
                    tracing::warn!("TLS certificate watch error: {e}");
                }
            }
        };
        let mut dirs: Vec<PathBuf> = [&self.files.cert, &self.files.key].into_iter().map(|f| parent(f)).collect();
        dirs.dedup();
        let mut debouncer = new_debouncer(DEBOUNCE, None, handler)
            .map_err(|source| TlsError::Watch { dir: dirs[0].clone(), source })?;
        for dir in &dirs {
            debouncer
                .watch(dir, RecursiveMode::NonRecursive)
                .map_err(|source| TlsError::Watch { dir: dir.clone(), source })?;
        }
        let tls = self.clone();
        tokio::spawn(async move {
            while rx.recv().await.is_some() {
                tls.clone().reload_off_runtime("file changed").await;
            }
        });
        Ok(TlsWatcher { _debouncer: debouncer })
    }
}

/// Keeps the certificate's directories watched while it lives.
pub struct TlsWatcher {
    _debouncer: Debouncer<notify::RecommendedWatcher, RecommendedCache>,
}

fn parent(file: &Path) -> PathBuf {
    match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    }
}

fn read_pair(files: &Files) -> Result<PemBytes, TlsError> {
    let read = |path: &Path| std::fs::read(path).map_err(|source| TlsError::Read { path: path.to_owned(), source });
    Ok((read(&files.cert)?, read(&files.key)?))
}

fn load_pair(files: &Files, provider: &CryptoProvider) -> Result<(CertifiedKey, PemBytes), TlsError> {
    let bytes = read_pair(files)?;
    let certified = parse_pair(files, &bytes, provider)?;
    Ok((certified, bytes))
}

fn parse_pair(
    files: &Files,
    (cert_pem, key_pem): &PemBytes,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let pem_error = |path: &Path, e: rustls_pki_types::pem::Error| TlsError::Pem {
        path: path.to_owned(),
        message: format!("not valid PEM ({e})"),
    };
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(&files.cert, e))?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate { path: files.cert.clone() });
    }
    let key = match PrivateKeyDer::from_pem_slice(key_pem) {
        Ok(key) => key,
        Err(rustls_pki_types::pem::Error::NoItemsFound) => return Err(TlsError::NoKey { path: files.key.clone() }),
        Err(e) => return Err(pem_error(&files.key, e)),
    };
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| TlsError::BadKey { path: files.key.clone(), message: e.to_string() })?;
    let certified = CertifiedKey::new(chain, signing);
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Ok(certified),
        Err(rustls::Error::InconsistentKeys(_)) => {
            Err(TlsError::Mismatch { cert: files.cert.clone(), key: files.key.clone() })
        }
        Err(e) => Err(TlsError::BadCertificate { path: files.cert.clone(), message: e.to_string() }),
    }
}

/// The SHA-256 of the leaf certificate, as browsers show it, for the log.
fn fingerprint(certified: &CertifiedKey) -> String {
    certified.cert.first().map(|leaf| hex::encode(Sha256::digest(leaf.as_ref()))).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parent_of_a_bare_file_name_is_the_working_directory() {
        assert_eq!(parent(Path::new("cert.pem")), PathBuf::from("."));
        assert_eq!(parent(Path::new("/etc/tls/cert.pem")), PathBuf::from("/etc/tls"));
    }
}
