//! The outbox admin API: paged listing by state, retrying failed mail, and the
//! OpenAPI description of every mail endpoint.

use std::time::Duration;

use gatehouse::mail::MailKind;
use reqwest::Method;
use serde_json::Value;

use crate::on_both_backends;
use crate::support::mail::{queue, wait_status};
use crate::support::smtp_sink::{Mode, SmtpSink};
use crate::support::{spawn_app, spawn_app_with, use_smtp, Backend, TestApp};

const WAIT: Duration = Duration::from_secs(10);

on_both_backends!(
    the_outbox_lists_by_state_in_pages,
    a_failed_mail_can_be_retried_once_the_server_accepts,
    only_failed_mail_can_be_retried,
    bad_outbox_queries_get_clear_errors,
    the_mail_admin_api_is_for_superusers_only,
);

async fn json(app: &TestApp, admin: &str, path: &str) -> (u16, Value) {
    let response = app
        .with_token(Method::GET, path, admin)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

async fn the_outbox_lists_by_state_in_pages(backend: Backend) {
    let sink = SmtpSink::start().await;
    let Some(app) = spawn_app_with(backend, |s| use_smtp(s, sink.addr)).await else {
        return;
    };
    let admin = app.superuser_token("admin@example.com").await;
    let mut sent = Vec::new();
    for i in 0..3 {
        let id = queue(
            &app,
            MailKind::Verification,
            &format!("ok{i}@example.com"),
            "https://x.test",
        )
        .await;
        wait_status(&app, &id, "sent", WAIT).await;
        sent.push(id);
    }
    sink.set_mode(Mode::Reject);
    let failed = queue(
        &app,
        MailKind::PasswordReset,
        "gone@example.com",
        "https://x.test",
    )
    .await;
    wait_status(&app, &failed, "failed", WAIT).await;

    let (status, page) = json(&app, &admin, "/api/admin/outbox?perPage=2").await;
    assert_eq!(status, 200);
    assert_eq!(page["page"], 1);
    assert_eq!(page["perPage"], 2);
    assert_eq!(page["totalItems"], 4);
    assert_eq!(page["totalPages"], 2);
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    let (_, second) = json(&app, &admin, "/api/admin/outbox?perPage=2&page=2").await;
    assert_eq!(second["items"].as_array().unwrap().len(), 2);

    let (_, only_failed) = json(&app, &admin, "/api/admin/outbox?status=failed").await;
    assert_eq!(only_failed["totalItems"], 1);
    let entry = &only_failed["items"][0];
    assert_eq!(entry["id"], failed.as_str());
    assert_eq!(entry["kind"], "password_reset");
    assert_eq!(entry["to"], "gone@example.com");
    assert_eq!(entry["status"], "failed");
    assert_eq!(entry["attempts"], 1);
    assert!(entry["lastError"].as_str().unwrap().contains("550"));
    assert!(entry["finishedAt"].is_string());

    let (_, only_sent) = json(&app, &admin, "/api/admin/outbox?status=sent").await;
    let mut ids: Vec<_> = only_sent["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    sent.sort();
    assert_eq!(ids, sent);
}

async fn a_failed_mail_can_be_retried_once_the_server_accepts(backend: Backend) {
    let sink = SmtpSink::start().await;
    sink.set_mode(Mode::Reject);
    let Some(app) = spawn_app_with(backend, |s| use_smtp(s, sink.addr)).await else {
        return;
    };
    let admin = app.superuser_token("admin@example.com").await;
    let id = queue(
        &app,
        MailKind::EmailChange,
        "late@example.com",
        "https://x.test",
    )
    .await;
    wait_status(&app, &id, "failed", WAIT).await;

    sink.set_mode(Mode::Accept);
    let response = app
        .with_token(
            Method::POST,
            &format!("/api/admin/outbox/{id}/retry"),
            &admin,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let entry: Value = response.json().await.unwrap();
    assert_eq!(entry["status"], "pending");
    assert_eq!(entry["attempts"], 0);

    let received = sink.wait_for(1, WAIT).await;
    assert_eq!(received[0].to, ["late@example.com"]);
    let (_, attempts, _) = wait_status(&app, &id, "sent", WAIT).await;
    assert_eq!(attempts, 1);
    assert_eq!(sink.settle(Duration::from_millis(300)).await.len(), 1);
}

async fn only_failed_mail_can_be_retried(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let admin = app.superuser_token("admin@example.com").await;
    let id = queue(
        &app,
        MailKind::Verification,
        "ann@example.com",
        "https://x.test",
    )
    .await;
    wait_status(&app, &id, "sent", WAIT).await;
    let response = app
        .with_token(
            Method::POST,
            &format!("/api/admin/outbox/{id}/retry"),
            &admin,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 409);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "outbox_not_retryable");
    assert!(body["message"].as_str().unwrap().contains("sent"));

    let response = app
        .with_token(Method::POST, "/api/admin/outbox/no-such-id/retry", &admin)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
}

async fn bad_outbox_queries_get_clear_errors(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let admin = app.superuser_token("admin@example.com").await;
    let (status, body) = json(
        &app,
        &admin,
        "/api/admin/outbox?status=lost&page=0&perPage=9999",
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(body["code"], "validation_failed");
    for field in ["status", "page", "perPage"] {
        assert!(body["data"][field].is_object(), "{field}: {body}");
    }
    let (status, body) = json(&app, &admin, "/api/admin/outbox?page=abc").await;
    assert_eq!(status, 400);
    assert_eq!(body["code"], "invalid_query");
}

async fn the_mail_admin_api_is_for_superusers_only(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let user = app.user_token("someone@example.com").await;
    let endpoints = [
        (Method::GET, "/api/admin/outbox"),
        (Method::POST, "/api/admin/outbox/some-id/retry"),
        (Method::POST, "/api/admin/campaigns"),
        (Method::GET, "/api/admin/campaigns/some-id"),
        (Method::POST, "/api/admin/campaigns/some-id/send"),
    ];
    for (method, path) in endpoints {
        let guest = app
            .client
            .request(method.clone(), app.url(path))
            .send()
            .await
            .unwrap();
        assert_eq!(guest.status(), 401, "{method} {path} as a guest");
        let member = app
            .with_token(method.clone(), path, &user)
            .json(&serde_json::json!({"subject": "s", "text": "t", "html": "h"}))
            .send()
            .await
            .unwrap();
        assert_eq!(member.status(), 403, "{method} {path} as a user");
    }
}

#[actix_web::test]
async fn every_mail_endpoint_is_described_in_openapi() {
    let app = spawn_app(Backend::Sqlite).await.unwrap();
    let response = app.get("/api/openapi.json").await;
    let (status, doc): (u16, Value) = (response.status().as_u16(), response.json().await.unwrap());
    assert_eq!(status, 200);
    for (path, method) in [
        ("/api/newsletter/subscribe", "post"),
        ("/api/newsletter/confirm", "get"),
        ("/api/newsletter/unsubscribe", "get"),
        ("/api/newsletter/unsubscribe", "post"),
        ("/api/admin/outbox", "get"),
        ("/api/admin/outbox/{id}/retry", "post"),
        ("/api/admin/campaigns", "post"),
        ("/api/admin/campaigns/{id}", "get"),
        ("/api/admin/campaigns/{id}/send", "post"),
    ] {
        assert!(
            doc["paths"][path][method].is_object(),
            "{method} {path} is missing"
        );
    }
    for schema in ["OutboxPage", "OutboxEntry", "Campaign", "SubscribeRequest"] {
        assert!(doc["components"]["schemas"][schema].is_object(), "{schema}");
    }
}
