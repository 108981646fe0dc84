//! Campaigns: fan-out to confirmed subscribers through the outbox, delivery counts,
//! and idempotent sending with an `Idempotency-Key`.

use std::time::{Duration, Instant};

use gatehouse::actors::database::DbError;
use gatehouse::mail::{newsletter, outbox, MailKind};
use reqwest::Method;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde_json::{json, Value};

use crate::on_both_backends;
use crate::support::mail::{count, outbox_row, queue, subscribe_confirmed, wait_status};
use crate::support::smtp_sink::SmtpSink;
use crate::support::{spawn_app_with, use_smtp, Backend, TestApp};

const WAIT: Duration = Duration::from_secs(10);

on_both_backends!(
    a_campaign_reaches_every_confirmed_subscriber_once,
    sending_is_idempotent_per_key,
    queued_campaign_mail_is_withdrawn_when_the_recipient_unsubscribes,
    a_claimed_campaign_mail_still_waiting_for_its_turn_is_withdrawn,
    bad_campaigns_get_clear_errors,
);

/// Creates a campaign over HTTP; returns its id.
pub async fn create_campaign(app: &TestApp, admin: &str, subject: &str) -> String {
    let response = app
        .with_token(Method::POST, "/api/admin/campaigns", admin)
        .json(&json!({
            "subject": subject,
            "text": format!("{subject} in plain text."),
            "html": format!("<h1>{subject}</h1><p>In <em>HTML</em>.</p>"),
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "draft");
    body["id"].as_str().unwrap().to_string()
}

async fn post_send(app: &TestApp, admin: &str, id: &str, key: Option<&str>) -> reqwest::Response {
    let mut request = app.with_token(
        Method::POST,
        &format!("/api/admin/campaigns/{id}/send"),
        admin,
    );
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    request.send().await.unwrap()
}

/// Sends a campaign over HTTP with `key`; returns the answer.
pub async fn send_campaign(app: &TestApp, admin: &str, id: &str, key: &str) -> Value {
    let response = post_send(app, admin, id, Some(key)).await;
    assert_eq!(response.status(), 202);
    response.json().await.unwrap()
}

async fn campaign(app: &TestApp, admin: &str, id: &str) -> Value {
    let response = app
        .with_token(Method::GET, &format!("/api/admin/campaigns/{id}"), admin)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

async fn a_campaign_reaches_every_confirmed_subscriber_once(backend: Backend) {
    let sink = SmtpSink::start().await;
    let Some(app) = spawn_app_with(backend, |s| use_smtp(s, sink.addr)).await else {
        return;
    };
    let admin = app.superuser_token("admin@example.com").await;
    subscribe_confirmed(&app, &sink, "ann@example.com", 1).await;
    subscribe_confirmed(&app, &sink, "bob@example.com", 2).await;
    // Subscribed but never confirmed: gets no campaign.
    let response = app
        .client
        .post(app.url("/api/newsletter/subscribe"))
        .json(&json!({"email": "pending@example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    sink.wait_for(3, WAIT).await;

    let id = create_campaign(&app, &admin, "November <news>").await;
    let sent = send_campaign(&app, &admin, &id, "nov-1").await;
    assert_eq!(sent["status"], "queued");
    assert_eq!(sent["recipients"], 2);

    let received = sink.wait_for(5, WAIT).await;
    let campaign_mail: Vec<_> = received[3..].to_vec();
    let mut to: Vec<_> = campaign_mail
        .iter()
        .map(|mail| mail.to[0].clone())
        .collect();
    to.sort();
    assert_eq!(to, ["ann@example.com", "bob@example.com"]);
    for raw in &campaign_mail {
        let mail = raw.parsed();
        assert_eq!(mail.subject(), Some("November <news>"));
        assert!(mail
            .body_text(0)
            .unwrap()
            .contains("November <news> in plain text."));
        // The administrator's markup is kept; the subject inside <title> is escaped.
        let html = mail.body_html(0).unwrap();
        assert!(
            html.contains("<h1>November <news></h1><p>In <em>HTML</em>.</p>"),
            "{html}"
        );
        assert!(
            html.contains("<title>November &lt;news&gt;</title>"),
            "{html}"
        );
        assert!(mail.header("List-Unsubscribe").is_some());
        assert!(mail.header("List-Id").is_some());
    }

    let mut status = campaign(&app, &admin, &id).await;
    for _ in 0..100 {
        if status["counts"]["sent"] == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        status = campaign(&app, &admin, &id).await;
    }
    assert_eq!(
        status["counts"],
        json!({"queued": 0, "sent": 2, "failed": 0, "cancelled": 0})
    );
    assert!(sink.settle(Duration::from_millis(300)).await.len() == 5);
}

async fn sending_is_idempotent_per_key(backend: Backend) {
    let sink = SmtpSink::start().await;
    let Some(app) = spawn_app_with(backend, |s| use_smtp(s, sink.addr)).await else {
        return;
    };
    let admin = app.superuser_token("admin@example.com").await;
    subscribe_confirmed(&app, &sink, "ann@example.com", 1).await;
    let id = create_campaign(&app, &admin, "Once").await;

    let missing = post_send(&app, &admin, &id, None).await;
    assert_eq!(missing.status(), 400);
    assert_eq!(
        missing.json::<Value>().await.unwrap()["code"],
        "idempotency_key_required"
    );

    // The client did not see the first answer and retries, several times at once.
    let first = send_campaign(&app, &admin, &id, "send-once").await;
    let retries = futures_util::future::join_all(
        (0..5).map(|_| post_send(&app, &admin, &id, Some("send-once"))),
    )
    .await;
    for retry in retries {
        assert_eq!(retry.status(), 202);
        assert_eq!(retry.json::<Value>().await.unwrap(), first);
    }

    let other_key = post_send(&app, &admin, &id, Some("another-key")).await;
    assert_eq!(other_key.status(), 409);
    assert_eq!(
        other_key.json::<Value>().await.unwrap()["code"],
        "campaign_already_sent"
    );

    let second = create_campaign(&app, &admin, "Other").await;
    let reused = post_send(&app, &admin, &second, Some("send-once")).await;
    assert_eq!(reused.status(), 422);
    assert_eq!(
        reused.json::<Value>().await.unwrap()["code"],
        "idempotency_key_reused"
    );

    sink.wait_for(2, WAIT).await;
    let received = sink.settle(Duration::from_millis(500)).await;
    assert_eq!(received.len(), 2, "one confirmation and one campaign mail");
    assert_eq!(
        count(
            &app,
            "SELECT COUNT(*) AS n FROM outbox WHERE kind = 'campaign'"
        )
        .await,
        1
    );
}

/// The outbox id of the campaign mail to `email`.
async fn campaign_mail_to(app: &TestApp, email: &'static str) -> String {
    app.db
        .read::<_, DbError, _>(move |txn| {
            Box::pin(async move {
                Ok(outbox::entity::Entity::find()
                    .filter(outbox::entity::Column::Kind.eq("campaign"))
                    .filter(outbox::entity::Column::Recipient.eq(email))
                    .one(txn)
                    .await?
                    .expect("a campaign mail to this recipient")
                    .id)
            })
        })
        .await
        .unwrap()
}

/// Follows the unsubscribe link of `email` (its token read from the database).
async fn unsubscribe(app: &TestApp, email: &'static str) {
    let token = app
        .db
        .read::<_, DbError, _>(move |txn| {
            Box::pin(async move {
                Ok(newsletter::entity::Entity::find()
                    .filter(newsletter::entity::Column::Email.eq(email))
                    .one(txn)
                    .await?
                    .expect("a subscriber")
                    .unsubscribe_token)
            })
        })
        .await
        .unwrap();
    let response = app
        .client
        .post(app.url(&format!("/api/newsletter/unsubscribe?token={token}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

async fn queued_campaign_mail_is_withdrawn_when_the_recipient_unsubscribes(backend: Backend) {
    let mut sink = SmtpSink::start().await;
    let Some(app) = spawn_app_with(backend, |s| {
        use_smtp(s, sink.addr);
        s.mail.retry.max_attempts = 1000;
    })
    .await
    else {
        return;
    };
    let admin = app.superuser_token("admin@example.com").await;
    subscribe_confirmed(&app, &sink, "ann@example.com", 1).await;
    subscribe_confirmed(&app, &sink, "bob@example.com", 2).await;

    // The mail server is down while the campaign is queued: both mails are retried.
    sink.stop().await;
    let id = create_campaign(&app, &admin, "Delayed").await;
    send_campaign(&app, &admin, &id, "delayed").await;
    let bob = campaign_mail_to(&app, "bob@example.com").await;
    wait_attempts_above(&app, &bob, 1).await;
    unsubscribe(&app, "ann@example.com").await;

    // An attempt at Ann's mail may have been handed to the server just before she
    // unsubscribed (a send in progress is not stopped). Rounds run one at a time and
    // claim all due mail, so the next attempt at Bob's mail comes in a later round: once
    // it is made, such an attempt is over, failed against the stopped server.
    let (_, attempts, _) = outbox_row(&app, &bob).await;
    wait_attempts_above(&app, &bob, attempts).await;

    sink.restart().await;
    sink.wait_for(3, WAIT).await;
    wait_status(&app, &bob, "sent", WAIT).await;
    let received = sink.settle(Duration::from_millis(500)).await;
    assert_eq!(received.len(), 3);
    assert_eq!(received[2].to, ["bob@example.com"]);
    let status = campaign(&app, &admin, &id).await;
    assert_eq!(status["counts"]["cancelled"], 1);
    assert_eq!(status["counts"]["sent"], 1);
}

/// Waits until the outbox row `id` was attempted more than `attempts` times.
async fn wait_attempts_above(app: &TestApp, id: &str, attempts: i32) {
    let deadline = Instant::now() + WAIT;
    loop {
        let row = outbox_row(app, id).await;
        if row.1 > attempts {
            return;
        }
        assert!(Instant::now() < deadline, "{id} is {row:?} after {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Campaign mails claimed together are sent one after the other. A recipient who
/// unsubscribes while their mail, already claimed, waits behind a slow send gets nothing.
async fn a_claimed_campaign_mail_still_waiting_for_its_turn_is_withdrawn(backend: Backend) {
    let sink = SmtpSink::start().await;
    let Some(app) = spawn_app_with(backend, |s| {
        use_smtp(s, sink.addr);
        s.mail.concurrency = 1;
        s.mail.batch_size = 2;
        // The held answer below must not time out.
        s.mail.smtp.timeout = Duration::from_secs(10);
    })
    .await
    else {
        return;
    };
    let admin = app.superuser_token("admin@example.com").await;
    subscribe_confirmed(&app, &sink, "ann@example.com", 1).await;
    subscribe_confirmed(&app, &sink, "bob@example.com", 2).await;

    sink.hold();
    let id = create_campaign(&app, &admin, "Slow").await;
    send_campaign(&app, &admin, &id, "slow").await;
    let deadline = Instant::now() + WAIT;
    while sink.held() == 0 {
        assert!(
            Instant::now() < deadline,
            "no campaign mail reached the server"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // One mail is being sent, its answer held; the other is claimed and waits.
    assert_eq!(
        count(
            &app,
            "SELECT COUNT(*) AS n FROM outbox WHERE kind = 'campaign' AND status = 'sending'"
        )
        .await,
        2
    );
    unsubscribe(&app, "ann@example.com").await;
    unsubscribe(&app, "bob@example.com").await;
    sink.release();

    // Mail queued now goes out in a later round, after the claimed mails were dealt with.
    queue(
        &app,
        MailKind::Verification,
        "carol@example.com",
        "https://x.test/v",
    )
    .await;
    let received = sink.wait_for(4, WAIT).await;
    assert_eq!(
        received[3].to,
        ["carol@example.com"],
        "only the campaign mail in progress was sent"
    );
    let status = campaign(&app, &admin, &id).await;
    assert_eq!(status["counts"]["cancelled"], 2);
    assert_eq!(status["counts"]["sent"], 0);
}

async fn bad_campaigns_get_clear_errors(backend: Backend) {
    let Some(app) = spawn_app_with(backend, |_| {}).await else {
        return;
    };
    let admin = app.superuser_token("admin@example.com").await;
    let response = app
        .with_token(Method::POST, "/api/admin/campaigns", &admin)
        .json(&json!({"subject": "", "text": "t", "html": " "}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "validation_failed");
    assert!(body["data"]["subject"].is_object());
    assert!(body["data"]["html"].is_object());
    assert!(body["data"].get("text").is_none());

    let response = post_send(&app, &admin, "no-such-campaign", Some("k")).await;
    assert_eq!(response.status(), 404);
    let missing = app
        .with_token(Method::GET, "/api/admin/campaigns/nope", &admin)
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
}
