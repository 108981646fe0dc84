//! The route table, compression and request limits over real sockets.

use std::io::Read;
use std::time::Duration;

use gatehouse::config::{RouteHandler, RouteSettings};
use reqwest::header;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::spawn_front;
use crate::support::upstream::{eventually, proxy_route, within, Upstream};

fn route(path: &str, handler: RouteHandler) -> RouteSettings {
    RouteSettings {
        host: None,
        path: path.into(),
        handler,
        root: None,
        upstream: None,
        strip_prefix: false,
        cache: false,
        to: None,
        status: None,
        max_body_bytes: None,
    }
}

#[actix_web::test]
async fn the_default_routes_serve_the_api_and_the_static_root() {
    let app = spawn_front(|_| {}).await;
    assert_eq!(
        app.get("/").await.text().await.unwrap(),
        "<h1>test home</h1>"
    );
    let health: serde_json::Value = app.get("/api/health").await.json().await.unwrap();
    assert_eq!(health["code"], 200);
    let unknown = app.get("/api/nope").await;
    assert_eq!(unknown.status(), 404);
    assert_eq!(
        unknown.json::<serde_json::Value>().await.unwrap()["code"],
        "not_found"
    );
}

#[actix_web::test]
async fn routes_match_by_host_and_prefix_in_order() {
    let upstream = Upstream::start("app").await;
    let docs = tempfile::tempdir().unwrap();
    std::fs::write(docs.path().join("guide.html"), "the guide").unwrap();
    let docs_root = docs.path().to_path_buf();
    let app = spawn_front(|s| {
        proxy_route(
            s,
            "/",
            "app",
            &[upstream.url()],
            |_| {},
            |r| r.host = Some("app.test".into()),
        );
        let mut redirect = route("/old", RouteHandler::Redirect);
        redirect.to = Some("https://new.test{uri}".into());
        redirect.status = Some(301);
        let mut static_docs = route("/docs", RouteHandler::Static);
        static_docs.root = Some(docs_root);
        let last = s.routes.len() - 1;
        s.routes.insert(last, redirect);
        s.routes.insert(last, static_docs);
    })
    .await;
    let on_host =
        |host: &'static str, path: &str| app.client.get(app.url(path)).header("host", host).send();
    assert_eq!(
        on_host("app.test", "/anything")
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "app"
    );
    assert_eq!(
        on_host("APP.test:8080", "/x")
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "app"
    );
    // The API route comes first, even on the proxied host.
    let api = on_host("app.test", "/api/health").await.unwrap();
    assert_eq!(api.json::<serde_json::Value>().await.unwrap()["code"], 200);

    let moved = on_host("other.test", "/old/page?q=1").await.unwrap();
    assert_eq!(moved.status(), 301);
    assert_eq!(moved.headers()["location"], "https://new.test/old/page?q=1");
    let guide = on_host("other.test", "/docs/guide.html").await.unwrap();
    assert_eq!(guide.text().await.unwrap(), "the guide");
    let home = on_host("other.test", "/").await.unwrap();
    assert_eq!(home.text().await.unwrap(), "<h1>test home</h1>");
    assert_eq!(upstream.hits(), 2);
}

#[actix_web::test]
async fn compression_is_negotiated_for_textual_bodies() {
    let app = spawn_front(|_| {}).await;
    let text = "gatehouse compresses text. ".repeat(200);
    app.write_static("page.txt", &text);
    app.write_static("photo.png", vec![7u8; 4000]);

    let get = |path: &'static str, accept: &'static str| {
        app.client
            .get(app.url(path))
            .header(header::ACCEPT_ENCODING, accept)
            .send()
    };
    let gzip = get("/page.txt", "gzip").await.unwrap();
    assert_eq!(gzip.headers()[header::CONTENT_ENCODING], "gzip");
    assert!(gzip.headers()[header::VARY]
        .to_str()
        .unwrap()
        .contains("accept-encoding"));
    let mut plain = String::new();
    flate2::read::GzDecoder::new(&gzip.bytes().await.unwrap()[..])
        .read_to_string(&mut plain)
        .unwrap();
    assert_eq!(plain, text);

    let br = get("/page.txt", "gzip, br").await.unwrap();
    assert_eq!(br.headers()[header::CONTENT_ENCODING], "br");
    let mut plain = String::new();
    brotli::Decompressor::new(&br.bytes().await.unwrap()[..], 4096)
        .read_to_string(&mut plain)
        .unwrap();
    assert_eq!(plain, text);

    let zstd = get("/page.txt", "zstd").await.unwrap();
    assert_eq!(zstd.headers()[header::CONTENT_ENCODING], "zstd");
    let decoded = zstd::decode_all(&zstd.bytes().await.unwrap()[..]).unwrap();
    assert_eq!(decoded, text.as_bytes());

    let png = get("/photo.png", "gzip, br").await.unwrap();
    assert!(png.headers().get(header::CONTENT_ENCODING).is_none());
    let identity = get("/page.txt", "identity").await.unwrap();
    assert!(identity.headers().get(header::CONTENT_ENCODING).is_none());
}

#[actix_web::test]
async fn oversized_headers_are_refused_with_431() {
    let app = spawn_front(|s| s.limits.max_header_bytes = 1024).await;
    let response = app
        .client
        .get(app.url("/"))
        .header("x-big", "a".repeat(2000))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 431);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["code"], "headers_too_large");
}

#[actix_web::test]
async fn a_client_that_never_finishes_its_request_head_is_cut_off() {
    let app = spawn_front(|s| s.server.request_head_timeout = Duration::from_millis(200)).await;
    let mut socket = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    socket
        .write_all(b"GET / HTTP/1.1\r\nHost: t\r\nX-Slow: ")
        .await
        .unwrap();
    let mut answer = Vec::new();
    within("the cut-off", socket.read_to_end(&mut answer))
        .await
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer}"
    );
}

#[actix_web::test]
async fn small_static_files_are_served_from_memory_and_follow_changes_on_disk() {
    let app = spawn_front(|_| {}).await;
    let path = app.write_static("hot.txt", "version one");
    let first = app.get("/hot.txt").await;
    let etag = first.headers()[header::ETAG].clone();
    assert_eq!(first.text().await.unwrap(), "version one");

    // Same size and modification time, other bytes: only a copy in memory still says
    // "version one" (the check per hit is size + mtime, like a stat-validated cache).
    let modified = std::fs::metadata(&path).unwrap().modified().unwrap();
    std::fs::write(&path, "VERSION ONE").unwrap();
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(modified)
        .unwrap();
    let from_memory = app.get("/hot.txt").await;
    assert_eq!(from_memory.headers()[header::ETAG], etag);
    assert_eq!(from_memory.text().await.unwrap(), "version one");
    let revalidated = app
        .client
        .get(app.url("/hot.txt"))
        .header(header::IF_NONE_MATCH, etag.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(revalidated.status(), 304);

    // A real change (new size or time) is seen within the recheck interval.
    std::fs::write(&path, "version two, longer").unwrap();
    eventually("the changed file is served", || async {
        let changed = app.get("/hot.txt").await;
        let new_tag = changed.headers()[header::ETAG] != etag;
        new_tag && changed.text().await.unwrap() == "version two, longer"
    })
    .await;
    std::fs::remove_file(&path).unwrap();
    eventually("the removed file is gone", || async {
        app.get("/hot.txt").await.status() == 404
    })
    .await;
}
