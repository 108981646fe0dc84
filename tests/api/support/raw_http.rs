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
