//! The shared cache conformance suite, unchanged, through Redis Sentinel
//! (`RESK_TEST_REDIS_SENTINEL_URL`, e.g.
//! `redis-sentinel://127.0.0.1:26379/0?sentinelServiceName=mymaster`; `cargo xtask test` starts a
//! private primary and one sentinel monitoring it). The store asks the sentinel for the primary's
//! address and connects to it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

resk_testkit::cache_suite_if!(common::store("REDIS_SENTINEL"));
