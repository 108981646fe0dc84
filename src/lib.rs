//! Gatehouse: one binary that is both the web server and the backend of a web
//! application. See README.md for the architecture.

pub mod actors;
pub mod app;
pub mod auth;
pub mod cache_policy;
pub mod cli;
pub mod cluster;
pub mod collections;
pub mod config;
pub mod db;
pub mod domain;
pub mod error;
pub mod http;
pub mod mail;
pub mod queue;
pub mod realtime;
pub mod records;
pub mod routing;
pub mod telemetry;
pub mod tls;
pub mod webhooks;
