//! HTTP-level tests: each starts a real Gatehouse on a random port and talks to it over
//! real sockets. One module per feature.

mod support;

mod api_basics;
mod auth;
mod balancer;
mod cache;
mod collections;
mod front;
mod health;
mod maintenance;
mod oauth;
mod proxy;
mod records;
mod static_files;
mod supervision;
mod tls;
