//! The auth actor: runs the auth flows of [`AuthService`] for the HTTP front end.
//!
//! Every handler returns a `ResponseFuture` (database and hashing work is awaited, not
//! blocked on) and runs inside `contain`, so a panic answers the caller with an error
//! and restarts the actor. Several instances share one `AuthService`.

use std::sync::Arc;
use std::time::Duration;

use actix::{
    Actor, ActorContext, AsyncContext, Context, Handler, Message, ResponseFuture, Supervised,
};
use serde_json::{Map, Value};

use super::supervisor::{contain, ActorPool, Crashed};
use crate::auth::service::{AuthService, OAuthLogin};
use crate::auth::{AuthError, AuthIdentity, AuthResponse, ClientInfo};
use crate::records::batch::{BatchError, BatchItem};
use crate::records::Requester;
use crate::telemetry::Metrics;

const NAME: &str = "auth";

/// The auth actor instances, used in turn.
pub type Auth = ActorPool<AuthActor>;

pub struct AuthActor {
    service: Arc<AuthService>,
    metrics: Arc<Metrics>,
}

impl AuthActor {
    pub fn new(service: Arc<AuthService>, metrics: Arc<Metrics>) -> Self {
        Self { service, metrics }
    }
}

impl Actor for AuthActor {
    type Context = Context<Self>;
}

impl Supervised for AuthActor {
    fn restarting(&mut self, _: &mut Context<Self>) {
        self.metrics.actor_restarts.with_label_values(&[NAME]).inc();
        tracing::warn!(actor = NAME, "actor restarted by its supervisor");
    }
}

impl Handler<Crashed> for AuthActor {
    type Result = ();

    fn handle(&mut self, _: Crashed, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

/// Declares a message, its result, and a handler that runs `$body` with the shared
/// service (`$svc`) and the message (`$msg`) inside `contain`.
macro_rules! auth_message {
    ($(#[$doc:meta])* $name:ident { $($field:ident: $ty:ty),* $(,)? } -> $out:ty, |$svc:ident, $msg:ident| $body:expr) => {
        $(#[$doc])*
        pub struct $name { $(pub $field: $ty),* }

        impl Message for $name {
            type Result = Result<$out, AuthError>;
        }

        impl Handler<$name> for AuthActor {
            type Result = ResponseFuture<Result<$out, AuthError>>;

            fn handle(&mut self, $msg: $name, ctx: &mut Context<Self>) -> Self::Result {
                let $svc = self.service.clone();
                let addr = ctx.address();
                Box::pin(async move { contain(NAME, addr, async move { $body.await }).await? })
            }
        }
    };
}

auth_message!(
    /// Logs in with an identity (email) and password.
    AuthWithPassword { collection: String, identity: String, password: String, client: ClientInfo } -> AuthResponse,
    |svc, msg| svc.auth_with_password(&msg.collection, &msg.identity, msg.password, &msg.client)
);

auth_message!(
    /// Resolves a token to its identity; `None` for a guest.
    Authenticate { token: String } -> Option<AuthIdentity>,
    |svc, msg| svc.authenticate(&msg.token)
);

auth_message!(
    /// A new token for the caller's session.
    Refresh { identity: AuthIdentity, collection: String } -> AuthResponse,
    |svc, msg| svc.refresh(&msg.identity, &msg.collection)
);

auth_message!(
    /// Ends the caller's session, or all of them.
    Revoke { identity: AuthIdentity, everywhere: bool } -> (),
    |svc, msg| async move {
        if msg.everywhere {
            svc.logout_all(&msg.identity).await
        } else {
            svc.logout(&msg.identity).await
        }
    }
);

auth_message!(
    /// The caller's live sessions.
    ListSessions { identity: AuthIdentity } -> Vec<Value>,
    |svc, msg| svc.sessions(&msg.identity)
);

auth_message!(
    /// Creates an auth record (registration), answering with it shaped by
    /// `expand`/`fields`.
    Register { collection: String, body: Map<String, Value>, requester: Requester, client: ClientInfo, expand: String, fields: String } -> Value,
    |svc, msg| svc.register(&msg.collection, msg.body, msg.requester, &msg.client, (msg.expand, msg.fields))
);

/// Runs a batch of record writes in one transaction (`POST /api/batch`).
pub struct RunBatch {
    pub items: Vec<BatchItem>,
    pub identity: Option<AuthIdentity>,
    /// The outer request's headers, as rules see them.
    pub headers: Map<String, Value>,
    pub client: ClientInfo,
    pub timeout: Duration,
}

impl Message for RunBatch {
    type Result = Result<Vec<Value>, BatchError>;
}

impl Handler<RunBatch> for AuthActor {
    type Result = ResponseFuture<Result<Vec<Value>, BatchError>>;

    fn handle(&mut self, msg: RunBatch, ctx: &mut Context<Self>) -> Self::Result {
        let service = self.service.clone();
        let addr = ctx.address();
        Box::pin(async move {
            let run = service.batch(
                msg.items,
                msg.identity,
                msg.headers,
                &msg.client,
                msg.timeout,
            );
            contain(NAME, addr, run)
                .await
                .map_err(|panicked| BatchError::Auth(panicked.into()))?
        })
    }
}

auth_message!(
    /// Lists login methods and starts an OAuth2 flow (state, PKCE) per provider.
    StartOAuth { collection: String } -> Value,
    |svc, msg| std::future::ready(svc.auth_methods(&msg.collection))
);

auth_message!(
    /// Finishes an OAuth2 login with the provider's code.
    FinishOAuth { collection: String, login: OAuthLogin, client: ClientInfo } -> AuthResponse,
    |svc, msg| svc.auth_with_oauth2(&msg.collection, msg.login, &msg.client)
);

auth_message!(
    /// Mails a verification link (204 whatever the address).
    RequestVerification { collection: String, email: String, client: ClientInfo } -> (),
    |svc, msg| svc.request_verification(&msg.collection, &msg.email, &msg.client)
);

auth_message!(
    /// Confirms an address with a verification token.
    ConfirmVerification { collection: String, token: String } -> (),
    |svc, msg| svc.confirm_verification(&msg.collection, &msg.token)
);

auth_message!(
    /// Mails a password reset link (204 whatever the address).
    RequestPasswordReset { collection: String, email: String, client: ClientInfo } -> (),
    |svc, msg| svc.request_password_reset(&msg.collection, &msg.email, &msg.client)
);

auth_message!(
    /// Sets a new password with a reset token.
    ConfirmPasswordReset { collection: String, token: String, password: String, password_confirm: String } -> (),
    |svc, msg| svc.confirm_password_reset(&msg.collection, &msg.token, &msg.password, &msg.password_confirm)
);

auth_message!(
    /// Mails a confirmation link to the caller's new address.
    RequestEmailChange { identity: AuthIdentity, new_email: String } -> (),
    |svc, msg| svc.request_email_change(&msg.identity, &msg.new_email)
);

auth_message!(
    /// Moves an account to its new address with an email change token.
    ConfirmEmailChange { collection: String, token: String, password: String } -> (),
    |svc, msg| svc.confirm_email_change(&msg.collection, &msg.token, &msg.password)
);
