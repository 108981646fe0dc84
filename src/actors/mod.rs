//! The actors behind the HTTP front end, each with its typed messages beside it.
//!
//! | actor | messages | lands with |
//! |---|---|---|
//! | database | `Ping`, `Transact<T, E>` | foundation |
//! | auth | login, sessions, tokens | accounts issue |
//! | delivery | `Wake`, `Drain` (a durable queue's rounds; the mailer and webhooks are this actor) | mailer issue |
//! | mailer | the delivery actor over the outbox | mailer issue |
//! | webhooks | the delivery actor over webhook deliveries | webhooks issue |
//! | cache | `Purge`, `Invalidate` (lookups read the shared store and its Redis tier directly) | front of house, cluster cache |
//! | balancer | `UpstreamStatus` (selection reads published snapshots) | front of house |
//! | realtime | none: record changes arrive through the realtime hub's queue | realtime |

pub mod auth;
pub mod balancer;
pub mod cache;
pub mod database;
pub mod delivery;
pub mod group_commit;
pub mod mailer;
pub mod maintenance;
pub mod realtime;
pub mod records;
pub mod supervisor;
pub mod webhooks;
