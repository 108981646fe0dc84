//! `POST /api/batch`: record writes in one transaction, all or nothing, with the
//! outer request's caller, as JSON and as the SDK's multipart form.

use reqwest::Method;
use serde_json::{json, Value};

use crate::on_both_backends;
use crate::support::{spawn_app, spawn_app_with, Backend, TestApp};

on_both_backends!(
    a_failing_item_rolls_back_every_item_before_it,
    items_answer_in_order_and_see_each_others_writes,
    the_sdks_multipart_form_is_accepted,
    items_run_with_the_outer_requests_caller,
    bad_batches_are_refused_before_anything_runs,
    accounts_created_in_a_batch_are_registrations,
    a_batch_past_its_timeout_keeps_nothing,
);

const RECORDS: &str = "/api/collections/posts/records";

async fn posts_app(backend: Backend) -> Option<(TestApp, String)> {
    let app = spawn_app(backend).await?;
    let admin = app.superuser_token("root@example.com").await;
    app.create_collection(
        &admin,
        json!({
            "name": "posts",
            "listRule": "", "viewRule": "", "createRule": "", "updateRule": "", "deleteRule": "",
            "fields": [
                {"name": "title", "type": "text", "required": true},
                {"name": "slug", "type": "text"},
                {"name": "views", "type": "number"}
            ],
            "indexes": ["CREATE UNIQUE INDEX `idx_posts_slug` ON `posts` (`slug`) WHERE `slug` != ''"]
        }),
    )
    .await;
    Some((app, admin))
}

async fn batch(app: &TestApp, token: Option<&str>, requests: Value) -> (u16, Value) {
    let response = app
        .send(
            Method::POST,
            "/api/batch",
            token,
            Some(&json!({ "requests": requests })),
        )
        .await;
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

async fn titles(app: &TestApp) -> Vec<String> {
    let (status, page) = app
        .get_json(&format!("{RECORDS}?sort=title&perPage=100"), None)
        .await;
    assert_eq!(status, 200);
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["title"].as_str().unwrap().to_string())
        .collect()
}

async fn a_failing_item_rolls_back_every_item_before_it(backend: Backend) {
    let Some((app, _)) = posts_app(backend).await else {
        return;
    };
    let kept = app
        .create_record("posts", None, json!({"title": "kept", "slug": "kept"}))
        .await;
    let doomed = app
        .create_record("posts", None, json!({"title": "doomed"}))
        .await;
    let (status, body) = batch(
        &app,
        None,
        json!([
            {"method": "POST", "url": RECORDS, "body": {"title": "new one"}},
            {"method": "PATCH", "url": format!("{RECORDS}/{}", kept["id"].as_str().unwrap()), "body": {"title": "renamed"}},
            {"method": "DELETE", "url": format!("{RECORDS}/{}", doomed["id"].as_str().unwrap())},
            {"method": "POST", "url": RECORDS, "body": {"title": "clash", "slug": "kept"}},
            {"method": "POST", "url": RECORDS, "body": {"title": "never reached"}}
        ]),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["message"], "Batch transaction failed.");
    let failed = &body["data"]["requests"]["3"];
    assert_eq!(failed["code"], "batch_request_failed");
    assert_eq!(failed["message"], "Batch request failed.");
    assert_eq!(failed["response"]["status"], 400);
    assert_eq!(failed["response"]["message"], "Failed to create record.");
    assert_eq!(
        failed["response"]["data"]["slug"]["code"],
        "validation_not_unique"
    );
    assert_eq!(
        body["data"]["requests"].as_object().unwrap().len(),
        1,
        "only the failing item is reported"
    );

    assert_eq!(
        titles(&app).await,
        ["doomed", "kept"],
        "the create, update and delete before the failure were all undone"
    );
    assert_eq!(app.count_rows("posts").await, 2);

    // A record missing in the middle fails the batch just the same.
    let (status, body) = batch(
        &app,
        None,
        json!([
            {"method": "POST", "url": RECORDS, "body": {"title": "first"}},
            {"method": "DELETE", "url": format!("{RECORDS}/aaaaaaaaaaaaaaa")}
        ]),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(body["data"]["requests"]["1"]["response"]["status"], 404);
    assert_eq!(titles(&app).await, ["doomed", "kept"]);
}

async fn items_answer_in_order_and_see_each_others_writes(backend: Backend) {
    let Some((app, _)) = posts_app(backend).await else {
        return;
    };
    let old = app
        .create_record("posts", None, json!({"title": "old", "views": 1}))
        .await;
    let old_id = old["id"].as_str().unwrap();
    let (status, body) = batch(
        &app,
        None,
        json!([
            {"method": "POST", "url": format!("{RECORDS}?fields=id,title"), "body": {"id": "batchrecord0001", "title": "made"}},
            {"method": "PATCH", "url": format!("{RECORDS}/batchrecord0001"), "body": {"views": 7}},
            {"method": "PUT", "url": RECORDS, "body": {"id": old_id, "title": "upserted over old"}},
            {"method": "PUT", "url": RECORDS, "body": {"id": "batchrecord0002", "title": "upserted new"}},
            {"method": "delete", "url": format!("{RECORDS}/batchrecord0002")}
        ]),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let answers = body.as_array().unwrap();
    assert_eq!(answers.len(), 5);
    assert_eq!(
        answers[0],
        json!({"status": 200, "body": {"id": "batchrecord0001", "title": "made"}}),
        "the item's ?fields= shapes its answer"
    );
    assert_eq!(answers[1]["status"], 200);
    assert_eq!(
        answers[1]["body"]["views"], 7,
        "a later item updates the record an earlier one created"
    );
    assert_eq!(answers[2]["body"]["id"], old_id);
    assert_eq!(answers[2]["body"]["title"], "upserted over old");
    assert_eq!(
        answers[2]["body"]["views"], 1,
        "an upsert of an existing record is an update"
    );
    assert_eq!(answers[3]["body"]["id"], "batchrecord0002");
    assert_eq!(answers[4], json!({"status": 204, "body": null}));

    assert_eq!(titles(&app).await, ["made", "upserted over old"]);
    let (_, made) = app
        .get_json(&format!("{RECORDS}/batchrecord0001"), None)
        .await;
    assert_eq!(made["views"], 7);
}

async fn the_sdks_multipart_form_is_accepted(backend: Backend) {
    let Some((app, _)) = posts_app(backend).await else {
        return;
    };
    let payload = json!({"requests": [
        {"method": "POST", "url": RECORDS, "headers": {}, "body": {"title": "from a form"}}
    ]});
    let boundary = "----gatehouse-batch-test";
    let form = |name: &str, extra: &str, content: &str| {
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"{extra}\r\n\r\n{content}\r\n--{boundary}--\r\n"
        )
    };
    let send = |body: String| {
        app.client
            .post(app.url("/api/batch"))
            .header(
                "content-type",
                format!("multipart/form-data; boundary={boundary}"),
            )
            .body(body)
            .send()
    };

    let response = send(form("@jsonPayload", "", &payload.to_string()))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let answers: Value = response.json().await.unwrap();
    assert_eq!(answers[0]["body"]["title"], "from a form");
    assert_eq!(titles(&app).await, ["from a form"]);

    // Files have no field to go to: refused, nothing written.
    let response = send(form(
        "requests.0.attachment",
        "; filename=\"a.txt\"",
        "file contents",
    ))
    .await
    .unwrap();
    assert_eq!(response.status(), 400);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["code"], "files_unsupported");
    assert_eq!(titles(&app).await, ["from a form"]);
}

async fn items_run_with_the_outer_requests_caller(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let admin = app.superuser_token("root@example.com").await;
    let alice = app.user_token("alice@example.com").await;
    let bob = app.user_token("bob@example.com").await;
    app.create_collection(
        &admin,
        json!({
            "name": "notes",
            "listRule": "", "viewRule": "",
            "createRule": "@request.auth.id != '' && owner = @request.auth.id",
            "updateRule": "owner = @request.auth.id",
            "deleteRule": "owner = @request.auth.id",
            "fields": [
                {"name": "text", "type": "text"},
                {"name": "owner", "type": "relation", "collectionId": "users", "maxSelect": 1}
            ]
        }),
    )
    .await;
    let alice_id = app_user_id(&app, &admin, "alice@example.com").await;
    let notes = "/api/collections/notes/records";
    let bobs = app
        .create_record(
            "notes",
            Some(&admin),
            json!({"text": "bob's", "owner": app_user_id(&app, &admin, "bob@example.com").await}),
        )
        .await;

    // A guest's batch: the create rule sees no caller, whatever the item's own header says.
    let (status, body) = batch(
        &app,
        None,
        json!([{"method": "POST", "url": notes, "headers": {"Authorization": alice}, "body": {"text": "x", "owner": alice_id}}]),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["data"]["requests"]["0"]["response"]["status"], 400);

    // Alice's batch: her create passes, changing Bob's note is hidden from her (404).
    let (status, body) = batch(
        &app,
        Some(&alice),
        json!([
            {"method": "POST", "url": notes, "body": {"text": "alice's", "owner": alice_id}},
            {"method": "PATCH", "url": format!("{notes}/{}", bobs["id"].as_str().unwrap()), "headers": {"Authorization": bob}, "body": {"text": "hijacked"}}
        ]),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["data"]["requests"]["1"]["response"]["status"], 404);
    assert_eq!(
        app.count_rows("notes").await,
        1,
        "alice's create was undone"
    );

    let (status, body) = batch(
        &app,
        Some(&alice),
        json!([{"method": "POST", "url": notes, "body": {"text": "alice's", "owner": alice_id}}]),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body[0]["body"]["owner"], alice_id.as_str());
}

async fn app_user_id(app: &TestApp, admin: &str, email: &str) -> String {
    let (_, page) = app
        .get_json(
            &format!("/api/collections/users/records?filter=email='{email}'"),
            Some(admin),
        )
        .await;
    page["items"][0]["id"].as_str().unwrap().to_string()
}

async fn bad_batches_are_refused_before_anything_runs(backend: Backend) {
    let Some(app) = spawn_app_with(backend, |settings| settings.batch.max_requests = 2).await
    else {
        return;
    };
    let admin = app.superuser_token("root@example.com").await;
    app.create_collection(
        &admin,
        json!({"name": "posts", "createRule": "", "listRule": "", "fields": [{"name": "title", "type": "text"}]}),
    )
    .await;
    let item = json!({"method": "POST", "url": RECORDS, "body": {"title": "a"}});

    let (status, body) = batch(&app, None, json!([])).await;
    assert_eq!(status, 400);
    assert_eq!(body["message"], "Invalid batch request data.");
    assert_eq!(body["data"]["requests"]["code"], "validation_required");

    let (status, body) = batch(&app, None, json!([item, item, item])).await;
    assert_eq!(status, 400);
    assert_eq!(
        body["data"]["requests"]["code"],
        "validation_length_too_long"
    );
    assert_eq!(body["data"]["requests"]["params"]["max"], 2);

    let (status, body) = batch(&app, None, json!([item, {"url": RECORDS}])).await;
    assert_eq!(status, 400);
    assert_eq!(
        body["data"]["requests"]["1"]["method"]["code"],
        "validation_required"
    );

    // Only record writes can be batched; a read or another endpoint fails its item.
    let (status, body) = batch(&app, None, json!([item, {"method": "GET", "url": RECORDS}])).await;
    assert_eq!(status, 400);
    assert_eq!(
        body["data"]["requests"]["1"]["response"]["message"],
        "Something went wrong while processing your request."
    );

    let response = app
        .client
        .post(app.url("/api/batch"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["message"], "Failed to read the submitted batch data.");
    assert_eq!(app.count_rows("posts").await, 0);

    let Some(off) =
        spawn_app_with(Backend::Sqlite, |settings| settings.batch.enabled = false).await
    else {
        return;
    };
    let (status, body) = batch(&off, None, json!([item])).await;
    assert_eq!(status, 403);
    assert_eq!(body["message"], "Batch requests are not allowed.");
}

async fn accounts_created_in_a_batch_are_registrations(backend: Backend) {
    let Some(app) = spawn_app_with(backend, |settings| {
        settings.auth.rate_limits.register_per_ip = gatehouse::config::RateLimit {
            requests: 2,
            per: std::time::Duration::from_secs(3600),
        };
    })
    .await
    else {
        return;
    };
    let account = |email: &str| {
        json!({"method": "POST", "url": "/api/collections/users/records",
               "body": {"email": email, "password": "password-123", "passwordConfirm": "password-123"}})
    };

    let (status, body) = batch(
        &app,
        None,
        json!([account("one@example.com"), account("two@example.com")]),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body[0]["body"]["verified"], false);
    assert_eq!(app.count_rows("users").await, 2);
    assert_eq!(
        app.count_rows("outbox").await,
        2,
        "each new account's verification mail was queued with it"
    );
    app.login("users", "two@example.com", "password-123").await;

    // The two registrations used up this address's allowance, in a batch or not.
    let (status, body) = batch(&app, None, json!([account("three@example.com")])).await;
    assert_eq!(status, 429, "{body}");
    let single = app
        .post_json(
            "/api/collections/users/records",
            &json!({"email": "four@example.com", "password": "password-123", "passwordConfirm": "password-123"}),
        )
        .await;
    assert_eq!(single.status(), 429);
    assert_eq!(app.count_rows("users").await, 2);
    assert_eq!(app.count_rows("outbox").await, 2);
}

async fn a_batch_past_its_timeout_keeps_nothing(backend: Backend) {
    // Far shorter than hashing twenty passwords takes, whatever the machine.
    let Some(app) = spawn_app_with(backend, |settings| {
        settings.batch.timeout = std::time::Duration::from_nanos(1);
    })
    .await
    else {
        return;
    };
    let accounts: Vec<Value> = (0..20)
        .map(|n| {
            json!({"method": "POST", "url": "/api/collections/users/records",
                   "body": {"email": format!("slow{n}@example.com"), "password": "password-123", "passwordConfirm": "password-123"}})
        })
        .collect();
    let (status, body) = batch(&app, None, Value::Array(accounts)).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["code"], "batch_timeout");
    assert_eq!(body["message"], "Batch transaction failed.");
    assert_eq!(app.count_rows("users").await, 0);
    assert_eq!(app.count_rows("outbox").await, 0);

    // The cut-off transaction left the database usable.
    assert_eq!(app.get("/readyz").await.status(), 200);
    app.register("after@example.com", "password-123").await;
    assert_eq!(app.count_rows("users").await, 1);
}
