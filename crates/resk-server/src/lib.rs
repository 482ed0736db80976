#![doc = include_str!("../README.md")]

pub mod api;
pub mod app;
pub mod auth;
pub mod config;
pub mod error;
mod gate;
pub mod json;
pub mod ratelimit;
mod routes;
pub mod telemetry;
mod ws;

pub use app::{App, Backends, build_backends, serve};
pub use config::{Cli, Command, Config, ServeArgs};
