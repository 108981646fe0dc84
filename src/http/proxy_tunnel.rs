//! Upgraded connections (WebSocket) through the proxy: the request head is written to
//! an upstream socket by hand, the upstream's answer head is read back, and after a
//! `101 Switching Protocols` bytes flow both ways untouched until either side closes.

use std::sync::Arc;

use actix_web::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::{Bytes, BytesMut};
use futures_util::{stream, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio_util::io::ReaderStream;

use super::proxy::{add_worker_hop, end_to_end_headers, Proxy, ProxyError, UpstreamRequest};
use super::upstream_client::{connect, ConnectError};
use crate::actors::balancer::Pool;

/// An upstream's answer head may not be larger than this.
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Whether the client asks to switch protocols (`Connection: upgrade` + `Upgrade`).
pub fn is_upgrade(req: &HttpRequest) -> bool {
    let headers = req.headers();
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .any(|token| token.trim().eq_ignore_ascii_case("upgrade"))
}

/// Tunnels an upgrade request to a server of `pool`.
pub async fn tunnel(
    req: &HttpRequest,
    payload: web::Payload,
    pool: &Arc<Pool>,
    request: UpstreamRequest,
    proxy: &Proxy,
) -> Result<HttpResponse, ProxyError> {
    let candidates = pool.candidates(request.client_key);
    let Some(&index) = candidates.first() else {
        return Err(ProxyError::NoHealthyUpstream(pool.name.clone()));
    };
    let in_flight = pool.start_request(index);
    let member = pool.member(index);
    let mut socket = match connect(member, proxy.connect_timeout).await {
        Ok(socket) => socket,
        Err(err) => {
            pool.record_failure(index);
            tracing::warn!(server = %member.url, %err, "upstream connection failed");
            return Err(match err {
                ConnectError::Tls(_) => ProxyError::Tls(pool.name.clone()),
                ConnectError::Timeout => ProxyError::Timeout,
                ConnectError::Io(_) => ProxyError::Unreachable(pool.name.clone()),
            });
        }
    };

    let mut head = Vec::new();
    head.extend_from_slice(request.method.as_str().as_bytes());
    head.push(b' ');
    head.extend_from_slice(&member.url.target_for(&request.path_and_query));
    head.extend_from_slice(b" HTTP/1.1\r\n");
    let peer = request.peer;
    let mut headers = request.headers;
    // The upgrade headers are hop-by-hop and were dropped; this hop asks for them again.
    if let Some(upgrade) = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|upgrade| http::HeaderValue::from_bytes(upgrade.as_bytes()).ok())
    {
        headers.insert(http::header::UPGRADE, upgrade);
    }
    headers.insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("upgrade"),
    );
    add_worker_hop(&mut headers, member, &proxy.hop_key, peer);
    for (name, value) in &headers {
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    let exchange = async {
        socket.write_all(&head).await?;
        read_head(&mut socket).await
    };
    let (status, response_headers, rest) =
        match tokio::time::timeout(proxy.read_timeout, exchange).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(err)) => {
                pool.record_failure(index);
                return Err(ProxyError::BadGateway(err.to_string()));
            }
            Err(_) => {
                pool.record_failure(index);
                return Err(ProxyError::Timeout);
            }
        };
    pool.record_success(index);

    let mut builder = HttpResponse::build(status);
    for (name, value) in end_to_end_headers(&response_headers).iter() {
        builder.append_header((name.clone(), value.clone()));
    }
    if status != StatusCode::SWITCHING_PROTOCOLS {
        // Refused upgrade: relay the answer; the socket is not reused.
        let length = response_headers
            .get(header::CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse::<usize>().ok())
            .unwrap_or(rest.len());
        let mut body = rest.to_vec();
        if body.len() < length {
            let mut tail = vec![0; length - body.len()];
            if socket.read_exact(&mut tail).await.is_ok() {
                body.extend_from_slice(&tail);
            }
        }
        body.truncate(length);
        return Ok(builder.body(body));
    }
    if let Some(protocol) = response_headers
        .get(header::UPGRADE)
        .and_then(|value| value.to_str().ok())
    {
        builder.upgrade(protocol.to_string());
    }
    let (reader, mut writer) = tokio::io::split(socket);
    let mut payload = payload;
    actix_web::rt::spawn(async move {
        while let Some(Ok(chunk)) = payload.next().await {
            if writer.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = writer.shutdown().await;
    });
    let upstream_bytes = stream::once(async move { Ok::<Bytes, std::io::Error>(rest) })
        .filter(|chunk| {
            let keep = chunk.as_ref().map_or(true, |bytes| !bytes.is_empty());
            async move { keep }
        })
        .chain(ReaderStream::new(reader))
        .map(move |chunk| {
            // Keeps the server counted as busy for as long as the tunnel is open.
            let _ = &in_flight;
            chunk
        });
    Ok(builder.streaming(upstream_bytes))
}

/// Reads an HTTP/1.1 response head; returns it and any bytes that followed it.
async fn read_head(
    socket: &mut (impl AsyncRead + Unpin),
) -> std::io::Result<(StatusCode, HeaderMap, Bytes)> {
    let mut buffer = BytesMut::with_capacity(4096);
    loop {
        if socket.read_buf(&mut buffer).await? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "upstream closed before answering",
            ));
        }
        let mut slots = [httparse::EMPTY_HEADER; 64];
        let mut response = httparse::Response::new(&mut slots);
        match response.parse(&buffer) {
            Ok(httparse::Status::Complete(length)) => {
                let invalid = || std::io::Error::new(std::io::ErrorKind::InvalidData, "bad head");
                let status = StatusCode::from_u16(response.code.ok_or_else(invalid)?)
                    .map_err(|_| invalid())?;
                let mut headers = HeaderMap::new();
                for header in response.headers.iter() {
                    headers.append(
                        HeaderName::from_bytes(header.name.as_bytes()).map_err(|_| invalid())?,
                        HeaderValue::from_bytes(header.value).map_err(|_| invalid())?,
                    );
                }
                let rest = buffer.split_off(length).freeze();
                return Ok((status, headers, rest));
            }
            Ok(httparse::Status::Partial) if buffer.len() < MAX_HEAD_BYTES => {}
            Ok(httparse::Status::Partial) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "upstream answer head too large",
                ))
            }
            Err(err) => return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, err)),
        }
    }
}
