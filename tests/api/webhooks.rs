//! Outbound webhooks delivered to a receiver on loopback, and inbound signed hooks.

use std::process::{Command, Stdio};
use std::time::Duration;

use base64::Engine;
use hmac::{Hmac, Mac};
use reqwest::Method;
use serde_json::{json, Value};
use sha2::Sha256;

use crate::on_both_backends;
use crate::support::mail::{link_in, subscribe_confirmed};
use crate::support::smtp_sink::SmtpSink;
use crate::support::webhook_receiver::{status, Answer, Hit, Receiver};
use crate::support::{spawn_app_with, use_smtp, Backend, TestApp};
use gatehouse::config::{
    InboundHookSettings, InboundScheme, Secret, Settings, WebhookEndpointSettings,
};

on_both_backends!(
    each_event_kind_arrives_signed_and_verifies_with_the_reference_implementation,
    a_receiver_that_is_down_gets_the_delivery_once_it_is_up,
    server_errors_are_retried_with_growing_delays_and_logged,
    retry_after_is_honoured,
    gone_fails_at_once_and_the_admin_can_send_it_again,
    loopback_private_and_metadata_targets_are_refused,
    an_endpoint_failing_too_long_is_disabled_and_says_why,
    each_write_follows_the_endpoints_as_last_changed,
    inbound_hooks_check_signatures_and_store_each_event_once,
    the_admin_api_checks_its_input_and_its_callers,
);

const WAIT: Duration = Duration::from_secs(15);

/// Fast retries; the test receiver on 127.0.0.1 admitted by the allow-list.
fn fast(settings: &mut Settings) {
    let hooks = &mut settings.webhooks;
    hooks.allow = vec!["127.0.0.1".into()];
    hooks.poll_interval = Duration::from_millis(200);
    hooks.timeout = Duration::from_secs(5);
    hooks.connect_timeout = Duration::from_secs(2);
    hooks.lease = Duration::from_secs(60);
    hooks.retry.initial_delay = Duration::from_millis(100);
    hooks.retry.max_delay = Duration::from_secs(10);
    hooks.retry.max_attempts = 10;
}

async fn app(backend: Backend, customize: impl FnOnce(&mut Settings)) -> Option<(TestApp, String)> {
    let app = spawn_app_with(backend, |settings| {
        fast(settings);
        customize(settings);
    })
    .await?;
    let admin = app.superuser_token("root@example.com").await;
    app.create_collection(
        &admin,
        json!({
            "name": "posts",
            "listRule": "", "viewRule": "", "createRule": "", "updateRule": "", "deleteRule": "",
            "fields": [{"name": "title", "type": "text"}]
        }),
    )
    .await;
    Some((app, admin))
}

/// Registers an endpoint; returns its id and secret.
async fn register(app: &TestApp, admin: &str, url: &str, events: &[&str]) -> (String, String) {
    let response = app
        .send(
            Method::POST,
            "/api/admin/webhooks",
            Some(admin),
            Some(&json!({"url": url, "events": events})),
        )
        .await;
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, 201, "registering {url}: {body}");
    let secret = body["secret"].as_str().unwrap().to_string();
    assert!(secret.starts_with("whsec_"), "{secret}");
    (body["id"].as_str().unwrap().to_string(), secret)
}

async fn deliveries_of(app: &TestApp, admin: &str, endpoint: &str) -> Vec<Value> {
    let (status, body) = app
        .get_json(
            &format!("/api/admin/webhooks/deliveries?endpoint={endpoint}&perPage=500"),
            Some(admin),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body["items"].as_array().unwrap().clone()
}

async fn delivery(app: &TestApp, admin: &str, id: &str) -> Value {
    let (status, body) = app
        .get_json(&format!("/api/admin/webhooks/deliveries/{id}"), Some(admin))
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

/// Waits until delivery `id` is in `status`; answers it with its attempt log.
async fn wait_delivery(app: &TestApp, admin: &str, id: &str, wanted: &str) -> Value {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let found = delivery(app, admin, id).await;
        if found["status"] == wanted {
            return found;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "delivery {id} is not {wanted}: {found}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until endpoint `endpoint` has `count` deliveries all in `wanted`.
async fn wait_all(
    app: &TestApp,
    admin: &str,
    endpoint: &str,
    count: usize,
    wanted: &str,
) -> Vec<Value> {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let all = deliveries_of(app, admin, endpoint).await;
        if all.len() == count && all.iter().all(|d| d["status"] == wanted) {
            return all;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "expected {count} deliveries {wanted}: {all:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A loopback port bound but not listening: connections to it are refused, and no other
/// socket can take it until the returned socket is dropped.
fn reserve_port() -> (tokio::net::TcpSocket, std::net::SocketAddr) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = socket.local_addr().unwrap();
    (socket, addr)
}

async fn create_post(app: &TestApp, admin: &str, title: &str) -> Value {
    app.create_record("posts", Some(admin), json!({"title": title}))
        .await
}

async fn each_event_kind_arrives_signed_and_verifies_with_the_reference_implementation(
    backend: Backend,
) {
    let sink = SmtpSink::start().await;
    let smtp = sink.addr;
    let Some((app, admin)) = app(backend, move |s| use_smtp(s, smtp)).await else {
        return;
    };
    let receiver = Receiver::start().await;
    let (endpoint, secret) = register(&app, &admin, &receiver.url("/hooks"), &["*"]).await;

    let post = create_post(&app, &admin, "first").await;
    let id = post["id"].as_str().unwrap();
    let updated = app
        .send(
            Method::PATCH,
            &format!("/api/collections/posts/records/{id}"),
            Some(&admin),
            Some(&json!({"title": "second"})),
        )
        .await;
    assert_eq!(updated.status(), 200);
    let deleted = app
        .send(
            Method::DELETE,
            &format!("/api/collections/posts/records/{id}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(deleted.status(), 204);
    let user = app.register("vera@example.com", "password-123").await;
    let received = sink.wait_for(1, WAIT).await;
    let text = received[0].parsed().body_text(0).unwrap().into_owned();
    let link = link_in(&text, "/_/auth/confirm-verification/");
    let token = link.rsplit('/').next().unwrap().to_string();
    let confirmed = app
        .post_json(
            "/api/collections/users/confirm-verification",
            &json!({"token": token}),
        )
        .await;
    assert_eq!(confirmed.status(), 204);
    subscribe_confirmed(&app, &sink, "reader@example.com", 2).await;

    let hits = receiver.wait_for(7, WAIT).await;
    wait_all(&app, &admin, &endpoint, 7, "sent").await;
    let mut types: Vec<String> = hits
        .iter()
        .map(|hit| hit.json()["type"].as_str().unwrap().to_string())
        .collect();
    types.sort();
    assert_eq!(
        types,
        [
            "newsletter.subscribed",
            "record.created",
            "record.created",
            "record.deleted",
            "record.updated",
            "user.registered",
            "user.verified",
        ]
    );
    let mut ids: Vec<&str> = hits.iter().map(|hit| hit.header("webhook-id")).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 7, "one webhook-id per event");
    for hit in &hits {
        assert_eq!(hit.header("content-type"), "application/json");
        assert!(hit.header("webhook-id").starts_with("msg_"));
        assert!(hit.header("webhook-signature").starts_with("v1,"));
        let body = hit.json();
        let data = &body["data"];
        match body["type"].as_str().unwrap() {
            "record.updated" => assert_eq!(data["record"]["title"], "second"),
            "record.deleted" => assert_eq!(data["record"]["id"], post["id"]),
            "user.registered" | "user.verified" => {
                assert_eq!(data["collection"], "users");
                assert_eq!(data["record"]["id"], user["id"]);
                assert!(data["record"].get("password").is_none());
                assert!(data["record"].get("tokenKey").is_none());
                if body["type"] == "user.verified" {
                    assert_eq!(data["record"]["verified"], true);
                }
            }
            "newsletter.subscribed" => assert_eq!(data["email"], "reader@example.com"),
            _ => {}
        }
    }
    if let Some(verified) = verify_with_reference(&secret, &hits) {
        assert_eq!(verified, vec![true; 7], "every signature verifies");
        let mut tampered = hits[0].clone();
        tampered.body = tampered.body.replace('}', " }");
        assert_eq!(
            verify_with_reference(&secret, &[tampered]),
            Some(vec![false]),
            "the reference implementation rejects a changed body"
        );
    }
}

async fn a_receiver_that_is_down_gets_the_delivery_once_it_is_up(backend: Backend) {
    let Some((app, admin)) = app(backend, |_| {}).await else {
        return;
    };
    // A port nothing listens on yet (held, so that no other test's server takes it).
    let (reserved, addr) = reserve_port();
    let (endpoint, _) = register(
        &app,
        &admin,
        &format!("http://{addr}/hooks"),
        &["record.created:posts"],
    )
    .await;
    create_post(&app, &admin, "while down").await;
    let deadline = std::time::Instant::now() + WAIT;
    let pending = loop {
        let all = deliveries_of(&app, &admin, &endpoint).await;
        if all.len() == 1 && all[0]["attempts"].as_i64() >= Some(2) {
            break all[0].clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no failed attempts: {all:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        matches!(pending["status"].as_str(), Some("pending" | "sending")),
        "{pending}"
    );
    let id = pending["id"].as_str().unwrap().to_string();

    drop(reserved);
    let receiver = Receiver::start_on(addr).await;
    let sent = wait_delivery(&app, &admin, &id, "sent").await;
    let hits = receiver.hits();
    assert_eq!(hits.len(), 1, "delivered once");
    assert_eq!(hits[0].header("webhook-id"), id);
    // `attempts` counts claims, so the second may have been in flight when the receiver
    // came up: at least one refused attempt, then the delivery.
    let log = sent["attemptLog"].as_array().unwrap();
    assert!(log.len() >= 2, "{sent}");
    assert!(log[0]["statusCode"].is_null());
    assert!(log[0]["error"].as_str().unwrap().len() > 1);
    assert_eq!(log.last().unwrap()["statusCode"], 200);
}

async fn server_errors_are_retried_with_growing_delays_and_logged(backend: Backend) {
    // Delays of 400, 800 and 1600 ms (±25%).
    let slower = |s: &mut Settings| s.webhooks.retry.initial_delay = Duration::from_millis(400);
    let Some((app, admin)) = app(backend, slower).await else {
        return;
    };
    let receiver = Receiver::start().await;
    receiver.script([status(500), status(502), status(503)]);
    let (endpoint, _) = register(&app, &admin, &receiver.url("/"), &["record.created"]).await;
    create_post(&app, &admin, "retry me").await;

    let hits = receiver.wait_for(4, WAIT).await;
    let delivered = wait_all(&app, &admin, &endpoint, 1, "sent").await;
    let id = delivered[0]["id"].as_str().unwrap();
    assert!(
        hits.iter().all(|hit| hit.header("webhook-id") == id),
        "one stable webhook-id"
    );
    assert!(hits.iter().all(|hit| hit.body == hits[0].body));
    // A busy machine can only lengthen a wait, never shorten it: each wait is at least
    // the low end of its window, and each window starts where the one before ends.
    let gaps: Vec<Duration> = hits.windows(2).map(|w| w[1].at - w[0].at).collect();
    for (gap, least_ms) in gaps.iter().zip([300, 600, 1200]) {
        assert!(
            *gap >= Duration::from_millis(least_ms),
            "each wait longer than the one before: {gaps:?}"
        );
    }
    let found = delivery(&app, &admin, id).await;
    let codes: Vec<i64> = found["attemptLog"]
        .as_array()
        .unwrap()
        .iter()
        .map(|attempt| attempt["statusCode"].as_i64().unwrap())
        .collect();
    assert_eq!(codes, [500, 502, 503, 200]);
    assert_eq!(found["attemptLog"][0]["responseExcerpt"], "answer 500");
    assert_eq!(found["attempts"], 4);
    assert_eq!(receiver.hits().len(), 4);
}

async fn retry_after_is_honoured(backend: Backend) {
    let Some((app, admin)) = app(backend, |_| {}).await else {
        return;
    };
    let receiver = Receiver::start().await;
    receiver.script([Answer {
        status: 429,
        headers: vec![("retry-after", "2".into())],
    }]);
    let (endpoint, _) = register(&app, &admin, &receiver.url("/"), &["record.created"]).await;
    create_post(&app, &admin, "slow down").await;
    let hits = receiver.wait_for(2, WAIT).await;
    wait_all(&app, &admin, &endpoint, 1, "sent").await;
    // Without Retry-After the retry would come after ~100 ms (initial_delay).
    assert!(
        hits[1].at - hits[0].at >= Duration::from_millis(1900),
        "the retry waited for Retry-After: {:?}",
        hits[1].at - hits[0].at
    );
}

async fn gone_fails_at_once_and_the_admin_can_send_it_again(backend: Backend) {
    let Some((app, admin)) = app(backend, |_| {}).await else {
        return;
    };
    let receiver = Receiver::start().await;
    receiver.script([status(410)]);
    let (endpoint, _) = register(&app, &admin, &receiver.url("/"), &["record.created"]).await;
    create_post(&app, &admin, "gone").await;
    let failed = wait_all(&app, &admin, &endpoint, 1, "failed").await;
    assert_eq!(failed[0]["attempts"], 1);
    assert!(failed[0]["lastError"].as_str().unwrap().contains("410"));
    assert_eq!(receiver.hits().len(), 1);
    let id = failed[0]["id"].as_str().unwrap();

    let path = format!("/api/admin/webhooks/deliveries/{id}/retry");
    let guest = app.send(Method::POST, &path, None, None).await;
    assert_eq!(guest.status(), 401);
    let retried = app.send(Method::POST, &path, Some(&admin), None).await;
    assert_eq!(retried.status(), 200);
    let hits = receiver.wait_for(2, WAIT).await;
    wait_delivery(&app, &admin, id, "sent").await;
    assert_eq!(
        hits[1].header("webhook-id"),
        id,
        "the replay keeps its webhook-id"
    );
    let again = app.send(Method::POST, &path, Some(&admin), None).await;
    assert_eq!(again.status(), 409);
    let body: Value = again.json().await.unwrap();
    assert_eq!(body["code"], "delivery_not_retryable");
    let missing = app
        .send(
            Method::POST,
            "/api/admin/webhooks/deliveries/msg_nope/retry",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(missing.status(), 404);
}

async fn loopback_private_and_metadata_targets_are_refused(backend: Backend) {
    // No allow-list: the defaults.
    let Some((app, admin)) = app(backend, |s| s.webhooks.allow.clear()).await else {
        return;
    };
    let receiver = Receiver::start().await;
    let port = receiver.addr.port();
    let mut endpoints = Vec::new();
    for url in [
        format!("http://127.0.0.1:{port}/direct"),
        format!("http://localhost:{port}/by-name"),
        format!("http://[::ffff:127.0.0.1]:{port}/mapped"),
        "http://169.254.169.254/latest/meta-data/".to_string(),
        "http://10.0.0.1/private".to_string(),
    ] {
        endpoints.push((
            register(&app, &admin, &url, &["record.created"]).await.0,
            url,
        ));
    }
    create_post(&app, &admin, "exfiltrate").await;
    for (endpoint, url) in &endpoints {
        let failed = wait_all(&app, &admin, endpoint, 1, "failed").await;
        let error = failed[0]["lastError"].as_str().unwrap();
        assert!(error.contains("SSRF"), "{url}: {error}");
        assert_eq!(failed[0]["attempts"], 1, "{url}: refused without retrying");
    }
    assert!(receiver.hits().is_empty(), "nothing reached the receiver");
}

async fn an_endpoint_failing_too_long_is_disabled_and_says_why(backend: Backend) {
    let Some((app, admin)) = app(backend, |s| s.webhooks.disable_after = Duration::ZERO).await
    else {
        return;
    };
    let receiver = Receiver::start().await;
    receiver.script([status(500)]);
    let (endpoint, _) = register(&app, &admin, &receiver.url("/"), &["record.created"]).await;
    create_post(&app, &admin, "one").await;
    let failed = wait_all(&app, &admin, &endpoint, 1, "failed").await;
    assert!(
        failed[0]["lastError"]
            .as_str()
            .unwrap()
            .contains("disabled"),
        "{failed:?}"
    );
    assert_eq!(receiver.hits().len(), 1, "no attempt after it was disabled");
    let (_, shown) = app
        .get_json(&format!("/api/admin/webhooks/{endpoint}"), Some(&admin))
        .await;
    assert_eq!(shown["enabled"], false);
    let reason = shown["disabledReason"].as_str().unwrap();
    assert!(reason.contains("500"), "{reason}");
    assert!(shown.get("secret").is_none());

    // A disabled endpoint gets nothing new.
    create_post(&app, &admin, "two").await;
    assert_eq!(deliveries_of(&app, &admin, &endpoint).await.len(), 1);

    let enabled = app
        .send(
            Method::PATCH,
            &format!("/api/admin/webhooks/{endpoint}"),
            Some(&admin),
            Some(&json!({"enabled": true})),
        )
        .await;
    assert_eq!(enabled.status(), 200);
    let shown: Value = enabled.json().await.unwrap();
    assert_eq!(shown["enabled"], true);
    assert!(shown["disabledReason"].is_null());
    create_post(&app, &admin, "three").await;
    receiver.wait_for(2, WAIT).await;
}

/// Endpoints are looked up for every write; registering, changing and deleting one
/// applies to the very next write, also after writes that found other endpoints.
async fn each_write_follows_the_endpoints_as_last_changed(backend: Backend) {
    let Some((app, admin)) = app(backend, |_| {}).await else {
        return;
    };
    create_post(&app, &admin, "before any endpoint").await;
    let receiver = Receiver::start().await;
    let (endpoint, _) = register(&app, &admin, &receiver.url("/"), &["record.created"]).await;
    create_post(&app, &admin, "first").await;
    let first = wait_all(&app, &admin, &endpoint, 1, "sent").await;
    assert_eq!(
        first.len(),
        1,
        "the earlier post had no endpoint: {first:?}"
    );

    let change = |body: Value| {
        let (app, admin, endpoint) = (&app, &admin, &endpoint);
        async move {
            let response = app
                .send(
                    Method::PATCH,
                    &format!("/api/admin/webhooks/{endpoint}"),
                    Some(admin),
                    Some(&body),
                )
                .await;
            assert_eq!(response.status(), 200);
        }
    };
    change(json!({"events": ["record.created:elsewhere"]})).await;
    create_post(&app, &admin, "not subscribed").await;
    assert_eq!(deliveries_of(&app, &admin, &endpoint).await.len(), 1);

    change(json!({"events": ["record.created:posts"]})).await;
    create_post(&app, &admin, "second").await;
    wait_all(&app, &admin, &endpoint, 2, "sent").await;

    change(json!({"enabled": false})).await;
    create_post(&app, &admin, "while disabled").await;
    assert_eq!(deliveries_of(&app, &admin, &endpoint).await.len(), 2);

    let deleted = app
        .send(
            Method::DELETE,
            &format!("/api/admin/webhooks/{endpoint}"),
            Some(&admin),
            None,
        )
        .await;
    assert!(deleted.status().is_success(), "{}", deleted.status());
    create_post(&app, &admin, "after delete").await;
    assert_eq!(deliveries_of(&app, &admin, &endpoint).await.len(), 2);
    let titles: Vec<String> = receiver
        .hits()
        .iter()
        .map(|hit| {
            let body: Value = serde_json::from_str(&hit.body).unwrap();
            body["data"]["record"]["title"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(titles, ["first", "second"]);
}

fn standard_signature(key: &[u8], id: &str, timestamp: i64, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    )
}

fn github_signature(secret: &str, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

async fn inbound_hooks_check_signatures_and_store_each_event_once(backend: Backend) {
    let key = [7u8; 32];
    let secret = format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(key)
    );
    let standard_secret = secret.clone();
    let Some((app, admin)) = app(backend, move |s| {
        s.webhooks.inbound.max_body_bytes = 2048;
        s.webhooks.inbound.hooks = vec![
            InboundHookSettings {
                name: "billing".into(),
                scheme: InboundScheme::Standard,
                secret: Secret::new(standard_secret),
                collection: "payments".into(),
                data_pointer: "/data".into(),
            },
            InboundHookSettings {
                name: "gh".into(),
                scheme: InboundScheme::Github,
                secret: Secret::new("gh-secret"),
                collection: "payments".into(),
                data_pointer: String::new(),
            },
        ];
    })
    .await
    else {
        return;
    };
    app.create_collection(
        &admin,
        json!({
            "name": "payments",
            "fields": [{"name": "amount", "type": "number"}, {"name": "note", "type": "text"}]
        }),
    )
    .await;
    let now = chrono::Utc::now().timestamp();
    let send_standard = |id: &str, timestamp: i64, signature: Option<String>, body: String| {
        let signature = signature.unwrap_or_else(|| standard_signature(&key, id, timestamp, &body));
        app.client
            .post(app.url("/api/hooks/billing"))
            .header("content-type", "application/json")
            .header("webhook-id", id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body)
            .send()
    };
    let count = || async {
        let (_, list) = app
            .get_json("/api/collections/payments/records", Some(&admin))
            .await;
        list["totalItems"].as_i64().unwrap()
    };
    let body =
        json!({"type": "payment.succeeded", "data": {"amount": 42, "note": "first"}}).to_string();

    let good = send_standard("evt_1", now, None, body.clone())
        .await
        .unwrap();
    assert_eq!(good.status(), 200);
    let receipt: Value = good.json().await.unwrap();
    assert_eq!(receipt["replayed"], false);
    let record_id = receipt["recordId"].as_str().unwrap().to_string();
    let (status, record) = app
        .get_json(
            &format!("/api/collections/payments/records/{record_id}"),
            Some(&admin),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(record["amount"], 42);
    assert_eq!(record["note"], "first");

    // Replayed (signed afresh, as a sender's retry is): 200, nothing new.
    let replay = send_standard("evt_1", now + 1, None, body.clone())
        .await
        .unwrap();
    assert_eq!(replay.status(), 200);
    let receipt: Value = replay.json().await.unwrap();
    assert_eq!(receipt["replayed"], true);
    assert_eq!(receipt["recordId"], record_id.as_str());
    assert_eq!(count().await, 1);

    let other = json!({"data": {"amount": 1}}).to_string();
    let forged = send_standard(
        "evt_2",
        now,
        Some(standard_signature(
            b"another key, not the secret!",
            "evt_2",
            now,
            &other,
        )),
        other.clone(),
    )
    .await
    .unwrap();
    assert_eq!(forged.status(), 401);
    let envelope: Value = forged.json().await.unwrap();
    assert_eq!(envelope["status"], 401);
    assert_eq!(envelope["code"], "invalid_signature");
    assert!(envelope["data"].is_object());

    let stale = send_standard("evt_3", now - 3600, None, other.clone())
        .await
        .unwrap();
    assert_eq!(stale.status(), 401);
    let unsigned = app
        .client
        .post(app.url("/api/hooks/billing"))
        .body(other.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(unsigned.status(), 401);
    let huge = json!({"data": {"note": "x".repeat(4000)}}).to_string();
    let oversized = send_standard("evt_4", now, None, huge).await.unwrap();
    assert_eq!(oversized.status(), 413);
    assert_eq!(count().await, 1, "refused events store nothing");

    let unknown = app
        .client
        .post(app.url("/api/hooks/nope"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);

    // GitHub's scheme.
    let push = json!({"amount": 7, "note": "push"}).to_string();
    let send_github = |signature: String, delivery: &str| {
        app.client
            .post(app.url("/api/hooks/gh"))
            .header("x-hub-signature-256", signature)
            .header("x-github-delivery", delivery)
            .body(push.clone())
            .send()
    };
    let good = send_github(github_signature("gh-secret", &push), "d-1")
        .await
        .unwrap();
    assert_eq!(good.status(), 200);
    let bad = send_github(github_signature("wrong", &push), "d-2")
        .await
        .unwrap();
    assert_eq!(bad.status(), 401);
    let replay = send_github(github_signature("gh-secret", &push), "d-1")
        .await
        .unwrap();
    let receipt: Value = replay.json().await.unwrap();
    assert_eq!(receipt["replayed"], true);
    assert_eq!(count().await, 2);
}

async fn the_admin_api_checks_its_input_and_its_callers(backend: Backend) {
    let Some((app, admin)) = app(backend, |s| {
        s.webhooks.endpoints = vec![WebhookEndpointSettings {
            name: "crm".into(),
            url: "https://crm.example.com/hooks".into(),
            events: vec!["user.registered".into()],
            secret: Secret::new(format!(
                "whsec_{}",
                base64::engine::general_purpose::STANDARD.encode([1u8; 24])
            )),
            description: "CRM".into(),
            enabled: true,
        }];
    })
    .await
    else {
        return;
    };
    let user = app.user_token("user@example.com").await;
    let body = json!({"url": "https://example.com/h", "events": ["*"]});
    let guest = app
        .send(Method::POST, "/api/admin/webhooks", None, Some(&body))
        .await;
    assert_eq!(guest.status(), 401);
    let not_admin = app
        .send(
            Method::POST,
            "/api/admin/webhooks",
            Some(&user),
            Some(&body),
        )
        .await;
    assert_eq!(not_admin.status(), 403);

    let bad = app
        .send(
            Method::POST,
            "/api/admin/webhooks",
            Some(&admin),
            Some(&json!({"url": "ftp://example.com", "events": ["record.exploded"]})),
        )
        .await;
    assert_eq!(bad.status(), 400);
    let envelope: Value = bad.json().await.unwrap();
    assert_eq!(envelope["data"]["url"]["code"], "validation_invalid_url");
    assert_eq!(
        envelope["data"]["events"]["code"],
        "validation_invalid_value"
    );

    let (status, list) = app.get_json("/api/admin/webhooks", Some(&admin)).await;
    assert_eq!(status, 200);
    let declared = &list.as_array().unwrap()[0];
    assert_eq!(declared["name"], "crm");
    assert_eq!(declared["fromConfig"], true);
    assert!(declared.get("secret").is_none(), "secrets are not listed");
    let id = declared["id"].as_str().unwrap();
    let path = format!("/api/admin/webhooks/{id}");
    let changed = app
        .send(
            Method::PATCH,
            &path,
            Some(&admin),
            Some(&json!({"url": "https://other.example.com/"})),
        )
        .await;
    assert_eq!(changed.status(), 409);
    let deleted = app.send(Method::DELETE, &path, Some(&admin), None).await;
    assert_eq!(deleted.status(), 409);
    let disabled = app
        .send(
            Method::PATCH,
            &path,
            Some(&admin),
            Some(&json!({"enabled": false})),
        )
        .await;
    assert_eq!(disabled.status(), 200);

    let (created, _) = register(&app, &admin, "https://example.com/h", &["*"]).await;
    let removed = app
        .send(
            Method::DELETE,
            &format!("/api/admin/webhooks/{created}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(removed.status(), 204);
    let (status, _) = app
        .get_json(&format!("/api/admin/webhooks/{created}"), Some(&admin))
        .await;
    assert_eq!(status, 404);
    let (status, _) = app
        .get_json("/api/admin/webhooks/deliveries?status=lost", Some(&admin))
        .await;
    assert_eq!(status, 400);

    let (_, openapi) = app.get_json("/api/openapi.json", None).await;
    for path in [
        "/api/admin/webhooks",
        "/api/admin/webhooks/{id}",
        "/api/admin/webhooks/deliveries",
        "/api/admin/webhooks/deliveries/{id}",
        "/api/admin/webhooks/deliveries/{id}/retry",
        "/api/hooks/{name}",
    ] {
        assert!(openapi["paths"].get(path).is_some(), "{path} is documented");
    }
}

/// Verifies `hits` against `secret` with the reference implementation of Standard
/// Webhooks (the `standardwebhooks` package from PyPI), independent of Gatehouse's own
/// code. `None` (after saying why) when Python or the package is missing.
fn verify_with_reference(secret: &str, hits: &[Hit]) -> Option<Vec<bool>> {
    const SCRIPT: &str = r#"
import json, sys
from standardwebhooks.webhooks import Webhook
request = json.load(sys.stdin)
hook = Webhook(request["secret"])
results = []
for message in request["messages"]:
    try:
        hook.verify(message["body"], message["headers"])
        results.append(True)
    except Exception:
        results.append(False)
print(json.dumps(results))
"#;
    let available = Command::new("python3")
        .args(["-c", "import standardwebhooks"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !available {
        crate::support::skip(
            "signature check with the reference implementation",
            "python3 with the standardwebhooks package is not installed (pip install standardwebhooks; .ci/run does)",
        );
        return None;
    }
    let request = json!({
        "secret": secret,
        "messages": hits.iter().map(|hit| json!({
            "body": hit.body,
            "headers": {
                "webhook-id": hit.header("webhook-id"),
                "webhook-timestamp": hit.header("webhook-timestamp"),
                "webhook-signature": hit.header("webhook-signature"),
            },
        })).collect::<Vec<_>>(),
    });
    let mut child = Command::new("python3")
        .args(["-c", SCRIPT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 starts");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(request.to_string().as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "the verification script failed");
    Some(serde_json::from_slice(&output.stdout).expect("a JSON list"))
}
