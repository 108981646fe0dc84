//! The response cache over real sockets: every directive, revalidation, stale serving,
//! coalescing, purge and the X-Cache header. Upstream bodies are `<name>:<hit number>`,
//! so a body tells whether it came from the cache or from a new fetch.

use reqwest::header;

use crate::support::upstream::{eventually, proxy_route, within, DeadAddress, Upstream};
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
    // Whole seconds since the copy was stored.
    let age = response.headers()[header::AGE].to_str().unwrap();
    assert!(age.parse::<u64>().is_ok(), "Age: {age}");
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

// ---- The Redis tier (REDIS_URL) ----

/// The Redis server named by REDIS_URL and a key prefix of the test's own.
fn redis_env(test: &str) -> Option<(String, String)> {
    match std::env::var("REDIS_URL") {
        Ok(url) if url.starts_with("redis") => {
            Some((url, format!("test-{}", uuid::Uuid::new_v4().simple())))
        }
        _ => {
            crate::support::skip(test, "REDIS_URL is not set (.ci/run sets it)");
            None
        }
    }
}

/// A caching proxy instance with the Redis tier under `prefix`, once Redis is connected.
async fn redis_cached_app(upstream: &Upstream, redis: &(String, String)) -> TestApp {
    let (url, prefix) = redis.clone();
    let app = spawn_front(move |s| {
        proxy_route(s, "/", "app", &[upstream.url()], |_| {}, |r| r.cache = true);
        s.redis.url = gatehouse::config::ConnectionUrl::new(url);
        s.redis.key_prefix = prefix;
    })
    .await;
    eventually("the instance reaching Redis", || async {
        app.get("/readyz").await.status() == 200
    })
    .await;
    app
}

async fn redis_connection(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// The cache keys under `prefix` in Redis.
async fn redis_keys(url: &str, prefix: &str) -> Vec<String> {
    let mut conn = redis_connection(url).await;
    let mut keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:cache:*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    keys.sort();
    keys
}

/// The value of one sample of `name` with these labels in `/metrics`.
async fn metric(app: &TestApp, name: &str, labels: &str) -> f64 {
    let text = app.get("/metrics").await.text().await.unwrap();
    let wanted = if labels.is_empty() {
        format!("{name} ")
    } else {
        format!("{name}{{{labels}}} ")
    };
    text.lines()
        .find_map(|line| line.strip_prefix(&wanted))
        .map_or(0.0, |value| value.parse().unwrap())
}

#[actix_web::test]
async fn a_restarted_instance_answers_from_the_redis_tier() {
    let Some(redis) = redis_env("a_restarted_instance_answers_from_the_redis_tier") else {
        return;
    };
    let upstream = Upstream::start("a").await;
    let path = "/cached?cc=max-age=60&etag=v1";
    let first = redis_cached_app(&upstream, &redis).await;
    assert_eq!(fetch(&first, path).await, ("MISS".into(), "a:1".into()));
    eventually("the response stored in Redis", || async {
        redis_keys(&redis.0, &redis.1).await.len() == 1
    })
    .await;
    first.shut_down().await;

    // A new instance has nothing in memory: the copy comes from Redis, with its age,
    // headers and body, and the upstream is not asked again.
    let second = redis_cached_app(&upstream, &redis).await;
    let response = second.get(path).await;
    assert_eq!(response.headers()["x-cache"], "HIT");
    assert_eq!(response.headers()["etag"], "\"v1\"");
    assert!(response.headers().contains_key(header::AGE));
    assert_eq!(response.text().await.unwrap(), "a:1");
    assert_eq!(upstream.hits(), 1);
    assert_eq!(
        metric(
            &second,
            "gatehouse_cache_lookups_total",
            "outcome=\"hit\",tier=\"redis\""
        )
        .await,
        1.0
    );
    // Now it is in memory as well.
    assert_eq!(fetch(&second, path).await, ("HIT".into(), "a:1".into()));
    assert_eq!(
        metric(
            &second,
            "gatehouse_cache_lookups_total",
            "outcome=\"hit\",tier=\"memory\""
        )
        .await,
        1.0
    );
    assert_eq!(
        metric(
            &second,
            "gatehouse_cache_responses_total",
            "result=\"HIT\",tier=\"redis\""
        )
        .await,
        1.0
    );
}

#[actix_web::test]
async fn memory_evictions_fall_back_to_the_redis_tier() {
    let Some(redis) = redis_env("memory_evictions_fall_back_to_the_redis_tier") else {
        return;
    };
    let upstream = Upstream::start("a").await;
    let (url, prefix) = redis.clone();
    let upstream_url = upstream.url();
    // Room in memory for about one 2 KB response.
    let app = spawn_front(move |s| {
        proxy_route(s, "/", "app", &[upstream_url], |_| {}, |r| r.cache = true);
        s.redis.url = gatehouse::config::ConnectionUrl::new(url);
        s.redis.key_prefix = prefix;
        s.cache.max_bytes = 3000;
    })
    .await;
    eventually("the instance reaching Redis", || async {
        app.get("/readyz").await.status() == 200
    })
    .await;
    let big = "/cached?cc=max-age=60&pad=2000";
    let other = "/cached?cc=max-age=60&pad=2000&n=2";
    assert_eq!(fetch(&app, big).await.0, "MISS");
    assert_eq!(fetch(&app, other).await.0, "MISS");
    eventually("both responses in Redis", || async {
        redis_keys(&redis.0, &redis.1).await.len() == 2
    })
    .await;
    // Both do not fit in memory: one of them was evicted (or not admitted).
    eventually("an eviction", || async {
        metric(&app, "gatehouse_cache_evictions_total", "").await >= 1.0
    })
    .await;
    let hits = upstream.hits();
    for path in [big, other] {
        assert_eq!(fetch(&app, path).await.0, "HIT", "{path}");
    }
    assert_eq!(upstream.hits(), hits, "both answered without the upstream");
}

#[actix_web::test]
async fn garbled_and_wrong_type_redis_values_are_misses() {
    let Some(redis) = redis_env("garbled_and_wrong_type_redis_values_are_misses") else {
        return;
    };
    let upstream = Upstream::start("a").await;
    let app = redis_cached_app(&upstream, &redis).await;
    let host = app.addr.ip().to_string();
    let mut conn = redis_connection(&redis.0).await;
    let garbled = format!("{}:cache:{host} /cached?cc=max-age=60&k=garbled ", redis.1);
    let wrong_type = format!("{}:cache:{host} /cached?cc=max-age=60&k=list ", redis.1);
    let _: () = redis::cmd("SET")
        .arg(&garbled)
        .arg(b"GHC1\x00\xff\x01 not really".as_slice())
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: () = redis::cmd("RPUSH")
        .arg(&wrong_type)
        .arg("x")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        fetch(&app, "/cached?cc=max-age=60&k=garbled").await,
        ("MISS".into(), "a:1".into())
    );
    assert_eq!(
        fetch(&app, "/cached?cc=max-age=60&k=list").await,
        ("MISS".into(), "a:2".into())
    );
    assert_eq!(
        metric(
            &app,
            "gatehouse_cache_lookups_total",
            "outcome=\"garbled\",tier=\"redis\""
        )
        .await,
        2.0
    );
    // The answers were stored in memory all the same (and the garbled value replaced).
    assert_eq!(
        fetch(&app, "/cached?cc=max-age=60&k=garbled").await.0,
        "HIT"
    );
    assert_eq!(fetch(&app, "/cached?cc=max-age=60&k=list").await.0, "HIT");
}

#[actix_web::test]
async fn a_purge_empties_redis_and_the_other_instances_memory() {
    let Some(redis) = redis_env("a_purge_empties_redis_and_the_other_instances_memory") else {
        return;
    };
    let upstream = Upstream::start("a").await;
    let a = redis_cached_app(&upstream, &redis).await;
    let b = redis_cached_app(&upstream, &redis).await;
    let keep = "/cached?cc=max-age=60&k=keep";
    let img1 = "/cached?cc=max-age=60&k=img1";
    for path in [img1, "/cached?cc=max-age=60&k=img2", keep] {
        fetch(&a, path).await;
    }
    eventually("the responses in Redis", || async {
        redis_keys(&redis.0, &redis.1).await.len() == 3
    })
    .await;
    // B answers from Redis and keeps the copies in its memory.
    for path in [img1, "/cached?cc=max-age=60&k=img2", keep] {
        assert_eq!(fetch(&b, path).await.0, "HIT", "{path}");
    }
    let hits = upstream.hits();

    let token = a.superuser_token("root@example.com").await;
    let result: serde_json::Value = a
        .with_token(reqwest::Method::POST, "/api/admin/cache/purge", &token)
        .json(&serde_json::json!({ "prefix": "/cached?cc=max-age=60&k=img" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(result["purged"], 2);
    assert_eq!(result["redisPurged"], 2);
    assert_eq!(redis_keys(&redis.0, &redis.1).await.len(), 1);
    eventually("B dropping its copies", || async {
        metric(&b, "gatehouse_cache_invalidations_received_total", "").await == 1.0
    })
    .await;
    assert_eq!(fetch(&b, img1).await.0, "MISS");
    assert_eq!(fetch(&b, keep).await.0, "HIT");
    assert_eq!(upstream.hits(), hits + 1);
    // A does not act on its own announcement.
    assert_eq!(
        metric(&a, "gatehouse_cache_invalidations_received_total", "").await,
        0.0
    );
}

#[actix_web::test]
async fn without_redis_the_cache_keeps_serving_from_memory() {
    let upstream = Upstream::start("a").await;
    // Nothing listens on this port: the tier is unavailable from the start.
    let dead = DeadAddress::new();
    let port = dead.addr.port();
    let upstream_url = upstream.url();
    let app = spawn_front(move |s| {
        proxy_route(s, "/", "app", &[upstream_url], |_| {}, |r| r.cache = true);
        s.redis.url = gatehouse::config::ConnectionUrl::new(format!("redis://127.0.0.1:{port}"));
    })
    .await;
    let path = "/cached?cc=max-age=60";
    assert_eq!(fetch(&app, path).await, ("MISS".into(), "a:1".into()));
    assert_eq!(fetch(&app, path).await, ("HIT".into(), "a:1".into()));
    assert_eq!(fetch(&app, "/cached?cc=max-age=60&k=2").await.0, "MISS");
    assert!(
        metric(
            &app,
            "gatehouse_cache_lookups_total",
            "outcome=\"error\",tier=\"redis\""
        )
        .await
            >= 2.0
    );
}

// ---- Cacheable API routes ----

/// An instance caching the `posts` collection's public answers for a minute.
async fn api_cached_app() -> (TestApp, String) {
    let app = spawn_front(|s| {
        s.cache.collections.insert(
            "posts".into(),
            gatehouse::config::CollectionCacheSettings {
                ttl: std::time::Duration::from_secs(60),
            },
        );
    })
    .await;
    let admin = app.superuser_token("root@example.com").await;
    app.create_collection(
        &admin,
        serde_json::json!({
            "name": "posts", "listRule": "", "viewRule": "",
            "createRule": "", "updateRule": "", "deleteRule": "",
            "fields": [{"name": "title", "type": "text"}]
        }),
    )
    .await;
    app.create_collection(
        &admin,
        serde_json::json!({
            "name": "drafts", "listRule": "", "viewRule": "",
            "fields": [{"name": "title", "type": "text"}]
        }),
    )
    .await;
    (app, admin)
}

async fn api_fetch(app: &TestApp, path: &str, token: Option<&str>) -> (String, serde_json::Value) {
    let response = app.send(reqwest::Method::GET, path, token, None).await;
    assert_eq!(response.status(), 200, "{path}");
    let label = response
        .headers()
        .get("x-cache")
        .map_or("-".to_string(), |v| v.to_str().unwrap().to_string());
    (label, response.json().await.unwrap())
}

fn titles(page: &serde_json::Value) -> Vec<String> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["title"].as_str().unwrap().to_string())
        .collect()
}

#[actix_web::test]
async fn public_record_answers_are_cached_and_dropped_when_records_change() {
    let (app, admin) = api_cached_app().await;
    let list = "/api/collections/posts/records?sort=title";
    let first = app
        .create_record("posts", None, serde_json::json!({"title": "one"}))
        .await;
    let (label, page) = api_fetch(&app, list, None).await;
    assert_eq!(
        (label.as_str(), titles(&page)),
        ("MISS", vec!["one".to_string()])
    );
    let (label, cached) = api_fetch(&app, list, None).await;
    assert_eq!(label, "HIT");
    assert_eq!(cached, page);

    // Superusers and other callers with a token are answered by the database.
    assert_eq!(api_fetch(&app, list, Some(&admin)).await.0, "-");

    // Each write drops the collection's answers at once.
    app.create_record("posts", None, serde_json::json!({"title": "two"}))
        .await;
    let (label, page) = api_fetch(&app, list, None).await;
    assert_eq!(
        (label.as_str(), titles(&page)),
        ("MISS", vec!["one".into(), "two".into()])
    );

    let id = first["id"].as_str().unwrap();
    let view = format!("/api/collections/posts/records/{id}");
    assert_eq!(api_fetch(&app, &view, None).await.0, "MISS");
    assert_eq!(api_fetch(&app, &view, None).await.0, "HIT");
    let updated = app
        .send(
            reqwest::Method::PATCH,
            &view,
            None,
            Some(&serde_json::json!({"title": "uno"})),
        )
        .await;
    assert_eq!(updated.status(), 200);
    let (label, record) = api_fetch(&app, &view, None).await;
    assert_eq!(
        (label.as_str(), record["title"].as_str()),
        ("MISS", Some("uno"))
    );
    assert_eq!(titles(&api_fetch(&app, list, None).await.1), ["two", "uno"]);

    let deleted = app.send(reqwest::Method::DELETE, &view, None, None).await;
    assert_eq!(deleted.status(), 204);
    assert_eq!(titles(&api_fetch(&app, list, None).await.1), ["two"]);
    let gone = app.send(reqwest::Method::GET, &view, None, None).await;
    assert_eq!(gone.status(), 404);

    // So does a batch that wrote to the collection.
    assert_eq!(api_fetch(&app, list, None).await.0, "HIT");
    let batch = app
        .send(
            reqwest::Method::POST,
            "/api/batch",
            None,
            Some(&serde_json::json!({"requests": [
                {"method": "POST", "url": "/api/collections/posts/records", "body": {"title": "three"}}
            ]})),
        )
        .await;
    assert_eq!(batch.status(), 200);
    let (label, page) = api_fetch(&app, list, None).await;
    assert_eq!(
        (label.as_str(), titles(&page)),
        ("MISS", vec!["three".to_string(), "two".to_string()])
    );
}

#[actix_web::test]
async fn only_collections_declared_cacheable_and_public_answers_are_cached() {
    let (app, admin) = api_cached_app().await;
    app.create_record("drafts", Some(&admin), serde_json::json!({"title": "d"}))
        .await;
    // `drafts` is not in cache.collections.
    let drafts = "/api/collections/drafts/records";
    api_fetch(&app, drafts, None).await;
    assert_eq!(api_fetch(&app, drafts, None).await.0, "-");
    // ?expand= shows other collections' records: not cached.
    let expanded = "/api/collections/posts/records?expand=author";
    let response = app.send(reqwest::Method::GET, expanded, None, None).await;
    assert!(!response.headers().contains_key("x-cache"));

    // A rule that stops guests (superusers only) is not public: never stored, and the
    // answer cached before the change is dropped with it.
    let list = "/api/collections/posts/records";
    api_fetch(&app, list, None).await;
    assert_eq!(api_fetch(&app, list, None).await.0, "HIT");
    let changed = app
        .send(
            reqwest::Method::PATCH,
            "/api/collections/posts",
            Some(&admin),
            Some(&serde_json::json!({"listRule": null})),
        )
        .await;
    assert_eq!(changed.status(), 200);
    let refused = app.send(reqwest::Method::GET, list, None, None).await;
    assert_eq!(refused.status(), 403);
}
