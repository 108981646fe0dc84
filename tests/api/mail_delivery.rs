//! Delivery through a real SMTP server on loopback: every mail kind arrives complete,
//! transient trouble is retried, permanent rejection fails at once, and instances
//! sharing a database never send one mail twice.

use std::time::Duration;

use gatehouse::actors::database::DbError;
use gatehouse::mail::{enqueue, MailKind, OutgoingMail, RenderedMail};
use mail_parser::MimeHeaders;

use crate::on_both_backends;
use crate::support::mail::{count, outbox_row, queue, wait_status};
use crate::support::smtp_sink::{Mode, SmtpSink};
use crate::support::{spawn_app_with, use_smtp, Backend};

const WAIT: Duration = Duration::from_secs(10);

on_both_backends!(
    account_mails_arrive_with_both_parts_and_headers,
    mail_waits_while_the_server_is_down_then_arrives_once,
    temporary_failures_are_retried_then_given_up,
    a_permanent_rejection_fails_at_once,
    the_file_transport_writes_eml_files,
    a_mail_that_could_never_be_sent_is_not_queued,
    operator_templates_replace_the_built_in_ones,
    two_instances_sharing_a_database_send_each_mail_once,
    shutdown_finishes_the_send_in_progress_and_records_it,
);

async fn account_mails_arrive_with_both_parts_and_headers(backend: Backend) {
    let sink = SmtpSink::start().await;
    let Some(app) = spawn_app_with(backend, |s| use_smtp(s, sink.addr)).await else {
        return;
    };
    let kinds = [
        (MailKind::Verification, "Verify your Gatehouse email"),
        (MailKind::PasswordReset, "Reset your Gatehouse password"),
        (MailKind::EmailChange, "Confirm your new Gatehouse email"),
    ];
    let mut ids = Vec::new();
    for (i, (kind, _)) in kinds.iter().enumerate() {
        let link = format!("https://app.example.com/confirm?token=t{i}&x=1");
        ids.push(queue(&app, *kind, &format!("user{i}@example.com"), &link).await);
    }
    let received = sink.wait_for(3, WAIT).await;
    assert_eq!(received.len(), 3);
    for (i, (kind, subject)) in kinds.iter().enumerate() {
        let to = format!("user{i}@example.com");
        let raw = received
            .iter()
            .find(|mail| mail.to == [to.clone()])
            .unwrap_or_else(|| panic!("no mail to {to}"));
        assert_eq!(raw.from, "noreply@localhost");
        let mail = raw.parsed();
        assert_eq!(mail.subject(), Some(*subject), "{kind:?}");
        let to_header = mail.to().unwrap().first().unwrap();
        assert_eq!(to_header.address(), Some(to.as_str()));
        assert_eq!(to_header.name(), Some("Ann Tester"));
        assert_eq!(
            mail.from().unwrap().first().unwrap().address(),
            Some("noreply@localhost")
        );
        assert!(mail.date().is_some(), "{kind:?}: Date");
        assert_eq!(
            mail.message_id(),
            Some(format!("{}@localhost", ids[i]).as_str()),
            "{kind:?}: Message-ID"
        );
        assert!(mail
            .content_type()
            .is_some_and(|ct| ct.c_type == "multipart" && ct.subtype() == Some("alternative")));
        assert_eq!(mail.text_body_count(), 1);
        assert_eq!(mail.html_body_count(), 1);
        let link = format!("https://app.example.com/confirm?token=t{i}&x=1");
        let text = mail.body_text(0).unwrap();
        let html = mail.body_html(0).unwrap();
        assert!(text.contains(&link), "{kind:?} text: {text}");
        assert!(text.contains("Ann <Tester>"), "text is not escaped: {text}");
        assert!(
            html.contains(&link.replace('&', "&amp;")),
            "{kind:?} html: {html}"
        );
        assert!(
            html.contains("Ann &lt;Tester&gt;"),
            "html is escaped: {html}"
        );
        assert!(mail.header("List-Unsubscribe").is_none());
    }
    for id in &ids {
        let (status, attempts, error) = wait_status(&app, id, "sent", WAIT).await;
        assert_eq!((status.as_str(), attempts, error), ("sent", 1, None));
    }
}

async fn mail_waits_while_the_server_is_down_then_arrives_once(backend: Backend) {
    let mut sink = SmtpSink::start().await;
    sink.stop().await;
    let Some(app) = spawn_app_with(backend, |s| {
        use_smtp(s, sink.addr);
        s.mail.retry.max_attempts = 1000;
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

    // Connections are refused: the mail is retried and stays pending, never failed.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, attempts, error) = outbox_row(&app, &id).await;
    assert!(
        status == "pending" || status == "sending",
        "{status} {attempts} {error:?}"
    );
    assert!(attempts >= 2, "retried: {attempts} attempts");
    assert!(
        error
            .as_deref()
            .unwrap_or_default()
            .contains("onnection refused"),
        "{error:?}"
    );
    assert!(sink.received().is_empty());

    sink.restart().await;
    sink.wait_for(1, WAIT).await;
    wait_status(&app, &id, "sent", WAIT).await;
    let received = sink.settle(Duration::from_millis(600)).await;
    assert_eq!(received.len(), 1, "delivered exactly once");
    assert_eq!(received[0].to, ["ann@example.com"]);
}

async fn temporary_failures_are_retried_then_given_up(backend: Backend) {
    let sink = SmtpSink::start().await;
    sink.set_mode(Mode::TempFail);
    let Some(app) = spawn_app_with(backend, |s| {
        use_smtp(s, sink.addr);
        s.mail.retry.max_attempts = 3;
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
    assert_eq!(attempts, 3, "gave up after max_attempts");
    let error = error.unwrap();
    assert!(error.contains("451"), "{error}");
    assert!(sink.received().is_empty());
}

async fn a_permanent_rejection_fails_at_once(backend: Backend) {
    let sink = SmtpSink::start().await;
    sink.set_mode(Mode::Reject);
    let Some(app) = spawn_app_with(backend, |s| use_smtp(s, sink.addr)).await else {
        return;
    };
    let id = queue(
        &app,
        MailKind::Verification,
        "ghost@example.com",
        "https://x.test/v",
    )
    .await;
    let (_, attempts, error) = wait_status(&app, &id, "failed", WAIT).await;
    assert_eq!(attempts, 1, "a 5xx answer is not retried");
    assert!(error.unwrap().contains("550"));

    // The server accepts again: a failed mail stays failed until an admin retries it.
    sink.set_mode(Mode::Accept);
    assert!(sink.settle(Duration::from_millis(500)).await.is_empty());
    assert_eq!(outbox_row(&app, &id).await.0, "failed");
}

async fn the_file_transport_writes_eml_files(backend: Backend) {
    let Some(app) = spawn_app_with(backend, |_| {}).await else {
        return;
    };
    let id = queue(
        &app,
        MailKind::Verification,
        "ann@example.com",
        "https://x.test/v",
    )
    .await;
    wait_status(&app, &id, "sent", WAIT).await;
    let files: Vec<_> = std::fs::read_dir(&app.mail_dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(files[0].extension().unwrap(), "eml");
    let raw = std::fs::read(&files[0]).unwrap();
    let mail = mail_parser::MessageParser::default().parse(&raw).unwrap();
    assert_eq!(mail.subject(), Some("Verify your Gatehouse email"));
    assert!(mail.body_text(0).unwrap().contains("https://x.test/v"));
    assert!(mail.body_html(0).unwrap().contains("https://x.test/v"));
}

async fn a_mail_that_could_never_be_sent_is_not_queued(backend: Backend) {
    let Some(app) = spawn_app_with(backend, |_| {}).await else {
        return;
    };
    let mail = OutgoingMail {
        to: "not an address".into(),
        to_name: None,
        kind: MailKind::Verification,
        content: RenderedMail {
            subject: "s".into(),
            text: "t".into(),
            html: "<p>h</p>".into(),
        },
        headers: vec![],
    };
    let err = app
        .db
        .transact::<String, DbError, _>(move |txn| {
            Box::pin(async move { Ok(enqueue(txn, &mail).await?) })
        })
        .await
        .unwrap_err();
    assert!(err.to_string().contains("recipient"), "{err}");
    assert_eq!(count(&app, "SELECT COUNT(*) AS n FROM outbox").await, 0);
}

async fn operator_templates_replace_the_built_in_ones(backend: Backend) {
    let sink = SmtpSink::start().await;
    let templates = tempfile::tempdir().unwrap();
    std::fs::write(
        templates.path().join("newsletter_confirmation.subject.txt"),
        "Please confirm, {{ email }}",
    )
    .unwrap();
    let Some(app) = spawn_app_with(backend, |s| {
        use_smtp(s, sink.addr);
        s.mail.templates_dir = templates.path().to_path_buf();
    })
    .await
    else {
        return;
    };
    let response = app
        .client
        .post(app.url("/api/newsletter/subscribe"))
        .json(&serde_json::json!({"email": "ann@example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let received = sink.wait_for(1, WAIT).await;
    let mail = received[0].parsed();
    assert_eq!(mail.subject(), Some("Please confirm, ann@example.com"));
    // The files the operator did not replace are the built-in ones.
    assert!(mail
        .body_text(0)
        .unwrap()
        .contains("/api/newsletter/confirm?token="));
}

/// Two instances, each with its own mailer, share one database and one SMTP server;
/// 60 mails are queued through both. Every mail arrives exactly once.
async fn two_instances_sharing_a_database_send_each_mail_once(backend: Backend) {
    let sink = SmtpSink::start().await;
    let Some(first) = spawn_app_with(backend, |s| {
        use_smtp(s, sink.addr);
        s.mail.batch_size = 4;
        s.mail.concurrency = 2;
    })
    .await
    else {
        return;
    };
    let database = first.database.clone();
    let second = spawn_app_with(backend, |s| {
        use_smtp(s, sink.addr);
        s.mail.batch_size = 4;
        s.mail.concurrency = 2;
        s.database = database;
    })
    .await
    .unwrap();

    let mut ids = Vec::new();
    for i in 0..60 {
        let app = if i % 2 == 0 { &first } else { &second };
        ids.push(
            queue(
                app,
                MailKind::Verification,
                &format!("u{i}@example.com"),
                "https://x.test/v",
            )
            .await,
        );
    }
    // Both mailers are woken for every mail, so they race for the same rows.
    for _ in 0..20 {
        first.mailer.wake();
        second.mailer.wake();
    }
    sink.wait_for(60, WAIT).await;
    let received = sink.settle(Duration::from_millis(800)).await;
    let mut recipients: Vec<_> = received.iter().map(|mail| mail.to[0].clone()).collect();
    recipients.sort();
    recipients.dedup();
    assert_eq!(received.len(), 60, "no mail sent twice");
    assert_eq!(recipients.len(), 60, "every mail sent");
    for id in &ids {
        assert_eq!(outbox_row(&first, id).await.0, "sent");
    }
}

/// A mail is on its way to a slow server when the instance is told to stop: the send
/// finishes and is recorded before the process is done, so a restart sends nothing again.
async fn shutdown_finishes_the_send_in_progress_and_records_it(backend: Backend) {
    let sink = SmtpSink::start().await;
    sink.set_reply_delay(Duration::from_millis(800));
    let Some(first) = spawn_app_with(backend, |s| use_smtp(s, sink.addr)).await else {
        return;
    };
    let id = queue(
        &first,
        MailKind::Verification,
        "ann@example.com",
        "https://x.test/v",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(sink.received().is_empty(), "the server is still answering");

    first.shut_down().await;
    assert_eq!(sink.received().len(), 1, "the send in progress finished");

    sink.set_reply_delay(Duration::ZERO);
    let database = first.database.clone();
    let second = spawn_app_with(backend, |s| {
        use_smtp(s, sink.addr);
        s.database = database;
    })
    .await
    .unwrap();
    assert_eq!(outbox_row(&second, &id).await.0, "sent");
    assert_eq!(sink.settle(Duration::from_millis(500)).await.len(), 1);
}
