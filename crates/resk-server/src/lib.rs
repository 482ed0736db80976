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

pub use app::{App, serve};
pub use config::{Cli, Command, Config, ServeArgs};
