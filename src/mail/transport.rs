//! The two ways mail leaves Gatehouse: an SMTP server, or `.eml` files in a folder.

use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
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
                    TlsParameters::new(smtp.host.clone())
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
