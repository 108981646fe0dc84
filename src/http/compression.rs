//! Response compression (br, zstd, gzip) negotiated by `Accept-Encoding`, for types that
//! compress well. Unlike actix-web's `Compress`, it leaves Server-Sent Events alone (a
//! compressor holds events back until its buffer fills) and skips tiny bodies.

use std::future::{ready, Future, Ready};
use std::pin::Pin;
use std::rc::Rc;

use actix_http::encoding::Encoder;
use actix_web::body::{BodySize, EitherBody, MessageBody};
use actix_web::dev::{Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::http::header::{self, ContentEncoding, HeaderMap};
use actix_web::http::StatusCode;
use actix_web::Error;

/// Bodies smaller than this are sent as they are: the framing would eat the gain.
const MIN_BYTES: u64 = 256;

/// The compression middleware.
pub struct Compression;

impl<S, B> Transform<S, ServiceRequest> for Compression
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<Encoder<B>, B>>;
    type Error = Error;
    type Transform = CompressionService<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(CompressionService {
            service: Rc::new(service),
        }))
    }
}

pub struct CompressionService<S> {
    service: Rc<S>,
}

impl<S, B> Service<ServiceRequest> for CompressionService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<Encoder<B>, B>>;
    type Error = Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>>>>;

    actix_web::dev::forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        let encoding = req
            .headers()
            .get(header::ACCEPT_ENCODING)
            .and_then(|value| value.to_str().ok())
            .and_then(preferred_encoding);
        let response = self.service.call(req);
        Box::pin(async move {
            let response = response.await?;
            Ok(response.map_body(move |head, body| match encoding {
                Some(encoding) if worth_compressing(head.status, &head.headers, body.size()) => {
                    EitherBody::left(Encoder::response(encoding, head, body))
                }
                _ => EitherBody::right(body),
            }))
        })
    }
}

/// The best encoding the client accepts: br, then zstd, then gzip at equal quality.
/// Runs on every request, so it reads the header in place, without allocating.
pub fn preferred_encoding(accept: &str) -> Option<ContentEncoding> {
    let codings = [
        ("br", ContentEncoding::Brotli),
        ("zstd", ContentEncoding::Zstd),
        ("gzip", ContentEncoding::Gzip),
    ];
    // The quality of each coding's first mention, and of the last `*`.
    let mut named: [Option<f32>; 3] = [None; 3];
    let mut wildcard: Option<f32> = None;
    for item in accept.split(',') {
        let mut parts = item.split(';');
        let name = parts.next().unwrap_or("").trim();
        let quality = parts
            .find_map(|param| {
                let (key, value) = param.split_once('=')?;
                (key.trim() == "q").then(|| value.trim().parse::<f32>().unwrap_or(0.0))
            })
            .unwrap_or(1.0);
        if name == "*" {
            wildcard = Some(quality);
        }
        if let Some(slot) = codings
            .iter()
            .position(|(token, _)| name.eq_ignore_ascii_case(token))
        {
            named[slot].get_or_insert(quality);
        }
    }
    let mut best: Option<(f32, usize, ContentEncoding)> = None;
    for (rank, (_, encoding)) in codings.into_iter().enumerate() {
        let quality = named[rank].or(wildcard);
        if let Some(quality) = quality.filter(|quality| *quality > 0.0) {
            let better = best.is_none_or(|(q, r, _)| quality > q || (quality == q && rank < r));
            if better {
                best = Some((quality, rank, encoding));
            }
        }
    }
    best.map(|(_, _, encoding)| encoding)
}

/// Compress only textual types, not event streams, not already-encoded or partial
/// bodies, and not bodies too small to gain.
fn worth_compressing(status: StatusCode, headers: &HeaderMap, size: BodySize) -> bool {
    if headers.contains_key(header::CONTENT_ENCODING)
        || matches!(
            status,
            StatusCode::SWITCHING_PROTOCOLS | StatusCode::NO_CONTENT | StatusCode::PARTIAL_CONTENT
        )
        || status == StatusCode::NOT_MODIFIED
    {
        return false;
    }
    match size {
        BodySize::None => return false,
        BodySize::Sized(length) if length < MIN_BYTES => return false,
        _ => {}
    }
    let Some(content_type) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
    else {
        return false;
    };
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if essence == "text/event-stream" {
        return false;
    }
    essence.starts_with("text/")
        || essence.ends_with("+json")
        || essence.ends_with("+xml")
        || matches!(
            essence.as_str(),
            "application/json"
                | "application/javascript"
                | "application/xml"
                | "application/wasm"
                | "image/svg+xml"
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::HeaderValue;

    #[test]
    fn the_best_accepted_encoding_wins() {
        assert_eq!(
            preferred_encoding("gzip, br"),
            Some(ContentEncoding::Brotli)
        );
        assert_eq!(
            preferred_encoding("gzip, zstd"),
            Some(ContentEncoding::Zstd)
        );
        assert_eq!(
            preferred_encoding("gzip;q=1, br;q=0.5"),
            Some(ContentEncoding::Gzip)
        );
        assert_eq!(
            preferred_encoding("br;q=0, gzip"),
            Some(ContentEncoding::Gzip)
        );
        assert_eq!(preferred_encoding("identity"), None);
        assert_eq!(preferred_encoding("*"), Some(ContentEncoding::Brotli));
        assert_eq!(preferred_encoding(""), None);
        // Names are case-insensitive; a coding's first mention is the one that counts.
        assert_eq!(
            preferred_encoding("GZip;q=0.5, br;q=0, br"),
            Some(ContentEncoding::Gzip)
        );
    }

    fn typed(content_type: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_str(content_type).unwrap(),
        );
        headers
    }

    #[test]
    fn only_textual_sizeable_bodies_are_compressed() {
        let big = BodySize::Sized(10_000);
        assert!(worth_compressing(
            StatusCode::OK,
            &typed("text/html; charset=utf-8"),
            big
        ));
        assert!(worth_compressing(
            StatusCode::OK,
            &typed("application/json"),
            BodySize::Stream
        ));
        assert!(!worth_compressing(
            StatusCode::OK,
            &typed("text/event-stream"),
            BodySize::Stream
        ));
        assert!(!worth_compressing(StatusCode::OK, &typed("image/png"), big));
        assert!(!worth_compressing(
            StatusCode::OK,
            &typed("text/plain"),
            BodySize::Sized(10)
        ));
        assert!(!worth_compressing(
            StatusCode::PARTIAL_CONTENT,
            &typed("text/plain"),
            big
        ));
        let mut encoded = typed("text/plain");
        encoded.insert(header::CONTENT_ENCODING, HeaderValue::from_static("br"));
        assert!(!worth_compressing(StatusCode::OK, &encoded, big));
    }
}
