//! Requests written byte for byte, for paths that HTTP clients would normalise away
//! (`/../`, `%2e%2e`) before sending.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A parsed response: status code and body.
pub struct RawResponse {
    pub status: u16,
    pub body: Vec<u8>,
}

/// Sends `GET <target>` exactly as given and reads the whole response.
pub async fn get(addr: SocketAddr, target: &str) -> RawResponse {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {target} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    parse(&raw)
}

fn parse(raw: &[u8]) -> RawResponse {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete response head");
    let head = String::from_utf8_lossy(&raw[..split]);
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .expect("a status line");
    RawResponse {
        status,
        body: raw[split + 4..].to_vec(),
    }
}

/// Writes `requests` (several, pipelined) on one connection whose receive buffer is
/// small, and reads everything the server sends until it closes, a few KiB at a time
/// with pauses, so that the server finds the socket full while it writes.
pub async fn pipelined_slow_reader(addr: SocketAddr, requests: &str) -> Vec<u8> {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(addr).await.unwrap();
    stream.write_all(requests.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    let mut piece = [0u8; 4096];
    loop {
        let read = stream.read(&mut piece).await.unwrap();
        if read == 0 {
            return raw;
        }
        raw.extend_from_slice(&piece[..read]);
        if raw.len() < 512 * 1024 {
            tokio::time::sleep(std::time::Duration::from_micros(200)).await;
        }
    }
}

/// Splits what `pipelined_slow_reader` read into responses, each body as long as its
/// `Content-Length`; `bodiless` says which responses answer a `HEAD`.
pub fn split_responses(mut raw: &[u8], bodiless: &[bool]) -> Vec<RawResponse> {
    let mut responses = Vec::new();
    for &head_only in bodiless {
        let split = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("a complete response head");
        let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|line| line.strip_prefix("content-length:"))
            .map(|value| value.trim().parse().unwrap())
            .expect("a Content-Length");
        let body_len = if head_only { 0 } else { length };
        let end = split + 4 + body_len;
        assert!(raw.len() >= end, "response cut short");
        let mut response = parse(&raw[..end]);
        response.body.truncate(body_len);
        responses.push(response);
        raw = &raw[end..];
    }
    assert!(
        raw.is_empty(),
        "{} bytes after the last response",
        raw.len()
    );
    responses
}
