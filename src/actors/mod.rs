//! The actors behind the HTTP front end, each with its typed messages beside it.
//!
//! | actor | messages | lands with |
//! |---|---|---|
//! | database | `Ping`, `Transact<T, E>` | foundation |
//! | auth | login, sessions, tokens | accounts issue |
//! | delivery | `Wake`, `Drain` (a durable queue's rounds; the mailer and webhooks are this actor) | mailer issue |
//! | mailer | the delivery actor over the outbox | mailer issue |
//! | webhooks | the delivery actor over webhook deliveries | webhooks issue |
//! | cache | `Purge` (lookups read the shared store directly) | front of house |
//! | balancer | `UpstreamStatus` (selection reads published snapshots) | front of house |

pub mod auth;
pub mod balancer;
pub mod cache;
pub mod database;
pub mod delivery;
pub mod mailer;
pub mod maintenance;
pub mod records;
pub mod supervisor;
pub mod webhooks;
