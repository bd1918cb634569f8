//! Integration tests: one crate, so it links once. Each module drives the real server through
//! HTTP (or the real binary) against real SQLite and PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

mod admin;
mod binary;
mod fake_upstream_selftest;
mod health;
mod keys;
mod limits;
mod proxy;
mod replicas;
mod store;
mod streaming;
mod usage;
