//! The one error shape of the HTTP API: `{"error": {"code", "message", "details"?}}`.
//!
//! [`ApiError`] is the only place where a [`resk_core::ErrorKind`] becomes an HTTP status.

use aide::{OperationOutput, generate::GenContext, openapi::Operation};
use axum::{
    Json,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use resk_core::ErrorKind;
use schemars::JsonSchema;
use serde::Serialize;

/// The body of every error response.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorObject,
}

/// The error object.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ErrorObject {
    /// Stable, machine-readable code (`invalid_body`, `unauthorized`, `rate_limited`, …).
    pub code: String,
    /// Human-readable explanation.
    pub message: String,
    /// Extra structured information (for example the JSON path of an invalid field).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Value>,
}

/// An error answered to an HTTP client.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    details: Option<serde_json::Value>,
    headers: Vec<(header::HeaderName, HeaderValue)>,
}

impl ApiError {
    /// A new error.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            details: None,
            headers: Vec::new(),
        }
    }

    /// Attach structured details.
    #[must_use]
    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        self.details = Some(details);
        self
    }

    /// Attach a response header.
    #[must_use]
    pub fn with_header(mut self, name: header::HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    /// The status code.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The error code.
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// The human-readable message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// 400 with a code.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 401 with an RFC 6750 `WWW-Authenticate` challenge.
    pub fn unauthorized(description: &'static str, token_present: bool) -> Self {
        let challenge = if token_present {
            format!(
                r#"Bearer realm="resk", error="invalid_token", error_description="{description}""#
            )
        } else {
            r#"Bearer realm="resk""#.to_owned()
        };
        let mut err = Self::new(StatusCode::UNAUTHORIZED, "unauthorized", description);
        if let Ok(value) = HeaderValue::from_str(&challenge) {
            err = err.with_header(header::WWW_AUTHENTICATE, value);
        }
        err
    }

    /// 403 for a valid token without `scope`.
    pub fn insufficient_scope(scope: &'static str) -> Self {
        let mut err = Self::new(
            StatusCode::FORBIDDEN,
            "insufficient_scope",
            format!("this operation needs the `{scope}` scope"),
        );
        let challenge =
            format!(r#"Bearer realm="resk", error="insufficient_scope", scope="{scope}""#);
        if let Ok(value) = HeaderValue::from_str(&challenge) {
            err = err.with_header(header::WWW_AUTHENTICATE, value);
        }
        err
    }

    /// 500 without internals; the cause is logged by the caller.
    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal server error",
        )
    }
}

impl From<resk_core::Error> for ApiError {
    fn from(err: resk_core::Error) -> Self {
        let (status, code) = match err.kind() {
            ErrorKind::InvalidInput | ErrorKind::DimensionMismatch => {
                (StatusCode::BAD_REQUEST, "invalid_input")
            }
            ErrorKind::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            ErrorKind::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ErrorKind::RateLimited => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            ErrorKind::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ErrorKind::Unsupported => (StatusCode::NOT_IMPLEMENTED, "unsupported"),
            _ => {
                tracing::error!(error = %err, kind = %err.kind(), "internal error");
                return Self::internal();
            }
        };
        if status.is_server_error() {
            tracing::warn!(error = %err, "dependency error");
        }
        Self::new(status, code, err.message().to_owned())
    }
}

/// What an error response said, kept on the response (an extension) so the gateway's routes can
/// answer it in OpenAI's error format instead.
#[derive(Clone, Debug)]
pub(crate) struct Answered {
    pub(crate) code: &'static str,
    pub(crate) message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let answered = Answered {
            code: self.code,
            message: self.message.clone(),
        };
        let body = ErrorBody {
            error: ErrorObject {
                code: self.code.to_owned(),
                message: self.message,
                details: self.details,
            },
        };
        let mut response = (self.status, Json(body)).into_response();
        for (name, value) in self.headers {
            response.headers_mut().append(name, value);
        }
        response.extensions_mut().insert(answered);
        response
    }
}

impl OperationOutput for ApiError {
    type Inner = ErrorBody;

    fn operation_response(
        ctx: &mut GenContext,
        operation: &mut Operation,
    ) -> Option<aide::openapi::Response> {
        Json::<ErrorBody>::operation_response(ctx, operation)
    }
}
