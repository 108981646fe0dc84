//! `/api/realtime`: PocketBase's server-sent events over a real connection — the
//! `PB_CONNECT` frame, subscriptions set by POST, events filtered by each client's
//! rules and options, sent only after commit, and the limits on slow or idle clients.
//!
//! "Did not receive" is shown without waiting: events reach a client in commit
//! order, so a client whose next event is a later marker did not get the earlier one.

use std::time::Duration;

use futures_util::StreamExt;
use reqwest::Method;
use serde_json::{json, Value};

use crate::on_both_backends;
use crate::support::upstream::eventually;
use crate::support::{spawn_app, spawn_app_with, Backend, TestApp};

on_both_backends!(
    connect_sends_pb_connect_and_post_sets_subscriptions,
    events_follow_rules_and_subscription_options,
    record_topics_get_create_update_and_delete,
    failed_writes_send_nothing,
    a_revoked_session_stops_rule_protected_events,
    batches_send_their_changes_once_committed,
    event_emails_follow_the_manage_rule,
);

/// One SSE event as the wire carried it.
#[derive(Debug)]
struct Event {
    id: String,
    name: String,
    data: Value,
}

/// An open `GET /api/realtime`.
struct Sse {
    body: futures_util::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buffer: Vec<u8>,
    client_id: String,
}

impl Sse {
    async fn open(app: &TestApp) -> Self {
        let response = app
            .client
            .get(app.url("/api/realtime"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        let mut sse = Self {
            body: response.bytes_stream().boxed(),
            buffer: Vec::new(),
            client_id: String::new(),
        };
        let first = sse.next_frame().await.expect("PB_CONNECT");
        let (id, rest) = first
            .strip_prefix("id:")
            .and_then(|f| f.split_once('\n'))
            .expect("the frame starts with id:");
        assert_eq!(
            rest,
            format!("event:PB_CONNECT\ndata:{{\"clientId\":\"{id}\"}}"),
            "PocketBase's connect frame, byte for byte"
        );
        assert!(id.len() == 40 && id.chars().all(|c| c.is_ascii_alphanumeric()));
        sse.client_id = id.to_string();
        sse
    }

    /// The next frame without its closing blank line; `None` when the stream ended.
    /// (The timeout only keeps a broken build from hanging the suite.)
    async fn next_frame(&mut self) -> Option<String> {
        loop {
            if let Some(end) = self.buffer.windows(2).position(|w| w == b"\n\n") {
                let frame = String::from_utf8(self.buffer[..end].to_vec()).unwrap();
                self.buffer.drain(..end + 2);
                return Some(frame);
            }
            let chunk = tokio::time::timeout(Duration::from_secs(30), self.body.next())
                .await
                .expect("an event within 30 s");
            match chunk {
                Some(Ok(bytes)) => self.buffer.extend_from_slice(&bytes),
                _ => return None,
            }
        }
    }

    async fn next_event(&mut self) -> Event {
        let frame = self.next_frame().await.expect("an event, not the end");
        let mut lines = frame.lines();
        let id = lines
            .next()
            .unwrap()
            .strip_prefix("id:")
            .unwrap()
            .to_string();
        let name = lines
            .next()
            .unwrap()
            .strip_prefix("event:")
            .unwrap()
            .to_string();
        let data = lines.next().unwrap().strip_prefix("data:").unwrap();
        assert_eq!(id, self.client_id, "every frame repeats the client id");
        Event {
            id,
            name,
            data: serde_json::from_str(data).unwrap(),
        }
    }

    async fn subscribe(&self, app: &TestApp, token: Option<&str>, subscriptions: &[&str]) {
        let response = app
            .send(
                Method::POST,
                "/api/realtime",
                token,
                Some(&json!({"clientId": self.client_id, "subscriptions": subscriptions})),
            )
            .await;
        assert_eq!(response.status(), 204);
    }
}

fn options(options: Value) -> String {
    percent_encoding::utf8_percent_encode(&options.to_string(), percent_encoding::NON_ALPHANUMERIC)
        .to_string()
}

/// `notes` (only the owner lists and views them) and `news` (public).
async fn notes_app(backend: Backend) -> Option<(TestApp, String)> {
    let app = spawn_app(backend).await?;
    let admin = app.superuser_token("root@example.com").await;
    let owner_rule = "owner = @request.auth.id";
    app.create_collection(
        &admin,
        json!({
            "name": "notes",
            "listRule": owner_rule, "viewRule": owner_rule,
            "createRule": "", "updateRule": owner_rule, "deleteRule": owner_rule,
            "fields": [
                {"name": "title", "type": "text", "required": true},
                {"name": "owner", "type": "text"}
            ]
        }),
    )
    .await;
    app.create_collection(
        &admin,
        json!({
            "name": "news",
            "listRule": "", "viewRule": "", "createRule": "",
            "fields": [{"name": "headline", "type": "text"}]
        }),
    )
    .await;
    Some((app, admin))
}

async fn connect_sends_pb_connect_and_post_sets_subscriptions(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let sse = Sse::open(&app).await;
    sse.subscribe(&app, None, &["posts/*"]).await;

    let unknown = app
        .send(
            Method::POST,
            "/api/realtime",
            None,
            Some(&json!({"clientId": "nope", "subscriptions": []})),
        )
        .await;
    assert_eq!(unknown.status(), 404);
    let body: Value = unknown.json().await.unwrap();
    assert_eq!(
        (&body["status"], &body["message"], &body["data"]),
        (
            &json!(404),
            &json!("Missing or invalid client id."),
            &json!({})
        )
    );

    let blank = app
        .send(Method::POST, "/api/realtime", None, Some(&json!({})))
        .await;
    assert_eq!(blank.status(), 400);
    let body: Value = blank.json().await.unwrap();
    assert_eq!(body["data"]["clientId"]["code"], "validation_required");

    let openapi: Value = app.get("/api/openapi.json").await.json().await.unwrap();
    assert!(openapi["paths"]["/api/realtime"]["get"].is_object());
    assert!(openapi["paths"]["/api/realtime"]["post"].is_object());
}

async fn events_follow_rules_and_subscription_options(backend: Backend) {
    let Some((app, admin)) = notes_app(backend).await else {
        return;
    };
    let alice = app.user_token("alice@example.com").await;
    let (_, alice_login) = app
        .login("users", "alice@example.com", "password-123")
        .await;
    let alice_id = alice_login["record"]["id"].as_str().unwrap().to_string();

    let mut guest = Sse::open(&app).await;
    guest.subscribe(&app, None, &["notes/*", "news/*"]).await;
    let mut owner = Sse::open(&app).await;
    let trimmed = format!(
        "notes/*?options={}",
        options(json!({"query": {"filter": "title ~ 'keep'", "fields": "id,title"}}))
    );
    owner
        .subscribe(&app, Some(&alice), &["notes/*", &trimmed])
        .await;
    let mut superuser = Sse::open(&app).await;
    superuser.subscribe(&app, Some(&admin), &["notes"]).await;

    let skipped = app
        .create_record(
            "notes",
            None,
            json!({"title": "skip me", "owner": alice_id}),
        )
        .await;
    let kept = app
        .create_record(
            "notes",
            None,
            json!({"title": "keep me", "owner": alice_id}),
        )
        .await;
    let news = app
        .create_record("news", None, json!({"headline": "marker"}))
        .await;

    // The owner: both notes on `notes/*`, only the matching one (trimmed) on the
    // subscription with options, each event named by its subscription string.
    let mut seen = Vec::new();
    for _ in 0..3 {
        let event = owner.next_event().await;
        seen.push((event.name.clone(), event.data));
    }
    assert!(seen.contains(&(
        "notes/*".to_string(),
        json!({"record": skipped, "action": "create"})
    )));
    assert!(seen.contains(&(
        "notes/*".to_string(),
        json!({"record": kept, "action": "create"})
    )));
    assert!(seen.contains(&(
        trimmed.clone(),
        json!({"record": {"id": kept["id"], "title": "keep me"}, "action": "create"})
    )));

    // The superuser sees everything, under the legacy topic it used.
    for expected in [&skipped, &kept] {
        let event = superuser.next_event().await;
        assert_eq!(event.name, "notes");
        assert_eq!(event.data["record"]["id"], expected["id"]);
    }

    // The guest's list rule hides both notes: its first event is the public marker.
    let event = guest.next_event().await;
    assert_eq!(event.name, "news/*");
    assert_eq!(event.data, json!({"record": news, "action": "create"}));
    assert!(!event.id.is_empty());
}

async fn record_topics_get_create_update_and_delete(backend: Backend) {
    let Some((app, _)) = notes_app(backend).await else {
        return;
    };
    let alice = app.user_token("alice@example.com").await;
    let (_, login) = app
        .login("users", "alice@example.com", "password-123")
        .await;
    let alice_id = login["record"]["id"].as_str().unwrap().to_string();
    let note = app
        .create_record("notes", None, json!({"title": "draft", "owner": alice_id}))
        .await;
    let id = note["id"].as_str().unwrap();
    let topic = format!("notes/{id}");

    let mut sse = Sse::open(&app).await;
    sse.subscribe(&app, Some(&alice), &[&topic]).await;

    let path = format!("/api/collections/notes/records/{id}");
    let updated: Value = app
        .send(
            Method::PATCH,
            &path,
            Some(&alice),
            Some(&json!({"title": "final"})),
        )
        .await
        .json()
        .await
        .unwrap();
    let event = sse.next_event().await;
    assert_eq!(event.name, topic);
    assert_eq!(event.data, json!({"record": updated, "action": "update"}));

    let deleted = app.send(Method::DELETE, &path, Some(&alice), None).await;
    assert_eq!(deleted.status(), 204);
    let event = sse.next_event().await;
    assert_eq!(
        event.data,
        json!({"record": updated, "action": "delete"}),
        "a delete sends the record as it was"
    );

    // Unsubscribing from everything: the next change is not sent; the stream stays.
    sse.subscribe(&app, Some(&alice), &["news/*"]).await;
    app.create_record("notes", None, json!({"title": "other", "owner": alice_id}))
        .await;
    let marker = app
        .create_record("news", None, json!({"headline": "m"}))
        .await;
    let event = sse.next_event().await;
    assert_eq!(event.data["record"], marker);

    // A client authenticated as alice cannot be switched to someone else.
    let bob = app.user_token("bob@example.com").await;
    let switched = app
        .send(
            Method::POST,
            "/api/realtime",
            Some(&bob),
            Some(&json!({"clientId": sse.client_id, "subscriptions": []})),
        )
        .await;
    assert_eq!(switched.status(), 403);
}

async fn failed_writes_send_nothing(backend: Backend) {
    let Some((app, _)) = notes_app(backend).await else {
        return;
    };
    let mut sse = Sse::open(&app).await;
    sse.subscribe(&app, None, &["news/*", "notes/*"]).await;
    let rejected = app
        .send(
            Method::POST,
            "/api/collections/notes/records",
            None,
            Some(&json!({"title": ""})),
        )
        .await;
    assert_eq!(rejected.status(), 400);
    let marker = app
        .create_record("news", None, json!({"headline": "after"}))
        .await;
    let event = sse.next_event().await;
    assert_eq!(event.data["record"], marker);
}

/// A batch's changes reach subscribers in order once it committed; a batch that
/// rolled back sends nothing.
async fn batches_send_their_changes_once_committed(backend: Backend) {
    let Some((app, admin)) = notes_app(backend).await else {
        return;
    };
    let mut sse = Sse::open(&app).await;
    sse.subscribe(&app, None, &["news/*"]).await;
    let post = |headline: &str| json!({"method": "POST", "url": "/api/collections/news/records", "body": {"headline": headline}});
    let failing = app
        .send(
            Method::POST,
            "/api/batch",
            Some(&admin),
            Some(&json!({"requests": [
                post("rolled back"),
                {"method": "POST", "url": "/api/collections/notes/records", "body": {"title": ""}}
            ]})),
        )
        .await;
    assert_eq!(failing.status(), 400);
    let committed = app
        .send(
            Method::POST,
            "/api/batch",
            Some(&admin),
            Some(&json!({"requests": [post("first"), post("second")]})),
        )
        .await;
    assert_eq!(committed.status(), 200);
    let answers: Value = committed.json().await.unwrap();
    let id = answers[0]["body"]["id"].as_str().unwrap().to_string();
    let deleted = app
        .send(
            Method::POST,
            "/api/batch",
            Some(&admin),
            Some(&json!({"requests": [
                {"method": "DELETE", "url": format!("/api/collections/news/records/{id}")}
            ]})),
        )
        .await;
    assert_eq!(deleted.status(), 200);

    let mut seen = Vec::new();
    for _ in 0..3 {
        let event = sse.next_event().await;
        seen.push((
            event.data["action"].as_str().unwrap().to_string(),
            event.data["record"]["headline"]
                .as_str()
                .unwrap()
                .to_string(),
        ));
    }
    let expected = [
        ("create", "first"),
        ("create", "second"),
        ("delete", "first"),
    ]
    .map(|(action, headline)| (action.to_string(), headline.to_string()));
    assert_eq!(seen, expected);
}

/// An auth record's email in events is shown as the records API shows it: to whoever
/// the collection's manageRule lets manage the record, even with `emailVisibility`
/// off, and not to a plain user; a deleted record is judged as it was.
async fn event_emails_follow_the_manage_rule(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let admin = app.superuser_token("root@example.com").await;
    let boss = app.user_token("boss@example.com").await;
    let plain = app.user_token("plain@example.com").await;
    let (_, login) = app.login("users", "boss@example.com", "password-123").await;
    let boss_id = login["record"]["id"].as_str().unwrap().to_string();
    app.create_collection(
        &admin,
        json!({
            "name": "members", "type": "auth",
            "listRule": "", "viewRule": "",
            "manageRule": "manager = @request.auth.id",
            "fields": [{"name": "manager", "type": "text"}]
        }),
    )
    .await;
    let mut as_boss = Sse::open(&app).await;
    as_boss.subscribe(&app, Some(&boss), &["members/*"]).await;
    let mut as_plain = Sse::open(&app).await;
    as_plain.subscribe(&app, Some(&plain), &["members/*"]).await;

    let member = app
        .create_record(
            "members",
            Some(&admin),
            json!({
                "email": "member@example.com", "emailVisibility": false,
                "password": "password-123", "passwordConfirm": "password-123",
                "manager": boss_id
            }),
        )
        .await;
    let seen_by_boss = as_boss.next_event().await.data["record"].clone();
    let seen_by_plain = as_plain.next_event().await.data["record"].clone();
    assert_eq!(seen_by_boss["email"], "member@example.com");
    assert_eq!(seen_by_plain["id"], member["id"]);
    assert_eq!(seen_by_plain.get("email"), None);
    let path = format!(
        "/api/collections/members/records/{}",
        member["id"].as_str().unwrap()
    );
    assert_eq!(
        app.get_json(&path, Some(&boss)).await,
        (200, seen_by_boss),
        "the records API shows the manager the same record"
    );
    assert_eq!(
        app.get_json(&path, Some(&plain)).await,
        (200, seen_by_plain),
        "the records API hides the email from a plain user too"
    );

    let deleted = app.send(Method::DELETE, &path, Some(&admin), None).await;
    assert_eq!(deleted.status(), 204);
    let gone_for_boss = as_boss.next_event().await.data;
    assert_eq!(gone_for_boss["action"], "delete");
    assert_eq!(gone_for_boss["record"]["email"], "member@example.com");
    let gone_for_plain = as_plain.next_event().await.data;
    assert_eq!(gone_for_plain["action"], "delete");
    assert_eq!(gone_for_plain["record"].get("email"), None);
}

async fn a_revoked_session_stops_rule_protected_events(backend: Backend) {
    let Some((app, _)) = notes_app(backend).await else {
        return;
    };
    let alice = app.user_token("alice@example.com").await;
    let (_, login) = app
        .login("users", "alice@example.com", "password-123")
        .await;
    let alice_id = login["record"]["id"].as_str().unwrap().to_string();
    let mut sse = Sse::open(&app).await;
    sse.subscribe(&app, Some(&alice), &["notes/*", "news/*"])
        .await;

    let first = app
        .create_record("notes", None, json!({"title": "one", "owner": alice_id}))
        .await;
    assert_eq!(sse.next_event().await.data["record"], first);

    let logout = app
        .send(
            Method::POST,
            "/api/collections/users/logout",
            Some(&alice),
            None,
        )
        .await;
    assert!(logout.status().is_success());
    app.create_record("notes", None, json!({"title": "two", "owner": alice_id}))
        .await;
    let marker = app
        .create_record("news", None, json!({"headline": "m"}))
        .await;
    assert_eq!(sse.next_event().await.data["record"], marker);
}

#[actix_web::test]
async fn an_idle_stream_is_closed() {
    let app = spawn_app_with(Backend::Sqlite, |settings| {
        settings.realtime.idle_timeout = Duration::from_millis(300);
    })
    .await
    .expect("SQLite is always available");
    let mut sse = Sse::open(&app).await;
    assert_eq!(sse.next_frame().await, None, "the stream ends when idle");
}

#[actix_web::test]
async fn a_client_that_falls_behind_is_disconnected() {
    let app = spawn_app_with(Backend::Sqlite, |settings| {
        settings.realtime.client_buffer = 2;
        settings.server.max_body_bytes = 2 << 20;
    })
    .await
    .expect("SQLite is always available");
    let admin = app.superuser_token("root@example.com").await;
    app.create_collection(
        &admin,
        json!({
            "name": "blobs", "listRule": "", "createRule": "",
            "fields": [{"name": "payload", "type": "json", "maxSize": 2000000}]
        }),
    )
    .await;
    let mut slow = Sse::open(&app).await;
    slow.subscribe(&app, None, &["blobs/*"]).await;
    // Far more than the socket buffers between server and client hold, while the
    // client reads nothing: its queue fills and the server lets it go.
    let big = "x".repeat(1 << 20);
    let total = 40;
    for _ in 0..total {
        app.create_record("blobs", Some(&admin), json!({"payload": {"data": big}}))
            .await;
    }
    let mut received = 0;
    while slow.next_frame().await.is_some() {
        received += 1;
    }
    assert!(
        received < total,
        "the stream ended after {received} of {total} events"
    );
}

#[actix_web::test]
async fn a_client_that_hangs_up_is_forgotten() {
    let app = spawn_app(Backend::Sqlite)
        .await
        .expect("SQLite is always available");
    let open_streams = || async {
        let metrics = app.get("/metrics").await.text().await.unwrap();
        metrics
            .lines()
            .find_map(|line| line.strip_prefix("gatehouse_realtime_clients "))
            .map(|n| n.parse::<i64>().unwrap())
    };
    let sse = Sse::open(&app).await;
    assert_eq!(open_streams().await, Some(1));
    drop(sse);
    eventually("the server to notice the client left", || async {
        open_streams().await == Some(0)
    })
    .await;
}

/// A write burst that outruns delivery: the changes that find the realtime queue full
/// are dropped and counted, every client with a subscription is disconnected (so its
/// SDK reconnects and refetches rather than silently missing them), and a client that
/// watched nothing stays connected.
#[actix_web::test]
async fn a_full_realtime_queue_disconnects_subscribers() {
    let app = spawn_app_with(Backend::Sqlite, |settings| {
        settings.realtime.hub_queue = 1;
        // One database actor: a cascading delete queues all its changes before the
        // realtime actor can read anything for the first, so the queue overflows.
        settings.database.actors = 1;
    })
    .await
    .expect("SQLite is always available");
    let admin = app.superuser_token("root@example.com").await;
    app.create_collection(
        &admin,
        json!({
            "name": "threads", "listRule": "", "viewRule": "", "createRule": "",
            "fields": [{"name": "title", "type": "text"}]
        }),
    )
    .await;
    app.create_collection(
        &admin,
        json!({
            "name": "replies", "listRule": "", "viewRule": "", "createRule": "",
            "fields": [{"name": "thread", "type": "relation", "collectionId": "threads",
                        "maxSelect": 1, "cascadeDelete": true}]
        }),
    )
    .await;
    let thread = app
        .create_record("threads", None, json!({"title": "busy"}))
        .await;
    for _ in 0..5 {
        app.create_record("replies", None, json!({"thread": thread["id"]}))
            .await;
    }
    let dropped_changes = || async {
        let metrics = app.get("/metrics").await.text().await.unwrap();
        metrics
            .lines()
            .find_map(|line| line.strip_prefix("gatehouse_realtime_events_dropped_total "))
            .map(|n| n.parse::<u64>().unwrap())
    };
    assert_eq!(dropped_changes().await, Some(0));

    let mut replies_watcher = Sse::open(&app).await;
    replies_watcher.subscribe(&app, None, &["replies/*"]).await;
    let mut threads_watcher = Sse::open(&app).await;
    threads_watcher.subscribe(&app, None, &["threads/*"]).await;
    let mut bystander = Sse::open(&app).await;

    let path = format!(
        "/api/collections/threads/records/{}",
        thread["id"].as_str().unwrap()
    );
    let deleted = app.send(Method::DELETE, &path, Some(&admin), None).await;
    assert_eq!(deleted.status(), 204);

    for watcher in [&mut replies_watcher, &mut threads_watcher] {
        let mut received = 0;
        while watcher.next_frame().await.is_some() {
            received += 1;
        }
        assert!(
            received < 6,
            "the stream ended after {received} of 6 changes"
        );
    }
    assert!(dropped_changes().await.unwrap() >= 1);
    let forgotten = app
        .send(
            Method::POST,
            "/api/realtime",
            None,
            Some(&json!({"clientId": replies_watcher.client_id, "subscriptions": ["replies/*"]})),
        )
        .await;
    assert_eq!(
        forgotten.status(),
        404,
        "a disconnected client is forgotten"
    );

    bystander.subscribe(&app, None, &["threads/*"]).await;
    let next = app
        .create_record("threads", None, json!({"title": "calm"}))
        .await;
    // The hub fans changes out after their commits, so the delete's own change, if the
    // full queue kept it, may still reach a subscription made just after the delete.
    let mut event = bystander.next_event().await;
    if event.data["action"] == "delete" {
        assert_eq!(event.data["record"]["id"], thread["id"]);
        event = bystander.next_event().await;
    }
    assert_eq!(event.data["action"], "create");
    assert_eq!(event.data["record"], next);
}

/// On SQLite, writes that commit together in one group still reach subscribers in
/// commit order: the last event a client gets is the record as it was left.
#[actix_web::test]
async fn concurrent_updates_reach_subscribers_in_commit_order() {
    let (app, admin) = notes_app(Backend::Sqlite)
        .await
        .expect("SQLite is always available");
    let news = app
        .create_record("news", None, json!({"headline": "start"}))
        .await;
    let id = news["id"].as_str().unwrap();
    let topic = format!("news/{id}");
    let mut sse = Sse::open(&app).await;
    sse.subscribe(&app, None, &[&topic]).await;

    let path = format!("/api/collections/news/records/{id}");
    let bodies: Vec<Value> = (0..40)
        .map(|n| json!({"headline": format!("update {n}")}))
        .collect();
    let updates = bodies
        .iter()
        .map(|body| app.send(Method::PATCH, &path, Some(&admin), Some(body)));
    for response in futures_util::future::join_all(updates).await {
        assert_eq!(response.status(), 200);
    }
    let mut headlines = Vec::new();
    for _ in 0..40 {
        let event = sse.next_event().await;
        headlines.push(event.data["record"]["headline"].clone());
    }
    let stored: Value = app.get(&path).await.json().await.unwrap();
    assert_eq!(
        headlines.last(),
        Some(&stored["headline"]),
        "events in commit order: {headlines:?}"
    );
}
