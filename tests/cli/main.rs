//! Tests of the `gatehouse` binary as a user runs it: configuration layering and
//! rejection, the CLI, and process-level behaviour such as graceful shutdown.

mod cluster;
mod config;
mod database;
mod mail;
mod sdk;
mod serve;
// Shared with tests/api, which uses all of it; these tests need only part.
#[allow(dead_code)]
#[path = "../api/support/smtp_sink.rs"]
mod smtp_sink;
mod support;
#[allow(dead_code)]
#[path = "../api/support/webhook_receiver.rs"]
mod webhook_receiver;
mod webhooks;
