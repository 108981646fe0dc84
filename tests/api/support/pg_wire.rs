//! A TCP relay in front of PostgreSQL that reads the frontend protocol its clients send
//! and counts the `Sync` messages that carry no statement: round trips that do no work,
//! such as a connection pool's ping.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// `SSLRequest` and `GSSENCRequest`: untyped messages sent before the startup message.
const ENCRYPTION_REQUESTS: [u32; 2] = [80_877_103, 80_877_104];

pub struct PgWireCounter {
    pub addr: SocketAddr,
    empty_syncs: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl PgWireCounter {
    /// Relays a fresh loopback port to the PostgreSQL server at `target`. Clients must
    /// connect with `sslmode=disable`: the relay reads their messages in clear.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let empty_syncs = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(relay(listener, target, empty_syncs.clone()));
        Self {
            addr,
            empty_syncs,
            task,
        }
    }

    /// `Sync` messages sent so far with no other message since the last `Sync` or simple
    /// query.
    pub fn empty_syncs(&self) -> usize {
        self.empty_syncs.load(Ordering::SeqCst)
    }
}

impl Drop for PgWireCounter {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn relay(listener: TcpListener, target: SocketAddr, empty_syncs: Arc<AtomicUsize>) {
    let mut connections = tokio::task::JoinSet::new();
    // Dropping `connections` (when this task is aborted) aborts every relay with it.
    while let Ok((inbound, _)) = listener.accept().await {
        let empty_syncs = empty_syncs.clone();
        connections.spawn(async move {
            let Ok(outbound) = TcpStream::connect(target).await else {
                return;
            };
            let (mut from_client, mut to_client) = inbound.into_split();
            let (mut from_server, mut to_server) = outbound.into_split();
            let upstream = async {
                let mut frontend = Frontend::default();
                let mut chunk = vec![0; 16 * 1024];
                loop {
                    match from_client.read(&mut chunk).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            frontend.read(&chunk[..n], &empty_syncs);
                            if to_server.write_all(&chunk[..n]).await.is_err() {
                                break;
                            }
                        }
                    }
                }
            };
            let downstream = tokio::io::copy(&mut from_server, &mut to_client);
            tokio::select! {
                _ = upstream => {}
                _ = downstream => {}
            }
        });
    }
}

/// Splits a client's byte stream into frontend messages.
#[derive(Default)]
struct Frontend {
    pending: Vec<u8>,
    started: bool,
    since_sync: usize,
}

impl Frontend {
    fn read(&mut self, bytes: &[u8], empty_syncs: &AtomicUsize) {
        self.pending.extend_from_slice(bytes);
        loop {
            let length = |at: usize| -> Option<usize> {
                let bytes = self.pending.get(at..at + 4)?;
                Some(u32::from_be_bytes(bytes.try_into().unwrap()) as usize)
            };
            if !self.started {
                // Untyped: the length (itself included), then a request code.
                let (Some(length), Some(code)) = (length(0), length(4)) else {
                    return;
                };
                if self.pending.len() < length {
                    return;
                }
                self.started = !ENCRYPTION_REQUESTS.contains(&(code as u32));
                self.pending.drain(..length);
            } else {
                // A type byte, then the length (itself included).
                let Some(length) = length(1) else {
                    return;
                };
                if self.pending.len() < 1 + length {
                    return;
                }
                match self.pending[0] {
                    b'S' if self.since_sync == 0 => {
                        empty_syncs.fetch_add(1, Ordering::SeqCst);
                    }
                    b'S' | b'Q' => self.since_sync = 0,
                    _ => self.since_sync += 1,
                }
                self.pending.drain(..1 + length);
            }
        }
    }
}
