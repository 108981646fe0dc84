//! A TCP relay in front of PostgreSQL that reads the frontend protocol its clients send:
//! it counts the `Sync` messages that carry no statement (round trips that do no work,
//! such as a connection pool's ping) and keeps the SQL of the statements executed, and
//! how the transaction each first statement opened began. It can also hold back the answers to `COUNT(*)` statements,
//! which have then run on the server, until told to let them through.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// `SSLRequest` and `GSSENCRequest`: untyped messages sent before the startup message.
const ENCRYPTION_REQUESTS: [u32; 2] = [80_877_103, 80_877_104];

/// What the relay's connections count and obey.
struct Shared {
    empty_syncs: AtomicUsize,
    /// The SQL of every statement executed through the extended protocol, in order.
    executed: Mutex<Vec<Arc<str>>>,
    /// The first statement of every transaction opened with `BEGIN`, and how it began.
    opened: Mutex<Vec<(Began, Arc<str>)>>,
    /// Whether answers to `COUNT(*)` statements are held back.
    holding: watch::Sender<bool>,
}

pub struct PgWireCounter {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl PgWireCounter {
    /// Relays a fresh loopback port to the PostgreSQL server at `target`. Clients must
    /// connect with `sslmode=disable`: the relay reads their messages in clear.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            empty_syncs: AtomicUsize::new(0),
            executed: Mutex::default(),
            opened: Mutex::default(),
            holding: watch::Sender::new(false),
        });
        let task = tokio::spawn(relay(listener, target, shared.clone()));
        Self { addr, shared, task }
    }

    /// `Sync` messages sent so far with no other message since the last `Sync` or simple
    /// query.
    pub fn empty_syncs(&self) -> usize {
        self.shared.empty_syncs.load(Ordering::SeqCst)
    }

    /// Executions so far of statements whose SQL `matches`.
    pub fn executed(&self, matches: impl Fn(&str) -> bool) -> usize {
        let executed = self.shared.executed.lock().unwrap();
        executed.iter().filter(|sql| matches(sql)).count()
    }

    /// Transactions so far that `began` as told and whose first statement `matches`.
    pub fn opened(&self, began: Began, matches: impl Fn(&str) -> bool) -> usize {
        let opened = self.shared.opened.lock().unwrap();
        opened
            .iter()
            .filter(|(how, sql)| *how == began && matches(sql))
            .count()
    }

    /// Executions of statements with `COUNT(*)` in them so far.
    pub fn counts(&self) -> usize {
        self.executed(counts)
    }

    /// From now on the answer to a `COUNT(*)` statement (which PostgreSQL runs as it
    /// comes) is held back, with whatever its connection receives after it, until
    /// [`PgWireCounter::release`].
    pub fn hold_counts(&self) {
        self.shared.holding.send_replace(true);
    }

    /// Lets the held answers through, and those to come.
    pub fn release(&self) {
        self.shared.holding.send_replace(false);
    }
}

impl Drop for PgWireCounter {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn relay(listener: TcpListener, target: SocketAddr, shared: Arc<Shared>) {
    let mut connections = tokio::task::JoinSet::new();
    // Dropping `connections` (when this task is aborted) aborts every relay with it.
    while let Ok((inbound, _)) = listener.accept().await {
        let shared = shared.clone();
        connections.spawn(async move {
            let Ok(outbound) = TcpStream::connect(target).await else {
                return;
            };
            let (mut from_client, mut to_client) = inbound.into_split();
            let (mut from_server, mut to_server) = outbound.into_split();
            // Set when this connection sent a `COUNT(*)` statement while answers to them
            // are held: what the server sends back waits for the release.
            let (gate, mut gated) = watch::channel(false);
            let upstream = async {
                let mut frontend = Frontend::default();
                let mut chunk = vec![0; 16 * 1024];
                loop {
                    match from_client.read(&mut chunk).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if frontend.read(&chunk[..n], &shared) && *shared.holding.borrow() {
                                gate.send_replace(true);
                            }
                            if to_server.write_all(&chunk[..n]).await.is_err() {
                                break;
                            }
                        }
                    }
                }
            };
            let downstream = async {
                let mut holding = shared.holding.subscribe();
                let mut chunk = vec![0; 16 * 1024];
                loop {
                    let n = match from_server.read(&mut chunk).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    if *gated.borrow_and_update() {
                        let _ = holding.wait_for(|held| !held).await;
                        gate.send_replace(false);
                    }
                    if to_client.write_all(&chunk[..n]).await.is_err() {
                        break;
                    }
                }
            };
            tokio::select! {
                _ = upstream => {}
                _ = downstream => {}
            }
        });
    }
}

fn counts(sql: &str) -> bool {
    sql.contains("COUNT(*)")
}

/// How a transaction's `BEGIN` reached the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Began {
    /// As a simple query: a round trip of its own.
    Alone,
    /// As a statement in the same batch as the transaction's first statement.
    Carried,
}

/// Splits a client's byte stream into frontend messages.
#[derive(Default)]
struct Frontend {
    pending: Vec<u8>,
    started: bool,
    since_sync: usize,
    /// The SQL of each statement this connection prepared, by name ("" is unnamed).
    statements: HashMap<Vec<u8>, Arc<str>>,
    /// A `BEGIN` sent and no statement since.
    begun: Option<Began>,
}

impl Frontend {
    /// Reads what a client sent; true when it asked to run a `COUNT(*)` statement.
    fn read(&mut self, bytes: &[u8], shared: &Shared) -> bool {
        self.pending.extend_from_slice(bytes);
        let mut counted = false;
        loop {
            let length = |at: usize| -> Option<usize> {
                let bytes = self.pending.get(at..at + 4)?;
                Some(u32::from_be_bytes(bytes.try_into().unwrap()) as usize)
            };
            if !self.started {
                // Untyped: the length (itself included), then a request code.
                let (Some(length), Some(code)) = (length(0), length(4)) else {
                    return counted;
                };
                if self.pending.len() < length {
                    return counted;
                }
                self.started = !ENCRYPTION_REQUESTS.contains(&(code as u32));
                self.pending.drain(..length);
            } else {
                // A type byte, then the length (itself included).
                let Some(length) = length(1) else {
                    return counted;
                };
                if self.pending.len() < 1 + length {
                    return counted;
                }
                let body = &self.pending[5..1 + length];
                let mut strings = body.split(|b| *b == 0);
                match self.pending[0] {
                    b'S' if self.since_sync == 0 => {
                        shared.empty_syncs.fetch_add(1, Ordering::SeqCst);
                    }
                    b'S' => self.since_sync = 0,
                    b'Q' => {
                        self.since_sync = 0;
                        let sql = strings.next().unwrap_or_default();
                        self.begun = (sql == b"BEGIN").then_some(Began::Alone);
                    }
                    kind => {
                        self.since_sync += 1;
                        // Parse: the statement's name, then its SQL.
                        if kind == b'P' {
                            let name = strings.next().unwrap_or_default().to_vec();
                            let sql = String::from_utf8_lossy(strings.next().unwrap_or_default());
                            self.statements.insert(name, sql.into());
                        }
                        // Bind: the portal's name, then the statement's.
                        if kind == b'B' {
                            let statement = strings.nth(1).unwrap_or_default();
                            if let Some(sql) = self.statements.get(statement) {
                                counted |= counts(sql);
                                shared.executed.lock().unwrap().push(sql.clone());
                                if &**sql == "BEGIN" {
                                    self.begun = Some(Began::Carried);
                                } else if let Some(began) = self.begun.take() {
                                    shared.opened.lock().unwrap().push((began, sql.clone()));
                                }
                            }
                        }
                    }
                }
                self.pending.drain(..1 + length);
            }
        }
    }
}
