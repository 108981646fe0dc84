//! HTTP-level tests: each starts a real Gatehouse on a random port and talks to it over
//! real sockets. One module per feature.

mod support;

mod account_mails;
mod api_basics;
mod auth;
mod backend_workers;
mod balancer;
mod batch;
mod cache;
mod collections;
mod front;
mod health;
mod mail_campaigns;
mod mail_delivery;
mod mail_newsletter;
mod mail_outbox_admin;
mod mail_tls;
mod maintenance;
mod oauth;
mod proxy;
mod proxy_tls;
mod realtime;
mod records;
mod round_trips;
mod static_files;
mod supervision;
mod tls;
mod webhooks;
