//! The middleware every request passes: request id, tracing span, access log, metrics,
//! and a last line of defence that turns a panicking handler into a 500.

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::{ready, Future, Ready};
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::body::MessageBody;
use actix_web::dev::{Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::error::InternalError;
use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::{Error, ResponseError};
use foldhash::fast::RandomState;
use futures_util::FutureExt;
use prometheus::{Histogram, IntCounter, IntCounterVec};
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
            metrics: Rc::new(WorkerMetrics::new(self.metrics.clone())),
            access_log: self.access_log,
            count: self.count,
        }))
    }
}

pub struct RequestTelemetryService<S> {
    service: Rc<S>,
    metrics: Rc<WorkerMetrics>,
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
                    let route = outcome
                        .count
                        .then(|| outcome.metrics.for_path(res.request()));
                    let status = res.status();
                    outcome.finish(res.headers_mut(), route, status);
                    Ok(res)
                }
                Ok(Err(err)) => {
                    let mut res = err.error_response();
                    let status = res.status();
                    let route = outcome.count.then(|| outcome.metrics.for_label("(error)"));
                    outcome.finish(res.headers_mut(), route, status);
                    Err(InternalError::from_response(err, res).into())
                }
                Err(_) => {
                    tracing::error!("request handler panicked");
                    let mut res = ApiError::internal().error_response();
                    let status = res.status();
                    let route = outcome.count.then(|| outcome.metrics.for_label("(panic)"));
                    outcome.finish(res.headers_mut(), route, status);
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
    metrics: Rc<WorkerMetrics>,
    access_log: bool,
    count: bool,
}

impl Outcome {
    /// `route` is `None` when requests are not counted.
    fn finish(self, headers: &mut HeaderMap, route: Option<Rc<RouteMetrics>>, status: StatusCode) {
        headers.insert(X_REQUEST_ID, self.header);
        let Some(route) = route else {
            return;
        };
        let elapsed = self.started.elapsed();
        route.count(&self.method, status, elapsed);
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

/// Paths whose route [`WorkerMetrics`] remembers, per worker; further paths have their
/// route looked up every time.
const REMEMBERED_PATHS: usize = 1024;

/// Paths longer than this are not remembered.
const REMEMBERED_PATH_BYTES: usize = 256;

/// Method and status pairs whose counter a route keeps at hand; clients choose methods.
const REMEMBERED_COUNTERS: usize = 32;

/// One worker's handles to the request metrics. `with_label_values` hashes its labels
/// and locks the metric vector on every call, and finding a path's route pattern walks
/// actix's resource map and allocates: together most of what the middleware cost per
/// request. Each route's handles are resolved once, and the route of each path is
/// remembered (for a bounded number of paths, as clients choose paths).
struct WorkerMetrics {
    metrics: Arc<Metrics>,
    by_label: RefCell<HashMap<Box<str>, Rc<RouteMetrics>, RandomState>>,
    by_path: RefCell<HashMap<Box<str>, Rc<RouteMetrics>, RandomState>>,
}

/// The metrics of one route label.
struct RouteMetrics {
    label: Box<str>,
    duration: Histogram,
    all_requests: IntCounterVec,
    /// By method and status: a route sees a handful of them.
    requests: RefCell<Vec<(Method, StatusCode, IntCounter)>>,
}

impl RouteMetrics {
    fn count(&self, method: &Method, status: StatusCode, elapsed: Duration) {
        let mut requests = self.requests.borrow_mut();
        match requests
            .iter()
            .find(|(m, s, _)| *s == status && m == method)
        {
            Some((_, _, counter)) => counter.inc(),
            None => {
                let counter = self.all_requests.with_label_values(&[
                    &self.label,
                    method.as_str(),
                    status.as_str(),
                ]);
                counter.inc();
                if requests.len() < REMEMBERED_COUNTERS {
                    requests.push((method.clone(), status, counter));
                }
            }
        }
        self.duration.observe(elapsed.as_secs_f64());
    }
}

impl WorkerMetrics {
    fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            metrics,
            by_label: RefCell::default(),
            by_path: RefCell::default(),
        }
    }

    /// The metrics of the route that answered `req`.
    fn for_path(&self, req: &actix_web::HttpRequest) -> Rc<RouteMetrics> {
        let path = req.path();
        if let Some(route) = self.by_path.borrow().get(path) {
            return route.clone();
        }
        let route = match req.match_pattern() {
            Some(pattern) => self.for_label(&pattern),
            None => self.for_label(unmatched_label(path)),
        };
        let mut by_path = self.by_path.borrow_mut();
        if by_path.len() < REMEMBERED_PATHS && path.len() <= REMEMBERED_PATH_BYTES {
            by_path.insert(path.into(), route.clone());
        }
        route
    }

    fn for_label(&self, label: &str) -> Rc<RouteMetrics> {
        if let Some(route) = self.by_label.borrow().get(label) {
            return route.clone();
        }
        let route = Rc::new(RouteMetrics {
            label: label.into(),
            duration: self.metrics.http_duration.with_label_values(&[label]),
            all_requests: self.metrics.http_requests.clone(),
            requests: RefCell::default(),
        });
        self.by_label
            .borrow_mut()
            .insert(label.into(), route.clone());
        route
    }
}

/// The label of a path that no route pattern matched: a fixed one, so that arbitrary
/// paths cannot blow up the label set.
fn unmatched_label(path: &str) -> &'static str {
    if path.starts_with("/api/") {
        "(api unmatched)"
    } else {
        "(static)"
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
