#![doc = include_str!("../README.md")]

#[cfg(feature = "client")]
mod api;
#[cfg(feature = "client")]
mod client;
mod retry;

#[cfg(feature = "client")]
pub use api::JsonApi;
#[cfg(feature = "client")]
pub use client::{
    check_response, client, parse_retry_after, read_json, secret_header, streaming_client,
    trace_context, transport_error,
};
#[cfg(feature = "client")]
pub use reqwest::{Client, Method, header};
pub use retry::RetryPolicy;
