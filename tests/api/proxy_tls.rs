//! HTTPS upstreams: a pool member `https://…` is reached over TLS, trusting the
//! webpki roots plus the pool's `ca_file`; health checks go over TLS too; a
//! certificate the pool does not trust is a 502 at once, not a hang.

use std::time::Duration;

use crate::support::certs::TestCa;
use crate::support::spawn_front;
use crate::support::upstream::{eventually, proxy_route, within, Upstream};

#[actix_web::test]
async fn requests_reach_an_https_upstream_trusted_by_the_pools_ca_file() {
    let ca = TestCa::new();
    let (_dir, ca_file) = ca.pem_file();
    let leaf = ca.leaf(&["upstream.test"]);
    let upstream = Upstream::start_tls("secure", &leaf.cert_pem, &leaf.key_pem).await;
    let app = spawn_front(|s| {
        proxy_route(
            s,
            "/",
            "app",
            // An address, so the certificate is checked against `tls_server_name`.
            &[format!("https://{}", upstream.addr)],
            |p| {
                p.ca_file = Some(ca_file.clone());
                p.tls_server_name = Some("upstream.test".into());
                p.health_check.path = "/health".into();
                p.health_check.interval = Duration::from_millis(20);
                p.health_check.unhealthy_threshold = 1;
                p.health_check.healthy_threshold = 1;
            },
            |_| {},
        )
    })
    .await;

    for _ in 0..3 {
        let response = app.get("/page?x=1").await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.text().await.unwrap(), "secure");
    }
    let seen = upstream.seen();
    assert_eq!(seen.len(), 3);
    assert_eq!(seen[0].path, "/page?x=1");
    assert_eq!(seen[0].header("host"), app.addr.to_string());
    assert_eq!(seen[0].header("x-forwarded-proto"), "http");

    // A request body streams over TLS as well.
    let echoed = app
        .client
        .post(app.url("/echo"))
        .body(vec![b'q'; 300_000])
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(echoed.len(), 300_000);

    // The health checks reach the server over TLS: a failing health endpoint takes it
    // out, a passing one (which only a TLS probe can see) brings it back.
    upstream.set_health(500);
    eventually("the server fails its checks", || async {
        app.get("/x").await.status() == 503
    })
    .await;
    upstream.set_health(200);
    eventually("the server passes its checks again", || async {
        app.get("/x").await.status() == 200
    })
    .await;
}

#[actix_web::test]
async fn an_untrusted_upstream_certificate_is_a_502_with_its_own_code() {
    let ca = TestCa::new();
    let leaf = ca.leaf(&["localhost"]);
    let upstream = Upstream::start_tls("secure", &leaf.cert_pem, &leaf.key_pem).await;
    let app = spawn_front(|s| {
        // No ca_file: the webpki roots do not know the test CA.
        proxy_route(
            s,
            "/",
            "app",
            &[format!("https://localhost:{}", upstream.addr.port())],
            |p| p.max_fails = 0,
            |_| {},
        )
    })
    .await;

    let response = within("the refused handshake is answered", app.get("/x")).await;
    assert_eq!(response.status(), 502);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["code"], "upstream_tls_failed");
    assert_eq!(body["status"], 502);
    assert_eq!(
        upstream.hits(),
        0,
        "nothing was sent to the untrusted server"
    );
}

#[actix_web::test]
async fn a_certificate_for_another_name_is_refused() {
    let ca = TestCa::new();
    let (_dir, ca_file) = ca.pem_file();
    let leaf = ca.leaf(&["other.test"]);
    let upstream = Upstream::start_tls("secure", &leaf.cert_pem, &leaf.key_pem).await;
    let app = spawn_front(|s| {
        proxy_route(
            s,
            "/",
            "app",
            &[format!("https://{}", upstream.addr)],
            |p| {
                p.ca_file = Some(ca_file.clone());
                p.tls_server_name = Some("upstream.test".into());
            },
            |_| {},
        )
    })
    .await;
    let response = within("the refused handshake is answered", app.get("/x")).await;
    assert_eq!(response.status(), 502);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["code"], "upstream_tls_failed");
}
