use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::on_both_backends;
use crate::support::mail::{count, link_in};
use crate::support::smtp_sink::SmtpSink;
use crate::support::{spawn_app_with, use_smtp, Backend, TestApp};

on_both_backends!(
    registration_queues_a_verification_mail_whose_link_verifies,
    request_endpoints_answer_204_for_any_address_and_mail_only_real_ones,
    password_reset_by_mail_sets_the_password_and_ends_sessions,
    email_change_by_mail_needs_the_password_and_moves_the_account,
    confirm_endpoints_refuse_bad_tokens_with_the_envelope,
);

/// The sink comes first so that it is dropped last, after the instance has stopped.
async fn app_with_sink(backend: Backend) -> Option<(SmtpSink, TestApp)> {
    let sink = SmtpSink::start().await;
    let addr = sink.addr;
    let app = spawn_app_with(backend, move |s| use_smtp(s, addr)).await?;
    Some((sink, app))
}

fn text_of(sink: &SmtpSink, nth: usize) -> String {
    let received = sink.received();
    let mail = received[nth - 1].parsed();
    assert!(mail.body_html(0).is_some(), "every mail has an HTML part");
    mail.body_text(0).unwrap().into_owned()
}

async fn registration_queues_a_verification_mail_whose_link_verifies(backend: Backend) {
    let Some((sink, app)) = app_with_sink(backend).await else {
        return;
    };
    let record = app.register("vera@example.com", "password-123").await;
    let received = sink.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(received[0].to, ["vera@example.com"]);
    let subject = received[0].parsed().subject().unwrap().to_string();
    assert!(
        subject.to_lowercase().contains("verify") || subject.to_lowercase().contains("confirm"),
        "{subject}"
    );
    let link = link_in(&text_of(&sink, 1), "/_/auth/confirm-verification/");
    assert!(
        link.starts_with(&format!("http://{}", app.addr)),
        "links point at server.public_url: {link}"
    );

    let page = app.client.get(&link).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["referrer-policy"], "no-referrer");
    assert!(page
        .text()
        .await
        .unwrap()
        .contains("<form method=\"post\">"));
    let confirmed = app
        .client
        .post(&link)
        .form(&[("confirm", "1")])
        .send()
        .await
        .unwrap();
    assert_eq!(confirmed.status(), 200);
    assert!(confirmed.text().await.unwrap().contains("confirmed"));

    let (_, body) = app.login("users", "vera@example.com", "password-123").await;
    assert_eq!(body["record"]["verified"], true);
    assert_eq!(body["record"]["id"], record["id"]);

    // A failed registration writes neither an account nor a mail.
    let before = count(&app, "SELECT COUNT(*) AS n FROM outbox").await;
    let failed = app
        .post_json(
            "/api/collections/users/records",
            &json!({"email": "x@example.com", "password": "short", "passwordConfirm": "short"}),
        )
        .await;
    assert_eq!(failed.status(), 400);
    assert_eq!(
        count(&app, "SELECT COUNT(*) AS n FROM outbox").await,
        before
    );
}

async fn request_endpoints_answer_204_for_any_address_and_mail_only_real_ones(backend: Backend) {
    let Some((sink, app)) = app_with_sink(backend).await else {
        return;
    };
    app.register("rita@example.com", "password-123").await;
    sink.wait_for(1, Duration::from_secs(10)).await;
    for endpoint in ["request-verification", "request-password-reset"] {
        let unknown = app
            .post_json(
                &format!("/api/collections/users/{endpoint}"),
                &json!({"email": "nobody@example.com"}),
            )
            .await;
        assert_eq!(unknown.status(), 204, "{endpoint}");
        let known = app
            .post_json(
                &format!("/api/collections/users/{endpoint}"),
                &json!({"email": "rita@example.com"}),
            )
            .await;
        assert_eq!(known.status(), 204, "{endpoint}");
        let bad = app
            .post_json(
                &format!("/api/collections/users/{endpoint}"),
                &json!({"email": "nope"}),
            )
            .await;
        assert_eq!(bad.status(), 400);
        assert_eq!(
            bad.json::<Value>().await.unwrap()["data"]["email"]["code"],
            "validation_is_email"
        );
    }
    let received = sink.settle(Duration::from_millis(500)).await;
    assert_eq!(
        received.len(),
        3,
        "registration, verification and reset mails; none for the unknown address"
    );
    assert!(received.iter().all(|mail| mail.to == ["rita@example.com"]));
}

async fn password_reset_by_mail_sets_the_password_and_ends_sessions(backend: Backend) {
    let Some((sink, app)) = app_with_sink(backend).await else {
        return;
    };
    app.register("pete@example.com", "password-123").await;
    sink.wait_for(1, Duration::from_secs(10)).await;
    let (session, _) = app.login("users", "pete@example.com", "password-123").await;
    let request = app
        .post_json(
            "/api/collections/users/request-password-reset",
            &json!({"email": "PETE@example.com"}),
        )
        .await;
    assert_eq!(request.status(), 204);
    sink.wait_for(2, Duration::from_secs(10)).await;
    let link = link_in(&text_of(&sink, 2), "/_/auth/confirm-password-reset/");

    let mismatch = app
        .client
        .post(&link)
        .form(&[
            ("password", "new-password-1"),
            ("passwordConfirm", "other-password-1"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(mismatch.status(), 400);
    assert!(mismatch.text().await.unwrap().contains("match"));

    let reset = app
        .client
        .post(&link)
        .form(&[
            ("password", "new-password-1"),
            ("passwordConfirm", "new-password-1"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(reset.status(), 200);

    let sessions = app
        .with_token(Method::GET, "/api/collections/users/sessions", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(sessions.status(), 401, "a reset ends every session");
    let old = app
        .post_json(
            "/api/collections/users/auth-with-password",
            &json!({"identity": "pete@example.com", "password": "password-123"}),
        )
        .await;
    assert_eq!(old.status(), 400);
    app.login("users", "pete@example.com", "new-password-1")
        .await;

    let again = app
        .client
        .post(&link)
        .form(&[
            ("password", "third-password-1"),
            ("passwordConfirm", "third-password-1"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 400, "the link works once");
}

async fn email_change_by_mail_needs_the_password_and_moves_the_account(backend: Backend) {
    let Some((sink, app)) = app_with_sink(backend).await else {
        return;
    };
    app.register("old@example.com", "password-123").await;
    app.register("taken@example.com", "password-123").await;
    sink.wait_for(2, Duration::from_secs(10)).await;
    let (token, _) = app.login("users", "old@example.com", "password-123").await;

    let guest = app
        .post_json(
            "/api/collections/users/request-email-change",
            &json!({"newEmail": "new@example.com"}),
        )
        .await;
    assert_eq!(guest.status(), 401);
    let taken = app
        .with_token(
            Method::POST,
            "/api/collections/users/request-email-change",
            &token,
        )
        .json(&json!({"newEmail": "taken@example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(taken.status(), 400);
    let request = app
        .with_token(
            Method::POST,
            "/api/collections/users/request-email-change",
            &token,
        )
        .json(&json!({"newEmail": "new@example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(request.status(), 204);
    let received = sink.wait_for(3, Duration::from_secs(10)).await;
    assert_eq!(
        received[2].to,
        ["new@example.com"],
        "the confirmation goes to the new address"
    );
    let link = link_in(&text_of(&sink, 3), "/_/auth/confirm-email-change/");
    let change_token = link.rsplit('/').next().unwrap().to_string();

    let wrong = app
        .post_json(
            "/api/collections/users/confirm-email-change",
            &json!({"token": change_token, "password": "not-it-123"}),
        )
        .await;
    assert_eq!(wrong.status(), 400);
    assert_eq!(
        wrong.json::<Value>().await.unwrap()["data"]["password"]["code"],
        "validation_invalid_password"
    );
    let changed = app
        .post_json(
            "/api/collections/users/confirm-email-change",
            &json!({"token": change_token, "password": "password-123"}),
        )
        .await;
    assert_eq!(changed.status(), 204);

    let (_, body) = app.login("users", "new@example.com", "password-123").await;
    assert_eq!(body["record"]["verified"], true);
    let old = app
        .post_json(
            "/api/collections/users/auth-with-password",
            &json!({"identity": "old@example.com", "password": "password-123"}),
        )
        .await;
    assert_eq!(old.status(), 400);
    let reused = app
        .post_json(
            "/api/collections/users/confirm-email-change",
            &json!({"token": change_token, "password": "password-123"}),
        )
        .await;
    assert_eq!(reused.status(), 400, "the token works once");
}

async fn confirm_endpoints_refuse_bad_tokens_with_the_envelope(backend: Backend) {
    let Some((sink, app)) = app_with_sink(backend).await else {
        return;
    };
    for (endpoint, body) in [
        ("confirm-verification", json!({"token": "garbage"})),
        (
            "confirm-password-reset",
            json!({"token": "a.b.c", "password": "password-123", "passwordConfirm": "password-123"}),
        ),
        (
            "confirm-email-change",
            json!({"token": "x", "password": "password-123"}),
        ),
    ] {
        let response = app
            .post_json(&format!("/api/collections/users/{endpoint}"), &body)
            .await;
        assert_eq!(response.status(), 400, "{endpoint}");
        let error: Value = response.json().await.unwrap();
        assert_eq!(
            error["data"]["token"]["code"], "validation_invalid_token",
            "{endpoint}: {error}"
        );
    }
    let missing = app
        .post_json("/api/collections/users/confirm-verification", &json!({}))
        .await;
    assert_eq!(
        missing.json::<Value>().await.unwrap()["data"]["token"]["code"],
        "validation_required"
    );
    // An auth token is not a verification token.
    let auth_token = app.user_token("tom@example.com").await;
    sink.wait_for(1, Duration::from_secs(10)).await;
    let wrong_kind = app
        .post_json(
            "/api/collections/users/confirm-verification",
            &json!({"token": auth_token}),
        )
        .await;
    assert_eq!(wrong_kind.status(), 400);
    let page = app
        .client
        .get(app.url("/_/auth/confirm-verification/garbage"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 400);
}
