//! Filters compiled to SQL and run against real tables (SQLite, and PostgreSQL
//! when DATABASE_URL names one): the same expected ids on both engines.

mod support;

mod execution;
mod plans;
