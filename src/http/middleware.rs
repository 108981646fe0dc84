//! The middleware every request passes: request id, tracing span, access log, metrics,
//! and a last line of defence that turns a panicking handler into a 500.

use std::borrow::Cow;
use std::future::{ready, Future, Ready};
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::error::InternalError;
use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::{Error, ResponseError};
use futures_util::FutureExt;
use tracing::Instrument;

use crate::error::{ApiError, REQUEST_ID};
use crate::telemetry::Metrics;

pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Request id, span, access log and metrics for every request.
pub struct RequestTelemetry {
    metrics: Arc<Metrics>,
    access_log: bool,
    count: bool,
}

impl RequestTelemetry {
    pub fn new(metrics: Arc<Metrics>, access_log: bool) -> Self {
        Self {
            metrics,
            access_log,
            count: true,
        }
    }

    /// Request id and span only: for backend workers, whose requests the front end
    /// already logs and counts.
    pub fn without_metrics(metrics: Arc<Metrics>) -> Self {
        Self {
            metrics,
            access_log: false,
            count: false,
        }
    }
}

impl<S, B> Transform<S, ServiceRequest> for RequestTelemetry
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<B>;
    type Error = Error;
    type Transform = RequestTelemetryService<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(RequestTelemetryService {
            service: Rc::new(service),
            metrics: self.metrics.clone(),
            access_log: self.access_log,
            count: self.count,
        }))
    }
}

pub struct RequestTelemetryService<S> {
    service: Rc<S>,
    metrics: Arc<Metrics>,
    access_log: bool,
    count: bool,
}

impl<S, B> Service<ServiceRequest> for RequestTelemetryService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<B>;
    type Error = Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>>>>;

    actix_web::dev::forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        let started = Instant::now();
        let request_id = req
            .headers()
            .get(&X_REQUEST_ID)
            .and_then(|value| value.to_str().ok())
            .filter(|id| is_sane_request_id(id))
            .map_or_else(new_request_id, str::to_string);
        let span = tracing::info_span!(
            "request",
            method = %req.method(),
            path = %req.path(),
            request_id = %request_id,
        );
        let outcome = Outcome {
            started,
            method: req.method().clone(),
            header: HeaderValue::from_str(&request_id).expect("request ids are header-safe"),
            metrics: self.metrics.clone(),
            access_log: self.access_log,
            count: self.count,
        };
        let response = self.service.call(req);

        // The request itself moved into the service; when that ends in an error or a
        // panic, the answer is built from the error alone, still with its request id.
        let handled = async move {
            match AssertUnwindSafe(response).catch_unwind().await {
                Ok(Ok(mut res)) => {
                    let (route, status) = (route_label(&res), res.status());
                    outcome.finish(res.headers_mut(), &route, status);
                    Ok(res)
                }
                Ok(Err(err)) => {
                    let mut res = err.error_response();
                    let status = res.status();
                    outcome.finish(res.headers_mut(), "(error)", status);
                    Err(InternalError::from_response(err, res).into())
                }
                Err(_) => {
                    tracing::error!("request handler panicked");
                    let mut res = ApiError::internal().error_response();
                    let status = res.status();
                    outcome.finish(res.headers_mut(), "(panic)", status);
                    Err(InternalError::from_response("request handler panicked", res).into())
                }
            }
        };
        Box::pin(REQUEST_ID.scope(request_id, handled).instrument(span))
    }
}

/// What the middleware records once a response exists.
struct Outcome {
    started: Instant,
    method: Method,
    header: HeaderValue,
    metrics: Arc<Metrics>,
    access_log: bool,
    count: bool,
}

impl Outcome {
    fn finish(self, headers: &mut HeaderMap, route: &str, status: StatusCode) {
        headers.insert(X_REQUEST_ID, self.header);
        if !self.count {
            return;
        }
        let elapsed = self.started.elapsed();
        self.metrics
            .http_requests
            .with_label_values(&[route, self.method.as_str(), status.as_str()])
            .inc();
        self.metrics
            .http_duration
            .with_label_values(&[route])
            .observe(elapsed.as_secs_f64());
        if self.access_log {
            tracing::info!(
                target: "gatehouse::access",
                status = status.as_u16(),
                latency_ms = elapsed.as_secs_f64() * 1000.0,
                "request"
            );
        }
    }
}

/// The route pattern for metrics: the matched pattern, or a fixed label for requests
/// that no pattern matched, so that arbitrary paths cannot blow up the label set.
fn route_label<B>(res: &ServiceResponse<B>) -> Cow<'static, str> {
    let req = res.request();
    match req.match_pattern() {
        Some(pattern) => Cow::Owned(pattern),
        None if req.path().starts_with("/api/") => Cow::Borrowed("(api unmatched)"),
        None => Cow::Borrowed("(static)"),
    }
}

/// A fresh request id: a v4 UUID, encoded without going through `core::fmt`.
fn new_request_id() -> String {
    let mut encoded = [0; uuid::fmt::Hyphenated::LENGTH];
    uuid::Uuid::new_v4()
        .hyphenated()
        .encode_lower(&mut encoded)
        .to_owned()
}

/// A client's request id is echoed when it is short and made of safe characters.
fn is_sane_request_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_echoed_only_when_sane() {
        assert!(is_sane_request_id("3f2a-11:req_9.x"));
        assert!(!is_sane_request_id(""));
        assert!(!is_sane_request_id("has space"));
        assert!(!is_sane_request_id("<script>"));
        assert!(!is_sane_request_id(&"a".repeat(129)));
    }

    #[test]
    fn generated_request_ids_are_v4_uuids() {
        let id = new_request_id();
        assert!(is_sane_request_id(&id));
        let parsed = uuid::Uuid::parse_str(&id).unwrap();
        assert_eq!(parsed.get_version_num(), 4);
        assert_eq!(id, parsed.hyphenated().to_string());
    }
}
