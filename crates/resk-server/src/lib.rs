#![doc = include_str!("../README.md")]

pub mod api;
pub mod app;
pub mod auth;
pub mod calibrate;
pub mod config;
pub mod error;
mod flight;
mod gate;
pub mod idempotency;
pub mod json;
mod negative;
mod privacy;
mod providers;
pub mod ratelimit;
pub mod rekey;
pub mod resilience;
pub mod revoke;
mod routes;
pub mod semantic;
pub mod telemetry;
pub mod variants;
pub mod warmup;
mod ws;

pub use app::{App, Backends, build_backends, serve};
pub use config::{Cli, Command, Config, ServeArgs};
