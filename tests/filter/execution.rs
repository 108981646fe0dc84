//! Each operator, any/all, relation paths, request values, macros, escaping and
//! injection attempts, checked by the exact ids a real query returns.

use serde_json::json;

use crate::on_both_backends;
use crate::support::{check, guest, superuser, user, Backend, FixtureDb};

const ALL: &[&str] = &["p1", "p2", "p3", "p4"];
const NONE: &[&str] = &[];

async fn operators(backend: Backend) {
    let Some(db) = FixtureDb::open(backend, "operators").await else {
        return;
    };
    let cases: &[(&str, &[&str])] = &[
        (r#"title = "go go""#, &["p3"]),
        (r#"title != "go go""#, &["p1", "p2", "p4"]),
        ("views > 5", &["p1", "p3"]),
        ("views >= 5", &["p1", "p3", "p4"]),
        ("views < 5", &["p2"]),
        ("views <= 5", &["p2", "p4"]),
        ("views = 25.5", &["p3"]),
        ("views = '10'", &["p1"]),
        ("views = 'ten'", NONE),
        ("views != 'ten'", ALL),
        (r#"title ~ "rust""#, &["p1"]),
        (r#"title ~ "RUST""#, &["p1"]),
        (r#"title !~ "go""#, &["p1", "p2", "p4"]),
        ("title ~ 'hello' && title ~ 'rust'", &["p1"]),
        ("title:lower = 'hello rust'", &["p1"]),
        ("author.name:lower = 'bob'", &["p2"]),
        ("published = true", &["p1", "p3"]),
        ("published = false", &["p2", "p4"]),
        ("published != true", &["p2", "p4"]),
        ("published = 1", &["p1", "p3"]),
        ("true = published", &["p1", "p3"]),
        (r#"status = """#, &["p4"]),
        (r#"status != """#, &["p1", "p2", "p3"]),
        ("status = null", &["p4"]),
        ("null = status", &["p4"]),
        ("'' = ''", ALL),
        ("1 = 1", ALL),
        ("1 = 2", NONE),
        ("1 < 2 && 'a' != 'b'", ALL),
        ("title = id", NONE),
        ("title != id", ALL),
        ("created > '2024-01-31'", &["p2", "p3"]),
        ("created <= '2024-01-10 10:00:00.000Z'", &["p1", "p4"]),
        // -1 and decimals as literals
        ("views > -1 && views < 10.5", &["p1", "p2", "p4"]),
    ];
    check(&db, "posts", &guest(), cases).await;
}

async fn precedence_and_comments(backend: Backend) {
    let Some(db) = FixtureDb::open(backend, "precedence_and_comments").await else {
        return;
    };
    let cases: &[(&str, &[&str])] = &[
        (
            "views > 20 || published = true && title ~ 'hello'",
            &["p1", "p3"],
        ),
        (
            "(views > 20 || published = true) && title ~ 'hello'",
            &["p1"],
        ),
        (
            "title ~ 'hello' && published = true || views > 20",
            &["p1", "p3"],
        ),
        ("((((views > 20))))", &["p3"]),
        (
            "views > 20 // the popular ones\n|| views = 0",
            &["p2", "p3"],
        ),
        ("// only a comment first\nviews = 0", &["p2"]),
    ];
    check(&db, "posts", &guest(), cases).await;
}

async fn like_escaping(backend: Backend) {
    let Some(db) = FixtureDb::open(backend, "like_escaping").await else {
        return;
    };
    let cases: &[(&str, &[&str])] = &[
        // an explicit % is a wildcard and nothing is wrapped
        ("title ~ '100%'", &["p2"]),
        ("title ~ '%thing'", &["p2"]),
        ("title ~ '%sure'", NONE),
        // without %, _ and % are literal
        ("title ~ '_'", &["p2"]),
        ("title ~ 'e_t'", &["p2"]),
        ("title ~ 'e t'", NONE),
        ("title ~ 's_r'", NONE),
        (r"title ~ 'o\%'", NONE),
        // quotes and backslashes from the fixture
        (r#"title ~ "O'Reilly""#, &["p4"]),
        (r#"title ~ 'O\'Reilly'"#, &["p4"]),
        (r#"title ~ '"quotes"'"#, &["p4"]),
        (r#"title ~ "\"quotes\"""#, &["p4"]),
        (r"title ~ ' \ '", &["p4"]),
        (r"title ~ '\ b'", &["p4"]),
        (r"title ~ '%\ b'", NONE),
        (r"title ~ '%\ back'", &["p4"]),
        (r#"title = 'O\'Reilly "quotes" \ back'"#, &["p4"]),
        // a column as the pattern; an empty one matches everything ('%%')
        ("title ~ status", &["p4"]),
        ("'Hello Rust!' ~ title", &["p1"]),
    ];
    check(&db, "posts", &guest(), cases).await;
}

async fn multi_valued(backend: Backend) {
    let Some(db) = FixtureDb::open(backend, "multi_valued").await else {
        return;
    };
    let cases: &[(&str, &[&str])] = &[
        // :each over a multiple select: ?op any item, plain op every item
        ("labels:each ?= 'a'", &["p1", "p4"]),
        ("labels:each = 'b'", &["p3"]),
        ("labels:each != 'a'", &["p3"]),
        ("labels:each ?!= 'a'", &["p1", "p2", "p3"]),
        ("labels:each ?~ 'B'", &["p1", "p3"]),
        ("labels:each !~ 'a'", &["p3"]),
        ("labels:each ?!~ 'a'", &["p1", "p3"]),
        ("labels:length = 2", &["p1"]),
        ("labels:length = 0", &["p2"]),
        ("tags:length > 1", &["p1", "p4"]),
        ("status:length = 1", &["p1", "p2", "p3"]),
        // the raw column is its JSON text, as in PocketBase
        ("labels ~ 'a'", &["p1", "p4"]),
        (r#"labels = '["a","b"]'"#, &["p1"]),
        ("labels = '[]'", &["p2"]),
        ("labels ?= 'a'", NONE),
        // multiple relation: any / all, missing related records count as NULL
        ("tags.name ?= 'rust'", &["p1", "p4"]),
        ("tags.name = 'rust'", &["p4"]),
        ("tags.weight > 1", &["p3"]),
        ("tags.weight ?> 2", &["p1"]),
        ("tags.weight ?< 2", &["p1", "p4"]),
        ("tags.weight ?<= 1", &["p1", "p4"]),
        ("tags.weight ?>= 1 && tags.name ?= 'sql'", &["p1"]),
        // an id without a record joins nothing: NULL
        ("tags.id ?= 'missing'", NONE),
        ("tags.name ?!= 'rust'", &["p1", "p2", "p3", "p4"]),
        ("tags.name != 'rust'", &["p3"]),
        // multiple relation then single relation
        ("reviewers.team.name ?= 'Blue'", &["p1", "p4"]),
        ("reviewers.verified = true", &["p3"]),
        ("reviewers.age ?> 35", &["p1"]),
        // two multi-valued sides; two empty lists compare NULL with NULL, and
        // PocketBase's COALESCE(x, '') makes those equal
        ("tags.name ?= labels:each", &["p2"]),
        ("reviewers.id ?= @collection.users.id", &["p1", "p3", "p4"]),
    ];
    check(&db, "posts", &guest(), cases).await;
}

async fn relations(backend: Backend) {
    let Some(db) = FixtureDb::open(backend, "relations").await else {
        return;
    };
    let cases: &[(&str, &[&str])] = &[
        ("author = ''", &["p3"]),
        ("author = 'u1'", &["p1"]),
        ("author.id = 'u1'", &["p1"]),
        ("author.name = 'Alice'", &["p1"]),
        ("author.name ~ 'o'", &["p2", "p4"]),
        ("author.name = ''", &["p3"]),
        ("author.name != ''", &["p1", "p2", "p4"]),
        ("author.age >= 30", &["p1", "p4"]),
        ("author.team.name = 'Red'", &["p1"]),
        ("author.team.name = 'Blue' || title ~ 'go'", &["p2", "p3"]),
        ("author.team = author.team", &["p1", "p2", "p3", "p4"]),
        ("views > 1 && author.role = 'member'", &["p4"]),
        // back relations
        ("comments_via_post.likes ?> 4", &["p3"]),
        ("comments_via_post.text ?= 'nice'", &["p1"]),
        ("comments_via_post.likes > 0", &["p3"]),
        ("comments_via_post.id = ''", &["p2", "p4"]),
        ("comments_via_post.post.title ?~ 'hello'", &["p1"]),
        // auth email only where visible, hidden fields refused
        ("author.email = 'a@x.io'", &["p1"]),
        ("author.email = 'b@x.io'", NONE),
    ];
    check(&db, "posts", &guest(), cases).await;
    let refused: &[(&str, &[&str])] = &[("author.secret = 's1'", NONE)];
    let err = db.ids("posts", refused[0].0, &guest()).await.unwrap_err();
    assert!(err.contains("non-filterable field \"secret\""), "{err}");
    let as_superuser: &[(&str, &[&str])] = &[
        ("author.secret = 's1'", &["p1"]),
        ("author.email = 'b@x.io'", &["p2"]),
    ];
    check(&db, "posts", &superuser(), as_superuser).await;
    let users: &[(&str, &[&str])] = &[
        ("posts_via_author.views ?> 20", NONE),
        ("posts_via_author.title ?~ 'rust'", &["u1"]),
        ("posts_via_reviewers.title ?~ 'go'", &["u1"]),
        ("posts_via_reviewers.id ?= 'p1'", &["u2", "u3"]),
        ("team.name = 'Red' || age < 25", &["u1", "u2"]),
    ];
    check(&db, "users", &guest(), users).await;
}

async fn collection_joins(backend: Backend) {
    let Some(db) = FixtureDb::open(backend, "collection_joins").await else {
        return;
    };
    let cases: &[(&str, &[&str])] = &[
        ("@collection.tags.name ?= 'go'", ALL),
        ("@collection.tags.name ?= 'java'", NONE),
        ("@collection.tags.weight ?> 2 && views > 20", &["p3"]),
        // without an alias (or with the same one) both conditions see the same row
        (
            "@collection.comments.post ?= id && @collection.comments.likes ?> 4",
            &["p3"],
        ),
        (
            "@collection.comments:a.post ?= id && @collection.comments:b.likes ?> 4",
            &["p1", "p3"],
        ),
        // plain operators need every row of the collection to match
        ("@collection.tags.weight > 0", ALL),
        ("@collection.tags.weight > 1", NONE),
    ];
    check(&db, "posts", &guest(), cases).await;
}

async fn request_auth(backend: Backend) {
    let Some(db) = FixtureDb::open(backend, "request_auth").await else {
        return;
    };
    let as_guest: &[(&str, &[&str])] = &[
        (r#"@request.auth.id = """#, ALL),
        (r#"@request.auth.id != """#, NONE),
        ("@request.auth.id = null", ALL),
        ("author = @request.auth.id", &["p3"]),
        ("@request.auth.team.name = 'Red'", NONE),
        ("@request.auth.verified = true", NONE),
        ("@request.method = 'GET'", ALL),
        ("@request.context = 'default'", ALL),
        ("@request.query.page = null", ALL),
    ];
    check(&db, "posts", &guest(), as_guest).await;
    let as_alice: &[(&str, &[&str])] = &[
        (r#"@request.auth.id != """#, ALL),
        ("author = @request.auth.id", &["p1"]),
        ("@request.auth.id = author.id", &["p1"]),
        (
            "@request.auth.collectionName = 'users' && views = 0",
            &["p2"],
        ),
        ("@request.auth.email = 'a@x.io'", ALL),
        ("@request.auth.verified = true && views > 20", &["p3"]),
        ("@request.auth.role = 'admin' || published = true", ALL),
        ("@request.auth.team.name = 'Red'", ALL),
        ("@request.auth.age > 35", NONE),
        ("@request.auth.secret = 's1'", ALL),
        ("@request.auth.nope = null", ALL),
        ("reviewers.id ?= @request.auth.id", &["p3", "p4"]),
        ("@request.auth.posts_via_author.id ?= id", &["p1"]),
    ];
    check(&db, "posts", &user("u1"), as_alice).await;
    let as_bob: &[(&str, &[&str])] = &[
        (
            "@request.auth.role = 'admin' || published = true",
            &["p1", "p3"],
        ),
        ("@request.auth.team.name = 'Red'", NONE),
    ];
    check(&db, "posts", &user("u2"), as_bob).await;
}

async fn request_body(backend: Backend) {
    let Some(db) = FixtureDb::open(backend, "request_body").await else {
        return;
    };
    let mut request = user("u1");
    request.method = "PATCH".into();
    request.body = json!({
        "views": "10", "title": "Hello Rust", "labels": ["z", "y"], "author": "u2",
        "tags": ["g1", "g2"], "meta": {"k": 1}
    })
    .as_object()
    .unwrap()
    .clone();
    let cases: &[(&str, &[&str])] = &[
        ("@request.body.views = 10", ALL),
        ("@request.body.views:isset = true", ALL),
        ("@request.body.status:isset = true", NONE),
        ("@request.body.views:changed = true", &["p2", "p3", "p4"]),
        ("@request.body.title:changed = false", &["p1"]),
        ("@request.body.status:changed = false", ALL),
        ("@request.body.labels:each ?= 'z'", ALL),
        ("@request.body.labels:each = 'z'", NONE),
        ("@request.body.labels:length > 1", ALL),
        ("@request.body.title:lower = 'hello rust'", ALL),
        ("@request.body.author.name = 'bob'", ALL),
        ("@request.body.tags.name ?= 'go'", ALL),
        ("@request.body.tags.name = 'go'", NONE),
        ("@request.body.meta.k = 1", ALL),
        ("@request.body.meta.k = null", NONE),
        ("@request.body.unknown = null", ALL),
        ("@request.method = 'PATCH' && id = 'p1'", &["p1"]),
    ];
    check(&db, "posts", &request, cases).await;
}

async fn macros_with_injected_clock(backend: Backend) {
    let Some(db) = FixtureDb::open(backend, "macros_with_injected_clock").await else {
        return;
    };
    // now = 2024-02-01 12:00:00Z
    let cases: &[(&str, &[&str])] = &[
        ("created < @now", &["p1", "p2", "p4"]),
        ("created >= @todayStart && created <= @todayEnd", &["p2"]),
        ("created >= @monthStart && created <= @monthEnd", &["p2"]),
        ("created > @yesterday", &["p2", "p3"]),
        ("created > @tomorrow", &["p3"]),
        ("created < @yearStart", &["p4"]),
        ("created > @yearEnd", NONE),
        ("@year = 2024 && views > 20", &["p3"]),
        (
            "@month = 2 && @day = 1 && @hour = 12 && @minute = 0 && @second = 0",
            ALL,
        ),
        ("@weekday = 4", ALL),
    ];
    check(&db, "posts", &guest(), cases).await;
}

async fn json_fields(backend: Backend) {
    let Some(db) = FixtureDb::open(backend, "json_fields").await else {
        return;
    };
    let cases: &[(&str, &[&str])] = &[
        ("meta.score > 6", &["p4"]),
        ("meta.score = 5", &["p1"]),
        ("meta.score = '7'", &["p3"]),
        ("meta.flag = true", &["p3"]),
        ("meta.name ~ 'fir'", &["p1"]),
        ("meta.list.0 = 'x'", &["p1"]),
        ("meta = null", &["p2"]),
        ("meta != null", &["p1", "p3", "p4"]),
        ("meta.missing = null", ALL),
        ("meta ~ 'score'", &["p1", "p3", "p4"]),
        ("meta.name:lower = 'first'", &["p1"]),
    ];
    check(&db, "posts", &guest(), cases).await;
}

async fn injection_attempts(backend: Backend) {
    let Some(db) = FixtureDb::open(backend, "injection_attempts").await else {
        return;
    };
    let harmless: &[(&str, &[&str])] = &[
        (r#"title = "'; DROP TABLE posts; --""#, NONE),
        (r#"title = 'x" OR 1=1 --'"#, NONE),
        (r#"title ~ "') OR ('1'='1""#, NONE),
        (r#"@request.query.q = "1' OR '1'='1""#, NONE),
        ("meta.a = 'x'", NONE),
    ];
    check(&db, "posts", &guest(), harmless).await;
    for refused in [
        "id) OR 1=1 --",
        "title = 'a'; DROP TABLE posts",
        "title = 1 OR 1 = 1",
        "\"posts\".\"id\" = 'p1'",
        "posts.id = 'p1'",
        "id; DROP TABLE posts = 1",
        "title` = 1",
        "@collection.posts;DROP.id = 1",
        "@request.auth.id) OR (1 = 1",
        "meta.a'b = 1",
        "nope = 1",
        "author.nope = 1",
        "@collection.nope.id = 1",
        "@something = 1",
        "title:nope = 1",
        "title:isset = true",
    ] {
        let result = db.ids("posts", refused, &guest()).await;
        assert!(
            result.is_err(),
            "{refused:?} should be refused, got {result:?}"
        );
        assert!(
            !result.unwrap_err().starts_with("query failed"),
            "{refused:?}"
        );
    }
    // the tables survived
    check(&db, "posts", &guest(), &[("id != ''", ALL)]).await;
}

async fn create_rule_on_candidate_row(backend: Backend) {
    let Some(db) = FixtureDb::open(backend, "create_rule_on_candidate_row").await else {
        return;
    };
    let rule = r#"@request.auth.id != "" && author = @request.auth.id && tags:length <= 2"#;
    let record = json!({"id": "new", "title": "x", "author": "u1", "tags": ["g1"]});
    assert!(db.candidate_passes(rule, record.clone(), &user("u1")).await);
    assert!(!db.candidate_passes(rule, record.clone(), &user("u2")).await);
    assert!(!db.candidate_passes(rule, record, &guest()).await);
    let related = "author.team.name = 'Red' && meta.a = 1 && published = false";
    let record = json!({"author": "u1", "meta": {"a": 1}});
    assert!(db.candidate_passes(related, record, &guest()).await);
}

async fn sorting(backend: Backend) {
    let Some(db) = FixtureDb::open(backend, "sorting").await else {
        return;
    };
    assert_eq!(
        db.sorted_posts("-views").await.unwrap(),
        ["p3", "p1", "p4", "p2"]
    );
    assert_eq!(
        db.sorted_posts("+views").await.unwrap(),
        ["p2", "p4", "p1", "p3"]
    );
    assert_eq!(
        db.sorted_posts("published,-id").await.unwrap(),
        ["p4", "p2", "p3", "p1"]
    );
    // NULL (no author) first ascending; binary order puts uppercase first
    assert_eq!(
        db.sorted_posts("author.name").await.unwrap(),
        ["p3", "p1", "p4", "p2"]
    );
    assert_eq!(
        db.sorted_posts("-author.name").await.unwrap(),
        ["p2", "p4", "p1", "p3"]
    );
    assert_eq!(
        db.sorted_posts("author.team.name,id").await.unwrap(),
        ["p3", "p4", "p2", "p1"]
    );
    assert_eq!(
        db.sorted_posts("title:lower").await.unwrap(),
        ["p2", "p3", "p1", "p4"]
    );
    assert_eq!(
        db.sorted_posts("-tags:length,id").await.unwrap(),
        ["p1", "p4", "p3", "p2"]
    );
    let mut random = db.sorted_posts("@random").await.unwrap();
    random.sort();
    assert_eq!(random, ["p1", "p2", "p3", "p4"]);
    for refused in ["tags.name", "nope", "@request.auth.id", "author.secret", ""] {
        assert!(db.sorted_posts(refused).await.is_err(), "{refused:?}");
    }
}

async fn rules_are_trusted(backend: Backend) {
    let Some(db) = FixtureDb::open(backend, "rules_are_trusted").await else {
        return;
    };
    // a rule may read hidden fields and every email; a guest's filter may not
    assert_eq!(
        db.rule_ids("posts", "author.secret = 's1'", &guest())
            .await
            .unwrap(),
        ["p1"]
    );
    assert_eq!(
        db.rule_ids("posts", "author.email = 'b@x.io'", &guest())
            .await
            .unwrap(),
        ["p2"]
    );
    assert!(db
        .ids("posts", "author.secret = 's1'", &guest())
        .await
        .is_err());
    assert_eq!(
        db.ids("posts", "author.email = 'b@x.io'", &guest())
            .await
            .unwrap(),
        NONE
    );
}

async fn related_list_rules_limit_client_filters(backend: Backend) {
    let Some(mut db) = FixtureDb::open(backend, "related_list_rules_limit_client_filters").await
    else {
        return;
    };
    db.registry.set_list_rule("users", Some("verified = true"));
    db.registry.set_list_rule("teams", None);
    let cases: &[(&str, &[&str])] = &[
        // bob is not verified: invisible through relations, as if missing
        ("author.name ~ 'o'", &["p4"]),
        ("author.name = ''", &["p2", "p3"]),
        ("reviewers.name ?= 'bob'", NONE),
        ("@collection.users.name ?= 'bob'", NONE),
        ("@collection.users.name ?= 'Carol' && views = 0", &["p2"]),
        // the stored id needs no join
        ("author.id = 'u2'", &["p2"]),
    ];
    check(&db, "posts", &guest(), cases).await;
    let err = db
        .ids("posts", "author.team.name = 'Red'", &guest())
        .await
        .unwrap_err();
    assert!(
        err.contains("only superusers can filter through collection \"teams\""),
        "{err}"
    );
    // rules and superusers are not limited
    assert_eq!(
        db.rule_ids("posts", "author.name ~ 'o'", &guest())
            .await
            .unwrap(),
        ["p2", "p4"]
    );
    assert_eq!(
        db.rule_ids("posts", "author.team.name = 'Red'", &guest())
            .await
            .unwrap(),
        ["p1"]
    );
    assert_eq!(
        db.ids("posts", "author.name ~ 'o'", &superuser())
            .await
            .unwrap(),
        ["p2", "p4"]
    );
    // a list rule can depend on the request
    db.registry
        .set_list_rule("users", Some("id = @request.auth.id"));
    assert_eq!(
        db.ids("posts", "author.name != ''", &user("u2"))
            .await
            .unwrap(),
        ["p2"]
    );
    assert_eq!(
        db.ids("posts", "author.name != ''", &user("u1"))
            .await
            .unwrap(),
        ["p1"]
    );
    // and can itself walk relations
    db.registry.set_list_rule("teams", Some(""));
    db.registry
        .set_list_rule("users", Some("team.name = 'Blue'"));
    assert_eq!(
        db.ids("posts", "author.name != ''", &guest())
            .await
            .unwrap(),
        ["p2"]
    );
}

on_both_backends!(
    rules_are_trusted,
    related_list_rules_limit_client_filters,
    operators,
    precedence_and_comments,
    like_escaping,
    multi_valued,
    relations,
    collection_joins,
    request_auth,
    request_body,
    macros_with_injected_clock,
    json_fields,
    injection_attempts,
    create_rule_on_candidate_row,
    sorting,
);
