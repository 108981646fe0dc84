use reqwest::header;

use crate::on_both_backends;
use crate::support::{raw_http, spawn_app, spawn_app_with, Backend, TestApp};

on_both_backends!(
    landing_page_has_type_validators_and_cache_control,
    conditional_requests_get_304,
    range_requests_get_206_and_416,
    head_sends_headers_without_a_body,
    mime_types_follow_the_extension,
    precompressed_siblings_are_served_when_accepted,
    spa_fallback_serves_the_app_page_for_routes_only,
    missing_files_are_404_and_use_404_html,
    traversal_attempts_are_refused,
    symlinks_may_not_leave_the_root,
    hidden_files_are_not_served,
    directories_redirect_to_their_slash_and_serve_index,
    mounts_serve_their_own_folder_with_their_cache_control,
    only_get_and_head_are_allowed,
    large_files_reach_a_slow_reader_whole_and_in_order,
    after_an_answer_that_closes_every_pipelined_answer_closes,
);

async fn landing_page_has_type_validators_and_cache_control(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let response = app.get("/").await;
    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    assert_eq!(headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
    assert!(headers.contains_key(header::ETAG));
    assert!(headers.contains_key(header::LAST_MODIFIED));
    assert_eq!(headers[header::CACHE_CONTROL], "no-cache");
    assert!(headers.get(header::CONTENT_DISPOSITION).is_none());
    assert_eq!(response.text().await.unwrap(), "<h1>test home</h1>");
}

async fn conditional_requests_get_304(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    app.write_static("page.html", "hello");
    let first = app.get("/page.html").await;
    let etag = first.headers()[header::ETAG].clone();
    let modified = first.headers()[header::LAST_MODIFIED].clone();

    let by_etag = app
        .client
        .get(app.url("/page.html"))
        .header(header::IF_NONE_MATCH, etag.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(by_etag.status(), 304);
    assert!(by_etag.bytes().await.unwrap().is_empty());

    let by_date = app
        .client
        .get(app.url("/page.html"))
        .header(header::IF_MODIFIED_SINCE, modified)
        .send()
        .await
        .unwrap();
    assert_eq!(by_date.status(), 304);

    let stale = app
        .client
        .get(app.url("/page.html"))
        .header(header::IF_NONE_MATCH, "\"some-other-version\"")
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), 200);
}

async fn range_requests_get_206_and_416(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    app.write_static("data.txt", "0123456789abcdef");
    let partial = app
        .client
        .get(app.url("/data.txt"))
        .header(header::RANGE, "bytes=2-5")
        .send()
        .await
        .unwrap();
    assert_eq!(partial.status(), 206);
    assert_eq!(partial.headers()[header::CONTENT_RANGE], "bytes 2-5/16");
    assert_eq!(partial.text().await.unwrap(), "2345");

    let suffix = app
        .client
        .get(app.url("/data.txt"))
        .header(header::RANGE, "bytes=-3")
        .send()
        .await
        .unwrap();
    assert_eq!(suffix.status(), 206);
    assert_eq!(suffix.text().await.unwrap(), "def");

    let unsatisfiable = app
        .client
        .get(app.url("/data.txt"))
        .header(header::RANGE, "bytes=100-200")
        .send()
        .await
        .unwrap();
    assert_eq!(unsatisfiable.status(), 416);
    assert_eq!(unsatisfiable.headers()[header::CONTENT_RANGE], "bytes */16");
}

async fn head_sends_headers_without_a_body(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    app.write_static("big.txt", "x".repeat(5000));
    let response = app.client.head(app.url("/big.txt")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()[header::CONTENT_LENGTH], "5000");
    assert!(response.bytes().await.unwrap().is_empty());
}

async fn mime_types_follow_the_extension(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    for (file, expected) in [
        ("a.css", "text/css; charset=utf-8"),
        ("a.js", "text/javascript; charset=utf-8"),
        ("a.json", "application/json; charset=utf-8"),
        ("a.svg", "image/svg+xml; charset=utf-8"),
        ("a.png", "image/png"),
        ("a.wasm", "application/wasm"),
        ("a.unknownext", "application/octet-stream"),
    ] {
        app.write_static(file, "content");
        let response = app.get(&format!("/{file}")).await;
        assert_eq!(response.headers()[header::CONTENT_TYPE], expected, "{file}");
    }
}

async fn precompressed_siblings_are_served_when_accepted(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    app.write_static("app.js", "plain javascript");
    app.write_static("app.js.br", "brotli bytes");
    app.write_static("app.js.gz", "gzip bytes");

    let fetch = |encoding: Option<&'static str>| {
        let mut request = app.client.get(app.url("/app.js"));
        if let Some(encoding) = encoding {
            request = request.header(header::ACCEPT_ENCODING, encoding);
        }
        request.send()
    };

    let brotli = fetch(Some("gzip, deflate, br")).await.unwrap();
    assert_eq!(brotli.headers()[header::CONTENT_ENCODING], "br");
    assert_eq!(
        brotli.headers()[header::CONTENT_TYPE],
        "text/javascript; charset=utf-8"
    );
    assert_eq!(brotli.headers()[header::VARY], "accept-encoding");
    let brotli_etag = brotli.headers()[header::ETAG].clone();
    assert_eq!(brotli.text().await.unwrap(), "brotli bytes");

    let gzip = fetch(Some("gzip")).await.unwrap();
    assert_eq!(gzip.headers()[header::CONTENT_ENCODING], "gzip");
    assert_ne!(gzip.headers()[header::ETAG], brotli_etag);
    assert_eq!(gzip.text().await.unwrap(), "gzip bytes");

    let refused = fetch(Some("br;q=0, gzip;q=0")).await.unwrap();
    assert!(refused.headers().get(header::CONTENT_ENCODING).is_none());
    assert_eq!(refused.text().await.unwrap(), "plain javascript");

    let plain = fetch(None).await.unwrap();
    assert!(plain.headers().get(header::CONTENT_ENCODING).is_none());
    assert_eq!(plain.headers()[header::VARY], "accept-encoding");
    assert_eq!(plain.text().await.unwrap(), "plain javascript");

    // A file without siblings needs no Vary.
    app.write_static("solo.js", "solo");
    assert!(app
        .get("/solo.js")
        .await
        .headers()
        .get(header::VARY)
        .is_none());
}

async fn spa_fallback_serves_the_app_page_for_routes_only(backend: Backend) {
    let Some(app) = spawn_app_with(backend, |s| s.static_files.spa_fallback = true).await else {
        return;
    };
    let route = app.get("/settings/profile").await;
    assert_eq!(route.status(), 200);
    assert_eq!(route.text().await.unwrap(), "<h1>test home</h1>");

    assert_eq!(app.get("/assets/missing.js").await.status(), 404);

    let Some(plain) = spawn_app(backend).await else {
        return;
    };
    assert_eq!(plain.get("/settings/profile").await.status(), 404);
}

async fn missing_files_are_404_and_use_404_html(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let missing = app.get("/nope.html").await;
    assert_eq!(missing.status(), 404);

    app.write_static("404.html", "<h1>custom not found</h1>");
    let custom = app.get("/nope.html").await;
    assert_eq!(custom.status(), 404);
    assert_eq!(custom.text().await.unwrap(), "<h1>custom not found</h1>");
}

fn plant_secret(app: &TestApp) -> std::path::PathBuf {
    let secret = app.static_root.parent().unwrap().join("secret.txt");
    std::fs::write(&secret, "TOP SECRET").unwrap();
    std::fs::create_dir_all(app.static_root.join("sub")).unwrap();
    secret
}

async fn traversal_attempts_are_refused(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    plant_secret(&app);
    for target in [
        "/../secret.txt",
        "/sub/../../secret.txt",
        "/%2e%2e/secret.txt",
        "/%2E%2E%2Fsecret.txt",
        "/sub/..%2f..%2fsecret.txt",
        "/sub%2f..%2f..%2fsecret.txt",
        "/..%5csecret.txt",
        "/%252e%252e/secret.txt",
    ] {
        let response = raw_http::get(app.addr, target).await;
        assert!(
            response.status == 404 || response.status == 400,
            "{target}: {}",
            response.status
        );
        assert!(
            !String::from_utf8_lossy(&response.body).contains("TOP SECRET"),
            "{target} leaked the file"
        );
    }
}

async fn symlinks_may_not_leave_the_root(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let secret = plant_secret(&app);
    std::os::unix::fs::symlink(&secret, app.static_root.join("leak.txt")).unwrap();
    std::os::unix::fs::symlink(
        app.static_root.parent().unwrap(),
        app.static_root.join("up"),
    )
    .unwrap();
    let inside = app.write_static("real.txt", "inside the root");
    std::os::unix::fs::symlink(&inside, app.static_root.join("alias.txt")).unwrap();

    assert_eq!(app.get("/leak.txt").await.status(), 404);
    assert_eq!(app.get("/up/secret.txt").await.status(), 404);
    let alias = app.get("/alias.txt").await;
    assert_eq!(alias.status(), 200);
    assert_eq!(alias.text().await.unwrap(), "inside the root");
}

async fn hidden_files_are_not_served(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    app.write_static(".env", "DATABASE_PASSWORD=x");
    app.write_static(".git/config", "[core]");
    app.write_static(
        ".well-known/security.txt",
        "Contact: mailto:security@example.com",
    );
    assert_eq!(app.get("/.env").await.status(), 404);
    assert_eq!(app.get("/.git/config").await.status(), 404);
    assert_eq!(app.get("/.well-known/security.txt").await.status(), 200);
}

async fn directories_redirect_to_their_slash_and_serve_index(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    app.write_static("docs/index.html", "docs home");
    let redirect = app.get("/docs").await;
    assert_eq!(redirect.status(), 301);
    assert_eq!(redirect.headers()[header::LOCATION], "/docs/");
    let index = app.get("/docs/").await;
    assert_eq!(index.status(), 200);
    assert_eq!(index.text().await.unwrap(), "docs home");

    // A folder without an index is not listed.
    app.write_static("private/data.txt", "x");
    assert_eq!(app.get("/private/").await.status(), 404);
}

async fn mounts_serve_their_own_folder_with_their_cache_control(backend: Backend) {
    let assets = tempfile::tempdir().unwrap();
    std::fs::write(assets.path().join("app.1234.js"), "fingerprinted").unwrap();
    let assets_root = assets.path().to_path_buf();
    let Some(app) = spawn_app_with(backend, move |s| {
        s.static_files.mounts = vec![gatehouse::config::StaticMount {
            prefix: "/assets".into(),
            root: assets_root,
            cache_control: "public, max-age=31536000, immutable".into(),
            spa_fallback: false,
        }];
    })
    .await
    else {
        return;
    };
    let asset = app.get("/assets/app.1234.js").await;
    assert_eq!(asset.status(), 200);
    assert_eq!(
        asset.headers()[header::CACHE_CONTROL],
        "public, max-age=31536000, immutable"
    );
    assert_eq!(asset.text().await.unwrap(), "fingerprinted");
    // The root mount keeps its own policy, and the prefix matches whole segments only.
    assert_eq!(
        app.get("/").await.headers()[header::CACHE_CONTROL],
        "no-cache"
    );
    assert_eq!(app.get("/assetsX/app.1234.js").await.status(), 404);
}

async fn only_get_and_head_are_allowed(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let response = app.client.post(app.url("/")).send().await.unwrap();
    assert_eq!(response.status(), 405);
    assert_eq!(response.headers()[header::ALLOW], "GET, HEAD");
}

fn pattern(len: usize, seed: usize) -> Vec<u8> {
    (0..len).map(|i| ((i * 7919 + seed) % 251) as u8).collect()
}

async fn large_files_reach_a_slow_reader_whole_and_in_order(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    // One file small enough to be served from memory in one piece, one large enough to
    // be read from disk in chunks; both are written from their own buffers, after the
    // head, not copied into the connection's. The client pipelines its requests and reads
    // slowly enough to fill the socket: each answer must still be whole, in order, and
    // framed for its own request.
    let in_memory = pattern(200 * 1024, 1);
    let from_disk = pattern(3 * 1024 * 1024 + 17, 2);
    app.write_static("memory.bin", &in_memory);
    app.write_static("disk.bin", &from_disk);
    app.write_static("after.txt", "the last answer");
    let warm = app.get("/memory.bin").await;
    assert_eq!(warm.bytes().await.unwrap().as_ref(), in_memory.as_slice());

    let requests = [
        "GET /memory.bin HTTP/1.1\r\nHost: test\r\n\r\n",
        "HEAD /memory.bin HTTP/1.1\r\nHost: test\r\n\r\n",
        "HEAD /disk.bin HTTP/1.1\r\nHost: test\r\n\r\n",
        "GET /disk.bin HTTP/1.1\r\nHost: test\r\n\r\n",
        "GET /memory.bin HTTP/1.1\r\nHost: test\r\nRange: bytes=10-30009\r\n\r\n",
        "GET /after.txt HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n",
    ]
    .concat();
    let raw = raw_http::pipelined_slow_reader(app.addr, &requests).await;
    let responses = raw_http::split_responses(&raw, &[false, true, true, false, false, false]);

    let statuses: Vec<u16> = responses.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [200, 200, 200, 200, 206, 200]);
    assert!(
        responses[0].body == in_memory,
        "the in-memory file changed on the way"
    );
    assert!(responses[1].body.is_empty() && responses[2].body.is_empty());
    assert!(
        responses[3].body == from_disk,
        "the file from disk changed on the way"
    );
    assert!(
        responses[4].body == in_memory[10..30010],
        "the range changed on the way"
    );
    assert_eq!(responses[5].body, b"the last answer");
}

async fn after_an_answer_that_closes_every_pipelined_answer_closes(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    app.write_static("small.txt", "small");
    let requests = [
        "GET /small.txt HTTP/1.1\r\nHost: test\r\n\r\n",
        "GET /small.txt HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n",
        "GET /small.txt HTTP/1.1\r\nHost: test\r\n\r\n",
    ]
    .concat();
    // The server ends the connection once it has answered: a keep-alive answer after the
    // close would leave it open, and this read would wait for the keep-alive timeout.
    let raw = tokio::time::timeout(
        std::time::Duration::from_secs(3),
        raw_http::pipelined_slow_reader(app.addr, &requests),
    )
    .await
    .expect("the connection closes after the answers");
    let text = String::from_utf8_lossy(&raw).to_ascii_lowercase();
    let heads: Vec<&str> = text
        .split("\r\n\r\n")
        .filter(|part| part.starts_with("http/1.1"))
        .collect();
    assert!(!heads.is_empty() && heads.len() <= 3, "{text}");
    assert!(!heads[0].contains("connection: close"), "{}", heads[0]);
    for head in &heads[1..] {
        assert!(head.contains("connection: close"), "{head}");
    }
}
