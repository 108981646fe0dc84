//! OAuth2 login (authorization code with PKCE): provider presets, the data
//! `auth-methods` hands to clients, and the server-side code exchange and user lookup.

use oauth2::basic::BasicClient;
use oauth2::{
    AuthUrl, AuthorizationCode, ClientId, ClientSecret, PkceCodeChallenge, PkceCodeVerifier,
    RedirectUrl, TokenResponse, TokenUrl,
};
use serde::Serialize;
use serde_json::Value;

use crate::config::{OAuth2Kind, OAuth2Provider};

/// A configured provider with its preset defaults filled in.
#[derive(Debug, Clone)]
pub struct Provider {
    pub name: String,
    pub display_name: String,
    client_id: String,
    client_secret: String,
    auth_url: String,
    token_url: String,
    userinfo_url: String,
    scopes: Vec<String>,
    id_field: String,
    email_field: String,
    name_field: String,
}

struct Preset {
    display_name: &'static str,
    auth_url: &'static str,
    token_url: &'static str,
    userinfo_url: &'static str,
    scopes: &'static [&'static str],
    id_field: &'static str,
    email_field: &'static str,
    name_field: &'static str,
}

fn preset(kind: OAuth2Kind) -> Preset {
    match kind {
        OAuth2Kind::Github => Preset {
            display_name: "GitHub",
            auth_url: "https://github.com/login/oauth/authorize",
            token_url: "https://github.com/login/oauth/access_token",
            userinfo_url: "https://api.github.com/user",
            scopes: &["read:user", "user:email"],
            id_field: "id",
            email_field: "email",
            name_field: "name",
        },
        OAuth2Kind::Google => Preset {
            display_name: "Google",
            auth_url: "https://accounts.google.com/o/oauth2/v2/auth",
            token_url: "https://oauth2.googleapis.com/token",
            userinfo_url: "https://www.googleapis.com/oauth2/v3/userinfo",
            scopes: &["openid", "email", "profile"],
            id_field: "sub",
            email_field: "email",
            name_field: "name",
        },
        OAuth2Kind::Gitlab => Preset {
            display_name: "GitLab",
            auth_url: "https://gitlab.com/oauth/authorize",
            token_url: "https://gitlab.com/oauth/token",
            userinfo_url: "https://gitlab.com/api/v4/user",
            scopes: &["read_user"],
            id_field: "id",
            email_field: "email",
            name_field: "name",
        },
        OAuth2Kind::Generic => Preset {
            display_name: "",
            auth_url: "",
            token_url: "",
            userinfo_url: "",
            scopes: &[],
            id_field: "sub",
            email_field: "email",
            name_field: "name",
        },
    }
}

fn or_preset(configured: &str, preset: &str) -> String {
    if configured.is_empty() {
        preset.to_string()
    } else {
        configured.to_string()
    }
}

impl Provider {
    pub fn from_settings(name: &str, settings: &OAuth2Provider) -> Self {
        let preset = preset(settings.kind);
        Self {
            name: name.to_string(),
            display_name: or_preset(
                &settings.display_name,
                if preset.display_name.is_empty() {
                    name
                } else {
                    preset.display_name
                },
            ),
            client_id: settings.client_id.clone(),
            client_secret: settings.client_secret.expose().to_string(),
            auth_url: or_preset(&settings.auth_url, preset.auth_url),
            token_url: or_preset(&settings.token_url, preset.token_url),
            userinfo_url: or_preset(&settings.userinfo_url, preset.userinfo_url),
            scopes: if settings.scopes.is_empty() {
                preset.scopes.iter().map(|s| s.to_string()).collect()
            } else {
                settings.scopes.clone()
            },
            id_field: or_preset(&settings.id_field, preset.id_field),
            email_field: or_preset(&settings.email_field, preset.email_field),
            name_field: or_preset(&settings.name_field, preset.name_field),
        }
    }

    /// A fresh state and PKCE pair and the authorization URL for them; the client adds
    /// its redirect URL at the end, as PocketBase's SDK does.
    pub fn start(&self) -> ProviderInfo {
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let state = crate::domain::ids::random_alphanumeric(30);
        let mut url = url::Url::parse(&self.auth_url).expect("validated at start");
        url.query_pairs_mut()
            .append_pair("client_id", &self.client_id)
            .append_pair("code_challenge", challenge.as_str())
            .append_pair("code_challenge_method", "S256")
            .append_pair("response_type", "code")
            .append_pair("scope", &self.scopes.join(" "))
            .append_pair("state", &state);
        ProviderInfo {
            name: self.name.clone(),
            display_name: self.display_name.clone(),
            state,
            auth_url: format!("{url}&redirect_uri="),
            code_verifier: verifier.secret().to_string(),
            code_challenge: challenge.as_str().to_string(),
            code_challenge_method: "S256",
        }
    }

    /// Exchanges `code` for an access token (PKCE) and fetches the provider's user.
    pub async fn exchange(
        &self,
        http: &reqwest::Client,
        code: &str,
        code_verifier: &str,
        redirect_url: &str,
    ) -> Result<ProviderUser, String> {
        let client = BasicClient::new(ClientId::new(self.client_id.clone()))
            .set_client_secret(ClientSecret::new(self.client_secret.clone()))
            .set_auth_uri(AuthUrl::new(self.auth_url.clone()).map_err(|e| e.to_string())?)
            .set_token_uri(TokenUrl::new(self.token_url.clone()).map_err(|e| e.to_string())?)
            .set_redirect_uri(
                RedirectUrl::new(redirect_url.to_string())
                    .map_err(|_| "invalid redirectURL".to_string())?,
            );
        let token = client
            .exchange_code(AuthorizationCode::new(code.to_string()))
            .set_pkce_verifier(PkceCodeVerifier::new(code_verifier.to_string()))
            .request_async(http)
            .await
            .map_err(|err| format!("the provider refused the code: {}", describe(&err)))?;
        let access_token = token.access_token().secret().to_string();
        let response = http
            .get(&self.userinfo_url)
            .bearer_auth(&access_token)
            .header(reqwest::header::ACCEPT, "application/json")
            .header(reqwest::header::USER_AGENT, "gatehouse")
            .send()
            .await
            .map_err(|err| format!("the user info request failed: {err}"))?;
        if !response.status().is_success() {
            return Err(format!(
                "the user info request answered {}",
                response.status()
            ));
        }
        let raw: Value = response
            .json()
            .await
            .map_err(|err| format!("the user info is not JSON: {err}"))?;
        let text = |field: &str| match raw.get(field) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => String::new(),
        };
        let id = text(&self.id_field);
        if id.is_empty() {
            return Err(format!("the user info has no `{}`", self.id_field));
        }
        Ok(ProviderUser {
            id,
            email: text(&self.email_field),
            name: text(&self.name_field),
            access_token,
            raw,
        })
    }
}

fn describe<RE: std::error::Error, T: oauth2::ErrorResponse>(
    err: &oauth2::RequestTokenError<RE, T>,
) -> String {
    match err {
        oauth2::RequestTokenError::ServerResponse(response) => response.to_string(),
        oauth2::RequestTokenError::Request(_) => "the token endpoint could not be reached".into(),
        oauth2::RequestTokenError::Parse(_, _) => "the token response was not understood".into(),
        oauth2::RequestTokenError::Other(other) => other.clone(),
    }
}

/// One provider in `auth-methods`, with PocketBase's keys.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProviderInfo {
    pub name: String,
    pub display_name: String,
    pub state: String,
    #[serde(rename = "authURL")]
    pub auth_url: String,
    pub code_verifier: String,
    pub code_challenge: String,
    pub code_challenge_method: &'static str,
}

/// The user as the provider describes them.
#[derive(Debug, Clone)]
pub struct ProviderUser {
    pub id: String,
    pub email: String,
    pub name: String,
    pub access_token: String,
    pub raw: Value,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    fn github(overrides: impl FnOnce(&mut OAuth2Provider)) -> Provider {
        let mut settings = OAuth2Provider {
            kind: OAuth2Kind::Github,
            client_id: "client-1".into(),
            client_secret: Secret::new("s3cret"),
            display_name: String::new(),
            auth_url: String::new(),
            token_url: String::new(),
            userinfo_url: String::new(),
            scopes: vec![],
            id_field: String::new(),
            email_field: String::new(),
            name_field: String::new(),
        };
        overrides(&mut settings);
        Provider::from_settings("github", &settings)
    }

    #[test]
    fn presets_fill_what_is_not_configured() {
        let provider = github(|_| {});
        assert_eq!(provider.display_name, "GitHub");
        assert_eq!(
            provider.token_url,
            "https://github.com/login/oauth/access_token"
        );
        let custom = github(|s| s.auth_url = "http://127.0.0.1:9/authorize".into());
        assert_eq!(custom.auth_url, "http://127.0.0.1:9/authorize");
        assert_eq!(custom.userinfo_url, "https://api.github.com/user");
    }

    #[test]
    fn auth_urls_carry_pkce_and_state_and_end_with_redirect_uri() {
        let info = github(|_| {}).start();
        assert!(info.auth_url.ends_with("&redirect_uri="));
        assert!(info.auth_url.contains("code_challenge_method=S256"));
        assert!(info.auth_url.contains(&format!("state={}", info.state)));
        assert!(info.auth_url.contains("client_id=client-1"));
        assert!(!info.auth_url.contains("s3cret"));
        assert_eq!(info.code_verifier.len(), 43);
        assert_ne!(github(|_| {}).start().state, info.state);
    }
}
