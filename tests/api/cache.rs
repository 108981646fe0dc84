//! The response cache over real sockets: every directive, revalidation, stale serving,
//! coalescing, purge and the X-Cache header. Upstream bodies are `<name>:<hit number>`,
//! so a body tells whether it came from the cache or from a new fetch.

use reqwest::header;

use crate::support::upstream::{eventually, proxy_route, within, Upstream};
use crate::support::{spawn_front, TestApp};

async fn cached_app(upstream: &Upstream) -> TestApp {
    spawn_front(|s| proxy_route(s, "/", "app", &[upstream.url()], |_| {}, |r| r.cache = true)).await
}

/// GETs `path`; returns X-Cache and the body.
async fn fetch(app: &TestApp, path: &str) -> (String, String) {
    fetch_with(app, path, &[]).await
}

async fn fetch_with(app: &TestApp, path: &str, headers: &[(&str, &str)]) -> (String, String) {
    let mut request = app.client.get(app.url(path));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    let label = response
        .headers()
        .get("x-cache")
        .map_or("-".to_string(), |v| v.to_str().unwrap().to_string());
    (label, response.text().await.unwrap())
}

#[actix_web::test]
async fn max_age_responses_are_served_from_the_cache() {
    let upstream = Upstream::start("a").await;
    let app = cached_app(&upstream).await;
    let path = "/cached?cc=max-age=60";
    assert_eq!(fetch(&app, path).await, ("MISS".into(), "a:1".into()));
    let response = app.get(path).await;
    assert_eq!(response.headers()["x-cache"], "HIT");
    assert!(response.headers().contains_key(header::AGE));
    assert_eq!(response.text().await.unwrap(), "a:1");
    assert_eq!(upstream.hits(), 1);
    // HEAD is answered from the stored GET.
    let head = app.client.head(app.url(path)).send().await.unwrap();
    assert_eq!(head.headers()["x-cache"], "HIT");
    assert_eq!(upstream.hits(), 1);
}

#[actix_web::test]
async fn s_maxage_and_expires_make_responses_cacheable() {
    let upstream = Upstream::start("a").await;
    let app = cached_app(&upstream).await;
    let shared = "/cached?cc=s-maxage=60";
    fetch(&app, shared).await;
    assert_eq!(fetch(&app, shared).await.0, "HIT");

    let expires = httpdate::fmt_http_date(
        std::time::SystemTime::now() + std::time::Duration::from_secs(3600),
    );
    let path = format!("/cached?expires={}", expires.replace(' ', "%20"));
    fetch(&app, &path).await;
    assert_eq!(fetch(&app, &path).await.0, "HIT");

    let expired = "/cached?expires=0";
    fetch(&app, expired).await;
    assert_eq!(fetch(&app, expired).await.0, "MISS");
}

#[actix_web::test]
async fn no_store_private_set_cookie_and_no_freshness_are_not_stored() {
    let upstream = Upstream::start("a").await;
    let app = cached_app(&upstream).await;
    for path in [
        "/cached?cc=no-store",
        "/cached?cc=private,%20max-age=60",
        "/cached?cc=max-age=60&header=set-cookie:session=1",
        "/cached?cc=max-age=60&vary=*",
        "/cached",
    ] {
        fetch(&app, path).await;
        assert_eq!(fetch(&app, path).await.0, "MISS", "{path}");
    }
    assert_eq!(upstream.hits(), 10);
}

#[actix_web::test]
async fn authorized_requests_are_cached_only_when_the_response_is_public() {
    let upstream = Upstream::start("a").await;
    let app = cached_app(&upstream).await;
    let auth = [("authorization", "Bearer x")];
    fetch_with(&app, "/cached?cc=max-age=60", &auth).await;
    assert_eq!(
        fetch_with(&app, "/cached?cc=max-age=60", &auth).await.0,
        "MISS"
    );
    fetch_with(&app, "/cached?cc=public,%20max-age=60", &auth).await;
    assert_eq!(
        fetch_with(&app, "/cached?cc=public,%20max-age=60", &auth)
            .await
            .0,
        "HIT"
    );
}

#[actix_web::test]
async fn no_cache_responses_are_revalidated_with_their_etag() {
    let upstream = Upstream::start("a").await;
    let app = cached_app(&upstream).await;
    let path = "/cached?cc=no-cache&etag=v1";
    assert_eq!(fetch(&app, path).await, ("MISS".into(), "a:1".into()));
    // Stored, but every use asks the upstream, which answers 304: the stored body.
    assert_eq!(
        fetch(&app, path).await,
        ("REVALIDATED".into(), "a:1".into())
    );
    assert_eq!(upstream.hits(), 2);
    let revalidation = &upstream.seen()[1];
    assert_eq!(revalidation.header("if-none-match"), "\"v1\"");
}

#[actix_web::test]
async fn clients_get_304_for_a_matching_etag_from_the_cache() {
    let upstream = Upstream::start("a").await;
    let app = cached_app(&upstream).await;
    let path = "/cached?cc=max-age=60&etag=v7";
    fetch(&app, path).await;
    let response = app
        .client
        .get(app.url(path))
        .header(header::IF_NONE_MATCH, "\"v7\"")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 304);
    assert_eq!(response.headers()["x-cache"], "HIT");
    assert_eq!(upstream.hits(), 1);
}

#[actix_web::test]
async fn vary_keeps_one_copy_per_variant() {
    let upstream = Upstream::start("a").await;
    let app = cached_app(&upstream).await;
    let path = "/cached?cc=max-age=60&vary=accept-language";
    let en = [("accept-language", "en")];
    let de = [("accept-language", "de")];
    assert_eq!(
        fetch_with(&app, path, &en).await,
        ("MISS".into(), "a:1:en".into())
    );
    assert_eq!(
        fetch_with(&app, path, &de).await,
        ("MISS".into(), "a:2:de".into())
    );
    assert_eq!(
        fetch_with(&app, path, &en).await,
        ("HIT".into(), "a:1:en".into())
    );
    assert_eq!(
        fetch_with(&app, path, &de).await,
        ("HIT".into(), "a:2:de".into())
    );
}

#[actix_web::test]
async fn stale_while_revalidate_serves_stale_and_refreshes_in_the_background() {
    let upstream = Upstream::start("a").await;
    let app = cached_app(&upstream).await;
    // Age equal to max-age: stale on arrival, inside the revalidation window.
    let path = "/cached?cc=max-age=100,%20stale-while-revalidate=600&header=age:100";
    assert_eq!(fetch(&app, path).await, ("MISS".into(), "a:1".into()));
    assert_eq!(fetch(&app, path).await, ("STALE".into(), "a:1".into()));
    eventually("the background refresh stored a new copy", || async {
        fetch(&app, path).await.1 != "a:1"
    })
    .await;
    assert!(upstream.hits() >= 2);
}

#[actix_web::test]
async fn stale_if_error_serves_the_stale_copy_when_the_upstream_fails() {
    let upstream = Upstream::start("a").await;
    let app = spawn_front(|s| {
        proxy_route(
            s,
            "/",
            "app",
            &[upstream.url()],
            |p| p.max_fails = 0,
            |r| r.cache = true,
        )
    })
    .await;
    // The same URL first answers 200 (stored, already stale), then 500.
    let ok = "/cached?cc=max-age=100,%20stale-if-error=600&header=age:100";
    assert_eq!(fetch(&app, ok).await, ("MISS".into(), "a:1".into()));
    assert_eq!(
        fetch(&app, ok).await.0,
        "MISS",
        "a stale copy without error is refetched"
    );
    drop(upstream);
    // Once the upstream is gone, the stale copy answers.
    eventually("a stale answer", || async {
        let (label, body) = fetch(&app, ok).await;
        assert!(body.starts_with("a:"), "{body}");
        label == "STALE"
    })
    .await;
}

#[actix_web::test]
async fn concurrent_misses_are_coalesced_into_one_fetch() {
    let upstream = Upstream::start("a").await;
    let app = cached_app(&upstream).await;
    let path = "/cached?cc=max-age=60&delay_ms=300";
    let requests = (0..10).map(|_| fetch(&app, path));
    let answers = within("all answers", futures_util::future::join_all(requests)).await;
    assert_eq!(upstream.hits(), 1, "{answers:?}");
    assert!(answers.iter().all(|(_, body)| body == "a:1"), "{answers:?}");
    assert_eq!(
        answers.iter().filter(|(label, _)| label == "MISS").count(),
        1
    );
}

#[actix_web::test]
async fn other_methods_bypass_the_cache() {
    let upstream = Upstream::start("a").await;
    let app = cached_app(&upstream).await;
    let response = app
        .client
        .post(app.url("/cached?cc=max-age=60"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-cache"], "BYPASS");
}

#[actix_web::test]
async fn purge_removes_entries_by_key_and_by_prefix() {
    let upstream = Upstream::start("a").await;
    let app = cached_app(&upstream).await;
    for path in [
        "/cached?cc=max-age=60&k=1",
        "/cached?cc=max-age=60&k=2",
        "/other?x",
    ] {
        fetch(&app, path).await;
    }
    let guest = app
        .client
        .post(app.url("/api/admin/cache/purge"))
        .json(&serde_json::json!({ "prefix": "/" }))
        .send()
        .await
        .unwrap();
    assert_eq!(guest.status(), 401);
    let token = app.superuser_token("root@example.com").await;
    let purge = |body: serde_json::Value| {
        let request = app.with_token(reqwest::Method::POST, "/api/admin/cache/purge", &token);
        async move {
            let response = request.json(&body).send().await.unwrap();
            assert_eq!(response.status(), 200);
            response.json::<serde_json::Value>().await.unwrap()
        }
    };
    let result = purge(serde_json::json!({ "key": "/cached?cc=max-age=60&k=1" })).await;
    assert_eq!(result["purged"], 1);
    assert_eq!(fetch(&app, "/cached?cc=max-age=60&k=1").await.0, "MISS");
    assert_eq!(fetch(&app, "/cached?cc=max-age=60&k=2").await.0, "HIT");

    let result = purge(serde_json::json!({ "prefix": "/cached" })).await;
    assert_eq!(result["purged"], 2);
    assert_eq!(fetch(&app, "/cached?cc=max-age=60&k=2").await.0, "MISS");

    let bad = app
        .with_token(reqwest::Method::POST, "/api/admin/cache/purge", &token)
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
}
