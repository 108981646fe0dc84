use reqwest::Method;
use serde_json::{json, Value};

use crate::on_both_backends;
use crate::support::{spawn_app, Backend};

on_both_backends!(
    the_collections_api_is_for_superusers_only,
    a_collection_is_a_real_table_with_every_field_type,
    schema_changes_keep_the_data,
    bad_changes_are_refused_before_anything_is_touched,
    unique_indexes_give_validation_not_unique,
    delete_import_and_truncate,
    concurrent_collection_changes_all_take_effect,
);

/// Schema changes made at the same time each start from the one before: none is lost
/// from the collections the server knows.
async fn concurrent_collection_changes_all_take_effect(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let admin = app.superuser_token("root@example.com").await;
    let names: Vec<String> = (0..8).map(|n| format!("together_{n}")).collect();
    let creates = names.iter().map(|name| {
        app.create_collection(
            &admin,
            json!({"name": name, "createRule": "", "fields": [{"name": "title", "type": "text"}]}),
        )
    });
    futures_util::future::join_all(creates).await;
    let (status, list) = app
        .get_json("/api/collections?perPage=100", Some(&admin))
        .await;
    assert_eq!(status, 200);
    for name in &names {
        assert!(
            list["items"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["name"] == name.as_str()),
            "{name} is listed: {list}"
        );
        app.create_record(name, None, json!({"title": "here"}))
            .await;
    }
}

async fn the_collections_api_is_for_superusers_only(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    assert_eq!(app.get_json("/api/collections", None).await.0, 401);
    let user = app.user_token("u@example.com").await;
    assert_eq!(app.get_json("/api/collections", Some(&user)).await.0, 403);
    let create = app
        .send(
            Method::POST,
            "/api/collections",
            Some(&user),
            Some(&json!({"name": "posts"})),
        )
        .await;
    assert_eq!(create.status(), 403);

    let admin = app.superuser_token("root@example.com").await;
    let (status, list) = app.get_json("/api/collections", Some(&admin)).await;
    assert_eq!(status, 200);
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"users") && names.contains(&"_superusers"),
        "{names:?}"
    );
    let (_, superusers) = app
        .get_json("/api/collections/_superusers", Some(&admin))
        .await;
    assert_eq!(superusers["id"], "pbc_3142635823");
    assert_eq!(superusers["type"], "auth");
    assert_eq!(superusers["listRule"], Value::Null);
    let (_, users) = app
        .get_json("/api/collections/_pb_users_auth_", Some(&admin))
        .await;
    assert_eq!(users["name"], "users");
    assert_eq!(users["passwordAuth"]["identityFields"], json!(["email"]));
}

fn every_field_type() -> Value {
    json!({
        "name": "things",
        "listRule": "", "viewRule": "", "createRule": "", "updateRule": "", "deleteRule": "",
        "fields": [
            {"name": "title", "type": "text", "required": true, "max": 20},
            {"name": "count", "type": "number", "min": 0, "max": 100, "onlyInt": true},
            {"name": "done", "type": "bool"},
            {"name": "contact", "type": "email"},
            {"name": "site", "type": "url"},
            {"name": "due", "type": "date"},
            {"name": "status", "type": "select", "values": ["new", "old"], "maxSelect": 1},
            {"name": "tags", "type": "select", "values": ["a", "b", "c"], "maxSelect": 3},
            {"name": "meta", "type": "json"},
            {"name": "body", "type": "editor"},
            {"name": "created", "type": "autodate", "onCreate": true, "onUpdate": false},
            {"name": "updated", "type": "autodate", "onCreate": true, "onUpdate": true}
        ]
    })
}

async fn a_collection_is_a_real_table_with_every_field_type(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let admin = app.superuser_token("root@example.com").await;
    let created = app.create_collection(&admin, every_field_type()).await;
    assert!(created["id"].as_str().unwrap().starts_with("pbc_"));
    assert_eq!(created["type"], "base");
    assert_eq!(
        created["fields"][0]["name"], "id",
        "the system id field comes first"
    );
    assert_eq!(created["fields"][0]["primaryKey"], true);

    let record = app
        .create_record(
            "things",
            None,
            json!({
                "title": "First", "count": 7, "done": true, "contact": "A@B.co", "site": "https://example.com",
                "due": "2030-01-02", "status": "new", "tags": ["a", "c"], "meta": {"k": [1, 2]}, "body": "<p>hi</p>"
            }),
        )
        .await;
    assert_eq!(record["title"], "First");
    assert_eq!(record["count"], 7);
    assert_eq!(record["done"], true);
    assert_eq!(record["contact"], "a@b.co");
    assert_eq!(record["due"], "2030-01-02 00:00:00.000Z");
    assert_eq!(record["tags"], json!(["a", "c"]));
    assert_eq!(record["meta"], json!({"k": [1, 2]}));
    assert!(record["created"].as_str().unwrap().ends_with('Z'));

    let zero = app
        .create_record("things", None, json!({"title": "Zero"}))
        .await;
    assert_eq!(zero["count"], 0);
    assert_eq!(zero["done"], false);
    assert_eq!(zero["status"], "");
    assert_eq!(zero["tags"], json!([]));
    assert_eq!(zero["meta"], Value::Null);
    assert_eq!(zero["due"], "");

    let (_, fetched) = app
        .get_json(
            &format!(
                "/api/collections/things/records/{}",
                record["id"].as_str().unwrap()
            ),
            None,
        )
        .await;
    assert_eq!(fetched, record, "what was written is what is read");
    assert_eq!(app.count_rows("things").await, 2);
}

async fn schema_changes_keep_the_data(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let admin = app.superuser_token("root@example.com").await;
    let created = app
        .create_collection(
            &admin,
            json!({"name": "notes", "listRule": "", "viewRule": "", "createRule": "",
                   "fields": [{"name": "title", "type": "text"}, {"name": "views", "type": "number"}, {"name": "draft", "type": "bool"}]}),
        )
        .await;
    let note = app
        .create_record(
            "notes",
            None,
            json!({"title": "kept", "views": 3, "draft": true}),
        )
        .await;
    let title = created["fields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "title")
        .unwrap()
        .clone();
    let draft = created["fields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "draft")
        .unwrap()
        .clone();

    // Rename a field and the collection, drop one, add one and an index.
    let response = app
        .send(
            Method::PATCH,
            "/api/collections/notes",
            Some(&admin),
            Some(&json!({
                "name": "memos",
                "fields": [
                    {"id": title["id"], "name": "headline", "type": "text"},
                    draft,
                    {"name": "body", "type": "text"}
                ],
                "indexes": ["CREATE INDEX `idx_memos_headline` ON `memos` (`headline`)"]
            })),
        )
        .await;
    let status = response.status();
    let changed: Value = response.json().await.unwrap();
    assert_eq!(status, 200, "{changed}");
    assert_eq!(changed["id"], created["id"]);

    let (status, memo) = app
        .get_json(
            &format!(
                "/api/collections/memos/records/{}",
                note["id"].as_str().unwrap()
            ),
            None,
        )
        .await;
    assert_eq!(status, 200, "{memo}");
    assert_eq!(memo["headline"], "kept", "renamed fields keep their values");
    assert_eq!(memo["draft"], true);
    assert_eq!(memo["body"], "");
    assert!(memo.get("views").is_none());
    assert_eq!(memo["collectionName"], "memos");
    assert_eq!(
        app.get_json("/api/collections/notes/records", None).await.0,
        404
    );

    // The new index serves filters on the renamed field.
    let (status, page) = app
        .get_json(
            "/api/collections/memos/records?filter=headline%3D'kept'",
            None,
        )
        .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["totalItems"], 1);
}

async fn bad_changes_are_refused_before_anything_is_touched(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let admin = app.superuser_token("root@example.com").await;
    app.create_collection(
        &admin,
        json!({"name": "items", "listRule": "", "fields": [{"name": "n", "type": "number"}]}),
    )
    .await;
    let before = app.get_json("/api/collections/items", Some(&admin)).await.1;

    for (body, key) in [
        (json!({"fields": [{"name": "n", "type": "text"}]}), "fields"),
        (json!({"listRule": "nope = 1"}), "listRule"),
        (json!({"name": "users"}), "name"),
        (json!({"name": "bad name"}), "name"),
        (
            json!({"indexes": ["CREATE INDEX x ON items (missing)"]}),
            "indexes",
        ),
        (json!({"type": "auth"}), "type"),
    ] {
        let response = app
            .send(
                Method::PATCH,
                "/api/collections/items",
                Some(&admin),
                Some(&body),
            )
            .await;
        assert_eq!(response.status(), 400, "{body}");
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["message"], "Failed to update collection.");
        assert!(error["data"].get(key).is_some(), "{key}: {error}");
    }
    let after = app.get_json("/api/collections/items", Some(&admin)).await.1;
    assert_eq!(before, after, "nothing changed");

    let missing_name = app
        .send(
            Method::POST,
            "/api/collections",
            Some(&admin),
            Some(&json!({})),
        )
        .await;
    assert_eq!(missing_name.status(), 400);
    let error: Value = missing_name.json().await.unwrap();
    assert_eq!(error["data"]["name"]["code"], "validation_required");
    let system = app
        .send(
            Method::DELETE,
            "/api/collections/_superusers",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(system.status(), 400);
}

async fn unique_indexes_give_validation_not_unique(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let admin = app.superuser_token("root@example.com").await;
    app.create_collection(
        &admin,
        json!({"name": "pages", "createRule": "", "updateRule": "",
               "fields": [{"name": "slug", "type": "text"}],
               "indexes": ["CREATE UNIQUE INDEX `idx_pages_slug` ON `pages` (`slug`)"]}),
    )
    .await;
    app.create_record("pages", None, json!({"slug": "home"}))
        .await;
    let other = app
        .create_record("pages", None, json!({"slug": "about"}))
        .await;
    let duplicate = app
        .send(
            Method::POST,
            "/api/collections/pages/records",
            None,
            Some(&json!({"slug": "home"})),
        )
        .await;
    assert_eq!(duplicate.status(), 400);
    let error: Value = duplicate.json().await.unwrap();
    assert_eq!(error["data"]["slug"]["code"], "validation_not_unique");
    let update = app
        .send(
            Method::PATCH,
            &format!(
                "/api/collections/pages/records/{}",
                other["id"].as_str().unwrap()
            ),
            None,
            Some(&json!({"slug": "home"})),
        )
        .await;
    assert_eq!(update.status(), 400);
    assert_eq!(app.count_rows("pages").await, 2);
}

async fn delete_import_and_truncate(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let admin = app.superuser_token("root@example.com").await;
    let import = json!({"collections": [
        {"name": "authors", "listRule": "", "createRule": "", "fields": [{"name": "name", "type": "text"}]},
        {"name": "books", "listRule": "", "createRule": "", "fields": [
            {"name": "title", "type": "text"},
            {"name": "author", "type": "relation", "collectionId": "authors", "maxSelect": 1}
        ]}
    ]});
    let response = app
        .send(
            Method::PUT,
            "/api/collections/import",
            Some(&admin),
            Some(&import),
        )
        .await;
    assert_eq!(response.status(), 204);
    let author = app
        .create_record("authors", None, json!({"name": "Le Guin"}))
        .await;
    app.create_record(
        "books",
        None,
        json!({"title": "Earthsea", "author": author["id"]}),
    )
    .await;

    // A referenced collection cannot go; the referencing one can.
    assert_eq!(
        app.send(
            Method::DELETE,
            "/api/collections/authors",
            Some(&admin),
            None
        )
        .await
        .status(),
        400
    );
    assert_eq!(
        app.send(
            Method::DELETE,
            "/api/collections/books/truncate",
            Some(&admin),
            None
        )
        .await
        .status(),
        204
    );
    assert_eq!(app.count_rows("books").await, 0);
    assert_eq!(
        app.send(Method::DELETE, "/api/collections/books", Some(&admin), None)
            .await
            .status(),
        204
    );
    assert_eq!(
        app.get_json("/api/collections/books", Some(&admin)).await.0,
        404
    );

    // A failing import changes nothing.
    let bad = json!({"collections": [
        {"name": "fine", "fields": []},
        {"name": "broken", "fields": [{"name": "r", "type": "relation", "collectionId": "nope"}]}
    ]});
    let response = app
        .send(
            Method::PUT,
            "/api/collections/import",
            Some(&admin),
            Some(&bad),
        )
        .await;
    assert_eq!(response.status(), 400);
    let error: Value = response.json().await.unwrap();
    assert!(
        error["data"]["collections"]["1"]["fields"].is_object(),
        "{error}"
    );
    assert_eq!(
        app.get_json("/api/collections/fine", Some(&admin)).await.0,
        404
    );
}
