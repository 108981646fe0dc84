//! The proxy's upstream client: HTTP/1.1 on hyper's connection API, over TCP or TLS,
//! with a keep-alive pool per HTTP worker.
//!
//! Each HTTP worker owns one [`UpstreamClient`]; its idle connections are kept per
//! pool member and reused last-in first-out, so the warmest sockets serve first. A
//! connection goes back to the pool only when its response body has been read to the
//! end (HTTP/1.1 cannot start the next request before), and idle ones older than
//! `proxy.keep_alive` are closed when they are next looked at.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use foldhash::fast::RandomState;
use http_body::Body;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::actors::balancer::Member;

/// A socket to an upstream server, plain or TLS.
pub enum UpstreamStream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for UpstreamStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_read(cx, buf),
            Self::Tls(stream) => Pin::new(stream.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UpstreamStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_write(cx, buf),
            Self::Tls(stream) => Pin::new(stream.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
            Self::Tls(stream) => Pin::new(stream.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(stream) => stream.is_write_vectored(),
            Self::Tls(stream) => stream.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_flush(cx),
            Self::Tls(stream) => Pin::new(stream.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_shutdown(cx),
            Self::Tls(stream) => Pin::new(stream.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Why no connection to an upstream server could be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connection failed: {0}")]
    Io(io::Error),
    #[error("connection timed out")]
    Timeout,
    /// The TLS handshake failed: most often a certificate the pool does not trust.
    #[error("TLS handshake failed: {0}")]
    Tls(io::Error),
}

/// Opens a socket to `member` (and completes the TLS handshake for `https://`
/// members), all within `timeout`.
pub async fn connect(member: &Member, timeout: Duration) -> Result<UpstreamStream, ConnectError> {
    let work = async {
        let tcp = TcpStream::connect(member.url.authority())
            .await
            .map_err(ConnectError::Io)?;
        let _ = tcp.set_nodelay(true);
        match &member.tls {
            None => Ok(UpstreamStream::Plain(tcp)),
            Some(tls) => tls
                .connector
                .connect(tls.server_name.clone(), tcp)
                .await
                .map(|stream| UpstreamStream::Tls(Box::new(stream)))
                .map_err(ConnectError::Tls),
        }
    };
    tokio::time::timeout(timeout, work)
        .await
        .unwrap_or(Err(ConnectError::Timeout))
}

/// Opens an HTTP/1.1 connection to `member`; its I/O runs as a task of this thread.
pub async fn open<B>(member: &Member, timeout: Duration) -> Result<SendRequest<B>, ConnectError>
where
    B: Body<Data = Bytes> + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = connect(member, timeout).await?;
    let (sender, connection) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|err| ConnectError::Io(io::Error::other(err)))?;
    // The task ends when the server closes the socket or every sender is dropped.
    tokio::task::spawn_local(async move {
        if let Err(err) = connection.await {
            tracing::debug!(%err, "upstream connection ended");
        }
    });
    Ok(sender)
}

/// A connection taken from the pool (or opened for this request).
pub struct Pooled<B> {
    pub sender: SendRequest<B>,
    member: u64,
    /// It served earlier requests: the server may have closed it in the meantime.
    pub reused: bool,
}

struct Idle<B> {
    sender: SendRequest<B>,
    since: Instant,
}

/// One worker's upstream connections, idle ones by pool member.
pub struct UpstreamClient<B> {
    /// Looked up twice per request (checkout, release): foldhash, not SipHash.
    idle: RefCell<HashMap<u64, Vec<Idle<B>>, RandomState>>,
    connect_timeout: Duration,
    keep_alive: Duration,
}

impl<B> UpstreamClient<B>
where
    B: Body<Data = Bytes> + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    pub fn new(connect_timeout: Duration, keep_alive: Duration) -> Self {
        Self {
            idle: RefCell::default(),
            connect_timeout,
            keep_alive,
        }
    }

    /// The most recently used idle connection to `member` that is still open, else
    /// a new one.
    pub async fn checkout(&self, member: &Member) -> Result<Pooled<B>, ConnectError> {
        while let Some(mut idle) = self.take_idle(member.id) {
            if idle.since.elapsed() > self.keep_alive || idle.sender.is_closed() {
                continue;
            }
            if idle.sender.is_ready() || idle.sender.ready().await.is_ok() {
                return Ok(Pooled {
                    sender: idle.sender,
                    member: member.id,
                    reused: true,
                });
            }
        }
        self.connect(member).await
    }

    /// A new connection to `member`, bypassing the idle ones.
    pub async fn connect(&self, member: &Member) -> Result<Pooled<B>, ConnectError> {
        Ok(Pooled {
            sender: open(member, self.connect_timeout).await?,
            member: member.id,
            reused: false,
        })
    }

    fn take_idle(&self, member: u64) -> Option<Idle<B>> {
        self.idle.borrow_mut().get_mut(&member).and_then(Vec::pop)
    }

    /// Returns a connection whose exchange is complete; expired ones of the same
    /// member are closed on the way.
    pub fn release(&self, connection: Pooled<B>) {
        if connection.sender.is_closed() {
            return;
        }
        let mut idle = self.idle.borrow_mut();
        let list = idle.entry(connection.member).or_default();
        let keep_alive = self.keep_alive;
        let expired = list
            .iter()
            .take_while(|idle| idle.since.elapsed() > keep_alive)
            .count();
        list.drain(..expired);
        list.push(Idle {
            sender: connection.sender,
            since: Instant::now(),
        });
    }
}
