//! Tests of the `gatehouse` binary as a user runs it: configuration layering and
//! rejection, the CLI, and process-level behaviour such as graceful shutdown.

mod cluster;
mod config;
mod database;
mod sdk;
mod serve;
mod support;
