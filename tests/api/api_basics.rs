use serde_json::Value;

use crate::on_both_backends;
use crate::support::{spawn_app, spawn_app_with, Backend};

on_both_backends!(
    unknown_api_routes_answer_with_the_error_envelope,
    request_ids_are_echoed_or_generated,
    cors_preflight_allows_what_the_sdks_send,
    cors_limits_origins_when_configured,
    openapi_lists_every_endpoint,
    metrics_count_requests_by_route_and_status,
);

async fn unknown_api_routes_answer_with_the_error_envelope(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let response = app.get("/api/no/such/thing").await;
    assert_eq!(response.status(), 404);
    assert_eq!(response.headers()["content-type"], "application/json");
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], 404);
    assert_eq!(body["message"], "The requested resource wasn't found.");
    assert_eq!(body["data"], serde_json::json!({}));
    assert_eq!(body["code"], "not_found");
    assert_eq!(body["requestId"], request_id);
}

async fn request_ids_are_echoed_or_generated(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let echoed = app
        .client
        .get(app.url("/healthz"))
        .header("x-request-id", "client-id-123")
        .send()
        .await
        .unwrap();
    assert_eq!(echoed.headers()["x-request-id"], "client-id-123");

    let unsafe_id = app
        .client
        .get(app.url("/healthz"))
        .header("x-request-id", "<script>alert(1)</script>")
        .send()
        .await
        .unwrap();
    let generated = unsafe_id.headers()["x-request-id"].to_str().unwrap();
    assert_ne!(generated, "<script>alert(1)</script>");
    assert!(uuid::Uuid::parse_str(generated).is_ok(), "{generated}");

    let first = app.get("/").await.headers()["x-request-id"].clone();
    let second = app.get("/").await.headers()["x-request-id"].clone();
    assert_ne!(first, second);
}

async fn cors_preflight_allows_what_the_sdks_send(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    for method in ["PATCH", "DELETE"] {
        let preflight = app
            .client
            .request(reqwest::Method::OPTIONS, app.url("/api/health"))
            .header("origin", "http://localhost:5173")
            .header("access-control-request-method", method)
            .header(
                "access-control-request-headers",
                "authorization, content-type",
            )
            .send()
            .await
            .unwrap();
        assert!(
            preflight.status().is_success(),
            "{method}: {}",
            preflight.status()
        );
        let headers = preflight.headers();
        assert_eq!(headers["access-control-allow-origin"], "*");
        let methods = headers["access-control-allow-methods"].to_str().unwrap();
        assert!(methods.contains(method), "{methods}");
        let allowed = headers["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .to_ascii_lowercase();
        assert!(allowed.contains("authorization"), "{allowed}");
    }
    let simple = app
        .client
        .get(app.url("/api/health"))
        .header("origin", "http://localhost:5173")
        .send()
        .await
        .unwrap();
    assert_eq!(simple.headers()["access-control-allow-origin"], "*");
}

async fn cors_limits_origins_when_configured(backend: Backend) {
    let Some(app) = spawn_app_with(backend, |s| {
        s.api.cors_origins = vec!["https://app.example.com".into()];
    })
    .await
    else {
        return;
    };
    let allowed = app
        .client
        .get(app.url("/api/health"))
        .header("origin", "https://app.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    let other = app
        .client
        .request(reqwest::Method::OPTIONS, app.url("/api/health"))
        .header("origin", "https://evil.example.net")
        .header("access-control-request-method", "DELETE")
        .send()
        .await
        .unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());
}

async fn openapi_lists_every_endpoint(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let response = app.get("/api/openapi.json").await;
    assert_eq!(response.status(), 200);
    let doc: Value = response.json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/healthz",
        "/readyz",
        "/metrics",
        "/api/health",
        "/api/openapi.json",
        "/api/batch",
    ] {
        assert!(
            doc["paths"].get(path).is_some(),
            "{path} missing from the OpenAPI document"
        );
    }
    assert!(doc["components"]["schemas"].get("ErrorBody").is_some());
}

async fn metrics_count_requests_by_route_and_status(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    for _ in 0..3 {
        app.get("/api/health").await;
    }
    // Paths no route pattern matches are counted under fixed labels, whatever the path.
    for path in [
        "/api/missing",
        "/api/other/missing",
        "/index.html",
        "/index.html",
        "/nope",
    ] {
        app.get(path).await;
    }
    let metrics = app.get("/metrics").await.text().await.unwrap();
    for line in [
        "gatehouse_http_requests_total{method=\"GET\",route=\"/api/health\",status=\"200\"} 3",
        "gatehouse_http_requests_total{method=\"GET\",route=\"(api unmatched)\",status=\"404\"} 2",
        "gatehouse_http_requests_total{method=\"GET\",route=\"(static)\",status=\"200\"} 2",
        "gatehouse_http_requests_total{method=\"GET\",route=\"(static)\",status=\"404\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} missing from {metrics}");
    }
    assert!(
        metrics.contains("gatehouse_http_request_duration_seconds_bucket{route=\"/api/health\"")
    );
}
