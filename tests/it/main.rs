//! Integration tests: one crate, so it links once. Each module drives the real server through
//! HTTP (or the real binary) against real SQLite and PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

mod admin;
mod billing;
mod binary;
mod connect;
mod fake_upstream_selftest;
mod front_door;
mod health;
mod keys;
mod limits;
mod oidc;
mod proxy;
mod replicas;
mod sessions;
mod store;
mod streaming;
mod tokens;
mod usage;
