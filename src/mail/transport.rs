//! The two ways mail leaves Gatehouse: an SMTP server, or `.eml` files in a folder.

use std::path::Path;

use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::transport::smtp::PoolConfig;
use lettre::{AsyncFileTransport, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::config::{MailSettings, MailTransportKind, SmtpSecurity};
use crate::queue::Outcome;

/// Where mail is delivered.
#[derive(Clone)]
pub enum MailTransport {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    File(AsyncFileTransport<Tokio1Executor>),
}

impl MailTransport {
    /// The transport `settings` describe; for `file`, creates the folder.
    pub fn from_settings(settings: &MailSettings) -> Result<Self, String> {
        match settings.transport {
            MailTransportKind::File => {
                let dir = &settings.file.dir;
                std::fs::create_dir_all(dir).map_err(|err| {
                    format!("mail.file.dir: cannot create {}: {err}", dir.display())
                })?;
                Ok(Self::File(AsyncFileTransport::new(dir)))
            }
            MailTransportKind::Smtp => {
                let smtp = &settings.smtp;
                let tls = || {
                    let mut parameters = TlsParameters::builder(smtp.host.clone());
                    if !smtp.ca_file.as_os_str().is_empty() {
                        parameters = parameters.add_root_certificate(
                            trusted_certificates(&smtp.ca_file)
                                .map_err(|reason| format!("mail.smtp.ca_file: {reason}"))?,
                        );
                    }
                    parameters
                        .build()
                        .map_err(|err| format!("mail.smtp: TLS setup failed: {err}"))
                };
                let tls = match smtp.security {
                    SmtpSecurity::None => Tls::None,
                    SmtpSecurity::Starttls => Tls::Required(tls()?),
                    SmtpSecurity::Tls => Tls::Wrapper(tls()?),
                };
                let mut builder =
                    AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(smtp.host.clone())
                        .port(smtp.port)
                        .tls(tls)
                        .timeout(Some(smtp.timeout))
                        .pool_config(
                            PoolConfig::new()
                                .max_size(smtp.pool_size)
                                .idle_timeout(smtp.pool_idle_timeout),
                        );
                if !smtp.username.is_empty() {
                    builder = builder.credentials(Credentials::new(
                        smtp.username.clone(),
                        smtp.password.expose().to_string(),
                    ));
                }
                Ok(Self::Smtp(builder.build()))
            }
        }
    }

    /// Sends `message`; `Done` only once the server accepted it (or the file is written).
    pub async fn send(&self, message: Message) -> Outcome {
        match self {
            Self::Smtp(smtp) => match smtp.send(message).await {
                Ok(_) => Outcome::Done,
                // Only a 5xx answer says the mail will never be accepted; refused
                // connections, timeouts, TLS trouble and 4xx answers may pass.
                Err(err) if err.is_permanent() => Outcome::Permanent(describe(&err)),
                Err(err) => Outcome::Transient(describe(&err)),
            },
            Self::File(file) => match file.send(message).await {
                Ok(_) => Outcome::Done,
                Err(err) => Outcome::Transient(describe(&err)),
            },
        }
    }
}

/// The CA certificates in the PEM file `path`, each checked to be usable as a trust
/// anchor, so that a wrong file is a configuration error rather than failed deliveries.
pub fn trusted_certificates(path: &Path) -> Result<Certificate, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;

    let pem =
        std::fs::read(path).map_err(|err| format!("cannot read {}: {err}", path.display()))?;
    let mut anchors = rustls::RootCertStore::empty();
    for der in CertificateDer::pem_slice_iter(&pem) {
        let der = der.map_err(|err| format!("{}: bad PEM: {err}", path.display()))?;
        anchors
            .add(der)
            .map_err(|err| format!("{}: not a usable CA certificate: {err}", path.display()))?;
    }
    if anchors.is_empty() {
        return Err(format!(
            "{}: no PEM certificate (-----BEGIN CERTIFICATE-----) in it",
            path.display()
        ));
    }
    Certificate::from_pem(&pem).map_err(|err| format!("{}: {err}", path.display()))
}

/// The error with its causes, which carry the useful part (e.g. "Connection refused").
fn describe(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let line = cause.to_string();
        if !text.contains(&line) {
            text.push_str(": ");
            text.push_str(&line);
        }
        source = cause.source();
    }
    text
}
