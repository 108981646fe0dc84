//! `GET /api/openapi.json`: the API description, generated from the handlers' annotations.

use actix_web::{web, HttpResponse};
use utoipa::OpenApi;

use super::{
    admin, admin_campaigns, admin_outbox, admin_webhooks, auth, batch, health, hooks, newsletter,
    realtime, records, AppState,
};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Gatehouse",
        description = "Web server and backend in one binary; the records and auth API speaks PocketBase's REST dialect."
    ),
    paths(
        health::healthz, health::readyz, health::api_health, health::metrics, serve,
        auth::auth_with_password, auth::auth_refresh, auth::auth_methods, auth::auth_with_oauth2,
        auth::logout, auth::logout_all, auth::sessions,
        auth::request_verification, auth::confirm_verification, auth::request_password_reset,
        auth::confirm_password_reset, auth::request_email_change, auth::confirm_email_change,
        records::list, records::view, records::create, records::update, records::delete,
        records::list_collections, records::view_collection, records::create_collection,
        records::update_collection, records::delete_collection, records::truncate_collection,
        records::import_collections, batch::batch,
        admin::status, admin::upstreams, admin::purge_cache,
        newsletter::subscribe, newsletter::confirm, newsletter::unsubscribe_page, newsletter::unsubscribe,
        admin_outbox::list, admin_outbox::retry,
        admin_campaigns::create, admin_campaigns::show, admin_campaigns::send,
        realtime::connect, realtime::set_subscriptions,
        admin_webhooks::create, admin_webhooks::list, admin_webhooks::view, admin_webhooks::update,
        admin_webhooks::delete, admin_webhooks::list_deliveries, admin_webhooks::view_delivery,
        admin_webhooks::retry_delivery, hooks::receive,
    ),
    components(schemas(
        crate::error::ErrorBody, health::ApiHealth, auth::PasswordLogin, auth::EmailRequest,
        auth::TokenConfirmation, auth::PasswordResetConfirmation, auth::EmailChangeRequest,
        auth::EmailChangeConfirmation,
        crate::auth::service::OAuthLogin, admin::InstanceStatus, records::CollectionsImport,
        admin::UpstreamsBody, admin::PurgeRequest, admin::PurgeBody,
        crate::actors::balancer::PoolStatus, crate::actors::balancer::ServerStatus,
        crate::actors::balancer::ServerState,
        newsletter::SubscribeRequest, newsletter::NewsletterMessage,
        crate::mail::outbox::OutboxPage, crate::mail::outbox::OutboxEntry,
        admin_campaigns::CampaignRequest, crate::mail::campaigns::Campaign,
        crate::mail::outbox::DeliveryCounts, realtime::SetSubscriptions,
        crate::mail::outbox::DeliveryCounts,
        admin_webhooks::EndpointRequest, admin_webhooks::EndpointPatch,
        crate::webhooks::endpoints::EndpointView, crate::webhooks::deliveries::DeliveryView,
        crate::webhooks::deliveries::DeliveryPage, crate::webhooks::deliveries::AttemptView,
        hooks::HookReceipt,
    )),
    tags(
        (name = "auth", description = "PocketBase-compatible auth collections, plus revocable sessions"),
        (name = "records", description = "PocketBase-compatible records"),
        (name = "collections", description = "PocketBase-compatible collections (superusers only)"),
        (name = "admin", description = "Gatehouse's admin API (superusers only): instance status, upstream health, cache purges"),
        (name = "health", description = "PocketBase-compatible health check"),
        (name = "realtime", description = "PocketBase-compatible server-sent events of record changes"),
        (name = "operations", description = "Liveness, readiness, metrics and this document"),
        (name = "newsletter", description = "Public newsletter subscription with double opt-in and one-click unsubscribe"),
        (name = "mail", description = "The mail outbox and newsletter campaigns (superusers only)"),
        (name = "webhooks", description = "Signed outbound webhooks (endpoints and deliveries, superusers only) and signed inbound hooks"),
    )
)]
struct ApiDoc;

/// The OpenAPI document as JSON, built once at start.
pub fn document() -> String {
    ApiDoc::openapi()
        .to_json()
        .expect("the OpenAPI document serializes")
}

/// This OpenAPI document.
#[utoipa::path(get, path = "/api/openapi.json", tag = "operations",
    responses((status = 200, description = "OpenAPI 3.1 document", content_type = "application/json")))]
pub async fn serve(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(state.openapi.clone())
}
