//! TLS termination with a real TLS client: SNI picks the certificate, HTTP/2 by ALPN,
//! the plain listener redirects to HTTPS, HSTS, and SIGHUP reloads certificates
//! without dropping open connections.

use std::net::SocketAddr;

use gatehouse::config::{CertificateSettings, Settings};

use crate::support::certs::{cert_dir, TestCa};
use crate::support::spawn_front;
use crate::support::upstream::eventually;

/// The TLS listener on a free port, with `certificates`.
fn serve_tls(s: &mut Settings, certificates: Vec<CertificateSettings>) {
    s.tls.enabled = true;
    s.tls.bind = "127.0.0.1:0".parse().unwrap();
    s.tls.certificates = certificates;
}

/// A client that trusts `ca` and finds `host` at `addr`.
fn client_builder(ca: &TestCa, host: &str, addr: SocketAddr) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.pem().as_bytes()).unwrap())
        .resolve(host, addr)
}

fn client(ca: &TestCa, host: &str, addr: SocketAddr) -> reqwest::Client {
    client_builder(ca, host, addr)
        .tls_info(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn peer_certificate(response: &reqwest::Response) -> Vec<u8> {
    response
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|info| info.peer_certificate())
        .expect("a TLS response")
        .to_vec()
}

#[actix_web::test]
async fn sni_chooses_the_certificate_and_http2_is_negotiated() {
    let ca = TestCa::new();
    let (_dir, path) = cert_dir();
    let a = ca.leaf(&["a.test"]);
    let b = ca.leaf(&["b.test", "*.b.test"]);
    let app = spawn_front(|s| {
        serve_tls(
            s,
            vec![
                a.write(&path, "a", &["a.test"]),
                b.write(&path, "b", &["b.test", "*.b.test"]),
            ],
        );
    })
    .await;
    let tls = app.tls_addr.unwrap();
    for (host, expected) in [
        ("a.test", &a.der),
        ("b.test", &b.der),
        ("www.b.test", &b.der),
    ] {
        let response = client(&ca, host, tls)
            .get(format!("https://{host}:{}/", tls.port()))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.version(), reqwest::Version::HTTP_2, "{host}");
        assert_eq!(&peer_certificate(&response), expected, "{host}");
        assert_eq!(response.text().await.unwrap(), "<h1>test home</h1>");
    }
    // The plain listener keeps serving beside it.
    assert_eq!(app.get("/").await.status(), 200);
}

#[actix_web::test]
async fn plain_http_is_redirected_to_https_and_https_carries_hsts() {
    let ca = TestCa::new();
    let (_dir, path) = cert_dir();
    let leaf = ca.leaf(&["site.test"]);
    let app = spawn_front(|s| {
        serve_tls(s, vec![leaf.write(&path, "site", &["site.test"])]);
        s.tls.redirect_http = true;
        s.tls.hsts = "max-age=31536000; includeSubDomains".into();
    })
    .await;
    let tls = app.tls_addr.unwrap();
    let plain = app
        .client
        .get(app.url("/docs/page?x=1"))
        .header("host", "site.test")
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), 308);
    assert_eq!(
        plain.headers()["location"],
        format!("https://site.test:{}/docs/page?x=1", tls.port())
    );
    assert!(plain.headers().get("strict-transport-security").is_none());

    let secure = client(&ca, "site.test", tls)
        .get(format!("https://site.test:{}/", tls.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(secure.status(), 200);
    assert_eq!(
        secure.headers()["strict-transport-security"],
        "max-age=31536000; includeSubDomains"
    );
}

#[actix_web::test]
async fn sighup_reloads_certificates_without_dropping_connections() {
    let ca = TestCa::new();
    let (_dir, path) = cert_dir();
    let old = ca.leaf(&["reload.test"]);
    let app = spawn_front(|s| {
        serve_tls(s, vec![old.write(&path, "site", &["reload.test"])]);
    })
    .await;
    let tls = app.tls_addr.unwrap();
    let url = format!("https://reload.test:{}/", tls.port());
    let open = client(&ca, "reload.test", tls);
    let first = open.get(&url).send().await.unwrap();
    assert_eq!(peer_certificate(&first), old.der);

    let new = ca.leaf(&["reload.test"]);
    new.write(&path, "site", &["reload.test"]);
    // SAFETY: signalling our own process; Gatehouse has installed its SIGHUP handler.
    assert_eq!(unsafe { libc::kill(libc::getpid(), libc::SIGHUP) }, 0);
    eventually("new handshakes get the new certificate", || async {
        let fresh = client(&ca, "reload.test", tls)
            .get(&url)
            .send()
            .await
            .unwrap();
        peer_certificate(&fresh) == new.der
    })
    .await;

    // The connection opened before the reload still works (HTTP/2, same session).
    let again = open.get(&url).send().await.unwrap();
    assert_eq!(again.status(), 200);
    assert_eq!(peer_certificate(&again), old.der);
}

/// A large file arrives whole over TLS, HTTP/1.1 (whose large chunks go to the TLS stream
/// from their own buffers, after the head) and HTTP/2, from disk and from memory.
#[actix_web::test]
async fn large_files_arrive_whole_over_tls() {
    let ca = TestCa::new();
    let (_dir, path) = cert_dir();
    let leaf = ca.leaf(&["a.test"]);
    let app = spawn_front(|s| serve_tls(s, vec![leaf.write(&path, "a", &["a.test"])])).await;
    let contents: Vec<u8> = (0..150 * 1024).map(|i| (i * 31 % 253) as u8).collect();
    app.write_static("big.bin", &contents);
    let tls = app.tls_addr.unwrap();
    let url = format!("https://a.test:{}/big.bin", tls.port());
    let http1 = client_builder(&ca, "a.test", tls)
        .http1_only()
        .build()
        .unwrap();
    for (client, version) in [
        (http1, reqwest::Version::HTTP_11),
        (client(&ca, "a.test", tls), reqwest::Version::HTTP_2),
    ] {
        // The first request reads the file from disk, the second is answered from memory.
        for _ in 0..2 {
            let response = client.get(&url).send().await.unwrap();
            assert_eq!(response.status(), 200);
            assert_eq!(response.version(), version);
            assert!(response.bytes().await.unwrap() == contents, "{version:?}");
        }
    }
    // And over the plain listener.
    let plain = app.get("/big.bin").await;
    assert!(plain.bytes().await.unwrap() == contents);
}
