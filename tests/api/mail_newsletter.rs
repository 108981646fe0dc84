//! The public newsletter API over real HTTP and real SMTP: double opt-in with a
//! single-use link, the same answer for every address, one-click unsubscribe.

use std::time::Duration;

use serde_json::{json, Value};

use crate::on_both_backends;
use crate::support::mail::{count, link_in, subscribe_confirmed};
use crate::support::smtp_sink::SmtpSink;
use crate::support::{spawn_app_with, use_smtp, Backend, TestApp};

const WAIT: Duration = Duration::from_secs(10);

on_both_backends!(
    subscribing_sends_a_confirmation_whose_link_works_once,
    every_address_gets_the_same_answer_and_no_duplicates,
    bad_subscriptions_get_clear_errors,
    one_click_unsubscribe_works_at_once,
    the_unsubscribe_page_only_asks,
);

async fn subscribe(app: &TestApp, body: Value) -> reqwest::Response {
    app.client
        .post(app.url("/api/newsletter/subscribe"))
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn subscribing_sends_a_confirmation_whose_link_works_once(backend: Backend) {
    let sink = SmtpSink::start().await;
    let Some(app) = spawn_app_with(backend, |s| use_smtp(s, sink.addr)).await else {
        return;
    };
    let response = subscribe(&app, json!({"email": " Ann@Example.com ", "name": "Ann"})).await;
    assert_eq!(response.status(), 202);

    let received = sink.wait_for(1, WAIT).await;
    assert_eq!(received[0].to, ["ann@example.com"]);
    let mail = received[0].parsed();
    assert_eq!(
        mail.subject(),
        Some("Confirm your subscription to the Gatehouse newsletter")
    );
    assert!(mail.message_id().is_some() && mail.date().is_some());
    let text = mail.body_text(0).unwrap();
    let html = mail.body_html(0).unwrap();
    let link = link_in(&text, "/api/newsletter/confirm?token=");
    assert!(link.starts_with(&app.url("/")), "{link}");
    assert!(html.contains(&link), "{html}");
    assert!(mail.header("List-Unsubscribe").is_none());

    let confirmed = app.client.get(&link).send().await.unwrap();
    assert_eq!(confirmed.status(), 200);
    let body: Value = confirmed.json().await.unwrap();
    assert_eq!(body["message"], "Subscription confirmed.");
    assert_eq!(
        count(
            &app,
            "SELECT COUNT(*) AS n FROM newsletter_subscribers WHERE status = 'confirmed'"
        )
        .await,
        1
    );

    let again = app.client.get(&link).send().await.unwrap();
    assert_eq!(again.status(), 400);
    let body: Value = again.json().await.unwrap();
    assert_eq!(body["code"], "invalid_token");

    let browser = app
        .client
        .get(app.url("/api/newsletter/confirm?token=nonsense"))
        .header("Accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(browser.status(), 400);
}

async fn every_address_gets_the_same_answer_and_no_duplicates(backend: Backend) {
    let sink = SmtpSink::start().await;
    let Some(app) = spawn_app_with(backend, |s| use_smtp(s, sink.addr)).await else {
        return;
    };
    subscribe_confirmed(&app, &sink, "known@example.com", 1).await;

    let mut answers = Vec::new();
    for email in [
        "known@example.com",
        "KNOWN@example.com",
        "new@example.com",
        "new@example.com",
    ] {
        let response = subscribe(&app, json!({"email": email})).await;
        answers.push((response.status(), response.json::<Value>().await.unwrap()));
    }
    assert!(
        answers.windows(2).all(|pair| pair[0] == pair[1]),
        "{answers:?}"
    );
    assert_eq!(answers[0].0, 202);

    // The confirmed address got nothing more; the new one one confirmation, not two.
    let received = sink.settle(Duration::from_millis(500)).await;
    let to: Vec<_> = received.iter().map(|mail| mail.to[0].as_str()).collect();
    assert_eq!(to, ["known@example.com", "new@example.com"]);
    assert_eq!(
        count(&app, "SELECT COUNT(*) AS n FROM newsletter_subscribers").await,
        2
    );
}

async fn bad_subscriptions_get_clear_errors(backend: Backend) {
    let Some(app) = spawn_app_with(backend, |_| {}).await else {
        return;
    };
    let response = subscribe(&app, json!({"email": "not-an-address", "name": "a\nb"})).await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "validation_failed");
    assert_eq!(body["data"]["email"]["code"], "validation_invalid_email");
    assert_eq!(body["data"]["name"]["code"], "validation_invalid_name");

    let response = app
        .client
        .post(app.url("/api/newsletter/subscribe"))
        .header("Content-Type", "application/json")
        .body("{\"email\":")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(
        response.json::<Value>().await.unwrap()["code"],
        "invalid_json"
    );

    let response = app.get("/api/newsletter/confirm").await;
    assert_eq!(response.status(), 400);
    assert_eq!(
        response.json::<Value>().await.unwrap()["code"],
        "invalid_query"
    );

    assert_eq!(count(&app, "SELECT COUNT(*) AS n FROM outbox").await, 0);
}

async fn one_click_unsubscribe_works_at_once(backend: Backend) {
    let sink = SmtpSink::start().await;
    let Some(app) = spawn_app_with(backend, |s| use_smtp(s, sink.addr)).await else {
        return;
    };
    let admin = app.superuser_token("admin@example.com").await;
    subscribe_confirmed(&app, &sink, "ann@example.com", 1).await;
    subscribe_confirmed(&app, &sink, "bob@example.com", 2).await;

    let campaign = crate::mail_campaigns::create_campaign(&app, &admin, "First news").await;
    crate::mail_campaigns::send_campaign(&app, &admin, &campaign, "key-1").await;
    let received = sink.wait_for(4, WAIT).await;
    let ann = received[2..]
        .iter()
        .find(|mail| mail.to == ["ann@example.com"])
        .unwrap()
        .parsed();
    let header = ann.header_raw("List-Unsubscribe").unwrap().trim();
    let url = header.trim_start_matches('<').trim_end_matches('>');
    assert!(
        url.starts_with(&app.url("/api/newsletter/unsubscribe?token=")),
        "{url}"
    );
    assert_eq!(
        ann.header_raw("List-Unsubscribe-Post").unwrap().trim(),
        "List-Unsubscribe=One-Click"
    );
    assert!(ann.body_html(0).unwrap().contains(url));
    assert!(ann.body_text(0).unwrap().contains(url));

    // What a mail client does for RFC 8058 one-click unsubscribe.
    let response = app
        .client
        .post(url)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let repeated = app.client.post(url).send().await.unwrap();
    assert_eq!(repeated.status(), 200, "unsubscribing twice is harmless");

    let next = crate::mail_campaigns::create_campaign(&app, &admin, "Second news").await;
    crate::mail_campaigns::send_campaign(&app, &admin, &next, "key-2").await;
    sink.wait_for(5, WAIT).await;
    let received = sink.settle(Duration::from_millis(500)).await;
    assert_eq!(received.len(), 5);
    assert_eq!(received[4].to, ["bob@example.com"]);
    assert_eq!(received[4].parsed().subject(), Some("Second news"));
}

async fn the_unsubscribe_page_only_asks(backend: Backend) {
    let sink = SmtpSink::start().await;
    let Some(app) = spawn_app_with(backend, |s| use_smtp(s, sink.addr)).await else {
        return;
    };
    let admin = app.superuser_token("admin@example.com").await;
    subscribe_confirmed(&app, &sink, "ann@example.com", 1).await;
    let campaign = crate::mail_campaigns::create_campaign(&app, &admin, "News").await;
    crate::mail_campaigns::send_campaign(&app, &admin, &campaign, "k").await;
    let received = sink.wait_for(2, WAIT).await;
    let link = link_in(
        &received[1].parsed().body_text(0).unwrap(),
        "/api/newsletter/unsubscribe",
    );

    // A link scanner or a person following the link only gets a page with a button.
    let page = app.client.get(&link).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let html = page.text().await.unwrap();
    assert!(html.contains("method=\"post\""), "{html}");
    assert_eq!(
        count(
            &app,
            "SELECT COUNT(*) AS n FROM newsletter_subscribers WHERE status = 'confirmed'"
        )
        .await,
        1
    );

    // The button's form post, from a browser.
    let done = app
        .client
        .post(&link)
        .header("Accept", "text/html")
        .form(&[("List-Unsubscribe", "One-Click")])
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), 200);
    assert!(done.text().await.unwrap().contains("unsubscribed"));
    assert_eq!(
        count(
            &app,
            "SELECT COUNT(*) AS n FROM newsletter_subscribers WHERE status = 'unsubscribed'"
        )
        .await,
        1
    );
}
