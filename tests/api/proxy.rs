//! The reverse proxy over real sockets: forwarding headers, streaming both ways, SSE,
//! WebSocket, retries, timeouts, limits and the error envelope.

use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use reqwest::header;
use tokio_tungstenite::tungstenite::Message;

use crate::support::spawn_front;
use crate::support::upstream::{proxy_route, start_websocket_echo, within, DeadAddress, Upstream};

#[actix_web::test]
async fn requests_are_forwarded_with_forwarding_headers_and_without_hop_by_hop_ones() {
    let upstream = Upstream::start("a").await;
    let app =
        spawn_front(|s| proxy_route(s, "/app", "app", &[upstream.url()], |_| {}, |_| {})).await;

    let response = app
        .client
        .get(app.url("/app/page?x=1"))
        .header("x-forwarded-for", "6.6.6.6")
        .header("connection", "keep-alive, x-hop")
        .header("x-hop", "secret")
        .header("x-custom", "kept")
        .header("x-request-id", "req-42")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "a");

    let seen = &upstream.seen()[0];
    assert_eq!(seen.path, "/app/page?x=1");
    // The client is not a trusted proxy: its X-Forwarded-For claim is dropped.
    assert_eq!(seen.header("x-forwarded-for"), "127.0.0.1");
    assert_eq!(seen.header("x-forwarded-proto"), "http");
    assert_eq!(seen.header("x-forwarded-host"), app.addr.to_string());
    assert_eq!(
        seen.header("forwarded"),
        format!("for=127.0.0.1;host=\"{}\";proto=http", app.addr)
    );
    assert_eq!(seen.header("host"), app.addr.to_string());
    assert_eq!(seen.header("x-custom"), "kept");
    assert_eq!(seen.header("x-request-id"), "req-42");
    assert!(seen.headers.get("x-hop").is_none());
}

#[actix_web::test]
async fn trusted_proxies_extend_the_forwarding_chain() {
    let upstream = Upstream::start("a").await;
    let app = spawn_front(|s| {
        s.server.trusted_proxies = vec!["127.0.0.0/8".into()];
        proxy_route(s, "/", "app", &[upstream.url()], |_| {}, |_| {});
    })
    .await;
    app.client
        .get(app.url("/x"))
        .header("x-forwarded-for", "198.51.100.7")
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .unwrap();
    let seen = &upstream.seen()[0];
    assert_eq!(seen.header("x-forwarded-for"), "198.51.100.7, 127.0.0.1");
    assert_eq!(seen.header("x-forwarded-proto"), "https");
}

#[actix_web::test]
async fn strip_prefix_removes_the_route_path() {
    let upstream = Upstream::start("a").await;
    let app = spawn_front(|s| {
        proxy_route(
            s,
            "/svc",
            "app",
            &[upstream.url()],
            |_| {},
            |r| r.strip_prefix = true,
        )
    })
    .await;
    app.get("/svc/v1/items?id=3").await;
    app.get("/svc").await;
    let paths: Vec<String> = upstream.seen().into_iter().map(|s| s.path).collect();
    assert_eq!(paths, ["/v1/items?id=3", "/"]);
}

#[actix_web::test]
async fn a_large_request_body_streams_to_the_upstream_without_being_buffered() {
    let upstream = Upstream::start("a").await;
    let app = spawn_front(|s| proxy_route(s, "/", "app", &[upstream.url()], |_| {}, |_| {})).await;

    // The client sends the rest of the body only once the upstream has received the
    // first chunk, which never happens if the proxy waits for the whole body.
    let (sender, receiver) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
    let body = reqwest::Body::wrap_stream(tokio_stream_from(receiver));
    let request = actix_web::rt::spawn(app.client.post(app.url("/upload")).body(body).send());
    let chunk = Bytes::from(vec![b'x'; 256 * 1024]);
    sender.send(Ok(chunk.clone())).await.unwrap();
    within(
        "the upstream sees the first chunk",
        upstream.state.first_chunk.notified(),
    )
    .await;
    let rounds = 64; // 16 MiB in total
    for _ in 1..rounds {
        sender.send(Ok(chunk.clone())).await.unwrap();
    }
    drop(sender);
    let response = within("the answer", request).await.unwrap().unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.text().await.unwrap(),
        (rounds * chunk.len()).to_string()
    );
}

#[actix_web::test]
async fn a_large_response_body_streams_to_the_client() {
    let upstream = Upstream::start("a").await;
    let app = spawn_front(|s| proxy_route(s, "/", "app", &[upstream.url()], |_| {}, |_| {})).await;
    let response = app.get("/big?bytes=33554432").await;
    assert_eq!(response.headers()[header::CONTENT_LENGTH], "33554432");
    let mut stream = response.bytes_stream();
    let mut received = 0usize;
    let mut chunks = 0usize;
    while let Some(part) = within("the next chunk", stream.next()).await {
        received += part.unwrap().len();
        chunks += 1;
    }
    assert_eq!(received, 32 << 20);
    assert!(chunks > 1, "the body arrived in pieces, as it was read");
}

fn tokio_stream_from(
    mut receiver: tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> {
    futures_util::stream::poll_fn(move |cx| receiver.poll_recv(cx))
}

#[actix_web::test]
async fn server_sent_events_pass_through_at_once() {
    let upstream = Upstream::start("a").await;
    let app = spawn_front(|s| proxy_route(s, "/", "app", &[upstream.url()], |_| {}, |_| {})).await;
    let response = app
        .client
        .get(app.url("/stream"))
        .header("accept-encoding", "gzip, br")
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "text/event-stream"
    );
    assert!(response.headers().get(header::CONTENT_ENCODING).is_none());
    let mut events = response.bytes_stream();
    // The upstream holds the stream open after the first event: it must arrive now.
    let first = within("first event", events.next()).await.unwrap().unwrap();
    assert_eq!(first, "data: first\n\n");
    upstream.state.release.notify_one();
    let last = within("last event", events.next()).await.unwrap().unwrap();
    assert_eq!(last, "data: last\n\n");
}

#[actix_web::test]
async fn websockets_are_tunnelled() {
    let echo = start_websocket_echo().await;
    let app =
        spawn_front(|s| proxy_route(s, "/ws", "ws", &[format!("http://{echo}")], |_| {}, |_| {}))
            .await;
    let (mut socket, response) = within(
        "handshake",
        tokio_tungstenite::connect_async(format!("ws://{}/ws/chat", app.addr)),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 101);
    for text in ["hello", "world"] {
        socket.send(Message::text(text)).await.unwrap();
        let answer = within("echo", socket.next()).await.unwrap().unwrap();
        assert_eq!(answer.into_text().unwrap(), format!("echo:{text}"));
    }
    socket.close(None).await.unwrap();
}

#[actix_web::test]
async fn idempotent_requests_are_retried_on_another_server_after_a_503() {
    let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
    let app = spawn_front(|s| {
        proxy_route(
            s,
            "/",
            "app",
            &[a.url(), b.url()],
            |p| p.max_fails = 0,
            |_| {},
        )
    })
    .await;
    // Both servers answer /status/503 with 503: a GET tries each once, then passes
    // the last answer on.
    let response = app.get("/status/503").await;
    assert_eq!(response.status(), 503);
    assert_eq!(a.hits() + b.hits(), 2, "one try per server");

    let response = app
        .client
        .post(app.url("/status/503"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(a.hits() + b.hits(), 3, "a POST is never repeated");
    let posts = a
        .seen()
        .into_iter()
        .chain(b.seen())
        .filter(|seen| seen.method == "POST")
        .count();
    assert_eq!(posts, 1);
}

#[actix_web::test]
async fn connection_failures_are_retried_even_for_posts() {
    let live = Upstream::start("live").await;
    let reserved = DeadAddress::new();
    let dead = reserved.addr;
    let app = spawn_front(|s| {
        proxy_route(
            s,
            "/",
            "app",
            &[format!("http://{dead}"), live.url()],
            |p| p.max_fails = 0,
            |_| {},
        )
    })
    .await;
    for _ in 0..4 {
        let response = app
            .client
            .post(app.url("/echo"))
            .body("payload")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.text().await.unwrap(), "payload");
    }
    assert_eq!(live.hits(), 4);
}

#[actix_web::test]
async fn no_healthy_server_is_a_503_in_the_error_envelope() {
    let reserved = DeadAddress::new();
    let dead = reserved.addr;
    let app = spawn_front(|s| {
        proxy_route(
            s,
            "/",
            "app",
            &[format!("http://{dead}")],
            |p| p.max_fails = 1,
            |_| {},
        )
    })
    .await;
    let first = app.get("/x").await;
    assert_eq!(first.status(), 502);
    let body: serde_json::Value = first.json().await.unwrap();
    assert_eq!(body["code"], "upstream_unreachable");

    // The failure ejected the only server.
    let second = app.get("/x").await;
    assert_eq!(second.status(), 503);
    let request_id = second.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    let body: serde_json::Value = second.json().await.unwrap();
    assert_eq!(body["code"], "no_healthy_upstream");
    assert_eq!(body["status"], 503);
    assert_eq!(body["requestId"], request_id);
}

#[actix_web::test]
async fn a_slow_upstream_is_a_504() {
    let upstream = Upstream::start("slow").await;
    let app = spawn_front(|s| {
        s.proxy.read_timeout = Duration::from_millis(100);
        proxy_route(s, "/", "app", &[upstream.url()], |p| p.tries = 1, |_| {});
    })
    .await;
    let response = app.get("/slow?ms=2000").await;
    assert_eq!(response.status(), 504);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["code"], "upstream_timeout");
}

#[actix_web::test]
async fn bodies_over_the_route_limit_are_refused() {
    let upstream = Upstream::start("a").await;
    let app = spawn_front(|s| {
        proxy_route(
            s,
            "/",
            "app",
            &[upstream.url()],
            |_| {},
            |r| r.max_body_bytes = Some(1000),
        )
    })
    .await;
    let declared = app
        .client
        .post(app.url("/echo"))
        .body(vec![0u8; 1001])
        .send()
        .await
        .unwrap();
    assert_eq!(declared.status(), 413);
    assert_eq!(upstream.hits(), 0, "refused before forwarding");

    let chunks = futures_util::stream::iter(
        (0..4).map(|_| Ok::<_, std::io::Error>(Bytes::from(vec![0u8; 400]))),
    );
    let streamed = app
        .client
        .post(app.url("/consume"))
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await;
    // Either a 413, or the connection closed mid-body: never a full echo.
    if let Ok(response) = streamed {
        assert_eq!(response.status(), 413);
    }

    let fits = app
        .client
        .post(app.url("/echo"))
        .body(vec![1u8; 1000])
        .send()
        .await
        .unwrap();
    assert_eq!(fits.bytes().await.unwrap().len(), 1000);
}

#[actix_web::test]
async fn a_client_that_stops_sending_its_body_is_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let upstream = Upstream::start("a").await;
    let app = spawn_front(|s| {
        s.limits.body_read_timeout = Duration::from_millis(200);
        proxy_route(s, "/", "app", &[upstream.url()], |_| {}, |_| {});
    })
    .await;
    let mut socket = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    socket
        .write_all(b"POST /consume HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n0123456789")
        .await
        .unwrap();
    let mut answer = Vec::new();
    within("the cut-off", socket.read_to_end(&mut answer))
        .await
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request_timeout"), "{answer}");
}

#[actix_web::test]
async fn head_requests_get_the_upstream_headers_without_a_body() {
    let upstream = Upstream::start("abc").await;
    let app = spawn_front(|s| proxy_route(s, "/", "app", &[upstream.url()], |_| {}, |_| {})).await;
    for _ in 0..2 {
        let response = app.client.head(app.url("/x")).send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()[header::CONTENT_LENGTH], "3");
        assert!(response.bytes().await.unwrap().is_empty());
    }
    // The connection is still usable: the next GET gets its whole body.
    assert_eq!(app.get("/x").await.text().await.unwrap(), "abc");
    assert_eq!(upstream.seen()[0].method, "HEAD");
}

/// The value of one sample in `/metrics` (0 when absent).
async fn metric(app: &crate::support::TestApp, sample: &str) -> f64 {
    let text = app.get("/metrics").await.text().await.unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(sample)?.strip_prefix(' '))
        .map_or(0.0, |value| value.parse().unwrap())
}

#[actix_web::test]
async fn metrics_count_upstream_answers_failures_and_retries() {
    let live = Upstream::start("a").await;
    let reserved = DeadAddress::new();
    let dead = reserved.addr;
    let servers = [format!("http://{dead}"), live.url()];
    let app =
        spawn_front(|s| proxy_route(s, "/", "app", &servers, |p| p.max_fails = 0, |_| {})).await;
    for _ in 0..4 {
        assert_eq!(app.get("/x").await.status(), 200);
    }
    let ok = metric(
        &app,
        "gatehouse_proxy_requests_total{status=\"200\",upstream=\"app\"}",
    )
    .await;
    let failed = metric(
        &app,
        "gatehouse_proxy_requests_total{status=\"error\",upstream=\"app\"}",
    )
    .await;
    let retries = metric(&app, "gatehouse_proxy_retries_total{upstream=\"app\"}").await;
    let timed = metric(
        &app,
        "gatehouse_proxy_upstream_duration_seconds_count{upstream=\"app\"}",
    )
    .await;
    assert_eq!(ok, 4.0);
    assert!(
        failed >= 1.0,
        "round robin sent some requests to the dead server first"
    );
    assert_eq!(
        retries, failed,
        "each failure was retried on the live server"
    );
    assert_eq!(timed, ok + failed);
}
