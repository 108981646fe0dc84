//! The auth flows. Each runs its database work through the database actor, in one
//! transaction, and its password hashing on the hasher pool.

use std::sync::Arc;
use std::time::Duration;

use actix::Addr;
use chrono::Utc;
use sea_orm::{ConnectionTrait, DatabaseTransaction, DbErr};
use serde_json::{json, Map, Value};
use subtle::ConstantTimeEq;

use super::mails::AccountMails;
use super::oauth::{Provider, ProviderUser};
use super::passwords::{hash_password, verify_password, PasswordHasher};
use super::rate_limit::{Bucket, RateLimiter, RetryAfter};
use super::sessions::{self, Session, SessionGuard, ValidSession};
use super::tokens::{self, Claims, TokenKind, TokenSigner, VerifiedToken};
use super::{AuthError, AuthIdentity, AuthResponse, ClientInfo};
use crate::actors::database::Db;
use crate::actors::mailer::Mailer;
use crate::collections::record::{Record, Viewer};
use crate::collections::validate::FieldError;
use crate::collections::{store, Collection, Registry};
use crate::config::{AuthSettings, UnverifiedLogin};
use crate::domain::ids::{format_time, new_record_id, random_alphanumeric};
use crate::domain::password::Password;
use crate::mail::{self, MailContext, OutgoingMail};
use crate::realtime::{Action, RecordEvent};
use crate::records::batch::{self, BatchError, BatchItem};
use crate::records::write::Passwords;
use crate::records::{read, write, RecordsEnv, Requester};
use crate::webhooks::{self, Event, EventKind};

/// What an OAuth2 login request carries (`auth-with-oauth2`).
#[derive(Debug, Clone, Default, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct OAuthLogin {
    pub provider: String,
    pub code: String,
    pub code_verifier: String,
    #[serde(rename = "redirectURL", alias = "redirectUrl")]
    pub redirect_url: String,
    #[schema(value_type = Object)]
    pub create_data: Map<String, Value>,
}

/// A freshly signed auth token and what its session row keeps of it.
struct IssuedToken {
    token: String,
    hash: [u8; 32],
    now: chrono::DateTime<Utc>,
    expires: chrono::DateTime<Utc>,
    lifetime: u64,
}

/// Everything the auth flows share; one instance serves every auth actor.
pub struct AuthService {
    db: Db,
    records: Arc<RecordsEnv>,
    registry: Arc<Registry>,
    signer: TokenSigner,
    hasher: Addr<PasswordHasher>,
    sessions: Arc<SessionGuard>,
    limiter: Arc<dyn RateLimiter>,
    settings: AuthSettings,
    providers: Vec<Provider>,
    http: reqwest::Client,
    mails: AccountMails,
    mailer: Mailer,
}

impl AuthService {
    pub fn new(
        db: Db,
        records: Arc<RecordsEnv>,
        signer: TokenSigner,
        limiter: Arc<dyn RateLimiter>,
        settings: AuthSettings,
        mail: Arc<MailContext>,
        mailer: Mailer,
    ) -> Self {
        let providers = settings
            .oauth2
            .providers
            .iter()
            .map(|(name, provider)| Provider::from_settings(name, provider))
            .collect();
        Self {
            db,
            registry: records.registry.clone(),
            hasher: records.hasher.clone(),
            sessions: records.sessions.clone(),
            records,
            mails: AccountMails::new(signer.clone(), mail, settings.links.clone()),
            mailer,
            signer,
            limiter,
            providers,
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(15))
                .build()
                .expect("an HTTP client with rustls builds"),
            settings,
        }
    }

    /// The auth collection named (or with the id) `name`.
    fn auth_collection(&self, name: &str) -> Result<Arc<Collection>, AuthError> {
        self.registry
            .get(name)
            .filter(|collection| collection.is_auth())
            .ok_or(AuthError::NotFound)
    }

    async fn limit(&self, bucket: Bucket, key: &str) -> Result<(), AuthError> {
        self.limiter
            .check(bucket, key)
            .await
            .map_err(|RetryAfter(wait)| AuthError::RateLimited(wait))
    }

    pub async fn auth_with_password(
        &self,
        collection: &str,
        identity: &str,
        password: String,
        client: &ClientInfo,
    ) -> Result<AuthResponse, AuthError> {
        let collection = self.auth_collection(collection)?;
        if !collection.options.password_auth.enabled {
            return Err(AuthError::Forbidden(
                "Password authentication is not enabled for this collection.",
            ));
        }
        let mut errors = Vec::new();
        if identity.trim().is_empty() {
            errors.push(("identity".to_string(), FieldError::required()));
        }
        if password.is_empty() {
            errors.push(("password".to_string(), FieldError::required()));
        }
        if !errors.is_empty() {
            return Err(AuthError::Validation(errors));
        }
        self.limit(Bucket::LoginPerIp, &client.ip).await?;
        let identity = identity.trim().to_string();
        self.limit(
            Bucket::LoginPerAccount,
            &format!("{}:{}", collection.id, identity.to_lowercase()),
        )
        .await?;

        let fields = collection.options.password_auth.identity_fields.clone();
        let lookup = collection.clone();
        let record = self
            .db
            .read(move |txn| {
                Box::pin(async move {
                    for field in &fields {
                        let value = if field == "email" {
                            identity.to_lowercase()
                        } else {
                            identity.clone()
                        };
                        if let Some(record) = store::find_by(txn, &lookup, field, &value).await? {
                            return Ok::<_, AuthError>(Some(record));
                        }
                    }
                    Ok(None)
                })
            })
            .await?;
        let hash = record
            .as_ref()
            .map(|r| r.text("password").to_string())
            .filter(|hash| !hash.is_empty());
        let matches = verify_password(&self.hasher, hash, password).await?;
        let Some(record) = record.filter(|_| matches) else {
            return Err(AuthError::InvalidCredentials);
        };
        if !record.bool("verified")
            && !collection.is_superusers()
            && self.settings.unverified_login == UnverifiedLogin::Deny
        {
            return Err(AuthError::Unverified);
        }
        self.issue(record, client, None).await
    }

    /// Opens a session for `record` and signs its token.
    async fn issue(
        &self,
        record: Record,
        client: &ClientInfo,
        meta: Option<Value>,
    ) -> Result<AuthResponse, AuthError> {
        let sid = new_record_id();
        let issued = self.new_token(&record, &sid);
        let session = Session {
            id: sid.clone(),
            collection_ref: record.collection.id.clone(),
            record_ref: record.id().to_string(),
            token_hash: hex(&issued.hash),
            user_agent: client.user_agent.chars().take(300).collect(),
            ip: client.ip.clone(),
            created: format_time(issued.now),
            refreshed: format_time(issued.now),
            expires: format_time(issued.expires),
            revoked: false,
        };
        self.db
            .transact(move |txn| {
                Box::pin(async move {
                    sessions::insert(txn, &session)
                        .await
                        .map_err(AuthError::from)
                })
            })
            .await?;
        Ok(self.answer(record, sid, issued, meta))
    }

    /// A signed auth token for `record` in session `sid`, expiring as its collection says.
    fn new_token(&self, record: &Record, sid: &str) -> IssuedToken {
        let lifetime = record.collection.options.auth_token.duration;
        let now = Utc::now();
        let expires = now + chrono::Duration::seconds(lifetime as i64);
        let token = self.sign_auth(record, sid, expires.timestamp());
        let hash = tokens::signature_hash(&token).expect("signed tokens have a signature");
        IssuedToken {
            token,
            hash,
            now,
            expires,
            lifetime,
        }
    }

    /// Remembers the session as valid and shapes the answer.
    fn answer(
        &self,
        record: Record,
        sid: String,
        issued: IssuedToken,
        meta: Option<Value>,
    ) -> AuthResponse {
        self.sessions.remember(
            sid,
            ValidSession {
                record: record.clone(),
                token: VerifiedToken::new(&issued.token),
                expires: issued.expires.timestamp(),
            },
        );
        AuthResponse {
            token: issued.token,
            record: record.to_json(own_view(&record)),
            meta,
            lifetime: issued.lifetime,
        }
    }

    fn sign_auth(&self, record: &Record, sid: &str, exp: i64) -> String {
        let claims = Claims {
            kind: TokenKind::Auth.claim().to_string(),
            id: record.id().to_string(),
            collection_id: record.collection.id.clone(),
            exp,
            refreshable: Some(true),
            sid: Some(sid.to_string()),
            jti: Some(new_record_id()),
            email: None,
            new_email: None,
        };
        self.signer
            .sign(TokenKind::Auth, record.text("tokenKey"), &claims)
    }

    /// The identity behind a token, or `None` (a guest) for any token that is malformed,
    /// forged, expired, revoked or not an auth token.
    pub async fn authenticate(&self, token: &str) -> Result<Option<AuthIdentity>, AuthError> {
        let Some(claims) = tokens::peek(token).filter(|c| c.kind == TokenKind::Auth.claim()) else {
            return Ok(None);
        };
        let Some(sid) = claims.sid.clone() else {
            return Ok(None);
        };
        if self.sessions.is_revoked(&sid) {
            return Ok(None);
        }
        let now = Utc::now().timestamp();
        // A cached session holds the token it was validated with (signature, kind,
        // record): that same token needs no second signature check.
        if let Some(valid) = self.sessions.get(&sid) {
            return Ok(
                (valid.expires > now && valid.token.is(token)).then(|| AuthIdentity {
                    record: valid.record.clone(),
                    session_id: sid,
                }),
            );
        }
        let Some(hash) = tokens::signature_hash(token) else {
            return Ok(None);
        };

        let Some(collection) = self
            .registry
            .get(&claims.collection_id)
            .filter(|c| c.is_auth())
        else {
            return Ok(None);
        };
        let (lookup_sid, record_id) = (sid.clone(), claims.id.clone());
        let found = self
            .db
            .read(move |txn| {
                Box::pin(async move {
                    let Some(session) = sessions::find(txn, &lookup_sid).await? else {
                        return Ok::<_, AuthError>(None);
                    };
                    let record = store::find_by(txn, &collection, "id", &record_id).await?;
                    Ok(record.map(|record| (session, record)))
                })
            })
            .await?;
        let Some((session, record)) = found else {
            return Ok(None);
        };
        let Some(stored_hash) = unhex(&session.token_hash) else {
            return Ok(None);
        };
        let expires = parse_time(&session.expires).min(claims.exp);
        if session.revoked
            || session.record_ref != record.id()
            || session.collection_ref != record.collection.id
            || record.id() != claims.id
            || record.collection.id != claims.collection_id
            || expires <= now
            || !bool::from(stored_hash.ct_eq(&hash))
            || self
                .signer
                .verify(TokenKind::Auth, record.text("tokenKey"), token)
                .is_none()
        {
            return Ok(None);
        }
        let cached = self.sessions.remember(
            sid.clone(),
            ValidSession {
                record: record.clone(),
                token: VerifiedToken::new(token),
                expires,
            },
        );
        // A logout that finished while this validation ran must win.
        if !cached {
            return Ok(None);
        }
        Ok(Some(AuthIdentity {
            record,
            session_id: sid,
        }))
    }

    /// A new token for the caller's session, with the record as it is now.
    pub async fn refresh(
        &self,
        identity: &AuthIdentity,
        collection: &str,
    ) -> Result<AuthResponse, AuthError> {
        let own = &identity.record.collection;
        if own.name != collection && own.id != collection {
            return Err(AuthError::Forbidden(
                "The authorized record is not from this collection.",
            ));
        }
        let (coll, record_id) = (own.clone(), identity.record.id().to_string());
        let record = self
            .db
            .read(move |txn| {
                Box::pin(async move {
                    Ok::<_, AuthError>(store::find_by(txn, &coll, "id", &record_id).await?)
                })
            })
            .await?
            .ok_or(AuthError::Unauthorized)?;
        let sid = identity.session_id.clone();
        let issued = self.new_token(&record, &sid);
        let (renew_sid, hash_hex, refreshed, expires_text) = (
            sid.clone(),
            hex(&issued.hash),
            format_time(issued.now),
            format_time(issued.expires),
        );
        self.db
            .transact(move |txn| {
                Box::pin(async move {
                    sessions::renew(txn, &renew_sid, &hash_hex, &refreshed, &expires_text)
                        .await
                        .map_err(AuthError::from)
                })
            })
            .await?;
        Ok(self.answer(record, sid, issued, None))
    }

    /// Ends the caller's session.
    pub async fn logout(&self, identity: &AuthIdentity) -> Result<(), AuthError> {
        let sid = identity.session_id.clone();
        self.sessions.forget(std::slice::from_ref(&sid));
        self.db
            .transact(move |txn| {
                Box::pin(async move { sessions::revoke(txn, &sid).await.map_err(AuthError::from) })
            })
            .await
    }

    /// Ends every session of the caller and rotates the record's token key, so that no
    /// token signed before stays valid anywhere.
    pub async fn logout_all(&self, identity: &AuthIdentity) -> Result<(), AuthError> {
        let mut record = identity.record.clone();
        record.set("tokenKey", random_alphanumeric(50));
        let revoked = self
            .db
            .transact(move |txn| {
                Box::pin(async move {
                    store::update(txn, &record).await?;
                    Ok::<_, AuthError>(
                        sessions::revoke_all(txn, &record.collection.id, record.id(), None).await?,
                    )
                })
            })
            .await?;
        self.sessions.forget(&revoked);
        self.sessions
            .forget(std::slice::from_ref(&identity.session_id));
        Ok(())
    }

    /// The caller's live sessions, newest first, marking the current one.
    pub async fn sessions(&self, identity: &AuthIdentity) -> Result<Vec<Value>, AuthError> {
        let (collection, record) = (
            identity.record.collection.id.clone(),
            identity.record.id().to_string(),
        );
        let now = format_time(Utc::now());
        let list = self
            .db
            .read(move |txn| {
                Box::pin(async move {
                    Ok::<_, AuthError>(
                        sessions::list_active(txn, &collection, &record, &now).await?,
                    )
                })
            })
            .await?;
        Ok(list
            .into_iter()
            .map(|session| {
                let mut value = serde_json::to_value(&session).unwrap_or_default();
                value["current"] = Value::Bool(session.id == identity.session_id);
                value
            })
            .collect())
    }

    /// Creates an auth record (`POST /api/collections/{c}/records` on an auth
    /// collection): rate limited per client IP, then the records API's create, whose
    /// validation, create rule and password hashing apply.
    pub async fn register(
        &self,
        collection: &str,
        body: Map<String, Value>,
        requester: Requester,
        client: &ClientInfo,
        shape: (String, String),
    ) -> Result<Value, AuthError> {
        let collection = self.auth_collection(collection)?;
        if !requester.superuser() {
            self.limit(Bucket::RegisterPerIp, &client.ip).await?;
        }
        let env = self.records.clone();
        let passwords = Passwords::for_create(&env, &requester, &collection.name, &body).await?;
        let hub = env.realtime.clone();
        let verify = self
            .settings
            .verify_email_on_register
            .then(|| self.mails.clone());
        let (shown, queued, change) = self
            .db
            .transact(move |txn| {
                Box::pin(async move {
                    let (expand, fields) = shape;
                    let record =
                        write::create(txn, &env, &requester, &collection.name, body, &passwords)
                            .await?;
                    let change = RecordEvent::new(Action::Create, &record);
                    webhooks::emit(txn, &Event::for_record(EventKind::UserRegistered, &record))
                        .await?;
                    // The verification mail is written with the account, or not at all.
                    let mut queued = false;
                    if let Some(mails) = verify.filter(|_| !record.bool("verified")) {
                        let email = record.text("email").to_string();
                        if !email.is_empty() {
                            let mail =
                                mails.mail(TokenKind::Verification, &record, &email, None)?;
                            mail::enqueue(txn, &mail).await?;
                            queued = true;
                        }
                    }
                    let mut shown =
                        read::present(txn, &env, &requester, vec![record], &expand, &fields)
                            .await?;
                    Ok::<_, AuthError>((shown.remove(0), queued, change))
                })
            })
            .await?;
        hub.publish(change);
        if queued {
            self.mailer.wake();
        }
        Ok(shown)
    }

    /// Runs a batch of record writes in one transaction (`POST /api/batch`). Accounts
    /// created in it count against the caller's registration limit and get their
    /// verification mail in the same transaction, as single registrations do.
    pub async fn batch(
        &self,
        mut items: Vec<BatchItem>,
        identity: Option<AuthIdentity>,
        headers: Map<String, Value>,
        client: &ClientInfo,
        timeout: Duration,
    ) -> Result<Vec<Value>, BatchError> {
        let superuser = identity.as_ref().is_some_and(AuthIdentity::is_superuser);
        if !superuser {
            for _ in items
                .iter()
                .filter(|item| item.may_register(&self.registry))
            {
                self.limit(Bucket::RegisterPerIp, &client.ip).await?;
            }
        }
        let env = self.records.clone();
        // Hashing counts against the batch's time like its transaction.
        let started = tokio::time::Instant::now();
        tokio::time::timeout(
            timeout,
            batch::prepare_passwords(&mut items, &env, &identity),
        )
        .await
        .map_err(|_| BatchError::Timeout(timeout))??;
        let timeout = timeout.saturating_sub(started.elapsed());
        let hub = env.realtime.clone();
        let verify = self
            .settings
            .verify_email_on_register
            .then(|| self.mails.clone());
        let (answers, changes, queued) = self
            .db
            .transact(move |txn| {
                Box::pin(async move {
                    let outcome = batch::run(txn, &env, identity, headers, items, timeout).await?;
                    let mut queued = false;
                    if let Some(mails) = &verify {
                        let accounts = outcome.created.iter().filter(|record| {
                            record.collection.is_auth()
                                && !record.bool("verified")
                                && !record.text("email").is_empty()
                        });
                        for record in accounts {
                            let to = record.text("email");
                            let mail = mails.mail(TokenKind::Verification, record, to, None)?;
                            mail::enqueue(txn, &mail).await.map_err(AuthError::from)?;
                            queued = true;
                        }
                    }
                    Ok::<_, BatchError>((outcome.answers, outcome.changes, queued))
                })
            })
            .await?;
        for change in changes {
            hub.publish(change);
        }
        if queued {
            self.mailer.wake();
        }
        Ok(answers)
    }

    /// The record of an auth collection with this email, if any.
    async fn find_by_email(
        &self,
        collection: &Arc<Collection>,
        email: &str,
    ) -> Result<Option<Record>, AuthError> {
        let (collection, email) = (collection.clone(), email.trim().to_lowercase());
        self.db
            .read(move |txn| {
                Box::pin(async move {
                    Ok::<_, AuthError>(store::find_by(txn, &collection, "email", &email).await?)
                })
            })
            .await
    }

    /// Checks the shape of a submitted email and the request limits for it.
    async fn email_request(
        &self,
        collection: &Arc<Collection>,
        email: &str,
        client: &ClientInfo,
    ) -> Result<(), AuthError> {
        if crate::domain::email::Email::parse(email).is_none() {
            return Err(AuthError::field(
                "email",
                FieldError::new("validation_is_email", "Must be a valid email address."),
            ));
        }
        self.limit(Bucket::RequestPerIp, &client.ip).await?;
        self.limit(
            Bucket::RequestPerAccount,
            &format!("{}:{}", collection.id, email.trim().to_lowercase()),
        )
        .await
    }

    /// Queues `mail` for `record` in its own transaction, then wakes the mailer.
    async fn send(&self, mail: OutgoingMail) -> Result<(), AuthError> {
        self.db
            .transact(move |txn| {
                Box::pin(async move {
                    mail::enqueue(txn, &mail).await?;
                    Ok::<_, AuthError>(())
                })
            })
            .await?;
        self.mailer.wake();
        Ok(())
    }

    /// `request-verification`: mails a verification link to an unverified account.
    /// Answers the same for unknown and verified addresses (no account enumeration).
    pub async fn request_verification(
        &self,
        collection: &str,
        email: &str,
        client: &ClientInfo,
    ) -> Result<(), AuthError> {
        let collection = self.auth_collection(collection)?;
        self.email_request(&collection, email, client).await?;
        match self.find_by_email(&collection, email).await? {
            Some(record) if !record.bool("verified") => {
                let to = record.text("email").to_string();
                self.send(
                    self.mails
                        .mail(TokenKind::Verification, &record, &to, None)?,
                )
                .await
            }
            _ => Ok(()),
        }
    }

    /// `request-password-reset`: mails a reset link; same answer for unknown addresses.
    pub async fn request_password_reset(
        &self,
        collection: &str,
        email: &str,
        client: &ClientInfo,
    ) -> Result<(), AuthError> {
        let collection = self.auth_collection(collection)?;
        self.email_request(&collection, email, client).await?;
        match self.find_by_email(&collection, email).await? {
            Some(record) => {
                let to = record.text("email").to_string();
                self.send(
                    self.mails
                        .mail(TokenKind::PasswordReset, &record, &to, None)?,
                )
                .await
            }
            None => Ok(()),
        }
    }

    /// `request-email-change`: mails a confirmation link to the new address.
    pub async fn request_email_change(
        &self,
        identity: &AuthIdentity,
        new_email: &str,
    ) -> Result<(), AuthError> {
        let collection = identity.record.collection.clone();
        let Some(email) = crate::domain::email::Email::parse(new_email) else {
            return Err(AuthError::field(
                "newEmail",
                FieldError::new("validation_is_email", "Must be a valid email address."),
            ));
        };
        if self
            .find_by_email(&collection, email.as_str())
            .await?
            .is_some()
        {
            return Err(AuthError::field(
                "newEmail",
                FieldError::new("validation_not_unique", "Value must be unique."),
            ));
        }
        let mail = self.mails.mail(
            TokenKind::EmailChange,
            &identity.record,
            email.as_str(),
            Some(email.as_str()),
        )?;
        self.send(mail).await
    }

    /// The record a link token of `kind` was issued for, once the token checks out.
    async fn token_record(
        &self,
        collection: &str,
        kind: TokenKind,
        token: &str,
    ) -> Result<(Record, tokens::Claims), AuthError> {
        let collection = self.auth_collection(collection)?;
        let claims = tokens::peek(token)
            .filter(|c| c.kind == kind.claim() && c.collection_id == collection.id)
            .ok_or(AuthError::InvalidToken)?;
        let record_id = claims.id.clone();
        let record = self
            .db
            .read(move |txn| {
                Box::pin(async move {
                    Ok::<_, AuthError>(store::find_by(txn, &collection, "id", &record_id).await?)
                })
            })
            .await?
            .ok_or(AuthError::InvalidToken)?;
        let claims = self
            .mails
            .verify(kind, &record, token)
            .ok_or(AuthError::InvalidToken)?;
        Ok((record, claims))
    }

    /// `confirm-verification`: marks the account verified (again is harmless).
    pub async fn confirm_verification(
        &self,
        collection: &str,
        token: &str,
    ) -> Result<(), AuthError> {
        let (mut record, _) = self
            .token_record(collection, TokenKind::Verification, token)
            .await?;
        if record.bool("verified") {
            return Ok(());
        }
        record.set("verified", true);
        self.db
            .transact(move |txn| {
                Box::pin(async move {
                    store::update(txn, &record).await?;
                    webhooks::emit(txn, &Event::for_record(EventKind::UserVerified, &record))
                        .await?;
                    Ok::<_, AuthError>(())
                })
            })
            .await
    }

    /// `confirm-password-reset`: sets the new password, rotates the token key (so the
    /// reset link and every token stop working) and ends every session.
    pub async fn confirm_password_reset(
        &self,
        collection: &str,
        token: &str,
        password: &str,
        password_confirm: &str,
    ) -> Result<(), AuthError> {
        let password = check_new_password(password, password_confirm)?;
        let (mut record, _) = self
            .token_record(collection, TokenKind::PasswordReset, token)
            .await?;
        let hash = hash_password(&self.hasher, password).await?;
        record.set("password", hash);
        record.set("tokenKey", random_alphanumeric(50));
        // Following the link proved the address.
        record.set("verified", true);
        self.update_and_end_sessions(record).await
    }

    /// `confirm-email-change`: checks the password, moves the account to the new
    /// address (verified) and ends every session.
    pub async fn confirm_email_change(
        &self,
        collection: &str,
        token: &str,
        password: &str,
    ) -> Result<(), AuthError> {
        let (mut record, claims) = self
            .token_record(collection, TokenKind::EmailChange, token)
            .await?;
        let new_email = claims.new_email.ok_or(AuthError::InvalidToken)?;
        let hash = Some(record.text("password").to_string()).filter(|h| !h.is_empty());
        if !verify_password(&self.hasher, hash, password.to_string()).await? {
            return Err(AuthError::field(
                "password",
                FieldError::new(
                    "validation_invalid_password",
                    "Missing or invalid account password.",
                ),
            ));
        }
        if self
            .find_by_email(&record.collection, &new_email)
            .await?
            .is_some()
        {
            return Err(AuthError::field(
                "newEmail",
                FieldError::new("validation_not_unique", "Value must be unique."),
            ));
        }
        record.set("email", new_email);
        record.set("verified", true);
        record.set("tokenKey", random_alphanumeric(50));
        self.update_and_end_sessions(record).await
    }

    async fn update_and_end_sessions(&self, record: Record) -> Result<(), AuthError> {
        let revoked = self
            .db
            .transact(move |txn| {
                Box::pin(async move {
                    store::update(txn, &record).await?;
                    Ok::<_, AuthError>(
                        sessions::revoke_all(txn, &record.collection.id, record.id(), None).await?,
                    )
                })
            })
            .await?;
        self.sessions.forget(&revoked);
        Ok(())
    }

    /// PocketBase's `auth-methods`, starting an OAuth2 flow for every provider.
    pub fn auth_methods(&self, collection: &str) -> Result<Value, AuthError> {
        let collection = self.auth_collection(collection)?;
        let providers: Vec<Value> = if collection.is_superusers() {
            Vec::new()
        } else {
            self.providers
                .iter()
                .map(|provider| serde_json::to_value(provider.start()).unwrap_or_default())
                .collect()
        };
        let legacy: Vec<Value> = providers
            .iter()
            .cloned()
            .map(|mut provider| {
                provider["authUrl"] = provider["authURL"].clone();
                provider
            })
            .collect();
        Ok(json!({
            "password": {
                "enabled": collection.options.password_auth.enabled,
                "identityFields": collection.options.password_auth.identity_fields,
            },
            "oauth2": { "enabled": !providers.is_empty(), "providers": providers },
            "mfa": { "enabled": false, "duration": 0 },
            "otp": { "enabled": false, "duration": 0 },
            // Kept by PocketBase for SDKs older than 0.23.
            "authProviders": legacy,
            "usernamePassword": false,
            "emailPassword": collection.options.password_auth.enabled,
        }))
    }

    /// Exchanges an OAuth2 code, then logs in the linked account, links an account with
    /// the same (provider-verified) email, or creates one.
    pub async fn auth_with_oauth2(
        &self,
        collection: &str,
        login: OAuthLogin,
        client: &ClientInfo,
    ) -> Result<AuthResponse, AuthError> {
        let collection = self.auth_collection(collection)?;
        if collection.is_superusers() {
            return Err(AuthError::Forbidden(
                "OAuth2 login is not available for superusers.",
            ));
        }
        let mut errors = Vec::new();
        for (name, value) in [
            ("provider", &login.provider),
            ("code", &login.code),
            ("codeVerifier", &login.code_verifier),
            ("redirectURL", &login.redirect_url),
        ] {
            if value.is_empty() {
                errors.push((name.to_string(), FieldError::required()));
            }
        }
        if !errors.is_empty() {
            return Err(AuthError::Validation(errors));
        }
        let provider = self
            .providers
            .iter()
            .find(|p| p.name == login.provider)
            .ok_or_else(|| {
                AuthError::field(
                    "provider",
                    FieldError::new("validation_invalid_value", "Unknown provider."),
                )
            })?;
        self.limit(Bucket::LoginPerIp, &client.ip).await?;
        let user = provider
            .exchange(
                &self.http,
                &login.code,
                &login.code_verifier,
                &login.redirect_url,
            )
            .await
            .map_err(AuthError::OAuth)?;

        let body = oauth_body(&collection, &user, login.create_data);
        let (env, provider_name, provider_user) =
            (self.records.clone(), provider.name.clone(), user.clone());
        let (record, is_new) = self
            .db
            .transact(move |txn| {
                Box::pin(async move {
                    link_or_create(txn, &env, &collection, body, &provider_name, &provider_user)
                        .await
                })
            })
            .await?;
        let meta = json!({
            "id": user.id,
            "name": user.name,
            "email": user.email,
            "accessToken": user.access_token,
            "isNew": is_new,
            "rawUser": user.raw,
        });
        self.issue(record, client, Some(meta)).await
    }
}

/// What an OAuth2 login submits to create an account: `createData`, the provider's
/// email and name, and a random password (the account can set its own later).
fn oauth_body(
    collection: &Collection,
    user: &ProviderUser,
    create_data: Map<String, Value>,
) -> Map<String, Value> {
    let mut body = create_data;
    if !user.email.is_empty() {
        body.insert("email".into(), Value::String(user.email.clone()));
    }
    if !user.name.is_empty() && collection.field("name").is_some() && !body.contains_key("name") {
        let name: String = user.name.chars().take(255).collect();
        body.insert("name".into(), Value::String(name));
    }
    let password = random_alphanumeric(40);
    body.insert("password".into(), Value::String(password.clone()));
    body.insert("passwordConfirm".into(), Value::String(password));
    body
}

/// A new password and its confirmation, or the field errors PocketBase gives.
fn check_new_password(password: &str, confirm: &str) -> Result<Password, AuthError> {
    let mut errors = Vec::new();
    let parsed = Password::parse(password)
        .map_err(|err| {
            errors.push((
                "password".to_string(),
                FieldError::new(err.code(), err.message()),
            ))
        })
        .ok();
    if password != confirm {
        errors.push((
            "passwordConfirm".to_string(),
            FieldError::new("validation_values_mismatch", "Values don't match."),
        ));
    }
    match parsed {
        Some(password) if errors.is_empty() => Ok(password),
        _ => Err(AuthError::Validation(errors)),
    }
}

/// Providers that say an email is not verified (`email_verified: false`) are believed;
/// the others (GitHub, GitLab) only hand out verified addresses.
fn provider_email_verified(user: &ProviderUser) -> bool {
    user.raw.get("email_verified").and_then(Value::as_bool) != Some(false)
}

/// The account for a provider's user: the one linked before, else the one with the
/// same provider-verified email (now linked and verified), else a new one created as
/// a guest registration would be (create rule included).
async fn link_or_create(
    txn: &DatabaseTransaction,
    env: &RecordsEnv,
    collection: &Collection,
    body: Map<String, Value>,
    provider: &str,
    user: &ProviderUser,
) -> Result<(Record, bool), AuthError> {
    if let Some(record_id) = external_auth(txn, &collection.id, provider, &user.id).await? {
        if let Some(record) =
            store::find_by(txn, &env.collection(&collection.id)?, "id", &record_id).await?
        {
            return Ok((record, false));
        }
    }
    let email_verified = !user.email.is_empty() && provider_email_verified(user);
    let existing = if email_verified {
        store::find_by(
            txn,
            &env.collection(&collection.id)?,
            "email",
            &user.email.to_lowercase(),
        )
        .await?
    } else {
        None
    };
    let (mut record, is_new) = match existing {
        Some(record) => (record, false),
        None => {
            let guest = Requester::new(None, "POST", Map::new(), Map::new());
            (
                write::create(
                    txn,
                    env,
                    &guest,
                    &collection.name,
                    body,
                    &Passwords::default(),
                )
                .await?,
                true,
            )
        }
    };
    if email_verified && !record.bool("verified") {
        record.set("verified", true);
        store::update(txn, &record).await?;
    }
    link_external_auth(txn, &collection.id, record.id(), provider, &user.id).await?;
    Ok((record, is_new))
}

async fn external_auth(
    txn: &DatabaseTransaction,
    collection_id: &str,
    provider: &str,
    provider_id: &str,
) -> Result<Option<String>, DbErr> {
    use sea_orm::sea_query::{Alias, Expr, Query};
    let query = Query::select()
        .column(Alias::new("recordRef"))
        .from(Alias::new("_externalAuths"))
        .and_where(Expr::col(Alias::new("collectionRef")).eq(collection_id))
        .and_where(Expr::col(Alias::new("provider")).eq(provider))
        .and_where(Expr::col(Alias::new("providerId")).eq(provider_id))
        .to_owned();
    txn.query_one(txn.get_database_backend().build(&query))
        .await?
        .map(|row| row.try_get::<String>("", "recordRef"))
        .transpose()
}

async fn link_external_auth(
    txn: &DatabaseTransaction,
    collection_id: &str,
    record_id: &str,
    provider: &str,
    provider_id: &str,
) -> Result<(), DbErr> {
    use sea_orm::sea_query::{Alias, Query};
    let now = crate::domain::ids::now();
    let insert = Query::insert()
        .into_table(Alias::new("_externalAuths"))
        .columns(
            [
                "id",
                "collectionRef",
                "recordRef",
                "provider",
                "providerId",
                "created",
                "updated",
            ]
            .map(Alias::new),
        )
        .values_panic([
            new_record_id().into(),
            collection_id.into(),
            record_id.into(),
            provider.into(),
            provider_id.into(),
            now.clone().into(),
            now.into(),
        ])
        .to_owned();
    txn.execute(txn.get_database_backend().build(&insert))
        .await?;
    Ok(())
}

/// Superusers see everything of their own record; others see their own record as owner.
fn own_view(record: &Record) -> Viewer {
    if record.collection.is_superusers() {
        Viewer::Superuser
    } else {
        Viewer::Owner
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    if text.len() != 64 {
        return None;
    }
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Unix seconds of a stored `YYYY-MM-DD HH:MM:SS.sssZ` time (0 when unreadable, which
/// makes a session count as expired).
fn parse_time(text: &str) -> i64 {
    chrono::NaiveDateTime::parse_from_str(text.trim_end_matches('Z'), "%Y-%m-%d %H:%M:%S%.f")
        .map(|t| t.and_utc().timestamp())
        .unwrap_or(0)
}

/// Creates or updates a superuser (`gatehouse superuser upsert`); an update also ends
/// every session of that superuser.
pub async fn upsert_superuser<C: ConnectionTrait>(
    conn: &C,
    hasher: &PasswordHasher,
    email: &str,
    password: &str,
) -> Result<bool, AuthError> {
    let email = crate::domain::email::Email::parse(email).ok_or_else(|| {
        AuthError::field(
            "email",
            FieldError::new("validation_is_email", "Must be a valid email address."),
        )
    })?;
    let password = Password::parse(password)
        .map_err(|err| AuthError::field("password", FieldError::new(err.code(), err.message())))?;
    let collection = store::load_collections(conn)
        .await?
        .into_iter()
        .find(|c| c.is_superusers())
        .map(Arc::new)
        .ok_or(AuthError::NotFound)?;
    let hash = hasher.hash(password.expose())?;
    let now = crate::domain::ids::now();
    match store::find_by(conn, &collection, "email", email.as_str()).await? {
        Some(mut record) => {
            record.set("password", hash);
            record.set("tokenKey", random_alphanumeric(50));
            record.set("updated", now);
            store::update(conn, &record).await?;
            sessions::revoke_all(conn, &collection.id, record.id(), None).await?;
            Ok(false)
        }
        None => {
            let mut record = Record::new(collection);
            record.set("id", new_record_id());
            record.set("email", email.as_str());
            record.set("password", hash);
            record.set("tokenKey", random_alphanumeric(50));
            record.set("verified", true);
            record.set("created", now.clone());
            record.set("updated", now);
            store::insert(conn, &record).await?;
            Ok(true)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips() {
        let bytes: [u8; 32] = core::array::from_fn(|i| (i * 7) as u8);
        assert_eq!(unhex(&hex(&bytes)), Some(bytes));
        assert_eq!(unhex("zz"), None);
    }

    #[test]
    fn stored_times_parse_to_unix_seconds() {
        assert_eq!(parse_time("1970-01-01 00:01:00.000Z"), 60);
        assert_eq!(parse_time("garbage"), 0);
    }
}
