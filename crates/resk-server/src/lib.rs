#![doc = include_str!("../README.md")]

pub mod admin;
pub mod api;
pub mod app;
pub mod auth;
pub mod config;
pub mod console;
pub mod error;
mod gate;
mod gateway;
mod histograms;
mod hub;
pub mod idempotency;
pub mod json;
pub mod ratelimit;
pub mod rekey;
pub mod revoke;
mod routes;
pub mod semantic;
mod state;
mod table;
pub mod telemetry;
pub mod warmup;
mod ws;

pub use app::{App, Backends, build_backends, serve};
pub use config::{Cli, Command, Config, ServeArgs};
