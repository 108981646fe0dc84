//! Delivery over TLS to a real SMTP server on loopback that speaks it: SMTPS
//! (`mail.smtp.security = "tls"`) and STARTTLS (`"starttls"`), with the server's private
//! CA trusted through `mail.smtp.ca_file`. Mail is never sent in clear when the server
//! does not offer STARTTLS, nor to a server whose certificate is not trusted.

use std::path::Path;
use std::time::Duration;

use gatehouse::config::{Settings, SmtpSecurity};
use gatehouse::mail::MailKind;

use crate::on_both_backends;
use crate::support::certs::TestCa;
use crate::support::mail::{queue, wait_status};
use crate::support::smtp_sink::{SmtpSink, TlsMode};
use crate::support::{spawn_app_with, use_smtp, Backend};

const WAIT: Duration = Duration::from_secs(10);

on_both_backends!(
    mail_over_smtps_arrives_intact,
    mail_over_starttls_arrives_intact,
    starttls_not_offered_means_nothing_is_sent_in_clear,
    a_server_certificate_from_an_untrusted_ca_gets_no_mail,
);

/// A sink speaking TLS as `mode`, with a certificate for 127.0.0.1 signed by `ca`.
async fn sink_signed_by(ca: &TestCa, mode: TlsMode) -> SmtpSink {
    let leaf = ca.leaf(&["127.0.0.1"]);
    SmtpSink::start_tls(mode, &leaf.der, &leaf.key_pem).await
}

/// Delivers to `sink` with `security`, trusting the CA certificates in `ca_file`; gives
/// up after two attempts, so that a failing mail ends `failed` with its last error.
fn use_smtp_with(settings: &mut Settings, sink: &SmtpSink, security: SmtpSecurity, ca_file: &Path) {
    use_smtp(settings, sink.addr);
    settings.mail.smtp.security = security;
    settings.mail.smtp.ca_file = ca_file.to_path_buf();
    settings.mail.retry.max_attempts = 2;
}

async fn mail_over_smtps_arrives_intact(backend: Backend) {
    arrives_intact(backend, TlsMode::Implicit, SmtpSecurity::Tls).await;
}

async fn mail_over_starttls_arrives_intact(backend: Backend) {
    arrives_intact(backend, TlsMode::Starttls, SmtpSecurity::Starttls).await;
}

/// A mail sent with `security` to a sink speaking `mode` arrives encrypted and whole:
/// envelope, recipient, subject and both parts.
async fn arrives_intact(backend: Backend, mode: TlsMode, security: SmtpSecurity) {
    let ca = TestCa::new();
    let sink = sink_signed_by(&ca, mode).await;
    let (_dir, ca_file) = ca.pem_file();
    let Some(app) = spawn_app_with(backend, |s| use_smtp_with(s, &sink, security, &ca_file)).await
    else {
        return;
    };
    let link = "https://app.example.com/verify?token=t1&x=1";
    let id = queue(&app, MailKind::Verification, "ann@example.com", link).await;
    let received = sink.wait_for(1, WAIT).await;
    let (status, attempts, error) = wait_status(&app, &id, "sent", WAIT).await;
    assert_eq!((status.as_str(), attempts, error), ("sent", 1, None));

    let raw = &received[0];
    assert!(raw.encrypted, "the message came over TLS");
    assert_eq!(raw.from, "noreply@localhost");
    assert_eq!(raw.to, ["ann@example.com"]);
    let mail = raw.parsed();
    assert_eq!(mail.subject(), Some("Verify your Gatehouse email"));
    let to = mail.to().unwrap().first().unwrap();
    assert_eq!(to.address(), Some("ann@example.com"));
    assert_eq!(to.name(), Some("Ann Tester"));
    assert_eq!(mail.text_body_count(), 1);
    assert_eq!(mail.html_body_count(), 1);
    let text = mail.body_text(0).unwrap();
    assert!(text.contains(link), "text: {text}");
    let html = mail.body_html(0).unwrap();
    assert!(html.contains(&link.replace('&', "&amp;")), "html: {html}");
    assert_eq!(sink.received().len(), 1, "sent once");
}

async fn starttls_not_offered_means_nothing_is_sent_in_clear(backend: Backend) {
    let ca = TestCa::new();
    let plain = SmtpSink::start().await;
    let (_dir, ca_file) = ca.pem_file();
    let Some(app) = spawn_app_with(backend, |s| {
        use_smtp_with(s, &plain, SmtpSecurity::Starttls, &ca_file);
    })
    .await
    else {
        return;
    };
    let id = queue(
        &app,
        MailKind::PasswordReset,
        "ann@example.com",
        "https://x.test/r",
    )
    .await;
    let (_, attempts, error) = wait_status(&app, &id, "failed", WAIT).await;
    assert_eq!(attempts, 2, "retried until max_attempts");
    let error = error.unwrap();
    assert!(error.contains("STARTTLS"), "{error}");
    assert!(plain.received().is_empty(), "nothing was sent in clear");
}

async fn a_server_certificate_from_an_untrusted_ca_gets_no_mail(backend: Backend) {
    let server_ca = TestCa::new();
    let sink = sink_signed_by(&server_ca, TlsMode::Starttls).await;
    let (_dir, other_ca_file) = TestCa::new().pem_file();
    let Some(app) = spawn_app_with(backend, |s| {
        use_smtp_with(s, &sink, SmtpSecurity::Starttls, &other_ca_file);
    })
    .await
    else {
        return;
    };
    let id = queue(
        &app,
        MailKind::Verification,
        "ann@example.com",
        "https://x.test/v",
    )
    .await;
    let (_, attempts, error) = wait_status(&app, &id, "failed", WAIT).await;
    assert_eq!(attempts, 2, "retried until max_attempts");
    let error = error.unwrap();
    assert!(error.contains("certificate"), "{error}");
    assert!(sink.received().is_empty(), "nothing was sent");
}
