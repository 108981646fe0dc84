//! TLS to `https://` pool members: rustls with the webpki roots, plus the pool's own
//! CA file for private upstreams. The name checked in the server's certificate (and
//! sent as SNI) is the member's host, or the pool's `tls_server_name`.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

/// How one member's connections are secured.
pub struct MemberTls {
    pub connector: TlsConnector,
    pub server_name: ServerName<'static>,
}

impl std::fmt::Debug for MemberTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemberTls")
            .field("server_name", &self.server_name)
            .finish()
    }
}

/// The client configuration of a pool: webpki roots and the certificates of
/// `ca_file`; HTTP/1.1 by ALPN.
pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<ClientConfig>, String> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca_file {
        let shown = path.display();
        let certificates = CertificateDer::pem_file_iter(path)
            .map_err(|err| format!("{shown}: {err}"))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|err| format!("{shown}: {err}"))?;
        if certificates.is_empty() {
            return Err(format!("{shown}: holds no certificate"));
        }
        for certificate in certificates {
            roots
                .add(certificate)
                .map_err(|err| format!("{shown}: {err}"))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|err| err.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The TLS settings of a member reached as `host`, checked against `server_name`
/// when given.
pub fn member_tls(
    config: &Arc<ClientConfig>,
    host: &str,
    server_name: Option<&str>,
) -> Result<MemberTls, String> {
    let name = server_name.unwrap_or(host);
    let server_name = ServerName::try_from(name.to_string())
        .map_err(|err| format!("{name:?} is not a valid TLS server name: {err}"))?;
    Ok(MemberTls {
        connector: TlsConnector::from(config.clone()),
        server_name,
    })
}
