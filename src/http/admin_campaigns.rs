//! The campaign admin API (superusers only): write a campaign, send it to every confirmed subscriber
//! (idempotent with an `Idempotency-Key`), follow its delivery.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::http::auth::RequireSuperuser;
use crate::http::AppState;
use crate::mail::campaigns::{self, Campaign, CampaignError, NewCampaign};
use crate::mail::idempotency::{self, Replay, StoredResponse};
use crate::mail::token_hash;
use crate::queue::{now_millis, to_millis};

/// The header that makes a send safe to retry.
pub const IDEMPOTENCY_KEY: &str = "Idempotency-Key";

/// `POST /api/admin/campaigns` body.
#[derive(Debug, Deserialize, ToSchema)]
pub struct CampaignRequest {
    #[schema(example = "November news")]
    pub subject: String,
    /// The plain-text body.
    pub text: String,
    /// The HTML body (markup, inserted as written).
    pub html: String,
}

/// Create a draft campaign.
#[utoipa::path(post, path = "/api/admin/campaigns", tag = "mail",
    request_body = CampaignRequest,
    responses(
        (status = 401, description = "Not authenticated", body = crate::error::ErrorBody),
        (status = 403, description = "Not a superuser", body = crate::error::ErrorBody),
        (status = 201, description = "The draft", body = Campaign),
        (status = 400, description = "`validation_failed` (`data.subject`, `data.text`, `data.html`) or `invalid_json`", body = crate::error::ErrorBody),
    ))]
pub async fn create(
    state: web::Data<AppState>,
    _: RequireSuperuser,
    body: web::Json<CampaignRequest>,
) -> Result<HttpResponse, ApiError> {
    let campaign = NewCampaign::parse(&body.subject, &body.text, &body.html).map_err(|errors| {
        errors.into_iter().fold(
            ApiError::validation("Failed to create the campaign."),
            |error, (field, message)| error.with_field(field, "validation_invalid_value", &message),
        )
    })?;
    let created = state
        .db
        .transact::<_, CampaignError, _>(move |txn| {
            Box::pin(async move { campaigns::create(txn, &campaign, now_millis()).await })
        })
        .await
        .map_err(api_error)?;
    Ok(HttpResponse::Created().json(created))
}

/// A campaign with its delivery counts (queued, sent, failed, cancelled).
#[utoipa::path(get, path = "/api/admin/campaigns/{id}", tag = "mail",
    params(("id" = String, Path, description = "Campaign id")),
    responses(
        (status = 401, description = "Not authenticated", body = crate::error::ErrorBody),
        (status = 403, description = "Not a superuser", body = crate::error::ErrorBody),
        (status = 200, description = "The campaign", body = Campaign),
        (status = 404, description = "`not_found`", body = crate::error::ErrorBody),
    ))]
pub async fn show(
    state: web::Data<AppState>,
    _: RequireSuperuser,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    let campaign = state
        .db
        .transact::<_, CampaignError, _>(move |txn| {
            Box::pin(async move { campaigns::find(txn, &id).await })
        })
        .await
        .map_err(api_error)?;
    Ok(HttpResponse::Ok().json(campaign))
}

/// Send a campaign to every confirmed subscriber.
///
/// Requires an `Idempotency-Key` header (1–255 visible ASCII characters). The mails are
/// queued in one transaction together with the remembered answer, so a retried request
/// with the same key gets the same answer and sends nothing more; the key is remembered
/// for `mail.newsletter.idempotency_ttl`. A campaign is sent at most once: another key
/// gets 409 `campaign_already_sent`.
#[utoipa::path(post, path = "/api/admin/campaigns/{id}/send", tag = "mail",
    params(
        ("id" = String, Path, description = "Campaign id"),
        ("Idempotency-Key" = String, Header, description = "Unique per intended send; repeat it when retrying"),
    ),
    responses(
        (status = 401, description = "Not authenticated", body = crate::error::ErrorBody),
        (status = 403, description = "Not a superuser", body = crate::error::ErrorBody),
        (status = 202, description = "Queued for every confirmed subscriber", body = Campaign),
        (status = 400, description = "`idempotency_key_required`", body = crate::error::ErrorBody),
        (status = 404, description = "`not_found`", body = crate::error::ErrorBody),
        (status = 409, description = "`campaign_already_sent`", body = crate::error::ErrorBody),
        (status = 422, description = "`idempotency_key_reused`: the key was used for another request", body = crate::error::ErrorBody),
    ))]
pub async fn send(
    state: web::Data<AppState>,
    _: RequireSuperuser,
    request: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let key = idempotency_key(&request)?;
    let id = id.into_inner();
    let request_hash = token_hash(&format!("send campaign {id}"));
    let ttl = to_millis(state.settings.mail.newsletter.idempotency_ttl);
    // A concurrent request with the same key loses the race on the campaign or on the
    // key and rolls back; asking again then finds the winner's answer.
    for _ in 0..2 {
        let (mail, key, id, request_hash) = (
            state.mail.clone(),
            key.clone(),
            id.clone(),
            request_hash.clone(),
        );
        let result = state
            .db
            .transact::<_, CampaignError, _>(move |txn| {
                Box::pin(async move {
                    const SCOPE: &str = "campaign_send";
                    let now = now_millis();
                    match idempotency::lookup(txn, SCOPE, &key, &request_hash, now, ttl).await? {
                        Replay::Answered(stored) => return Ok(Sent::Replayed(stored)),
                        Replay::Mismatch => return Ok(Sent::KeyReused),
                        Replay::New => {}
                    }
                    let campaign = campaigns::send(txn, &mail, &id, now).await?;
                    let stored = StoredResponse {
                        status: StatusCode::ACCEPTED.as_u16(),
                        body: serde_json::to_value(&campaign).expect("campaigns serialize"),
                    };
                    idempotency::remember(txn, SCOPE, &key, &request_hash, &stored, now).await?;
                    Ok(Sent::Queued(stored))
                })
            })
            .await;
        match result {
            Ok(Sent::Queued(stored)) => {
                state.mailer.wake();
                return Ok(stored_answer(stored));
            }
            Ok(Sent::Replayed(stored)) => return Ok(stored_answer(stored)),
            Ok(Sent::KeyReused) => {
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "idempotency_key_reused",
                    "This Idempotency-Key was used for a different request.",
                ))
            }
            Err(CampaignError::AlreadySent | CampaignError::Database(_)) => continue,
            Err(err) => return Err(api_error(err)),
        }
    }
    // The second try found no remembered answer: the campaign was sent under another
    // key, or the database keeps failing.
    let id = id.clone();
    let campaign = state
        .db
        .transact::<_, CampaignError, _>(move |txn| {
            Box::pin(async move { campaigns::find(txn, &id).await })
        })
        .await
        .map_err(api_error)?;
    Err(if campaign.status == campaigns::status::QUEUED {
        api_error(CampaignError::AlreadySent)
    } else {
        ApiError::unavailable(
            "The campaign could not be queued; retry with the same Idempotency-Key.",
        )
    })
}

enum Sent {
    Queued(StoredResponse),
    Replayed(StoredResponse),
    KeyReused,
}

fn stored_answer(stored: StoredResponse) -> HttpResponse {
    HttpResponse::build(StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK))
        .json(stored.body)
}

fn idempotency_key(request: &HttpRequest) -> Result<String, ApiError> {
    let key = request
        .headers()
        .get(IDEMPOTENCY_KEY)
        .and_then(|value| value.to_str().ok())
        .map(str::trim)
        .filter(|key| !key.is_empty() && key.len() <= 255)
        .filter(|key| key.bytes().all(|b| b.is_ascii_graphic()));
    key.map(str::to_string).ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "idempotency_key_required",
            "Sending a campaign requires an Idempotency-Key header of 1 to 255 visible ASCII characters.",
        )
    })
}

fn api_error(err: CampaignError) -> ApiError {
    match err {
        CampaignError::NotFound => ApiError::not_found(),
        CampaignError::AlreadySent => ApiError::new(
            StatusCode::CONFLICT,
            "campaign_already_sent",
            "The campaign has already been sent.",
        ),
        CampaignError::Template(err) => super::internal(&err),
        CampaignError::Database(err) => err.into(),
    }
}
