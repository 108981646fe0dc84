use base64::Engine;
use reqwest::Method;
use serde_json::{json, Value};

use crate::on_both_backends;
use crate::support::accounts::token_payload;
use crate::support::{spawn_app, spawn_app_with, Backend};

on_both_backends!(
    register_then_login_gives_an_sdk_readable_token,
    registration_errors_name_each_field_and_write_nothing,
    malformed_and_oversized_bodies_are_refused,
    wrong_credentials_are_one_error_for_every_case,
    tokens_are_accepted_raw_or_as_bearer_and_bad_ones_are_guests,
    refresh_issues_a_new_token_and_retires_the_old_one,
    refresh_with_another_collections_token_is_forbidden,
    logout_ends_only_the_current_session,
    logout_all_ends_every_session,
    sessions_lists_the_callers_sessions,
    admin_api_is_for_superusers_only,
    superuser_tokens_mark_the_superuser_collection,
    cookie_sessions_need_a_trusted_origin_to_change_state,
    login_is_rate_limited_per_ip_with_retry_after,
    unverified_accounts_can_be_refused,
    auth_methods_describe_password_login,
);

async fn register_then_login_gives_an_sdk_readable_token(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let record = app.register("Alice@Example.com", "password-123").await;
    let id = record["id"].as_str().unwrap();
    assert_eq!(id.len(), 15);
    assert_eq!(record["collectionName"], "users");
    assert_eq!(record["collectionId"], "_pb_users_auth_");
    assert_eq!(record["verified"], false);
    assert!(record.get("password").is_none());
    assert!(record.get("tokenKey").is_none());
    assert!(record["created"].as_str().unwrap().ends_with('Z'));

    let response = app
        .post_json(
            "/api/collections/users/auth-with-password",
            &json!({"identity": "alice@example.com", "password": "password-123"}),
        )
        .await;
    assert_eq!(response.status(), 200);
    let cookie = response
        .headers()
        .get("set-cookie")
        .expect("an auth cookie")
        .to_str()
        .unwrap()
        .to_string();
    assert!(cookie.starts_with("gatehouse_auth="), "{cookie}");
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    assert!(cookie.contains("SameSite=Lax"), "{cookie}");
    assert!(
        !cookie.contains("Secure"),
        "plain HTTP gets no Secure flag: {cookie}"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["record"]["id"], id);
    assert_eq!(
        body["record"]["email"], "alice@example.com",
        "the owner sees the email"
    );
    assert!(body["record"].get("password").is_none());

    let claims = token_payload(body["token"].as_str().unwrap());
    assert_eq!(claims["type"], "auth");
    assert_eq!(claims["id"], id);
    assert_eq!(claims["collectionId"], "_pb_users_auth_");
    assert_eq!(claims["refreshable"], true);
    assert!(claims["exp"].as_i64().unwrap() > chrono::Utc::now().timestamp());
    assert_eq!(claims["sid"].as_str().unwrap().len(), 15);
}

async fn registration_errors_name_each_field_and_write_nothing(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let before = app.count_rows("users").await;

    let response = app
        .post_json(
            "/api/collections/users/records",
            &json!({"email": "not-an-email", "password": "short", "passwordConfirm": "other"}),
        )
        .await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["message"], "Failed to create record.");
    assert_eq!(body["code"], "validation_failed");
    assert_eq!(body["data"]["email"]["code"], "validation_is_email");
    assert_eq!(
        body["data"]["password"]["code"],
        "validation_min_text_constraint"
    );
    assert_eq!(
        body["data"]["passwordConfirm"]["code"],
        "validation_values_mismatch"
    );

    let missing: Value = app
        .post_json("/api/collections/users/records", &json!({}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(missing["data"]["email"]["code"], "validation_required");
    assert_eq!(missing["data"]["password"]["code"], "validation_required");

    let long: Value = app
        .post_json(
            "/api/collections/users/records",
            &json!({"email": "x@y.co", "password": "p".repeat(257), "passwordConfirm": "p".repeat(257)}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        long["data"]["password"]["code"],
        "validation_max_text_constraint"
    );

    let name: Value = app
        .post_json(
            "/api/collections/users/records",
            &json!({"email": "x@y.co", "password": "password-123", "passwordConfirm": "password-123", "name": "n".repeat(256)}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        name["data"]["name"]["code"],
        "validation_max_text_constraint"
    );

    app.register("taken@example.com", "password-123").await;
    let duplicate = app
        .post_json(
            "/api/collections/users/records",
            &json!({"email": "TAKEN@example.com", "password": "password-123", "passwordConfirm": "password-123"}),
        )
        .await;
    assert_eq!(duplicate.status(), 400);
    let body: Value = duplicate.json().await.unwrap();
    assert_eq!(body["data"]["email"]["code"], "validation_not_unique");

    assert_eq!(
        app.count_rows("users").await,
        before + 1,
        "only the valid registration was written"
    );
}

async fn malformed_and_oversized_bodies_are_refused(backend: Backend) {
    let Some(app) = spawn_app_with(backend, |s| s.server.max_body_bytes = 1024).await else {
        return;
    };
    let malformed = app
        .client
        .post(app.url("/api/collections/users/auth-with-password"))
        .header("content-type", "application/json")
        .body("{\"identity\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), 400);
    let body: Value = malformed.json().await.unwrap();
    assert_eq!(body["code"], "invalid_json");
    assert_eq!(body["data"], json!({}));

    let wrong_type = app
        .post_json(
            "/api/collections/users/auth-with-password",
            &json!({"identity": 5, "password": []}),
        )
        .await;
    assert_eq!(wrong_type.status(), 400);

    let oversized = app
        .post_json(
            "/api/collections/users/records",
            &json!({"email": "big@example.com", "password": "password-123", "passwordConfirm": "password-123", "name": "x".repeat(4096)}),
        )
        .await;
    assert_eq!(oversized.status(), 413);
    let body: Value = oversized.json().await.unwrap();
    assert_eq!(body["code"], "payload_too_large");
    assert_eq!(app.count_rows("users").await, 0);
}

async fn wrong_credentials_are_one_error_for_every_case(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    app.register("bob@example.com", "password-123").await;
    let mut messages = Vec::new();
    for (identity, password) in [
        ("bob@example.com", "wrong-password"),
        ("nobody@example.com", "password-123"),
    ] {
        let response = app
            .post_json(
                "/api/collections/users/auth-with-password",
                &json!({"identity": identity, "password": password}),
            )
            .await;
        assert_eq!(response.status(), 400);
        messages.push(response.json::<Value>().await.unwrap());
    }
    assert_eq!(messages[0]["message"], "Failed to authenticate.");
    assert_eq!(
        messages[0]["code"], messages[1]["code"],
        "no account enumeration"
    );
    assert_eq!(messages[0]["message"], messages[1]["message"]);

    let missing: Value = app
        .post_json("/api/collections/users/auth-with-password", &json!({}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(missing["data"]["identity"]["code"], "validation_required");
    assert_eq!(missing["data"]["password"]["code"], "validation_required");

    let no_collection = app
        .post_json(
            "/api/collections/nope/auth-with-password",
            &json!({"identity": "bob@example.com", "password": "password-123"}),
        )
        .await;
    assert_eq!(no_collection.status(), 404);
}

async fn tokens_are_accepted_raw_or_as_bearer_and_bad_ones_are_guests(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let token = app.user_token("carol@example.com").await;
    let refresh = "/api/collections/users/auth-refresh";

    let raw = app
        .with_token(Method::POST, refresh, &token)
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), 200);
    let new_token = raw.json::<Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string();
    let bearer = app
        .client
        .post(app.url(refresh))
        .bearer_auth(&new_token)
        .send()
        .await
        .unwrap();
    assert_eq!(bearer.status(), 200);
    let current = bearer.json::<Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string();

    // The live token's signature under another payload, while its session is cached.
    let mut claims = token_payload(&current);
    claims["exp"] = json!(claims["exp"].as_i64().unwrap() + 3600);
    let parts: Vec<&str> = current.split('.').collect();
    let payload = base64::engine::general_purpose::STANDARD_NO_PAD.encode(claims.to_string());
    let forged = format!("{}.{payload}.{}", parts[0], parts[2]);

    let mut tampered = new_token.clone();
    tampered.pop();
    for bad in ["garbage", "a.b.c", tampered.as_str(), forged.as_str(), ""] {
        let response = app
            .with_token(Method::POST, refresh, bad)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401, "{bad:?}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["code"], "unauthorized");
    }
    let genuine = app
        .with_token(Method::POST, refresh, &current)
        .send()
        .await
        .unwrap();
    assert_eq!(genuine.status(), 200);
    // A bad token on a public route is a guest, not an error.
    let public = app
        .with_token(
            Method::GET,
            "/api/collections/users/auth-methods",
            "garbage",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(public.status(), 200);
}

async fn refresh_issues_a_new_token_and_retires_the_old_one(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let old = app.user_token("dave@example.com").await;
    let refresh = "/api/collections/users/auth-refresh";
    let response = app
        .with_token(Method::POST, refresh, &old)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let new = body["token"].as_str().unwrap();
    assert_ne!(new, old);
    assert_eq!(body["record"]["email"], "dave@example.com");
    assert_eq!(
        token_payload(new)["sid"],
        token_payload(&old)["sid"],
        "same session"
    );

    let reused = app
        .with_token(Method::POST, refresh, &old)
        .send()
        .await
        .unwrap();
    assert_eq!(reused.status(), 401);
    let again = app
        .with_token(Method::POST, refresh, new)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 200);
}

async fn refresh_with_another_collections_token_is_forbidden(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let token = app.user_token("erin@example.com").await;
    let response = app
        .with_token(
            Method::POST,
            "/api/collections/_superusers/auth-refresh",
            &token,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
}

async fn logout_ends_only_the_current_session(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    app.register("frank@example.com", "password-123").await;
    let (laptop, _) = app
        .login("users", "frank@example.com", "password-123")
        .await;
    let (phone, _) = app
        .login("users", "frank@example.com", "password-123")
        .await;
    let sessions = "/api/collections/users/sessions";

    // Warm the session cache so that revocation must evict it.
    assert_eq!(
        app.with_token(Method::GET, sessions, &laptop)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let logout = app
        .with_token(Method::POST, "/api/collections/users/logout", &laptop)
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), 204);
    assert!(
        logout.headers().get("set-cookie").is_some(),
        "the cookie is cleared"
    );

    for _ in 0..3 {
        let after = app
            .with_token(Method::GET, sessions, &laptop)
            .send()
            .await
            .unwrap();
        assert_eq!(
            after.status(),
            401,
            "a revoked token never authenticates again"
        );
    }
    assert_eq!(
        app.with_token(Method::GET, sessions, &phone)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

async fn logout_all_ends_every_session(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    app.register("gina@example.com", "password-123").await;
    let (first, _) = app.login("users", "gina@example.com", "password-123").await;
    let (second, _) = app.login("users", "gina@example.com", "password-123").await;
    let sessions = "/api/collections/users/sessions";
    assert_eq!(
        app.with_token(Method::GET, sessions, &second)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    let response = app
        .with_token(Method::POST, "/api/collections/users/logout-all", &first)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    for token in [&first, &second] {
        assert_eq!(
            app.with_token(Method::GET, sessions, token)
                .send()
                .await
                .unwrap()
                .status(),
            401
        );
    }
    // The account itself still works.
    let (fresh, _) = app.login("users", "gina@example.com", "password-123").await;
    assert_eq!(
        app.with_token(Method::GET, sessions, &fresh)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

async fn sessions_lists_the_callers_sessions(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    app.register("hank@example.com", "password-123").await;
    let (first, _) = app.login("users", "hank@example.com", "password-123").await;
    let (second, _) = app.login("users", "hank@example.com", "password-123").await;
    let other = app.user_token("ivy@example.com").await;

    let body: Value = app
        .with_token(Method::GET, "/api/collections/users/sessions", &second)
        .header("user-agent", "test-agent/1.0")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let items = body["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{body}");
    let current: Vec<&Value> = items.iter().filter(|s| s["current"] == true).collect();
    assert_eq!(current.len(), 1);
    assert_eq!(current[0]["id"], token_payload(&second)["sid"]);
    assert!(items
        .iter()
        .any(|s| s["id"] == token_payload(&first)["sid"]));
    assert!(items.iter().all(|s| s.get("tokenHash").is_none()));
    assert!(items
        .iter()
        .all(|s| s["id"] != token_payload(&other)["sid"]));
}

async fn admin_api_is_for_superusers_only(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let guest = app.get("/api/admin/status").await;
    assert_eq!(guest.status(), 401);
    assert_eq!(guest.json::<Value>().await.unwrap()["code"], "unauthorized");

    let user = app.user_token("jill@example.com").await;
    let forbidden = app
        .with_token(Method::GET, "/api/admin/status", &user)
        .send()
        .await
        .unwrap();
    assert_eq!(forbidden.status(), 403);
    assert_eq!(
        forbidden.json::<Value>().await.unwrap()["code"],
        "forbidden"
    );

    let admin = app.superuser_token("root@example.com").await;
    let ok = app
        .with_token(Method::GET, "/api/admin/status", &admin)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let body: Value = ok.json().await.unwrap();
    let expected = if backend == Backend::Postgres {
        "postgres"
    } else {
        "sqlite"
    };
    assert_eq!(body["database"], expected);
}

async fn superuser_tokens_mark_the_superuser_collection(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let token = app.superuser_token("admin@example.com").await;
    let claims = token_payload(&token);
    assert_eq!(claims["collectionId"], "pbc_3142635823");
    assert_eq!(claims["type"], "auth");
    let (_, body) = app
        .login("_superusers", "admin@example.com", "superpass-123")
        .await;
    assert_eq!(body["record"]["collectionName"], "_superusers");
    // A user's password does not open the superuser collection.
    app.register("kim@example.com", "password-123").await;
    let response = app
        .post_json(
            "/api/collections/_superusers/auth-with-password",
            &json!({"identity": "kim@example.com", "password": "password-123"}),
        )
        .await;
    assert_eq!(response.status(), 400);
}

async fn cookie_sessions_need_a_trusted_origin_to_change_state(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    app.register("lena@example.com", "password-123").await;
    let response = app
        .post_json(
            "/api/collections/users/auth-with-password",
            &json!({"identity": "lena@example.com", "password": "password-123"}),
        )
        .await;
    let set_cookie = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_string();
    let cookie = set_cookie.split(';').next().unwrap().to_string();

    // Reading with the cookie needs no origin.
    let read = app
        .client
        .get(app.url("/api/collections/users/sessions"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200);

    for (header, value) in [
        ("origin", "https://evil.example"),
        ("referer", "https://evil.example/page"),
    ] {
        let forged = app
            .client
            .post(app.url("/api/collections/users/logout"))
            .header("cookie", &cookie)
            .header(header, value)
            .send()
            .await
            .unwrap();
        assert_eq!(forged.status(), 403, "{header}");
        assert_eq!(forged.json::<Value>().await.unwrap()["code"], "csrf_failed");
    }
    let no_origin = app
        .client
        .post(app.url("/api/collections/users/logout"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(no_origin.status(), 403);

    let same_site = app
        .client
        .post(app.url("/api/collections/users/logout"))
        .header("cookie", &cookie)
        .header("origin", format!("http://{}", app.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(same_site.status(), 204);
}

async fn login_is_rate_limited_per_ip_with_retry_after(backend: Backend) {
    let Some(app) = spawn_app_with(backend, |s| {
        s.auth.rate_limits.login_per_ip = gatehouse::config::RateLimit {
            requests: 3,
            per: std::time::Duration::from_secs(60),
        };
    })
    .await
    else {
        return;
    };
    app.register("mia@example.com", "password-123").await;
    for _ in 0..3 {
        let response = app
            .post_json(
                "/api/collections/users/auth-with-password",
                &json!({"identity": "mia@example.com", "password": "wrong-password"}),
            )
            .await;
        assert_eq!(response.status(), 400);
    }
    let limited = app
        .post_json(
            "/api/collections/users/auth-with-password",
            &json!({"identity": "mia@example.com", "password": "password-123"}),
        )
        .await;
    assert_eq!(limited.status(), 429);
    let retry_after: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=20).contains(&retry_after), "{retry_after}");
    assert_eq!(
        limited.json::<Value>().await.unwrap()["code"],
        "rate_limited"
    );
}

async fn unverified_accounts_can_be_refused(backend: Backend) {
    let Some(app) = spawn_app_with(backend, |s| {
        s.auth.unverified_login = gatehouse::config::UnverifiedLogin::Deny;
    })
    .await
    else {
        return;
    };
    app.register("ned@example.com", "password-123").await;
    let response = app
        .post_json(
            "/api/collections/users/auth-with-password",
            &json!({"identity": "ned@example.com", "password": "password-123"}),
        )
        .await;
    assert_eq!(response.status(), 403);
    assert_eq!(
        response.json::<Value>().await.unwrap()["code"],
        "unverified"
    );
    // Superusers are trusted by whoever created them.
    app.superuser_token("ops@example.com").await;
}

async fn auth_methods_describe_password_login(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let response = app
        .get("/api/collections/users/auth-methods?fields=mfa,otp,password,oauth2")
        .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["password"],
        json!({"enabled": true, "identityFields": ["email"]})
    );
    assert_eq!(body["oauth2"], json!({"enabled": false, "providers": []}));
    assert_eq!(body["mfa"]["enabled"], false);
    assert_eq!(body["otp"]["enabled"], false);
    assert_eq!(
        app.get("/api/collections/nope/auth-methods").await.status(),
        404
    );
}
