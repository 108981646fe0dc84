use std::sync::atomic::{AtomicI64, Ordering};

use reqwest::Method;
use serde_json::{json, Value};

use crate::on_both_backends;
use crate::support::{spawn_app, spawn_app_with, Backend, TestApp};

on_both_backends!(
    crud_answers_with_pocketbases_envelope_and_status_codes,
    pagination_totals_sort_and_skip_total,
    filters_cover_each_operator_and_precedence,
    injection_attempts_are_refused_or_harmless,
    each_field_type_is_validated,
    rules_for_guest_user_owner_and_superuser,
    expand_inlines_relations_and_drops_hidden_ones,
    fields_trims_the_answer,
    deleting_cascades_or_clears_relations,
    changing_a_password_needs_the_old_one_and_ends_other_sessions,
    many_concurrent_creates_are_all_stored,
    create_rules_on_the_request_alone_tell_guests_from_users,
    lists_during_writes_count_every_write_answered_before_them,
);

fn path(collection: &str, id: &Value) -> String {
    format!(
        "/api/collections/{collection}/records/{}",
        id.as_str().unwrap()
    )
}

async fn posts_app(backend: Backend) -> Option<(TestApp, String)> {
    let app = spawn_app(backend).await?;
    let admin = app.superuser_token("root@example.com").await;
    app.create_collection(
        &admin,
        json!({
            "name": "posts",
            "listRule": "", "viewRule": "", "createRule": "", "updateRule": "", "deleteRule": "",
            "fields": [
                {"name": "title", "type": "text"},
                {"name": "views", "type": "number"},
                {"name": "published", "type": "bool"},
                {"name": "tags", "type": "select", "values": ["rust", "web", "db"], "maxSelect": 3},
                {"name": "created", "type": "autodate", "onCreate": true}
            ],
            "indexes": ["CREATE INDEX `idx_posts_views` ON `posts` (`views`)"]
        }),
    )
    .await;
    Some((app, admin))
}

async fn crud_answers_with_pocketbases_envelope_and_status_codes(backend: Backend) {
    let Some((app, _)) = posts_app(backend).await else {
        return;
    };
    let created = app
        .create_record(
            "posts",
            None,
            json!({"title": "Hello", "views": 3, "ignored": "x"}),
        )
        .await;
    assert!(created.get("ignored").is_none(), "unknown keys are ignored");
    assert_eq!(created["collectionName"], "posts");
    let own_id = app
        .create_record(
            "posts",
            None,
            json!({"id": "abcdefghij12345", "title": "Mine"}),
        )
        .await;
    assert_eq!(own_id["id"], "abcdefghij12345");

    let (status, page) = app.get_json("/api/collections/posts/records", None).await;
    assert_eq!(status, 200);
    assert_eq!(page["page"], 1);
    assert_eq!(page["perPage"], 30);
    assert_eq!(page["totalItems"], 2);
    assert_eq!(page["totalPages"], 1);

    let updated = app
        .send(
            Method::PATCH,
            &path("posts", &created["id"]),
            None,
            Some(&json!({"views": 4})),
        )
        .await;
    assert_eq!(updated.status(), 200);
    let updated: Value = updated.json().await.unwrap();
    assert_eq!(updated["views"], 4);
    assert_eq!(
        updated["title"], "Hello",
        "a PATCH keeps the fields it does not name"
    );

    let deleted = app
        .send(Method::DELETE, &path("posts", &created["id"]), None, None)
        .await;
    assert_eq!(deleted.status(), 204);
    assert!(deleted.bytes().await.unwrap().is_empty());
    assert_eq!(
        app.get_json(&path("posts", &created["id"]), None).await.0,
        404
    );
    assert_eq!(
        app.send(Method::DELETE, &path("posts", &created["id"]), None, None)
            .await
            .status(),
        404
    );
    assert_eq!(
        app.get_json("/api/collections/nope/records", None).await.0,
        404
    );
    let duplicate_id = app
        .send(
            Method::POST,
            "/api/collections/posts/records",
            None,
            Some(&json!({"id": "abcdefghij12345"})),
        )
        .await;
    assert_eq!(duplicate_id.status(), 400);
    let bad_id = app
        .send(
            Method::POST,
            "/api/collections/posts/records",
            None,
            Some(&json!({"id": "BAD"})),
        )
        .await;
    assert_eq!(bad_id.status(), 400);
}

async fn pagination_totals_sort_and_skip_total(backend: Backend) {
    let Some((app, _)) = posts_app(backend).await else {
        return;
    };
    for i in 0..7 {
        app.create_record("posts", None, json!({"title": format!("p{i}"), "views": i}))
            .await;
    }
    let (_, page) = app
        .get_json(
            "/api/collections/posts/records?perPage=3&page=2&sort=-views",
            None,
        )
        .await;
    assert_eq!(page["perPage"], 3);
    assert_eq!(page["totalItems"], 7);
    assert_eq!(page["totalPages"], 3);
    let views: Vec<i64> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["views"].as_i64().unwrap())
        .collect();
    assert_eq!(views, [3, 2, 1]);

    let (_, last) = app
        .get_json(
            "/api/collections/posts/records?perPage=3&page=3&sort=views",
            None,
        )
        .await;
    assert_eq!(last["items"].as_array().unwrap().len(), 1);
    assert_eq!(
        (&last["totalItems"], &last["totalPages"]),
        (&json!(7), &json!(3))
    );

    // Totals count what the filter keeps, also on a page past the end or with no match.
    for (query, total, pages, items) in [
        ("perPage=3&filter=views>=3", 4, 2, 3),
        ("perPage=3&page=2&filter=views>=3", 4, 2, 1),
        ("perPage=3&page=9&filter=views>=3", 4, 2, 0),
        ("perPage=3&filter=views>99", 0, 0, 0),
        ("perPage=3&page=2&filter=views>99", 0, 0, 0),
    ] {
        let (status, page) = app
            .get_json(&format!("/api/collections/posts/records?{query}"), None)
            .await;
        assert_eq!(status, 200, "{query}: {page}");
        assert_eq!(
            (
                &page["totalItems"],
                &page["totalPages"],
                page["items"].as_array().unwrap().len()
            ),
            (&json!(total), &json!(pages), items),
            "{query}"
        );
    }

    let (_, skipped) = app
        .get_json("/api/collections/posts/records?skipTotal=1&perPage=2", None)
        .await;
    assert_eq!(skipped["totalItems"], -1);
    assert_eq!(skipped["totalPages"], -1);
    assert_eq!(skipped["items"].as_array().unwrap().len(), 2);

    let (_, capped) = app
        .get_json("/api/collections/posts/records?perPage=5000", None)
        .await;
    assert_eq!(capped["perPage"], 1000, "the effective perPage is echoed");

    let (_, random) = app
        .get_json("/api/collections/posts/records?sort=@random", None)
        .await;
    assert_eq!(random["items"].as_array().unwrap().len(), 7);
    assert_eq!(
        app.get_json("/api/collections/posts/records?sort=nope", None)
            .await
            .0,
        400
    );
}

async fn filters_cover_each_operator_and_precedence(backend: Backend) {
    let Some((app, _)) = posts_app(backend).await else {
        return;
    };
    for (title, views, published, tags) in [
        ("Rust web", 10, true, json!(["rust", "web"])),
        ("Databases", 20, false, json!(["db"])),
        ("Rusty nails", 30, true, json!([])),
    ] {
        app.create_record(
            "posts",
            None,
            json!({"title": title, "views": views, "published": published, "tags": tags}),
        )
        .await;
    }
    let titles = |filter: &'static str| {
        let app = &app;
        let url = format!(
            "/api/collections/posts/records?sort=views&filter={}",
            url::form_urlencoded::byte_serialize(filter.as_bytes()).collect::<String>()
        );
        async move {
            let (status, page) = app.get_json(&url, None).await;
            assert_eq!(status, 200, "{filter}: {page}");
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["title"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(titles("views = 20").await, ["Databases"]);
    assert_eq!(titles("views != 20").await, ["Rust web", "Rusty nails"]);
    assert_eq!(titles("views > 10").await, ["Databases", "Rusty nails"]);
    assert_eq!(titles("views >= 20").await, ["Databases", "Rusty nails"]);
    assert_eq!(titles("views < 20").await, ["Rust web"]);
    assert_eq!(titles("views <= 20").await, ["Rust web", "Databases"]);
    assert_eq!(
        titles("title ~ 'rust'").await,
        ["Rust web", "Rusty nails"],
        "~ is case-insensitive"
    );
    assert_eq!(titles("title !~ 'rust'").await, ["Databases"]);
    assert_eq!(
        titles("published = true && views > 10").await,
        ["Rusty nails"]
    );
    assert_eq!(
        titles("views = 10 || views = 30 && published = false").await,
        ["Rust web"],
        "&& binds tighter"
    );
    assert_eq!(
        titles("(views = 10 || views = 30) && published = true").await,
        ["Rust web", "Rusty nails"]
    );
    assert_eq!(titles("tags:each ?= 'db'").await, ["Databases"]);
    assert_eq!(titles("tags:length = 0").await, ["Rusty nails"]);
    assert_eq!(titles("created <= @now").await.len(), 3);
    assert_eq!(
        app.get_json("/api/collections/posts/records?filter=views%20%3D", None)
            .await
            .0,
        400
    );
    assert_eq!(
        app.get_json("/api/collections/posts/records?filter=nope%20%3D%201", None)
            .await
            .0,
        400
    );
    // Guests may not reach into @request or @collection in a filter.
    let (status, _) = app
        .get_json(
            "/api/collections/posts/records?filter=%40request.auth.id%20%3D%20''",
            None,
        )
        .await;
    assert_eq!(status, 403);
}

async fn injection_attempts_are_refused_or_harmless(backend: Backend) {
    let Some((app, _)) = posts_app(backend).await else {
        return;
    };
    app.create_record("posts", None, json!({"title": "safe", "views": 1}))
        .await;
    for (param, value) in [
        ("filter", "title = 'x' OR 1=1"),
        ("filter", "title = 'x'; DROP TABLE posts; --'"),
        ("filter", "id) OR 1=1 --"),
        ("filter", "title = \"' OR '1'='1\""),
        ("sort", "title; DROP TABLE posts"),
        ("sort", "(SELECT 1)"),
        ("expand", "title); DROP TABLE posts; --"),
        ("fields", "*,(SELECT password FROM _superusers)"),
    ] {
        let url = format!(
            "/api/collections/posts/records?{param}={}",
            url::form_urlencoded::byte_serialize(value.as_bytes()).collect::<String>()
        );
        let (status, body) = app.get_json(&url, None).await;
        assert!(status == 400 || status == 200, "{param}={value}: {status}");
        if status == 200 {
            let text = body.to_string();
            assert!(!text.contains("$argon2"), "{param}={value} leaked a hash");
            if param == "filter" {
                assert_eq!(body["totalItems"], 0, "{param}={value} matched everything");
            }
        }
    }
    let (_, page) = app.get_json("/api/collections/posts/records", None).await;
    assert_eq!(
        page["totalItems"], 1,
        "the table is still there with its row"
    );
}

async fn each_field_type_is_validated(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let admin = app.superuser_token("root@example.com").await;
    app.create_collection(
        &admin,
        json!({"name": "typed", "createRule": "", "fields": [
            {"name": "title", "type": "text", "required": true, "min": 2, "max": 5, "pattern": "^[a-z]+$"},
            {"name": "count", "type": "number", "min": 1, "max": 10, "onlyInt": true},
            {"name": "mail", "type": "email", "exceptDomains": ["spam.io"]},
            {"name": "site", "type": "url"},
            {"name": "when", "type": "date", "min": "2020-01-01 00:00:00.000Z"},
            {"name": "kind", "type": "select", "values": ["a", "b"]},
            {"name": "flag", "type": "bool", "required": true},
            {"name": "data", "type": "json", "maxSize": 20}
        ]}),
    )
    .await;
    let attempt = |body: Value| {
        let app = &app;
        async move {
            let response = app
                .send(
                    Method::POST,
                    "/api/collections/typed/records",
                    None,
                    Some(&body),
                )
                .await;
            (
                response.status().as_u16(),
                response.json::<Value>().await.unwrap(),
            )
        }
    };
    let valid = json!({"title": "abc", "count": 10, "mail": "x@y.co", "site": "https://a.io", "when": "2020-01-01", "kind": "b", "flag": true, "data": [1]});
    assert_eq!(
        attempt(valid.clone()).await.0,
        200,
        "the boundaries are inclusive"
    );

    for (field, value, code) in [
        ("title", json!(""), "validation_required"),
        ("title", json!("a"), "validation_min_text_constraint"),
        ("title", json!("abcdef"), "validation_max_text_constraint"),
        ("title", json!("ABC"), "validation_invalid_format"),
        ("count", json!(0), "validation_min_number_constraint"),
        ("count", json!(11), "validation_max_number_constraint"),
        ("count", json!(1.5), "validation_only_int_constraint"),
        ("count", json!("many"), "validation_invalid_number"),
        ("mail", json!("nope"), "validation_is_email"),
        ("mail", json!("a@spam.io"), "validation_domain_not_allowed"),
        ("site", json!("ftp://x"), "validation_is_url"),
        (
            "when",
            json!("2019-12-31"),
            "validation_min_date_constraint",
        ),
        ("when", json!("someday"), "validation_invalid_date"),
        ("kind", json!("c"), "validation_invalid_value"),
        ("kind", json!(["a", "b"]), "validation_too_many_values"),
        ("flag", json!(false), "validation_required"),
        (
            "data",
            json!({"too": "large for twenty bytes"}),
            "validation_json_size_limit",
        ),
    ] {
        let mut body = valid.clone();
        body[field] = value.clone();
        let (status, error) = attempt(body).await;
        assert_eq!(status, 400, "{field}={value}");
        assert_eq!(error["message"], "Failed to create record.");
        assert_eq!(
            error["data"][field]["code"], code,
            "{field}={value}: {error}"
        );
    }
    assert_eq!(app.count_rows("typed").await, 1);
}

async fn rules_for_guest_user_owner_and_superuser(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let admin = app.superuser_token("root@example.com").await;
    app.create_collection(
        &admin,
        json!({"name": "notes",
        "listRule": "owner = @request.auth.id",
        "viewRule": "owner = @request.auth.id",
        "createRule": "@request.auth.id != '' && @request.body.owner = @request.auth.id",
        "updateRule": "owner = @request.auth.id",
        "deleteRule": null,
        "fields": [
            {"name": "text", "type": "text"},
            {"name": "owner", "type": "relation", "collectionId": "users", "maxSelect": 1}
        ]}),
    )
    .await;
    let alice = app.user_token("alice@example.com").await;
    let bob = app.user_token("bob@example.com").await;
    let alice_id = crate::support::accounts::token_payload(&alice)["id"].clone();

    // Create: guest and impersonation refused with 400, the owner's own note accepted.
    let guest_create = app
        .send(
            Method::POST,
            "/api/collections/notes/records",
            None,
            Some(&json!({"text": "x", "owner": alice_id})),
        )
        .await;
    assert_eq!(guest_create.status(), 400);
    let forged = app
        .send(
            Method::POST,
            "/api/collections/notes/records",
            Some(&bob),
            Some(&json!({"text": "x", "owner": alice_id})),
        )
        .await;
    assert_eq!(forged.status(), 400);
    let note = app
        .create_record(
            "notes",
            Some(&alice),
            json!({"text": "secret", "owner": alice_id}),
        )
        .await;
    assert_eq!(app.count_rows("notes").await, 1);

    // List filters quietly; view and update answer 404 to non-owners.
    assert_eq!(
        app.get_json("/api/collections/notes/records", Some(&alice))
            .await
            .1["totalItems"],
        1
    );
    assert_eq!(
        app.get_json("/api/collections/notes/records", Some(&bob))
            .await
            .1["totalItems"],
        0
    );
    assert_eq!(
        app.get_json("/api/collections/notes/records", None).await.1["totalItems"],
        0
    );
    assert_eq!(
        app.get_json(&path("notes", &note["id"]), Some(&bob))
            .await
            .0,
        404
    );
    assert_eq!(
        app.get_json(&path("notes", &note["id"]), Some(&alice))
            .await
            .0,
        200
    );
    let bob_update = app
        .send(
            Method::PATCH,
            &path("notes", &note["id"]),
            Some(&bob),
            Some(&json!({"text": "mine"})),
        )
        .await;
    assert_eq!(bob_update.status(), 404);
    let alice_update = app
        .send(
            Method::PATCH,
            &path("notes", &note["id"]),
            Some(&alice),
            Some(&json!({"text": "edited"})),
        )
        .await;
    assert_eq!(alice_update.status(), 200);

    // A null rule is for superusers only: 403 for everyone else, even the owner.
    let delete = app
        .send(
            Method::DELETE,
            &path("notes", &note["id"]),
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(delete.status(), 403);
    assert_eq!(
        delete.json::<Value>().await.unwrap()["message"],
        "Only superusers can perform this action."
    );
    // Superusers bypass every rule.
    assert_eq!(
        app.get_json("/api/collections/notes/records", Some(&admin))
            .await
            .1["totalItems"],
        1
    );
    assert_eq!(
        app.send(
            Method::DELETE,
            &path("notes", &note["id"]),
            Some(&admin),
            None
        )
        .await
        .status(),
        204
    );

    // The users collection's own rules: a user sees only their own record.
    let (_, users) = app
        .get_json("/api/collections/users/records", Some(&bob))
        .await;
    assert_eq!(users["totalItems"], 1);
    assert_eq!(
        users["items"][0]["email"], "bob@example.com",
        "owners see their email"
    );
}

async fn expand_inlines_relations_and_drops_hidden_ones(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let admin = app.superuser_token("root@example.com").await;
    app.create_collection(
        &admin,
        json!({"name": "teams", "listRule": "", "viewRule": "", "createRule": "",
        "fields": [{"name": "name", "type": "text"}]}),
    )
    .await;
    app.create_collection(
        &admin,
        json!({"name": "people", "listRule": "", "viewRule": "hidden = false", "createRule": "",
        "fields": [{"name": "name", "type": "text"}, {"name": "hidden", "type": "bool"},
                   {"name": "team", "type": "relation", "collectionId": "teams", "maxSelect": 1}]}),
    )
    .await;
    app.create_collection(&admin, json!({"name": "projects", "listRule": "", "viewRule": "", "createRule": "",
        "fields": [{"name": "title", "type": "text"},
                   {"name": "lead", "type": "relation", "collectionId": "people", "maxSelect": 1},
                   {"name": "members", "type": "relation", "collectionId": "people", "maxSelect": 5}]})).await;
    let team = app
        .create_record("teams", None, json!({"name": "Core"}))
        .await;
    let ann = app
        .create_record("people", None, json!({"name": "Ann", "team": team["id"]}))
        .await;
    let ben = app
        .create_record("people", None, json!({"name": "Ben", "hidden": true}))
        .await;
    let project = app
        .create_record(
            "projects",
            None,
            json!({"title": "P", "lead": ann["id"], "members": [ann["id"], ben["id"]]}),
        )
        .await;

    let (status, expanded) = app
        .get_json(
            &format!(
                "{}?expand=lead.team,members,projects_via_lead",
                path("projects", &project["id"])
            ),
            None,
        )
        .await;
    assert_eq!(status, 200, "{expanded}");
    assert_eq!(expanded["expand"]["lead"]["name"], "Ann");
    assert_eq!(
        expanded["expand"]["lead"]["expand"]["team"]["name"], "Core",
        "nested expand"
    );
    let members = expanded["expand"]["members"].as_array().unwrap();
    assert_eq!(
        members.len(),
        1,
        "Ben is hidden by the people view rule: {members:?}"
    );
    assert_eq!(members[0]["name"], "Ann");

    let (_, person) = app
        .get_json(
            &format!("{}?expand=projects_via_lead", path("people", &ann["id"])),
            None,
        )
        .await;
    assert_eq!(
        person["expand"]["projects_via_lead"][0]["title"], "P",
        "back-relation"
    );

    let (_, list) = app
        .get_json("/api/collections/projects/records?expand=lead", None)
        .await;
    assert_eq!(list["items"][0]["expand"]["lead"]["name"], "Ann");
    assert_eq!(
        app.get_json(
            "/api/collections/projects/records?expand=a.b.c.d.e.f.g",
            None
        )
        .await
        .0,
        400
    );
}

async fn fields_trims_the_answer(backend: Backend) {
    let Some((app, _)) = posts_app(backend).await else {
        return;
    };
    let post = app
        .create_record("posts", None, json!({"title": "Trim me", "views": 9}))
        .await;
    let (_, page) = app
        .get_json("/api/collections/posts/records?fields=id,title", None)
        .await;
    let item = page["items"][0].as_object().unwrap();
    assert_eq!(item.keys().collect::<Vec<_>>(), ["id", "title"]);
    let (_, one) = app
        .get_json(
            &format!("{}?fields=views", path("posts", &post["id"])),
            None,
        )
        .await;
    assert_eq!(one, json!({"views": 9}));
}

async fn deleting_cascades_or_clears_relations(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let admin = app.superuser_token("root@example.com").await;
    let everyone = json!({"listRule": "", "viewRule": "", "createRule": "", "updateRule": "", "deleteRule": ""});
    let with = |extra: Value| {
        let mut definition = everyone.clone();
        definition
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        definition
    };
    app.create_collection(
        &admin,
        with(json!({"name": "threads", "fields": [{"name": "title", "type": "text"}]})),
    )
    .await;
    app.create_collection(&admin, with(json!({"name": "replies", "fields": [
        {"name": "thread", "type": "relation", "collectionId": "threads", "maxSelect": 1, "cascadeDelete": true}]}))).await;
    app.create_collection(
        &admin,
        with(json!({"name": "bookmarks", "fields": [
        {"name": "threads", "type": "relation", "collectionId": "threads", "maxSelect": 5}]})),
    )
    .await;
    app.create_collection(&admin, with(json!({"name": "pins", "fields": [
        {"name": "thread", "type": "relation", "collectionId": "threads", "maxSelect": 1, "required": true}]}))).await;

    let first = app
        .create_record("threads", None, json!({"title": "one"}))
        .await;
    let second = app
        .create_record("threads", None, json!({"title": "two"}))
        .await;
    app.create_record("replies", None, json!({"thread": first["id"]}))
        .await;
    let bookmark = app
        .create_record(
            "bookmarks",
            None,
            json!({"threads": [first["id"], second["id"]]}),
        )
        .await;
    app.create_record("pins", None, json!({"thread": second["id"]}))
        .await;

    assert_eq!(
        app.send(Method::DELETE, &path("threads", &first["id"]), None, None)
            .await
            .status(),
        204
    );
    assert_eq!(app.count_rows("replies").await, 0, "cascaded");
    let (_, kept) = app
        .get_json(&path("bookmarks", &bookmark["id"]), None)
        .await;
    assert_eq!(
        kept["threads"],
        json!([second["id"]]),
        "the reference was removed"
    );

    let blocked = app
        .send(Method::DELETE, &path("threads", &second["id"]), None, None)
        .await;
    assert_eq!(
        blocked.status(),
        400,
        "a required relation still points at it"
    );
    assert_eq!(app.count_rows("threads").await, 1, "nothing was deleted");
    let (_, still) = app
        .get_json(&path("bookmarks", &bookmark["id"]), None)
        .await;
    assert_eq!(
        still["threads"],
        json!([second["id"]]),
        "the failed delete changed nothing"
    );

    let missing = app
        .send(
            Method::POST,
            "/api/collections/replies/records",
            None,
            Some(&json!({"thread": "zzzzzzzzzzzzzzz"})),
        )
        .await;
    assert_eq!(missing.status(), 400);
    assert_eq!(
        missing.json::<Value>().await.unwrap()["data"]["thread"]["code"],
        "validation_missing_rel_records"
    );
}

async fn changing_a_password_needs_the_old_one_and_ends_other_sessions(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let record = app.register("pat@example.com", "password-123").await;
    let (laptop, _) = app.login("users", "pat@example.com", "password-123").await;
    let (phone, _) = app.login("users", "pat@example.com", "password-123").await;
    let me = path("users", &record["id"]);

    let without_old = app
        .send(
            Method::PATCH,
            &me,
            Some(&laptop),
            Some(&json!({"password": "new-password-1", "passwordConfirm": "new-password-1"})),
        )
        .await;
    assert_eq!(without_old.status(), 400);
    assert_eq!(
        without_old.json::<Value>().await.unwrap()["data"]["oldPassword"]["code"],
        "validation_invalid_old_password"
    );

    let changed = app
        .send(
            Method::PATCH,
            &me,
            Some(&laptop),
            Some(&json!({"oldPassword": "password-123", "password": "new-password-1", "passwordConfirm": "new-password-1"})),
        )
        .await;
    assert_eq!(changed.status(), 200);
    let sessions = "/api/collections/users/sessions";
    assert_eq!(
        app.get_json(sessions, Some(&laptop)).await.0,
        200,
        "the session that changed it stays"
    );
    assert_eq!(
        app.get_json(sessions, Some(&phone)).await.0,
        401,
        "other sessions end"
    );
    app.login("users", "pat@example.com", "new-password-1")
        .await;

    let email = app
        .send(
            Method::PATCH,
            &me,
            Some(&laptop),
            Some(&json!({"email": "other@example.com"})),
        )
        .await;
    assert_eq!(
        email.status(),
        400,
        "emails change through request-email-change"
    );
    let verified = app
        .send(
            Method::PATCH,
            &me,
            Some(&laptop),
            Some(&json!({"verified": true})),
        )
        .await;
    assert_eq!(verified.status(), 400);
}

/// Writers queue for the database (SQLite has one writer at a time): many creates at
/// once each succeed, none is lost, and each is readable at once.
async fn many_concurrent_creates_are_all_stored(backend: Backend) {
    let Some((app, _)) = posts_app(backend).await else {
        return;
    };
    let user = app.user_token("writer@example.com").await;
    let creates = (0..64).map(|n| {
        let (app, user) = (&app, &user);
        async move {
            let response = app
                .send(
                    Method::POST,
                    "/api/collections/posts/records",
                    Some(user),
                    Some(&json!({"title": format!("concurrent {n}"), "views": n})),
                )
                .await;
            let status = response.status();
            let body: Value = response.json().await.unwrap();
            assert_eq!(status, 200, "create {n}: {body}");
            body
        }
    });
    let created = futures_util::future::join_all(creates).await;
    let mut ids: Vec<&str> = created.iter().map(|r| r["id"].as_str().unwrap()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 64, "every create got its own id");
    for record in &created {
        let (status, shown) = app.get_json(&path("posts", &record["id"]), None).await;
        assert_eq!(status, 200, "{shown}");
        assert_eq!(shown["title"], record["title"]);
    }
    let (_, page) = app
        .get_json("/api/collections/posts/records?perPage=1", None)
        .await;
    assert_eq!(page["totalItems"], 64);
}

/// Rules that only compare `@request.auth.id` with `''` are decided without reading a
/// row; guests and signed-in users must still get what the rule says.
async fn create_rules_on_the_request_alone_tell_guests_from_users(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let admin = app.superuser_token("root@example.com").await;
    for (name, rule) in [
        ("members", "@request.auth.id != ''"),
        ("guests", "@request.auth.id = ''"),
    ] {
        app.create_collection(
            &admin,
            json!({"name": name, "createRule": rule,
                "fields": [{"name": "text", "type": "text"}]}),
        )
        .await;
    }
    let user = app.user_token("member@example.com").await;
    let create = |collection: &'static str, token: Option<&str>| {
        let path = format!("/api/collections/{collection}/records");
        let token = token.map(str::to_string);
        let app = &app;
        async move {
            app.send(
                Method::POST,
                &path,
                token.as_deref(),
                Some(&json!({"text": "x"})),
            )
            .await
            .status()
        }
    };
    assert_eq!(create("members", None).await, 400);
    assert_eq!(create("members", Some(&user)).await, 200);
    assert_eq!(create("guests", Some(&user)).await, 400);
    assert_eq!(create("guests", None).await, 200);
    assert_eq!(app.count_rows("members").await, 1);
    assert_eq!(app.count_rows("guests").await, 1);
}

/// Argon2id runs before a write's transaction, once, so a registration, a password
/// change or a batch creating accounts holds up no other write while it hashes: on
/// SQLite, whose one writer takes the writes in turn, they would otherwise all wait for
/// the hash. Hashing is made slow here (16 MiB, 3 passes) so that the create sent during
/// it is answered first, and the hasher's runs (`/metrics`) show nothing was hashed or
/// checked a second time inside the transaction.
#[actix_web::test]
async fn password_hashing_holds_no_write_turn() {
    let Some(app) = spawn_app_with(Backend::Sqlite, |settings| {
        settings.auth.password_hash.memory_kib = 16 * 1024;
        settings.auth.password_hash.iterations = 3;
        // The batch's hashing counts against its time limit: not what is tested here.
        settings.batch.timeout = std::time::Duration::from_secs(120);
    })
    .await
    else {
        return;
    };
    let admin = app.superuser_token("root@example.com").await;
    app.create_collection(
        &admin,
        json!({"name": "notes", "createRule": "", "fields": [{"name": "text", "type": "text"}]}),
    )
    .await;
    let record = app.register("pat@example.com", "password-123").await;
    let (token, _) = app.login("users", "pat@example.com", "password-123").await;
    let change = json!({"oldPassword": "password-123", "password": "new-password-1", "passwordConfirm": "new-password-1"});
    let account = |name: &str| {
        json!({
            "method": "POST",
            "url": "/api/collections/users/records",
            "body": {"email": format!("{name}@example.com"), "password": "password-123", "passwordConfirm": "password-123"}
        })
    };
    // Each write with the hashes and checks it takes.
    let slow_writes = [
        (
            Method::POST,
            "/api/collections/users/records".to_string(),
            None,
            json!({"email": "sam@example.com", "password": "password-123", "passwordConfirm": "password-123"}),
            (1, 0),
        ),
        (
            Method::PATCH,
            path("users", &record["id"]),
            Some(token.as_str()),
            change,
            (1, 1),
        ),
        (
            Method::POST,
            "/api/batch".to_string(),
            None,
            json!({"requests": [account("kim"), account("lou")]}),
            (2, 0),
        ),
    ];
    for (method, target, token, body, runs) in slow_writes {
        let before = hashing_runs(&app).await;
        let slow = async {
            let response = app.send(method.clone(), &target, token, Some(&body)).await;
            let status = response.status();
            let answer = response.text().await.unwrap();
            assert_eq!(status, 200, "{method} {target}: {answer}");
            tokio::time::Instant::now()
        };
        let other = async {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            app.create_record("notes", None, json!({"text": "meanwhile"}))
                .await;
            tokio::time::Instant::now()
        };
        let (slow_done, other_done) = tokio::join!(slow, other);
        assert!(
            other_done < slow_done,
            "the create waited for the password hash of {method} {target}"
        );
        let after = hashing_runs(&app).await;
        assert_eq!(
            (after.0 - before.0, after.1 - before.1),
            runs,
            "(hashes, checks) of {method} {target}"
        );
    }
    // A wrong old password costs its check and nothing more.
    let before = hashing_runs(&app).await;
    let wrong = app
        .send(
            Method::PATCH,
            &path("users", &record["id"]),
            Some(&token),
            Some(&json!({"oldPassword": "not-the-password", "password": "other-password-2", "passwordConfirm": "other-password-2"})),
        )
        .await;
    assert_eq!(wrong.status(), 400);
    let after = hashing_runs(&app).await;
    assert_eq!((after.0 - before.0, after.1 - before.1), (0, 1));
    for email in ["sam@example.com", "kim@example.com", "lou@example.com"] {
        app.login("users", email, "password-123").await;
    }
    app.login("users", "pat@example.com", "new-password-1")
        .await;
}

/// The password hasher's runs so far: (hashes, checks).
async fn hashing_runs(app: &TestApp) -> (u64, u64) {
    let metrics = app.get("/metrics").await.text().await.unwrap();
    let runs = |operation: &str| {
        let prefix = format!("gatehouse_password_hashing_total{{operation=\"{operation}\"}} ");
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(prefix.as_str()))
            .map_or(0, |n| n.parse().unwrap())
    };
    (runs("hash"), runs("verify"))
}

/// Lists that share a total (see `records::totals`) still count every write whose answer
/// came before they were sent, while writes go on.
async fn lists_during_writes_count_every_write_answered_before_them(backend: Backend) {
    let Some((app, _)) = posts_app(backend).await else {
        return;
    };
    let answered = AtomicI64::new(0);
    let writes = async {
        for i in 0..20 {
            app.create_record("posts", None, json!({"title": format!("p{i}")}))
                .await;
            answered.fetch_add(1, Ordering::SeqCst);
        }
    };
    let lister = || async {
        while answered.load(Ordering::SeqCst) < 20 {
            let before = answered.load(Ordering::SeqCst);
            let (status, page) = app
                .get_json("/api/collections/posts/records?filter=views>=0", None)
                .await;
            assert_eq!(status, 200, "{page}");
            let total = page["totalItems"].as_i64().unwrap();
            let after = answered.load(Ordering::SeqCst);
            assert!(
                (before..=after + 1).contains(&total),
                "total {total}: {before} writes answered before the list, {after} after"
            );
        }
    };
    tokio::join!(writes, lister(), lister(), lister(), lister());
    let (_, page) = app.get_json("/api/collections/posts/records", None).await;
    assert_eq!(page["totalItems"], 20);
}
