//! The actors behind the HTTP front end, each with its typed messages beside it.
//!
//! | actor | messages | lands with |
//! |---|---|---|
//! | database | `Ping`, `Transact<T, E>` | foundation |
//! | auth | login, sessions, tokens | accounts issue |
//! | mailer | `Wake`, `Drain` (outbox delivery) | mailer issue |
//! | cache, load balancer | response cache, upstream pools | front-of-house issue |

pub mod auth;
pub mod database;
pub mod mailer;
pub mod maintenance;
pub mod records;
pub mod supervisor;
