//! Records endpoints under `/api/collections/{collection}/records` and the
//! collections API: HTTP in, a database-actor message out, JSON back.

use std::collections::HashMap;

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::api_cache::{self, Access};
use super::auth::{client_info, Authenticated, RequireSuperuser};
use super::AppState;
use crate::actors::auth::Register;
use crate::actors::database::DatabaseActor;
use crate::actors::records::{
    CreateRecord, DeleteCollection, DeleteRecord, ImportCollections, ListCollections, ListRecords,
    SaveCollection, TruncateCollection, UpdateRecord, ViewCollection, ViewRecord,
};
use crate::collections::definition::CollectionInput;
use crate::error::ApiError;
use crate::records::read::ListQuery;
use crate::records::Requester;

/// The requester as rules see it: identity, method, query and headers (PocketBase's
/// header keys: lower case, `-` as `_`).
fn requester(req: &HttpRequest, caller: Authenticated) -> Requester {
    let query: Map<String, Value> =
        web::Query::<HashMap<String, String>>::from_query(req.query_string())
            .map(|q| {
                q.into_inner()
                    .into_iter()
                    .map(|(k, v)| (k, Value::String(v)))
                    .collect()
            })
            .unwrap_or_default();
    Requester::new(caller.0, req.method().as_str(), query, rule_headers(req))
}

/// The request's headers as `@request.headers.*` sees them (PocketBase's keys: lower
/// case, `-` as `_`), without credentials.
pub(super) fn rule_headers(req: &HttpRequest) -> Map<String, Value> {
    req.headers()
        .iter()
        .filter(|(name, _)| *name != "authorization" && *name != "cookie")
        .filter_map(|(name, value)| {
            let value = value.to_str().ok()?;
            Some((
                name.as_str().replace('-', "_"),
                Value::String(value.to_string()),
            ))
        })
        .collect()
}

async fn ask<M>(state: &AppState, msg: M) -> Result<M::Result, ApiError>
where
    M: actix::Message + Send + 'static,
    M::Result: Send,
    DatabaseActor: actix::Handler<M>,
{
    state
        .db
        .pick()
        .send(msg)
        .await
        .map_err(|_| ApiError::unavailable("The database service is restarting; try again."))
}

/// `?expand=` and `?fields=`, which every record answer honours.
#[derive(Debug, Default, Deserialize)]
pub struct Shape {
    #[serde(default)]
    expand: String,
    #[serde(default)]
    fields: String,
}

/// Lists records the list rule lets the caller see.
#[utoipa::path(get, path = "/api/collections/{collection}/records", tag = "records",
    params(
        ("collection" = String, Path, description = "Collection name or id"),
        ("page" = Option<u64>, Query, description = "Page number, from 1"),
        ("perPage" = Option<u64>, Query, description = "Records per page (default 30, at most 1000)"),
        ("sort" = Option<String>, Query, description = "e.g. `-created,title`; `@random`"),
        ("filter" = Option<String>, Query, description = "PocketBase filter, e.g. `title ~ 'abc' && views > 10`"),
        ("expand" = Option<String>, Query, description = "Relations to inline, e.g. `author,comments_via_post`"),
        ("fields" = Option<String>, Query, description = "Fields to return, e.g. `id,title,expand.author.name`"),
        ("skipTotal" = Option<bool>, Query, description = "Skip counting; totals are -1"),
    ),
    responses(
        (status = 200, description = "`{page, perPage, totalItems, totalPages, items}`"),
        (status = 400, description = "Bad filter, sort, expand or fields", body = crate::error::ErrorBody),
        (status = 403, description = "The list rule is superusers-only", body = crate::error::ErrorBody),
        (status = 404, description = "No such collection", body = crate::error::ErrorBody),
    ))]
pub async fn list(
    req: HttpRequest,
    state: web::Data<AppState>,
    collection: web::Path<String>,
    params: web::Query<HashMap<String, String>>,
    caller: Authenticated,
) -> Result<HttpResponse, ApiError> {
    let cacheable = api_cache::cacheable(&state, &req, &caller, &collection, Access::List);
    if let Some(cacheable) = &cacheable {
        if let Some(hit) = api_cache::lookup(&state, &req, cacheable).await {
            return Ok(hit);
        }
    }
    let page = ask(
        &state,
        ListRecords {
            collection: collection.into_inner(),
            query: ListQuery::from_params(&params),
            requester: requester(&req, caller),
        },
    )
    .await??;
    match cacheable {
        Some(cacheable) => api_cache::store(&state, &req, cacheable, &page),
        None => Ok(HttpResponse::Ok().json(page)),
    }
}

/// One record the view rule lets the caller see.
#[utoipa::path(get, path = "/api/collections/{collection}/records/{id}", tag = "records",
    params(
        ("collection" = String, Path, description = "Collection name or id"),
        ("id" = String, Path, description = "Record id"),
        ("expand" = Option<String>, Query, description = "Relations to inline"),
        ("fields" = Option<String>, Query, description = "Fields to return"),
    ),
    responses(
        (status = 200, description = "The record"),
        (status = 404, description = "Missing, or hidden by the view rule", body = crate::error::ErrorBody),
    ))]
pub async fn view(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    shape: web::Query<Shape>,
    caller: Authenticated,
) -> Result<HttpResponse, ApiError> {
    let (collection, id) = path.into_inner();
    let cacheable = api_cache::cacheable(&state, &req, &caller, &collection, Access::View);
    if let Some(cacheable) = &cacheable {
        if let Some(hit) = api_cache::lookup(&state, &req, cacheable).await {
            return Ok(hit);
        }
    }
    let shape = shape.into_inner();
    let record = ask(
        &state,
        ViewRecord {
            collection,
            id,
            expand: shape.expand,
            fields: shape.fields,
            requester: requester(&req, caller),
        },
    )
    .await??;
    match cacheable {
        Some(cacheable) => api_cache::store(&state, &req, cacheable, &record),
        None => Ok(HttpResponse::Ok().json(record)),
    }
}

/// Creates a record; on an auth collection this is registration (`email`,
/// `password`, `passwordConfirm`, and other fields).
#[utoipa::path(post, path = "/api/collections/{collection}/records", tag = "records",
    params(("collection" = String, Path, description = "Collection name or id")),
    request_body(content = Object, description = "Field values"),
    responses(
        (status = 200, description = "The created record"),
        (status = 400, description = "Field errors in `data`, or the create rule refused it", body = crate::error::ErrorBody),
        (status = 403, description = "The create rule is superusers-only", body = crate::error::ErrorBody),
    ))]
pub async fn create(
    req: HttpRequest,
    state: web::Data<AppState>,
    collection: web::Path<String>,
    shape: web::Query<Shape>,
    caller: Authenticated,
    body: web::Json<Map<String, Value>>,
) -> Result<HttpResponse, ApiError> {
    let collection = collection.into_inner();
    let shape = shape.into_inner();
    let is_auth = state.registry.get(&collection).is_some_and(|c| c.is_auth());
    let record = if is_auth {
        state
            .auth
            .pick()
            .send(Register {
                collection: collection.clone(),
                body: body.into_inner(),
                client: client_info(&req),
                requester: requester(&req, caller),
                expand: shape.expand,
                fields: shape.fields,
            })
            .await
            .map_err(|_| ApiError::unavailable("The auth service is restarting; try again."))??
    } else {
        ask(
            &state,
            CreateRecord {
                collection: collection.clone(),
                body: body.into_inner(),
                expand: shape.expand,
                fields: shape.fields,
                requester: requester(&req, caller),
            },
        )
        .await??
    };
    api_cache::records_changed(&state, &collection).await;
    Ok(HttpResponse::Ok().json(record))
}

/// Changes the submitted fields of a record the update rule allows.
#[utoipa::path(patch, path = "/api/collections/{collection}/records/{id}", tag = "records",
    params(
        ("collection" = String, Path, description = "Collection name or id"),
        ("id" = String, Path, description = "Record id"),
    ),
    request_body(content = Object, description = "Field values to change; auth records also take `password`, `passwordConfirm` and `oldPassword`"),
    responses(
        (status = 200, description = "The updated record"),
        (status = 400, description = "Field errors in `data`", body = crate::error::ErrorBody),
        (status = 404, description = "Missing, or hidden by the update rule", body = crate::error::ErrorBody),
    ))]
pub async fn update(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    shape: web::Query<Shape>,
    caller: Authenticated,
    body: web::Json<Map<String, Value>>,
) -> Result<HttpResponse, ApiError> {
    let (collection, id) = path.into_inner();
    let shape = shape.into_inner();
    let record = ask(
        &state,
        UpdateRecord {
            collection: collection.clone(),
            id,
            body: body.into_inner(),
            expand: shape.expand,
            fields: shape.fields,
            requester: requester(&req, caller),
        },
    )
    .await??;
    api_cache::records_changed(&state, &collection).await;
    Ok(HttpResponse::Ok().json(record))
}

/// Deletes a record the delete rule allows; relations to it cascade or are cleared.
#[utoipa::path(delete, path = "/api/collections/{collection}/records/{id}", tag = "records",
    params(
        ("collection" = String, Path, description = "Collection name or id"),
        ("id" = String, Path, description = "Record id"),
    ),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "A required relation still points at it", body = crate::error::ErrorBody),
        (status = 404, description = "Missing, or hidden by the delete rule", body = crate::error::ErrorBody),
    ))]
pub async fn delete(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    caller: Authenticated,
) -> Result<HttpResponse, ApiError> {
    let (collection, id) = path.into_inner();
    ask(
        &state,
        DeleteRecord {
            collection: collection.clone(),
            id,
            requester: requester(&req, caller),
        },
    )
    .await??;
    api_cache::records_changed(&state, &collection).await;
    Ok(HttpResponse::NoContent().finish())
}

/// Every collection (superusers only).
#[utoipa::path(get, path = "/api/collections", tag = "collections",
    responses(
        (status = 200, description = "The list envelope of collection definitions"),
        (status = 401, description = "Not authenticated", body = crate::error::ErrorBody),
        (status = 403, description = "Not a superuser", body = crate::error::ErrorBody),
    ))]
pub async fn list_collections(
    state: web::Data<AppState>,
    _: RequireSuperuser,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(ask(&state, ListCollections {}).await??))
}

/// One collection definition (superusers only).
#[utoipa::path(get, path = "/api/collections/{collection}", tag = "collections",
    params(("collection" = String, Path, description = "Collection name or id")),
    responses((status = 200, description = "The definition"), (status = 404, description = "No such collection", body = crate::error::ErrorBody)))]
pub async fn view_collection(
    state: web::Data<AppState>,
    collection: web::Path<String>,
    _: RequireSuperuser,
) -> Result<HttpResponse, ApiError> {
    let id_or_name = collection.into_inner();
    Ok(HttpResponse::Ok().json(ask(&state, ViewCollection { id_or_name }).await??))
}

/// Creates a collection and its table (superusers only).
#[utoipa::path(post, path = "/api/collections", tag = "collections",
    request_body(content = Object, description = "PocketBase's collection JSON: name, type, fields, indexes, rules"),
    responses((status = 200, description = "The new definition"), (status = 400, description = "What is wrong, per key", body = crate::error::ErrorBody)))]
pub async fn create_collection(
    state: web::Data<AppState>,
    _: RequireSuperuser,
    input: web::Json<CollectionInput>,
) -> Result<HttpResponse, ApiError> {
    let saved = ask(
        &state,
        SaveCollection {
            current: None,
            input: input.into_inner(),
        },
    )
    .await??;
    Ok(HttpResponse::Ok().json(saved))
}

/// Changes a collection: renames, field additions, renames and removals, indexes and
/// rules, keeping the data (superusers only).
#[utoipa::path(patch, path = "/api/collections/{collection}", tag = "collections",
    params(("collection" = String, Path, description = "Collection name or id")),
    request_body(content = Object, description = "The keys to change; `fields` replaces the list"),
    responses((status = 200, description = "The changed definition"), (status = 400, description = "What is wrong, per key", body = crate::error::ErrorBody)))]
pub async fn update_collection(
    state: web::Data<AppState>,
    collection: web::Path<String>,
    _: RequireSuperuser,
    input: web::Json<CollectionInput>,
) -> Result<HttpResponse, ApiError> {
    let collection = collection.into_inner();
    let previous = state.registry.get(&collection);
    let saved = ask(
        &state,
        SaveCollection {
            current: Some(collection.clone()),
            input: input.into_inner(),
        },
    )
    .await??;
    let previous_name = previous.as_ref().map_or("", |c| c.name.as_str());
    api_cache::collections_changed(&state, &[&collection, previous_name]).await;
    Ok(HttpResponse::Ok().json(saved))
}

/// Deletes a collection and its records (superusers only).
#[utoipa::path(delete, path = "/api/collections/{collection}", tag = "collections",
    params(("collection" = String, Path, description = "Collection name or id")),
    responses((status = 204, description = "Deleted"), (status = 400, description = "A system collection, or still referenced", body = crate::error::ErrorBody)))]
pub async fn delete_collection(
    state: web::Data<AppState>,
    collection: web::Path<String>,
    _: RequireSuperuser,
) -> Result<HttpResponse, ApiError> {
    let collection = collection.into_inner();
    let previous = state.registry.get(&collection);
    ask(
        &state,
        DeleteCollection {
            id_or_name: collection.clone(),
        },
    )
    .await??;
    let previous_name = previous.as_ref().map_or("", |c| c.name.as_str());
    api_cache::collections_changed(&state, &[&collection, previous_name]).await;
    Ok(HttpResponse::NoContent().finish())
}

/// Deletes every record of a collection (superusers only).
#[utoipa::path(delete, path = "/api/collections/{collection}/truncate", tag = "collections",
    params(("collection" = String, Path, description = "Collection name or id")),
    responses((status = 204, description = "Emptied")))]
pub async fn truncate_collection(
    state: web::Data<AppState>,
    collection: web::Path<String>,
    _: RequireSuperuser,
) -> Result<HttpResponse, ApiError> {
    let collection = collection.into_inner();
    ask(
        &state,
        TruncateCollection {
            id_or_name: collection.clone(),
        },
    )
    .await??;
    api_cache::records_changed(&state, &collection).await;
    Ok(HttpResponse::NoContent().finish())
}

/// `PUT /api/collections/import` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CollectionsImport {
    #[schema(value_type = Vec<Object>)]
    collections: Vec<CollectionInput>,
    #[serde(default)]
    delete_missing: bool,
}

/// Creates or updates many collections at once, all or nothing (superusers only).
#[utoipa::path(put, path = "/api/collections/import", tag = "collections",
    request_body = CollectionsImport,
    responses((status = 204, description = "Imported"), (status = 400, description = "What is wrong, per collection", body = crate::error::ErrorBody)))]
pub async fn import_collections(
    state: web::Data<AppState>,
    _: RequireSuperuser,
    body: web::Json<CollectionsImport>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    ask(
        &state,
        ImportCollections {
            inputs: body.collections,
            delete_missing: body.delete_missing,
        },
    )
    .await??;
    api_cache::all_collections_changed(&state).await;
    Ok(HttpResponse::NoContent().finish())
}
