//! HTTP-level tests: each starts a real Gatehouse on a random port and talks to it over
//! real sockets. One module per feature.

mod support;

mod api_basics;
mod auth;
mod collections;
mod health;
mod maintenance;
mod oauth;
mod records;
mod static_files;
mod supervision;
