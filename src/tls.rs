//! TLS termination: certificates per host name (SNI), TLS 1.2+ with rustls' modern
//! cipher suites, HTTP/2 by ALPN (actix-web adds `h2` and `http/1.1`), and reloading
//! of every certificate on SIGHUP. A reload swaps the certificate table atomically:
//! open connections keep their session, new handshakes see the new certificates, and
//! a reload that fails (unreadable file, key not matching) keeps the old table.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::crypto::ring::sign::any_supported_type;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;

use crate::config::{CertificateSettings, TlsSettings};

/// Why certificates could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {reason}")]
    File { path: String, reason: String },
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// Certificates by host name: exact names, `*.example.com` wildcards, and the default
/// (the first configured) for clients without SNI or with an unknown name.
struct CertificateTable {
    exact: HashMap<String, Arc<CertifiedKey>>,
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Arc<CertifiedKey>,
}

impl CertificateTable {
    fn load(certificates: &[CertificateSettings]) -> Result<Self, TlsError> {
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        let mut default = None;
        for entry in certificates {
            let key = Arc::new(load_certified_key(entry)?);
            default.get_or_insert_with(|| key.clone());
            for host in &entry.hosts {
                let host = host.to_ascii_lowercase();
                match host.strip_prefix("*.") {
                    Some(parent) => wildcard.insert(parent.to_string(), key.clone()),
                    None => exact.insert(host, key.clone()),
                };
            }
        }
        let default = default.ok_or_else(|| TlsError::File {
            path: "tls.certificates".into(),
            reason: "no certificate configured".into(),
        })?;
        Ok(Self {
            exact,
            wildcard,
            default,
        })
    }

    fn choose(&self, server_name: Option<&str>) -> Arc<CertifiedKey> {
        let Some(name) = server_name.map(str::to_ascii_lowercase) else {
            return self.default.clone();
        };
        if let Some(key) = self.exact.get(&name) {
            return key.clone();
        }
        name.split_once('.')
            .and_then(|(_, parent)| self.wildcard.get(parent))
            .unwrap_or(&self.default)
            .clone()
    }
}

fn load_certified_key(entry: &CertificateSettings) -> Result<CertifiedKey, TlsError> {
    let file_error = |path: &std::path::Path, reason: String| TlsError::File {
        path: path.display().to_string(),
        reason,
    };
    let chain = CertificateDer::pem_file_iter(&entry.cert)
        .map_err(|err| file_error(&entry.cert, err.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| file_error(&entry.cert, err.to_string()))?;
    if chain.is_empty() {
        return Err(file_error(&entry.cert, "holds no certificate".into()));
    }
    let key = PrivateKeyDer::from_pem_file(&entry.key)
        .map_err(|err| file_error(&entry.key, err.to_string()))?;
    let signing_key =
        any_supported_type(&key).map_err(|err| file_error(&entry.key, err.to_string()))?;
    let certified = CertifiedKey::new(chain, signing_key);
    certified
        .keys_match()
        .map_err(|err| file_error(&entry.key, format!("does not match the certificate: {err}")))?;
    Ok(certified)
}

/// Chooses the certificate for each handshake from the current table.
pub struct CertificateResolver {
    table: ArcSwap<CertificateTable>,
    settings: Vec<CertificateSettings>,
}

impl fmt::Debug for CertificateResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateResolver")
            .field("certificates", &self.settings.len())
            .finish()
    }
}

impl CertificateResolver {
    /// Reads every configured certificate and key.
    pub fn load(settings: &TlsSettings) -> Result<Self, TlsError> {
        Ok(Self {
            table: ArcSwap::from_pointee(CertificateTable::load(&settings.certificates)?),
            settings: settings.certificates.clone(),
        })
    }

    /// Reads the certificate files again; on failure the current ones stay in use.
    pub fn reload(&self) -> Result<(), TlsError> {
        let table = CertificateTable::load(&self.settings)?;
        self.table.store(Arc::new(table));
        Ok(())
    }
}

impl ResolvesServerCert for CertificateResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.table.load().choose(hello.server_name()))
    }
}

/// The rustls configuration of the HTTPS listener.
pub fn server_config(
    settings: &TlsSettings,
    resolver: Arc<CertificateResolver>,
) -> Result<ServerConfig, TlsError> {
    let versions: &[&'static rustls::SupportedProtocolVersion] = if settings.min_version == "1.3" {
        &[&rustls::version::TLS13]
    } else {
        &[&rustls::version::TLS13, &rustls::version::TLS12]
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)?
        .with_no_client_auth()
        .with_cert_resolver(resolver))
}

/// Reloads the certificates whenever the process receives SIGHUP, until the current
/// actix system stops.
pub fn reload_on_sighup(resolver: Arc<CertificateResolver>) -> std::io::Result<()> {
    let mut hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    actix_web::rt::spawn(async move {
        while hangups.recv().await.is_some() {
            match resolver.reload() {
                Ok(()) => tracing::info!("SIGHUP: TLS certificates reloaded"),
                Err(err) => {
                    tracing::error!(%err, "SIGHUP: TLS certificates not reloaded; keeping the old ones")
                }
            }
        }
    });
    Ok(())
}
