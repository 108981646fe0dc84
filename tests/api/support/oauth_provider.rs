//! An OAuth2 provider on loopback that speaks the real protocol (authorization code
//! with PKCE S256, client authentication, bearer-token user info), standing in for
//! GitHub, which the tests cannot reach.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use base64::Engine;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

pub const CLIENT_ID: &str = "gatehouse-test-client";
pub const CLIENT_SECRET: &str = "provider-secret-1234";

struct Grant {
    challenge: String,
    redirect_uri: String,
    user: Value,
    used: bool,
}

#[derive(Default)]
struct State {
    user: Value,
    grants: HashMap<String, Grant>,
    tokens: HashMap<String, Value>,
    fail_token: bool,
    fail_userinfo: bool,
}

pub struct OAuthProvider {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    handle: ServerHandle,
}

impl OAuthProvider {
    /// Starts the provider; `user` is who "logs in" at its authorize page.
    pub async fn start(user: Value) -> Self {
        let state = Arc::new(Mutex::new(State {
            user,
            ..State::default()
        }));
        let shared = web::Data::from(state.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(shared.clone())
                .route("/authorize", web::get().to(authorize))
                .route("/token", web::post().to(token))
                .route("/userinfo", web::get().to(userinfo))
        })
        .workers(1)
        .bind("127.0.0.1:0")
        .unwrap();
        let addr = server.addrs()[0];
        let server = server.run();
        let handle = server.handle();
        actix_web::rt::spawn(server);
        Self {
            addr,
            state,
            handle,
        }
    }

    pub fn set_user(&self, user: Value) {
        self.state.lock().unwrap().user = user;
    }

    pub fn fail_token_endpoint(&self, fail: bool) {
        self.state.lock().unwrap().fail_token = fail;
    }

    pub fn fail_userinfo(&self, fail: bool) {
        self.state.lock().unwrap().fail_userinfo = fail;
    }

    /// Gatehouse settings for this provider.
    pub fn settings(&self) -> gatehouse::config::OAuth2Provider {
        gatehouse::config::OAuth2Provider {
            kind: gatehouse::config::OAuth2Kind::Generic,
            client_id: CLIENT_ID.into(),
            client_secret: gatehouse::config::Secret::new(CLIENT_SECRET),
            display_name: "Loopback".into(),
            auth_url: format!("http://{}/authorize", self.addr),
            token_url: format!("http://{}/token", self.addr),
            userinfo_url: format!("http://{}/userinfo", self.addr),
            scopes: vec!["profile".into(), "email".into()],
            id_field: "id".into(),
            email_field: "email".into(),
            name_field: "name".into(),
        }
    }
}

impl Drop for OAuthProvider {
    fn drop(&mut self) {
        drop(self.handle.stop(false));
    }
}

fn s256(verifier: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

fn oauth_error(status: u16, error: &str) -> HttpResponse {
    HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap())
        .json(json!({"error": error, "error_description": format!("test provider: {error}")}))
}

/// The user consents at once: redirect back with a fresh code and the client's state.
async fn authorize(
    state: web::Data<Mutex<State>>,
    query: web::Query<HashMap<String, String>>,
) -> HttpResponse {
    let q = query.into_inner();
    if q.get("client_id").map(String::as_str) != Some(CLIENT_ID)
        || q.get("code_challenge_method").map(String::as_str) != Some("S256")
        || q.get("response_type").map(String::as_str) != Some("code")
    {
        return oauth_error(400, "invalid_request");
    }
    let code = gatehouse::domain::ids::random_alphanumeric(24);
    let redirect_uri = q.get("redirect_uri").cloned().unwrap_or_default();
    let mut state = state.lock().unwrap();
    let user = state.user.clone();
    state.grants.insert(
        code.clone(),
        Grant {
            challenge: q.get("code_challenge").cloned().unwrap_or_default(),
            redirect_uri: redirect_uri.clone(),
            user,
            used: false,
        },
    );
    let mut location = url::Url::parse(&redirect_uri).unwrap();
    location
        .query_pairs_mut()
        .append_pair("code", &code)
        .append_pair("state", q.get("state").map(String::as_str).unwrap_or(""));
    HttpResponse::Found()
        .insert_header(("location", location.to_string()))
        .finish()
}

fn client_authenticated(req: &HttpRequest, form: &HashMap<String, String>) -> bool {
    let basic = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .and_then(|bytes| String::from_utf8(bytes).ok());
    let expected = format!("{CLIENT_ID}:{CLIENT_SECRET}");
    basic.as_deref() == Some(expected.as_str())
        || (form.get("client_id").map(String::as_str) == Some(CLIENT_ID)
            && form.get("client_secret").map(String::as_str) == Some(CLIENT_SECRET))
}

async fn token(
    req: HttpRequest,
    state: web::Data<Mutex<State>>,
    form: web::Form<HashMap<String, String>>,
) -> HttpResponse {
    let form = form.into_inner();
    let mut state = state.lock().unwrap();
    if state.fail_token {
        return oauth_error(500, "server_error");
    }
    if !client_authenticated(&req, &form) {
        return oauth_error(401, "invalid_client");
    }
    if form.get("grant_type").map(String::as_str) != Some("authorization_code") {
        return oauth_error(400, "unsupported_grant_type");
    }
    let code = form.get("code").cloned().unwrap_or_default();
    let verifier = form.get("code_verifier").cloned().unwrap_or_default();
    let redirect_uri = form.get("redirect_uri").cloned().unwrap_or_default();
    let Some(grant) = state.grants.get_mut(&code) else {
        return oauth_error(400, "invalid_grant");
    };
    if grant.used || grant.redirect_uri != redirect_uri || s256(&verifier) != grant.challenge {
        grant.used = true;
        return oauth_error(400, "invalid_grant");
    }
    grant.used = true;
    let user = grant.user.clone();
    let access_token = gatehouse::domain::ids::random_alphanumeric(32);
    state.tokens.insert(access_token.clone(), user);
    HttpResponse::Ok().json(json!({
        "access_token": access_token,
        "token_type": "bearer",
        "expires_in": 3600,
    }))
}

async fn userinfo(req: HttpRequest, state: web::Data<Mutex<State>>) -> HttpResponse {
    let state = state.lock().unwrap();
    if state.fail_userinfo {
        return oauth_error(500, "server_error");
    }
    let token = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    match state.tokens.get(token) {
        Some(user) => HttpResponse::Ok().json(user),
        None => oauth_error(401, "invalid_token"),
    }
}
