//! Account helpers for tests: register, log in, create superusers, decode tokens.

use base64::Engine;
use serde_json::{json, Value};

use gatehouse::actors::database::DbError;
use gatehouse::auth::passwords::PasswordHasher;
use gatehouse::auth::AuthError;

use super::{test_settings, TestApp};

impl TestApp {
    pub async fn post_json(&self, path: &str, body: &Value) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("request sent")
    }

    /// Registers a user and returns the created record.
    pub async fn register(&self, email: &str, password: &str) -> Value {
        let response = self
            .post_json(
                "/api/collections/users/records",
                &json!({"email": email, "password": password, "passwordConfirm": password}),
            )
            .await;
        assert_eq!(response.status(), 200, "registering {email}");
        response.json().await.unwrap()
    }

    /// Logs in to `collection` and returns the token and the whole answer.
    pub async fn login(&self, collection: &str, email: &str, password: &str) -> (String, Value) {
        let response = self
            .post_json(
                &format!("/api/collections/{collection}/auth-with-password"),
                &json!({"identity": email, "password": password}),
            )
            .await;
        assert_eq!(response.status(), 200, "logging in {email}");
        let body: Value = response.json().await.unwrap();
        (body["token"].as_str().unwrap().to_string(), body)
    }

    /// Registers and logs in a user.
    pub async fn user_token(&self, email: &str) -> String {
        self.register(email, "password-123").await;
        self.login("users", email, "password-123").await.0
    }

    /// Creates a superuser the way `gatehouse superuser upsert` does, and logs in.
    pub async fn superuser_token(&self, email: &str) -> String {
        let email_owned = email.to_string();
        self.db
            .transact::<bool, AuthError, _>(move |txn| {
                Box::pin(async move {
                    let hasher = PasswordHasher::new(&test_settings().auth.password_hash)?;
                    gatehouse::auth::service::upsert_superuser(
                        txn,
                        &hasher,
                        &email_owned,
                        "superpass-123",
                    )
                    .await
                })
            })
            .await
            .expect("superuser created");
        self.login("_superusers", email, "superpass-123").await.0
    }

    /// A request carrying `token` as PocketBase's SDK sends it (no `Bearer`).
    pub fn with_token(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
    ) -> reqwest::RequestBuilder {
        self.client
            .request(method, self.url(path))
            .header("authorization", token)
    }

    /// Counts rows of a table through the database actor.
    pub async fn count_rows(&self, table: &str) -> i64 {
        self.query_value(format!("SELECT COUNT(*) FROM \"{table}\""))
            .await
    }

    /// The first column of the first row `sql` returns, read through the database actor.
    pub async fn query_value<T: sea_orm::TryGetable + Send + 'static>(
        &self,
        sql: impl Into<String>,
    ) -> T {
        let sql = sql.into();
        self.db
            .transact::<T, DbError, _>(move |txn| {
                Box::pin(async move {
                    use sea_orm::{ConnectionTrait, Statement};
                    let row = txn
                        .query_one(Statement::from_string(txn.get_database_backend(), sql))
                        .await?
                        .expect("one row");
                    Ok(row.try_get_by_index::<T>(0)?)
                })
            })
            .await
            .unwrap()
    }
}

/// The payload of a JWT, decoded the way the SDK does (`atob`: standard alphabet).
pub fn token_payload(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("a JWT");
    assert!(!payload.contains(['-', '_']), "atob would reject {payload}");
    let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(payload)
        .expect("standard base64");
    serde_json::from_slice(&bytes).expect("JSON claims")
}

impl TestApp {
    /// Sends `body` as JSON with `token` (or as a guest with `None`).
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> reqwest::Response {
        let mut request = self.client.request(method, self.url(path));
        if let Some(token) = token {
            request = request.header("authorization", token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        request.send().await.expect("request sent")
    }

    /// Creates a collection as `admin` and returns its definition.
    pub async fn create_collection(&self, admin: &str, definition: Value) -> Value {
        let response = self
            .send(
                reqwest::Method::POST,
                "/api/collections",
                Some(admin),
                Some(&definition),
            )
            .await;
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        assert_eq!(status, 200, "creating collection: {body}");
        body
    }

    /// Creates `notes` (one text field, `text`) that everyone may list, view and create
    /// in, as the superuser `root@example.com`.
    pub async fn create_open_notes(&self) {
        let admin = self.superuser_token("root@example.com").await;
        self.create_collection(
            &admin,
            serde_json::json!({"name": "notes", "listRule": "", "viewRule": "", "createRule": "",
                               "fields": [{"name": "text", "type": "text"}]}),
        )
        .await;
    }

    /// Creates a record as `token` and returns it (asserting 200).
    pub async fn create_record(&self, collection: &str, token: Option<&str>, body: Value) -> Value {
        let response = self
            .send(
                reqwest::Method::POST,
                &format!("/api/collections/{collection}/records"),
                token,
                Some(&body),
            )
            .await;
        let status = response.status();
        let value: Value = response.json().await.unwrap();
        assert_eq!(status, 200, "creating a {collection} record: {value}");
        value
    }

    /// GETs `path` as `token` and returns status and JSON.
    pub async fn get_json(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        let response = self.send(reqwest::Method::GET, path, token, None).await;
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }
}
