//! The shared cache conformance suite against a real Redis (`RESK_TEST_REDIS_URL`), each scenario
//! under its own key prefix.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

resk_testkit::cache_suite_if!(common::store("REDIS"));
