//! HS256 tokens the PocketBase SDKs can read, signed with a key that also depends on
//! the record's `tokenKey`, so rotating it invalidates every token of the record.
//!
//! The SDK decodes the payload with `atob`, which rejects base64url's `-` and `_`.
//! With ASCII JSON those appear only when `>`, `?` or `~` sit at every third byte, so
//! auth token claims are kept to ids, numbers and booleans.

use std::path::Path;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::AuthSettings;

/// The kinds of token, each signed with its own key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    Auth,
    Verification,
    PasswordReset,
    EmailChange,
}

impl TokenKind {
    /// The `type` claim, as PocketBase names it.
    pub fn claim(self) -> &'static str {
        match self {
            Self::Auth => "auth",
            Self::Verification => "verification",
            Self::PasswordReset => "passwordReset",
            Self::EmailChange => "emailChange",
        }
    }
}

/// Claims of every token kind; unused ones are left out of the payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    #[serde(rename = "type")]
    pub kind: String,
    pub id: String,
    #[serde(rename = "collectionId")]
    pub collection_id: String,
    pub exp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refreshable: Option<bool>,
    /// The session behind an auth token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    /// Unique per issued auth token, so that a refresh within the same second still
    /// yields a new token (and retires the old one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(rename = "newEmail", default, skip_serializing_if = "Option::is_none")]
    pub new_email: Option<String>,
}

/// The server-wide secret that, with a record's token key, signs its tokens.
#[derive(Clone)]
pub struct TokenSigner {
    secret: Vec<u8>,
    /// HS256 only, `exp` required, no leeway: the same for every check.
    validation: Validation,
}

impl std::fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenSigner([redacted])")
    }
}

impl TokenSigner {
    pub fn new(secret: impl Into<Vec<u8>>) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp"]);
        Self {
            secret: secret.into(),
            validation,
        }
    }

    /// The configured secret, or the one kept in `secret_file`, created on first use
    /// (readable by the owner only).
    pub fn from_settings(settings: &AuthSettings) -> std::io::Result<Self> {
        if !settings.token_secret.is_empty() {
            return Ok(Self::new(settings.token_secret.expose().as_bytes()));
        }
        Ok(Self::new(load_or_create_secret(&settings.secret_file)?))
    }

    fn key(&self, kind: TokenKind, token_key: &str) -> Vec<u8> {
        let mut key = self.secret.clone();
        key.push(b':');
        key.extend_from_slice(kind.claim().as_bytes());
        key.push(b':');
        key.extend_from_slice(token_key.as_bytes());
        key
    }

    pub fn sign(&self, kind: TokenKind, token_key: &str, claims: &Claims) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            claims,
            &EncodingKey::from_secret(&self.key(kind, token_key)),
        )
        .expect("HS256 signing cannot fail")
    }

    /// Checks signature, algorithm, kind and expiry (no leeway).
    pub fn verify(&self, kind: TokenKind, token_key: &str, token: &str) -> Option<Claims> {
        let data = jsonwebtoken::decode::<Claims>(
            token,
            &DecodingKey::from_secret(&self.key(kind, token_key)),
            &self.validation,
        )
        .ok()?;
        (data.claims.kind == kind.claim()).then_some(data.claims)
    }
}

/// Reads a token's claims without checking its signature — only to learn which record
/// and key to check it against.
pub fn peek(token: &str) -> Option<Claims> {
    jsonwebtoken::dangerous::insecure_decode_claims::<Claims>(token).ok()
}

/// SHA-256 of the signature part: what a session row keeps of its token.
pub fn signature_hash(token: &str) -> Option<[u8; 32]> {
    let signature = token.rsplit('.').next().filter(|s| !s.is_empty())?;
    Some(Sha256::digest(signature.as_bytes()).into())
}

/// A token that was verified (or signed) here, kept to recognise it when it comes
/// again: the same token needs no second signature check, only a comparison.
#[derive(Clone)]
pub struct VerifiedToken(Box<str>);

impl std::fmt::Debug for VerifiedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("VerifiedToken([redacted])")
    }
}

impl VerifiedToken {
    /// Only for a token that [`TokenSigner::verify`] accepted or [`TokenSigner::sign`]
    /// made.
    pub fn new(token: &str) -> Self {
        Self(token.into())
    }

    /// Whether `token` is this very token, compared in constant time (its length
    /// aside).
    pub fn is(&self, token: &str) -> bool {
        self.0.as_bytes().ct_eq(token.as_bytes()).into()
    }
}

fn load_or_create_secret(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;

    match std::fs::read_to_string(path) {
        Ok(existing) if existing.trim().len() >= 32 => {
            return Ok(existing.trim().as_bytes().to_vec())
        }
        Ok(_) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "{} holds no usable secret (needs 32+ characters)",
                    path.display()
                ),
            ))
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(err),
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    let secret = crate::domain::ids::random_alphanumeric(64);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(secret.as_bytes())?;
    tracing::info!(file = %path.display(), "generated a new token signing secret");
    Ok(secret.into_bytes())
}

#[cfg(test)]
mod tests {
    use base64::Engine;

    use super::*;

    fn auth_claims(exp: i64) -> Claims {
        Claims {
            kind: "auth".into(),
            id: "abcdefghij12345".into(),
            collection_id: "_pb_users_auth_".into(),
            exp,
            refreshable: Some(true),
            sid: Some("k3j5h2g8f9d1s0a".into()),
            jti: Some("a1b2c3d4e5f6g7h".into()),
            email: None,
            new_email: None,
        }
    }

    fn later() -> i64 {
        chrono::Utc::now().timestamp() + 3600
    }

    #[test]
    fn a_token_verifies_only_with_its_kind_and_token_key() {
        let signer = TokenSigner::new("s".repeat(40));
        let token = signer.sign(TokenKind::Auth, "key-1", &auth_claims(later()));
        assert!(signer.verify(TokenKind::Auth, "key-1", &token).is_some());
        assert!(signer.verify(TokenKind::Auth, "key-2", &token).is_none());
        assert!(signer
            .verify(TokenKind::PasswordReset, "key-1", &token)
            .is_none());
        let other = TokenSigner::new("t".repeat(40));
        assert!(other.verify(TokenKind::Auth, "key-1", &token).is_none());
    }

    #[test]
    fn expired_or_tampered_tokens_fail() {
        let signer = TokenSigner::new("s".repeat(40));
        let expired = signer.sign(
            TokenKind::Auth,
            "k",
            &auth_claims(chrono::Utc::now().timestamp() - 1),
        );
        assert!(signer.verify(TokenKind::Auth, "k", &expired).is_none());

        let token = signer.sign(TokenKind::Auth, "k", &auth_claims(later()));
        let mut parts: Vec<&str> = token.split('.').collect();
        let mut forged = auth_claims(later());
        forged.id = "someoneelse0000".into();
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(serde_json::to_vec(&forged).unwrap());
        parts[1] = &payload;
        assert!(signer
            .verify(TokenKind::Auth, "k", &parts.join("."))
            .is_none());
    }

    #[test]
    fn auth_payloads_decode_with_the_standard_alphabet() {
        let signer = TokenSigner::new("s".repeat(40));
        for _ in 0..200 {
            let mut claims = auth_claims(later());
            claims.id = crate::domain::ids::new_record_id();
            claims.sid = Some(crate::domain::ids::new_record_id());
            claims.jti = Some(crate::domain::ids::new_record_id());
            let token = signer.sign(TokenKind::Auth, "k", &claims);
            let payload = token.split('.').nth(1).unwrap();
            assert!(!payload.contains(['-', '_']), "{payload}");
            assert!(base64::engine::general_purpose::STANDARD_NO_PAD
                .decode(payload)
                .is_ok());
        }
    }

    #[test]
    fn a_verified_token_recognises_only_itself() {
        let signer = TokenSigner::new("s".repeat(40));
        let token = signer.sign(TokenKind::Auth, "k", &auth_claims(later()));
        let verified = VerifiedToken::new(&token);
        assert!(verified.is(&token));
        let mut other = token.clone();
        other.pop();
        assert!(!verified.is(&other));
        other.push('x');
        assert!(!verified.is(&other));
        assert!(!verified.is(""));
        assert_eq!(format!("{verified:?}"), "VerifiedToken([redacted])");
    }

    #[test]
    fn the_secret_file_is_created_once_and_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/secret");
        let first = load_or_create_secret(&path).unwrap();
        let second = load_or_create_secret(&path).unwrap();
        assert_eq!(first, second);
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn peek_reads_claims_without_a_key() {
        let signer = TokenSigner::new("s".repeat(40));
        let token = signer.sign(TokenKind::Auth, "k", &auth_claims(later()));
        assert_eq!(
            peek(&token).unwrap().sid.as_deref(),
            Some("k3j5h2g8f9d1s0a")
        );
        assert!(peek("not.a.token").is_none());
        assert_ne!(signature_hash(&token), signature_hash("a.b.c"));
    }
}
