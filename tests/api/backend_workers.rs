//! In-process backend workers (`backend://N`) as pool members: the API end to end
//! through the front end, requests spread over the workers, and the client's identity
//! (address, scheme, request id) carried over the hop without being forgeable.

use std::net::IpAddr;

use serde_json::{json, Value};

use gatehouse::config::{RouteHandler, Settings};

use crate::support::upstream::{eventually, proxy_route};
use crate::support::{spawn_front, TestApp};

/// `/api` goes through the front end's proxy to the pool `backends` of two workers
/// (instead of the front end answering it itself).
fn api_on_two_workers(settings: &mut Settings) {
    proxy_route(
        settings,
        "/api",
        "backends",
        &["backend://1".to_string(), "backend://2".to_string()],
        |pool| {
            pool.health_check.path = "/readyz".to_string();
            pool.health_check.interval = std::time::Duration::from_millis(100);
        },
        |_| {},
    );
    settings
        .routes
        .retain(|route| route.handler != RouteHandler::Api);
}

/// The pool's servers as `GET /api/admin/upstreams` shows them.
async fn workers_status(app: &TestApp, admin: &str) -> Vec<Value> {
    let (status, body) = app.get_json("/api/admin/upstreams", Some(admin)).await;
    assert_eq!(status, 200, "{body}");
    let pool = body["upstreams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|pool| pool["name"] == "backends")
        .expect("the pool is listed")
        .clone();
    pool["servers"].as_array().unwrap().clone()
}

#[actix_web::test]
async fn two_backend_workers_serve_the_api_through_the_front_end() {
    let app = spawn_front(api_on_two_workers).await;

    let user = app.register("ann@example.com", "password-123").await;
    let (token, _) = app.login("users", "ann@example.com", "password-123").await;
    for _ in 0..6 {
        let (status, record) = app
            .get_json(
                &format!(
                    "/api/collections/users/records/{}",
                    user["id"].as_str().unwrap()
                ),
                Some(&token),
            )
            .await;
        assert_eq!(status, 200, "{record}");
        assert_eq!(record["email"], "ann@example.com");
    }

    // The error envelope is written by the worker: it carries the client's request id.
    let response = app
        .client
        .get(app.url("/api/collections/missing/records"))
        .header("x-request-id", "trace-42")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["requestId"], "trace-42", "{body}");

    let admin = app.superuser_token("root@example.com").await;
    let servers = workers_status(&app, &admin).await;
    let names: Vec<&str> = servers
        .iter()
        .map(|server| server["url"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["backend://1", "backend://2"]);
    for server in &servers {
        assert_eq!(server["state"], "healthy", "{server}");
        assert_eq!(server["healthChecked"], true, "{server}");
        // Round robin over 10+ requests: each worker had its share.
        assert!(server["requests"].as_u64().unwrap() >= 5, "{servers:?}");
    }

    // Both workers stop with the instance.
    app.shut_down().await;
}

/// A client of the front end connecting from `source` (any 127/8 address is loopback).
fn client_from(source: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(source.parse::<IpAddr>().unwrap())
        .build()
        .unwrap()
}

/// Logs in from `client` with `headers`; returns the session's IP as the worker
/// recorded it and whether the auth cookie was marked `Secure`.
async fn log_in_from(
    app: &TestApp,
    client: &reqwest::Client,
    headers: &[(&str, &str)],
) -> (String, bool) {
    let mut request = client
        .post(app.url("/api/collections/users/auth-with-password"))
        .json(&json!({"identity": "ann@example.com", "password": "password-123"}));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200);
    let secure = response
        .headers()
        .get_all("set-cookie")
        .iter()
        .any(|cookie| cookie.to_str().unwrap().contains("; Secure"));
    let body: Value = response.json().await.unwrap();
    let token = body["token"].as_str().unwrap();
    let (status, sessions) = app
        .get_json("/api/collections/users/sessions", Some(token))
        .await;
    assert_eq!(status, 200, "{sessions}");
    let current = sessions["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|session| session["current"] == true)
        .expect("the caller's session is listed")
        .clone();
    (current["ip"].as_str().unwrap().to_string(), secure)
}

#[actix_web::test]
async fn workers_see_the_real_client_and_only_trusted_proxies_can_speak_for_it() {
    let app = spawn_front(|settings| {
        api_on_two_workers(settings);
        settings.server.trusted_proxies = vec!["127.0.0.3".to_string()];
    })
    .await;
    app.register("ann@example.com", "password-123").await;

    // An untrusted client: its forged forwarding headers are not believed, its own
    // address (not the front end's loopback hop) is what the worker records.
    let forged = [
        ("x-forwarded-for", "203.0.113.7"),
        ("x-forwarded-proto", "https"),
        ("x-gatehouse-peer", "203.0.113.8:1"),
        ("x-gatehouse-hop", "guess"),
    ];
    let untrusted = client_from("127.0.0.2");
    for _ in 0..2 {
        // Twice: once on each worker of the round robin.
        assert_eq!(
            log_in_from(&app, &untrusted, &forged).await,
            ("127.0.0.2".to_string(), false)
        );
    }

    // A trusted proxy in front of Gatehouse names the client and its scheme.
    let proxy = client_from("127.0.0.3");
    let forwarded = [
        ("x-forwarded-for", "198.51.100.4"),
        ("x-forwarded-proto", "https"),
    ];
    for _ in 0..2 {
        assert_eq!(
            log_in_from(&app, &proxy, &forwarded).await,
            ("198.51.100.4".to_string(), true)
        );
    }
}

#[actix_web::test]
async fn health_checks_take_failing_workers_out() {
    let app = spawn_front(|settings| {
        api_on_two_workers(settings);
        let pool = settings.upstreams.get_mut("backends").unwrap();
        pool.health_check.path = "/api/missing-health-path".to_string();
        pool.health_check.unhealthy_threshold = 1;
    })
    .await;
    // Every probe fails (404): both workers leave the pool and the proxy says so.
    eventually("both workers are taken out", || async {
        app.get("/api/health").await.status() == 503
    })
    .await;
    let body: Value = app.get("/api/health").await.json().await.unwrap();
    assert_eq!(body["code"], "no_healthy_upstream", "{body}");
}
