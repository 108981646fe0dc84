//! A real SMTP server on loopback for tests and the bench: speaks enough SMTP for
//! lettre (EHLO/HELO, MAIL, RCPT, DATA, RSET, NOOP, QUIT), records every accepted
//! message raw, and can be told to refuse connections or answer 4xx / 5xx, to answer
//! slowly, or to hold every answer to a message's end until released.
//!
//! A message counts as accepted only once its end is answered: a client that hangs up
//! while the sink is still deciding has sent nothing, as with a server that commits a
//! message when it acknowledges it.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

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
#[derive(Debug, Clone)]
struct Shared {
    state: Arc<Mutex<State>>,
    /// While true, answers to a message's end wait.
    holding: watch::Sender<bool>,
}

/// The sink; stops listening when dropped.
pub struct SmtpSink {
    pub addr: SocketAddr,
    shared: Shared,
    server: Option<JoinHandle<()>>,
}

impl SmtpSink {
    /// Listens on a free loopback port.
    pub async fn start() -> Self {
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

async fn session(stream: TcpStream, shared: Shared) {
    let state = &shared.state;
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read);
    let mut from = String::new();
    let mut to = Vec::new();
    if write.write_all(b"220 sink ESMTP ready\r\n").await.is_err() {
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
            b"250-sink greets you\r\n250 8BITMIME\r\n"
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
                if write
                    .write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n")
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
                });
                b"250 2.0.0 OK queued\r\n"
            }
        } else if upper == "QUIT" {
            let _ = write.write_all(b"221 2.0.0 Bye\r\n").await;
            return;
        } else {
            b"502 5.5.2 Command not recognized\r\n"
        };
        if write.write_all(reply).await.is_err() {
            return;
        }
    }
}

/// Waits out the reply delay and any hold before a message's end is answered. False
/// when the client hangs up meanwhile (a client waits for this answer, so the
/// connection carries nothing else until then).
async fn decide(shared: &Shared, lines: &mut BufReader<tokio::net::tcp::OwnedReadHalf>) -> bool {
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
async fn read_data(lines: &mut BufReader<tokio::net::tcp::OwnedReadHalf>) -> Option<Vec<u8>> {
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
