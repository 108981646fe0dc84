//! Helpers for mail tests: queue a mail the way feature code does, read the outbox,
//! find links in received mail, subscribe and confirm over HTTP.

use std::time::{Duration, Instant};

use gatehouse::actors::database::DbError;
use gatehouse::mail::{enqueue, MailKind, MailTemplates, OutgoingMail};
use sea_orm::{ConnectionTrait, Statement};
use serde_json::json;

use super::smtp_sink::SmtpSink;
use super::TestApp;

/// Renders `kind` with the built-in templates and queues it in one transaction, as
/// feature code does, then wakes the mailer. Returns the outbox id.
pub async fn queue(app: &TestApp, kind: MailKind, to: &str, link: &str) -> String {
    let content = MailTemplates::built_in()
        .render(
            kind,
            &json!({"app_name": "Gatehouse", "email": to, "name": "Ann <Tester>", "link": link}),
        )
        .unwrap();
    let mail = OutgoingMail {
        to: to.to_string(),
        to_name: Some("Ann Tester".into()),
        kind,
        content,
        headers: vec![],
    };
    let id = app
        .db
        .transact::<_, DbError, _>(move |txn| {
            Box::pin(async move { Ok(enqueue(txn, &mail).await?) })
        })
        .await
        .unwrap();
    app.mailer.wake();
    id
}

/// One outbox row's status, attempts and last error.
pub async fn outbox_row(app: &TestApp, id: &str) -> (String, i32, Option<String>) {
    let id = id.to_string();
    app.db
        .transact::<_, DbError, _>(move |txn| {
            Box::pin(async move {
                let backend = txn.get_database_backend();
                let sql = match backend {
                    sea_orm::DbBackend::Postgres => {
                        "SELECT status, attempts, last_error FROM outbox WHERE id = $1"
                    }
                    _ => "SELECT status, attempts, last_error FROM outbox WHERE id = ?",
                };
                let row = txn
                    .query_one(Statement::from_sql_and_values(backend, sql, [id.into()]))
                    .await?
                    .expect("the outbox row exists");
                Ok((
                    row.try_get("", "status")?,
                    row.try_get("", "attempts")?,
                    row.try_get("", "last_error")?,
                ))
            })
        })
        .await
        .unwrap()
}

/// Waits until the outbox row `id` is in `status`.
pub async fn wait_status(
    app: &TestApp,
    id: &str,
    status: &str,
    limit: Duration,
) -> (String, i32, Option<String>) {
    let deadline = Instant::now() + limit;
    loop {
        let row = outbox_row(app, id).await;
        if row.0 == status {
            return row;
        }
        assert!(
            Instant::now() < deadline,
            "outbox row {id} is {row:?}, not {status}, after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A number from a `SELECT COUNT(*) …` query.
pub async fn count(app: &TestApp, sql: &'static str) -> i64 {
    app.query_value(sql).await
}

/// The first URL in `text` that contains `path`.
pub fn link_in(text: &str, path: &str) -> String {
    text.split(|c: char| c.is_whitespace() || c == '"' || c == '<' || c == '>')
        .find(|word| word.starts_with("http") && word.contains(path))
        .unwrap_or_else(|| panic!("no link to {path} in:\n{text}"))
        .to_string()
}

/// Subscribes `email` over HTTP, waits for the confirmation mail (the `nth`, counting
/// from 1, that the sink receives) and follows its link.
pub async fn subscribe_confirmed(app: &TestApp, sink: &SmtpSink, email: &str, nth: usize) {
    let response = app
        .client
        .post(app.url("/api/newsletter/subscribe"))
        .json(&json!({"email": email}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let received = sink.wait_for(nth, Duration::from_secs(10)).await;
    let mail = received[nth - 1].parsed();
    let link = link_in(&mail.body_text(0).unwrap(), "/api/newsletter/confirm");
    let confirmed = app.client.get(&link).send().await.unwrap();
    assert_eq!(
        confirmed.status(),
        200,
        "{}",
        confirmed.text().await.unwrap()
    );
}
