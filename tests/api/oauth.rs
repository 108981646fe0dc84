use serde_json::{json, Value};

use crate::on_both_backends;
use crate::support::oauth_provider::OAuthProvider;
use crate::support::{spawn_app_with, Backend, TestApp};

on_both_backends!(
    first_login_creates_a_verified_account_and_later_logins_find_it,
    a_matching_verified_email_links_the_existing_account,
    provider_failures_and_reused_codes_are_clear_errors_without_a_session,
);

const REDIRECT: &str = "http://127.0.0.1:1/oauth-callback";

async fn app_with(backend: Backend, provider: &OAuthProvider) -> Option<TestApp> {
    let settings = provider.settings();
    spawn_app_with(backend, move |s| {
        s.auth.oauth2.providers.insert("loopback".into(), settings);
    })
    .await
}

/// What a browser does: read auth-methods, visit the provider's page, come back with a
/// code. Returns (code, codeVerifier).
async fn authorize(app: &TestApp) -> (String, String) {
    let methods: Value = app
        .get("/api/collections/users/auth-methods")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(methods["oauth2"]["enabled"], true);
    let provider = &methods["oauth2"]["providers"][0];
    assert_eq!(provider["name"], "loopback");
    assert_eq!(provider["displayName"], "Loopback");
    assert_eq!(provider["codeChallengeMethod"], "S256");
    let auth_url = format!(
        "{}{}",
        provider["authURL"].as_str().unwrap(),
        urlencode(REDIRECT)
    );
    let redirect = app.client.get(&auth_url).send().await.unwrap();
    assert_eq!(redirect.status(), 302);
    let location = url::Url::parse(redirect.headers()["location"].to_str().unwrap()).unwrap();
    let query: std::collections::HashMap<_, _> = location.query_pairs().into_owned().collect();
    assert_eq!(
        query["state"],
        provider["state"].as_str().unwrap(),
        "state round-trips"
    );
    (
        query["code"].clone(),
        provider["codeVerifier"].as_str().unwrap().to_string(),
    )
}

fn urlencode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

async fn finish(app: &TestApp, code: &str, verifier: &str) -> reqwest::Response {
    app.post_json(
        "/api/collections/users/auth-with-oauth2",
        &json!({"provider": "loopback", "code": code, "codeVerifier": verifier, "redirectURL": REDIRECT, "createData": {}}),
    )
    .await
}

async fn first_login_creates_a_verified_account_and_later_logins_find_it(backend: Backend) {
    let provider =
        OAuthProvider::start(json!({"id": 4242, "email": "Octo@Example.com", "name": "Octo Cat"}))
            .await;
    let Some(app) = app_with(backend, &provider).await else {
        return;
    };

    let (code, verifier) = authorize(&app).await;
    let response = finish(&app, &code, &verifier).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert!(body["token"].as_str().unwrap().contains('.'));
    assert_eq!(body["record"]["email"], "octo@example.com");
    assert_eq!(body["record"]["name"], "Octo Cat");
    assert_eq!(body["record"]["verified"], true);
    assert_eq!(body["meta"]["isNew"], true);
    assert_eq!(body["meta"]["id"], "4242");
    let id = body["record"]["id"].clone();

    let (code, verifier) = authorize(&app).await;
    let again: Value = finish(&app, &code, &verifier).await.json().await.unwrap();
    assert_eq!(again["record"]["id"], id);
    assert_eq!(again["meta"]["isNew"], false);
    assert_eq!(app.count_rows("users").await, 1);
    assert_eq!(app.count_rows("_externalAuths").await, 1);
}

async fn a_matching_verified_email_links_the_existing_account(backend: Backend) {
    let provider =
        OAuthProvider::start(json!({"id": "u-77", "email": "pat@example.com", "name": "Pat"}))
            .await;
    let Some(app) = app_with(backend, &provider).await else {
        return;
    };
    let existing = app.register("pat@example.com", "password-123").await;
    assert_eq!(existing["verified"], false);

    let (code, verifier) = authorize(&app).await;
    let body: Value = finish(&app, &code, &verifier).await.json().await.unwrap();
    assert_eq!(body["record"]["id"], existing["id"]);
    assert_eq!(body["record"]["verified"], true);
    assert_eq!(body["meta"]["isNew"], false);
    assert_eq!(app.count_rows("users").await, 1);
    // The password still works too.
    app.login("users", "pat@example.com", "password-123").await;

    // A provider that says the email is not verified does not get to take it over.
    provider.set_user(json!({"id": "u-78", "email": "pat@example.com", "email_verified": false}));
    let (code, verifier) = authorize(&app).await;
    let response = finish(&app, &code, &verifier).await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["data"]["email"]["code"], "validation_not_unique");
}

async fn provider_failures_and_reused_codes_are_clear_errors_without_a_session(backend: Backend) {
    let provider = OAuthProvider::start(json!({"id": 9, "email": "quin@example.com"})).await;
    let Some(app) = app_with(backend, &provider).await else {
        return;
    };

    provider.fail_token_endpoint(true);
    let (code, verifier) = authorize(&app).await;
    let failed = finish(&app, &code, &verifier).await;
    assert_eq!(failed.status(), 400);
    let body: Value = failed.json().await.unwrap();
    assert_eq!(body["code"], "oauth2_failed");
    assert!(!body["message"]
        .as_str()
        .unwrap()
        .contains("provider-secret"));
    provider.fail_token_endpoint(false);

    provider.fail_userinfo(true);
    let (code, verifier) = authorize(&app).await;
    let failed = finish(&app, &code, &verifier).await;
    assert_eq!(failed.status(), 400);
    assert_eq!(
        failed.json::<Value>().await.unwrap()["code"],
        "oauth2_failed"
    );
    provider.fail_userinfo(false);

    let (code, _) = authorize(&app).await;
    let wrong_verifier = finish(&app, &code, "x".repeat(43).as_str()).await;
    assert_eq!(wrong_verifier.status(), 400);

    let (code, verifier) = authorize(&app).await;
    assert_eq!(finish(&app, &code, &verifier).await.status(), 200);
    let reused = finish(&app, &code, &verifier).await;
    assert_eq!(reused.status(), 400);
    assert_eq!(
        reused.json::<Value>().await.unwrap()["code"],
        "oauth2_failed"
    );

    let unknown = app
        .post_json(
            "/api/collections/users/auth-with-oauth2",
            &json!({"provider": "nope", "code": "c", "codeVerifier": "v", "redirectURL": REDIRECT}),
        )
        .await;
    assert_eq!(unknown.status(), 400);
    assert_eq!(
        unknown.json::<Value>().await.unwrap()["data"]["provider"]["code"],
        "validation_invalid_value"
    );

    assert_eq!(
        app.count_rows("users").await,
        1,
        "only the successful login created an account"
    );
    assert_eq!(
        app.count_rows("_sessions").await,
        1,
        "failed logins opened no session"
    );
}
