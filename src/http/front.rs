//! The front door: every request that no fixed endpoint claims is answered by the
//! route its host and path select — a static folder, a redirect, or a proxied pool.
//! Requests for `api` routes reach the `/api` scope directly (its guard asks the same
//! route table), so an `api` route seen here is an unknown API path.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};

use super::proxy::{self, Proxy};
use super::{static_files, AppState};
use crate::error::ApiError;
use crate::routing::{redirect_location, request_host, RouteAction};

/// The default service: finds the route and lets it answer.
pub async fn dispatch(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
    proxy: web::Data<Proxy>,
) -> Result<HttpResponse, ApiError> {
    // Found once: a cached proxy route keys its cache by it too.
    let host = request_host(req.head());
    let Some(index) = state.routes.find_index(host, req.path()) else {
        return Ok(HttpResponse::NotFound()
            .content_type("text/plain; charset=utf-8")
            .body("404 Not Found\n"));
    };
    let route = &state.routes.routes()[index];
    match &route.action {
        RouteAction::Static { root: None } => {
            Ok(static_files::serve_site(&req, &state.static_site).await)
        }
        RouteAction::Static { root: Some(_) } => {
            let site = state.route_sites[index]
                .as_ref()
                .expect("every static route with a root has its site");
            Ok(static_files::serve_site(&req, site).await)
        }
        RouteAction::Api => Err(ApiError::not_found()),
        RouteAction::Redirect { to, status } => {
            let target = req
                .uri()
                .path_and_query()
                .map_or("/", |path_and_query| path_and_query.as_str());
            Ok(HttpResponse::build(*status)
                .insert_header((header::LOCATION, redirect_location(to, target)))
                .finish())
        }
        RouteAction::Proxy {
            upstream,
            strip_prefix,
        } => proxy::forward(&req, host, payload, route, upstream, *strip_prefix, &proxy).await,
    }
}
