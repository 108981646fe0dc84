//! What every request meets first: the header size limit (431), the redirect of plain
//! HTTP to HTTPS when configured, and `Strict-Transport-Security` on HTTPS answers.

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::middleware::Next;
use actix_web::{Error, HttpResponse, ResponseError};

use crate::error::ApiError;

/// Edge policy, built once from the settings.
#[derive(Debug, Clone)]
pub struct EdgePolicy {
    pub max_header_bytes: usize,
    /// `Some(port)`: plain-HTTP requests are redirected to HTTPS on this port.
    pub redirect_to_https_port: Option<u16>,
    pub hsts: Option<HeaderValue>,
}

/// The middleware function; `policy` is app data.
pub async fn edge(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    let policy = req
        .app_data::<actix_web::web::Data<EdgePolicy>>()
        .expect("the edge policy is app data")
        .clone();
    let header_bytes: usize = req
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    if header_bytes > policy.max_header_bytes {
        let error = ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
            format!(
                "The request headers are larger than the limit of {} bytes.",
                policy.max_header_bytes
            ),
        );
        return Ok(req.into_response(error.error_response()));
    }
    let secure = req.app_config().secure();
    if let (false, Some(port)) = (secure, policy.redirect_to_https_port) {
        let host = crate::routing::request_host(req.head());
        let authority = if port == 443 {
            host.to_string()
        } else {
            format!("{host}:{port}")
        };
        let target = req
            .uri()
            .path_and_query()
            .map_or("/", |path_and_query| path_and_query.as_str());
        let response = HttpResponse::PermanentRedirect()
            .insert_header((header::LOCATION, format!("https://{authority}{target}")))
            .finish();
        return Ok(req.into_response(response));
    }
    let mut response = next.call(req).await?.map_into_boxed_body();
    if let (true, Some(hsts)) = (secure, policy.hsts.clone()) {
        response
            .headers_mut()
            .insert(header::STRICT_TRANSPORT_SECURITY, hsts);
    }
    Ok(response)
}
