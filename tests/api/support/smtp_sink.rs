//! A real SMTP server on loopback for tests and the bench: speaks enough SMTP for
//! lettre (EHLO/HELO, MAIL, RCPT, DATA, RSET, NOOP, QUIT), records every accepted
//! message raw, and can be told to refuse connections or answer 4xx / 5xx, to answer
//! slowly, or to hold every answer to a message's end until released. It speaks plain
//! SMTP, or TLS with a given certificate: from the first byte (SMTPS) or after
//! `STARTTLS`, which it then offers in its EHLO answer.
//!
//! A message counts as accepted only once its end is answered: a client that hangs up
//! while the sink is still deciding has sent nothing, as with a server that commits a
//! message when it acknowledges it.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

/// When the sink's connections turn to TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// TLS from the first byte (SMTPS).
    Implicit,
    /// Plain until the client sends `STARTTLS`, which the EHLO answer offers.
    Starttls,
}

/// How the sink answers a recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Accept,
    /// 451: try again later.
    TempFail,
    /// 550: no such user.
    Reject,
}

/// A message the sink accepted.
#[derive(Debug, Clone)]
pub struct Received {
    pub from: String,
    pub to: Vec<String>,
    pub data: Vec<u8>,
    /// Whether the message came over TLS.
    pub encrypted: bool,
}

impl Received {
    pub fn parsed(&self) -> mail_parser::Message<'_> {
        mail_parser::MessageParser::default()
            .parse(&self.data)
            .expect("a parseable message")
    }
}

#[derive(Debug)]
struct State {
    mode: Mode,
    /// How long the server takes to accept a message after its data arrived.
    reply_delay: Duration,
    received: Vec<Received>,
    /// Messages whose end arrived and whose answer is being held.
    held: usize,
}

/// Shared by the sink and its connections.
#[derive(Clone)]
struct Shared {
    state: Arc<Mutex<State>>,
    /// While true, answers to a message's end wait.
    holding: watch::Sender<bool>,
    tls: Option<(TlsMode, TlsAcceptor)>,
}

/// The sink; stops listening when dropped.
pub struct SmtpSink {
    pub addr: SocketAddr,
    shared: Shared,
    server: Option<JoinHandle<()>>,
}

impl SmtpSink {
    /// Listens on a free loopback port, speaking plain SMTP.
    pub async fn start() -> Self {
        Self::listen(None).await
    }

    /// Listens on a free loopback port, speaking TLS as `mode` says with the
    /// certificate `cert_der` and its PEM private key.
    pub async fn start_tls(mode: TlsMode, cert_der: &[u8], key_pem: &str) -> Self {
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![CertificateDer::from(cert_der.to_vec())], key)
            .unwrap();
        Self::listen(Some((mode, TlsAcceptor::from(Arc::new(config))))).await
    }

    async fn listen(tls: Option<(TlsMode, TlsAcceptor)>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Shared {
            state: Arc::new(Mutex::new(State {
                mode: Mode::Accept,
                reply_delay: Duration::ZERO,
                received: Vec::new(),
                held: 0,
            })),
            holding: watch::Sender::new(false),
            tls,
        };
        let server = Some(tokio::spawn(serve(listener, shared.clone())));
        Self {
            addr,
            shared,
            server,
        }
    }

    pub fn set_mode(&self, mode: Mode) {
        self.shared.state.lock().unwrap().mode = mode;
    }

    /// Makes the server wait `delay` before accepting each message, like a slow server.
    pub fn set_reply_delay(&self, delay: Duration) {
        self.shared.state.lock().unwrap().reply_delay = delay;
    }

    /// From now on, holds the answer to every message's end until [`Self::release`].
    pub fn hold(&self) {
        self.shared.holding.send_replace(true);
    }

    /// Answers the held messages whose senders are still connected.
    pub fn release(&self) {
        self.shared.holding.send_replace(false);
    }

    /// How many messages are waiting for their answer.
    pub fn held(&self) -> usize {
        self.shared.state.lock().unwrap().held
    }

    /// Stops listening and cuts every open connection: connections are refused.
    pub async fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
            let _ = server.await;
        }
    }

    /// Listens again on the same port.
    pub async fn restart(&mut self) {
        self.stop().await;
        let listener = TcpListener::bind(self.addr).await.unwrap();
        self.server = Some(tokio::spawn(serve(listener, self.shared.clone())));
    }

    pub fn received(&self) -> Vec<Received> {
        self.shared.state.lock().unwrap().received.clone()
    }

    /// Waits until at least `count` messages arrived (panics after `limit`).
    pub async fn wait_for(&self, count: usize, limit: Duration) -> Vec<Received> {
        let deadline = Instant::now() + limit;
        loop {
            let received = self.received();
            if received.len() >= count {
                return received;
            }
            assert!(
                Instant::now() < deadline,
                "the SMTP sink received {} of {count} messages in {limit:?}",
                received.len()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits `quiet` and returns everything received, for checking nothing more came.
    pub async fn settle(&self, quiet: Duration) -> Vec<Received> {
        tokio::time::sleep(quiet).await;
        self.received()
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}

async fn serve(listener: TcpListener, shared: Shared) {
    // Connections live in this set, so aborting the server cuts them all.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                if let Ok((stream, _)) = accepted {
                    connections.spawn(session(stream, shared.clone()));
                }
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// Either side of a connection, plain or TLS.
trait Connection: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> Connection for T {}

type Lines = BufReader<Box<dyn Connection>>;

async fn session(stream: TcpStream, shared: Shared) {
    let state = &shared.state;
    let mut encrypted = false;
    let mut lines: Lines = match &shared.tls {
        Some((TlsMode::Implicit, acceptor)) => match acceptor.accept(stream).await {
            Ok(tls) => {
                encrypted = true;
                BufReader::new(Box::new(tls))
            }
            Err(_) => return,
        },
        _ => BufReader::new(Box::new(stream)),
    };
    let starttls = match &shared.tls {
        Some((TlsMode::Starttls, acceptor)) => Some(acceptor.clone()),
        _ => None,
    };
    let mut from = String::new();
    let mut to = Vec::new();
    if send(&mut lines, b"220 sink ESMTP ready\r\n").await.is_err() {
        return;
    }
    let mut line = String::new();
    loop {
        line.clear();
        match lines.read_line(&mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let command = line.trim_end().to_string();
        let upper = command.to_ascii_uppercase();
        let reply: &[u8] = if upper.starts_with("EHLO") {
            if starttls.is_some() && !encrypted {
                b"250-sink greets you\r\n250-STARTTLS\r\n250 8BITMIME\r\n"
            } else {
                b"250-sink greets you\r\n250 8BITMIME\r\n"
            }
        } else if upper == "STARTTLS" {
            match starttls.as_ref().filter(|_| !encrypted) {
                Some(acceptor) => {
                    if send(&mut lines, b"220 2.0.0 Ready to start TLS\r\n")
                        .await
                        .is_err()
                    {
                        return;
                    }
                    // Whatever the client sent before the handshake is discarded, and
                    // the session starts over: a client must greet again.
                    let Ok(tls) = acceptor.accept(lines.into_inner()).await else {
                        return;
                    };
                    lines = BufReader::new(Box::new(tls));
                    encrypted = true;
                    from.clear();
                    to.clear();
                    continue;
                }
                None => b"502 5.5.1 STARTTLS not offered\r\n",
            }
        } else if upper.starts_with("HELO") || upper.starts_with("NOOP") {
            b"250 OK\r\n"
        } else if upper.starts_with("RSET") {
            from.clear();
            to.clear();
            b"250 OK\r\n"
        } else if upper.starts_with("MAIL FROM:") {
            from = address(&command["MAIL FROM:".len()..]);
            to.clear();
            b"250 OK\r\n"
        } else if upper.starts_with("RCPT TO:") {
            let mode = state.lock().unwrap().mode;
            match mode {
                Mode::Accept => {
                    to.push(address(&command["RCPT TO:".len()..]));
                    b"250 OK\r\n"
                }
                Mode::TempFail => b"451 4.3.0 Try again later\r\n",
                Mode::Reject => b"550 5.1.1 No such user here\r\n",
            }
        } else if upper == "DATA" {
            if to.is_empty() {
                b"554 5.5.1 No valid recipients\r\n"
            } else {
                if send(&mut lines, b"354 End data with <CR><LF>.<CR><LF>\r\n")
                    .await
                    .is_err()
                {
                    return;
                }
                let Some(data) = read_data(&mut lines).await else {
                    return;
                };
                if !decide(&shared, &mut lines).await {
                    return;
                }
                state.lock().unwrap().received.push(Received {
                    from: std::mem::take(&mut from),
                    to: std::mem::take(&mut to),
                    data,
                    encrypted,
                });
                b"250 2.0.0 OK queued\r\n"
            }
        } else if upper == "QUIT" {
            let _ = send(&mut lines, b"221 2.0.0 Bye\r\n").await;
            return;
        } else {
            b"502 5.5.2 Command not recognized\r\n"
        };
        if send(&mut lines, reply).await.is_err() {
            return;
        }
    }
}

/// Writes `reply` and flushes it (a TLS stream holds written data until flushed).
async fn send(lines: &mut Lines, reply: &[u8]) -> std::io::Result<()> {
    let connection = lines.get_mut();
    connection.write_all(reply).await?;
    connection.flush().await
}

/// Waits out the reply delay and any hold before a message's end is answered. False
/// when the client hangs up meanwhile (a client waits for this answer, so the
/// connection carries nothing else until then).
async fn decide(shared: &Shared, lines: &mut Lines) -> bool {
    let delay = shared.state.lock().unwrap().reply_delay;
    let mut holding = shared.holding.subscribe();
    let wait = async {
        tokio::time::sleep(delay).await;
        if *holding.borrow_and_update() {
            let _held = Held::count(&shared.state);
            let _ = holding.wait_for(|on| !on).await;
        }
    };
    let hang_up = async {
        let mut byte = [0u8; 1];
        while matches!(lines.read(&mut byte).await, Ok(n) if n > 0) {}
    };
    tokio::select! {
        () = wait => true,
        () = hang_up => false,
    }
}

/// One held message in [`State::held`], for as long as it lives.
struct Held<'a>(&'a Mutex<State>);

impl<'a> Held<'a> {
    fn count(state: &'a Mutex<State>) -> Self {
        state.lock().unwrap().held += 1;
        Self(state)
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.lock().unwrap().held -= 1;
    }
}

/// Reads the message up to the lone "." line, undoing dot-stuffing.
async fn read_data(lines: &mut Lines) -> Option<Vec<u8>> {
    let mut data = Vec::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        if lines.read_until(b'\n', &mut line).await.ok()? == 0 {
            return None;
        }
        if line == b".\r\n" || line == b".\n" {
            return Some(data);
        }
        let unstuffed = if line.starts_with(b"..") {
            &line[1..]
        } else {
            &line[..]
        };
        data.extend_from_slice(unstuffed);
    }
}

fn address(argument: &str) -> String {
    let argument = argument.trim();
    let end = argument.find('>').map_or(argument.len(), |i| i + 1);
    argument[..end]
        .trim_matches(|c| c == '<' || c == '>')
        .to_string()
}
