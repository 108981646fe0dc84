//! The load balancer over real sockets: each strategy's distribution, active health
//! checks taking a dead server out and bringing it back, and the status endpoint.

use std::time::Duration;

use gatehouse::config::Strategy;

use crate::support::spawn_front;
use crate::support::tcp_proxy::TcpProxy;
use crate::support::upstream::{eventually, proxy_route, within, DeadAddress, Upstream};
use crate::support::TestApp;

async fn upstreams(n: usize) -> Vec<Upstream> {
    let mut servers = Vec::new();
    for i in 0..n {
        servers.push(Upstream::start(&format!("u{i}")).await);
    }
    servers
}

fn urls(servers: &[Upstream]) -> Vec<String> {
    servers.iter().map(Upstream::url).collect()
}

fn hits(servers: &[Upstream]) -> Vec<usize> {
    servers.iter().map(Upstream::hits).collect()
}

async fn get_n(app: &TestApp, n: usize) {
    for _ in 0..n {
        assert_eq!(app.get("/x").await.status(), 200);
    }
}

#[actix_web::test]
async fn round_robin_gives_every_server_the_same_share() {
    let servers = upstreams(3).await;
    let app = spawn_front(|s| proxy_route(s, "/", "app", &urls(&servers), |_| {}, |_| {})).await;
    get_n(&app, 30).await;
    assert_eq!(hits(&servers), [10, 10, 10]);
}

#[actix_web::test]
async fn weighted_shares_follow_the_weights() {
    let servers = upstreams(2).await;
    let app = spawn_front(|s| {
        proxy_route(
            s,
            "/",
            "app",
            &urls(&servers),
            |p| {
                p.strategy = Strategy::Weighted;
                p.servers[0].weight = 3;
            },
            |_| {},
        )
    })
    .await;
    get_n(&app, 40).await;
    assert_eq!(hits(&servers), [30, 10]);
}

/// Holds one request open on `server` (its `/stream` answer waits for `release`).
async fn hold_one_request(app: &TestApp, server: &Upstream) -> reqwest::Response {
    let before = server.hits();
    let response = app.get("/stream").await;
    assert_eq!(
        server.hits(),
        before + 1,
        "the held request went to the busy server"
    );
    response
}

#[actix_web::test]
async fn least_connections_avoids_the_busy_server() {
    let servers = upstreams(3).await;
    let app = spawn_front(|s| {
        proxy_route(
            s,
            "/",
            "app",
            &urls(&servers),
            |p| p.strategy = Strategy::LeastConnections,
            |_| {},
        )
    })
    .await;
    let held = hold_one_request(&app, &servers[0]).await;
    get_n(&app, 10).await;
    assert_eq!(hits(&servers), [1, 5, 5]);
    servers[0].state.release.notify_one();
    drop(held);
}

#[actix_web::test]
async fn random_two_choices_prefers_the_idle_server() {
    let servers = upstreams(2).await;
    let app = spawn_front(|s| {
        proxy_route(
            s,
            "/",
            "app",
            &urls(&servers),
            |p| p.strategy = Strategy::RandomTwoChoices,
            |_| {},
        )
    })
    .await;
    // Which server takes the held request is random; find out, then load the pool.
    let held = app.get("/stream").await;
    let busy = if servers[0].hits() == 1 { 0 } else { 1 };
    get_n(&app, 10).await;
    assert_eq!(servers[busy].hits(), 1, "{:?}", hits(&servers));
    assert_eq!(servers[1 - busy].hits(), 10);
    servers[busy].state.release.notify_one();
    drop(held);
}

#[actix_web::test]
async fn ip_hash_keeps_a_client_on_its_server_and_ignores_forged_addresses() {
    let servers = upstreams(3).await;
    let app = spawn_front(|s| {
        s.server.trusted_proxies = vec!["127.0.0.2".into()];
        proxy_route(
            s,
            "/",
            "app",
            &urls(&servers),
            |p| p.strategy = Strategy::IpHash,
            |_| {},
        )
    })
    .await;
    // From 127.0.0.1 (not trusted) a forged X-Forwarded-For changes nothing.
    for i in 0..12 {
        app.client
            .get(app.url("/x"))
            .header("x-forwarded-for", format!("10.0.0.{i}"))
            .send()
            .await
            .unwrap();
    }
    let mut counts = hits(&servers);
    counts.sort_unstable();
    assert_eq!(counts, [0, 0, 12]);

    // Through the trusted proxy address, each client keeps its own server and the
    // clients spread over the pool.
    let trusted = reqwest::Client::builder()
        .local_address(Some("127.0.0.2".parse().unwrap()))
        .build()
        .unwrap();
    let mut first_server = std::collections::HashMap::new();
    for round in 0..3 {
        for client in 0..30 {
            let body = trusted
                .get(app.url("/x"))
                .header("x-forwarded-for", format!("203.0.113.{client}"))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            let first = first_server.entry(client).or_insert_with(|| body.clone());
            assert_eq!(*first, body, "client {client} moved in round {round}");
        }
    }
    let distinct: std::collections::HashSet<_> = first_server.values().collect();
    assert_eq!(distinct.len(), 3, "30 clients use all three servers");
}

fn status_of(body: &serde_json::Value, server: usize) -> String {
    body["upstreams"][0]["servers"][server]["state"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn upstream_status(app: &TestApp, token: &str) -> serde_json::Value {
    let response = app
        .with_token(reqwest::Method::GET, "/api/admin/upstreams", token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

#[actix_web::test]
async fn a_killed_server_is_taken_out_by_health_checks_and_readmitted() {
    let servers = upstreams(2).await;
    let mut relay = TcpProxy::start(servers[0].addr).await;
    let app = spawn_front(|s| {
        proxy_route(
            s,
            "/",
            "app",
            &[format!("http://{}", relay.addr), servers[1].url()],
            |p| {
                p.health_check.path = "/health".into();
                p.health_check.interval = Duration::from_millis(20);
                p.health_check.timeout = Duration::from_millis(500);
                p.health_check.healthy_threshold = 2;
                p.health_check.unhealthy_threshold = 2;
                // Only the active checks decide here.
                p.max_fails = 0;
            },
            |_| {},
        )
    })
    .await;
    let token = app.superuser_token("root@example.com").await;

    relay.cut();
    eventually("the cut server is unhealthy", || async {
        status_of(&upstream_status(&app, &token).await, 0) == "unhealthy"
    })
    .await;
    let before = hits(&servers);
    get_n(&app, 6).await;
    assert_eq!(
        servers[1].hits(),
        before[1] + 6,
        "all traffic to the live server"
    );

    relay.restore().await;
    eventually("the restored server is healthy", || async {
        status_of(&upstream_status(&app, &token).await, 0) == "healthy"
    })
    .await;
    let before = hits(&servers);
    get_n(&app, 6).await;
    assert_eq!(
        servers[0].hits(),
        before[0] + 3,
        "the readmitted server takes its share"
    );
}

#[actix_web::test]
async fn a_failing_health_endpoint_takes_a_server_out() {
    let servers = upstreams(2).await;
    let app = spawn_front(|s| {
        proxy_route(
            s,
            "/",
            "app",
            &urls(&servers),
            |p| {
                p.health_check.path = "/health".into();
                p.health_check.interval = Duration::from_millis(20);
                p.health_check.unhealthy_threshold = 1;
                p.health_check.healthy_threshold = 1;
            },
            |_| {},
        )
    })
    .await;
    let token = app.superuser_token("root@example.com").await;
    servers[0].set_health(503);
    eventually("the failing server is unhealthy", || async {
        status_of(&upstream_status(&app, &token).await, 0) == "unhealthy"
    })
    .await;
    get_n(&app, 4).await;
    assert_eq!(servers[0].hits(), 0);
    servers[0].set_health(200);
    eventually("it is back", || async {
        status_of(&upstream_status(&app, &token).await, 0) == "healthy"
    })
    .await;
}

#[actix_web::test]
async fn the_status_endpoint_shows_health_in_flight_and_failures() {
    let servers = upstreams(1).await;
    let reserved = DeadAddress::new();
    let dead = reserved.addr;
    let app = spawn_front(|s| {
        proxy_route(
            s,
            "/",
            "app",
            &[servers[0].url(), format!("http://{dead}")],
            |p| p.max_fails = 1,
            |_| {},
        )
    })
    .await;
    let token = app.superuser_token("root@example.com").await;
    let held = hold_one_request(&app, &servers[0]).await;
    // The next request goes to the dead server first, fails over, and ejects it.
    assert_eq!(app.get("/x").await.status(), 200);

    let guest = app.get("/api/admin/upstreams").await;
    assert_eq!(guest.status(), 401);
    let body = upstream_status(&app, &token).await;
    let pool = &body["upstreams"][0];
    assert_eq!(pool["name"], "app");
    assert_eq!(pool["strategy"], "round_robin");
    let live = &pool["servers"][0];
    assert_eq!(live["url"], servers[0].url());
    assert_eq!(live["state"], "healthy");
    assert_eq!(live["inFlight"], 1);
    assert_eq!(live["requests"], 2);
    let gone = &pool["servers"][1];
    assert_eq!(gone["state"], "ejected");
    assert_eq!(gone["failures"], 1);

    servers[0].state.release.notify_one();
    within("held body", held.bytes()).await.unwrap();
    eventually("nothing in flight", || async {
        upstream_status(&app, &token).await["upstreams"][0]["servers"][0]["inFlight"] == 0
    })
    .await;
}
