//! [`Error`]: what went wrong talking to the API, with the request it
//! happened to (`POST /floating_ips/7/actions/assign`) in every message and
//! the token in none.
//!
//! The API's own errors (`{"error":{"code","message","details"}}`) become an
//! [`ApiError`] with a typed [`ErrorCode`], so a driver can tell
//! `volume_already_attached` from `not_found` without comparing strings.

use std::fmt;

use reqwest::Method;
use serde::{Deserialize, Serialize};

use crate::TokenError;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a call of the client failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API answered with an error document.
    #[error("{method} {path}: {source}{}", attempts_suffix(*attempts))]
    Api {
        method: Method,
        path: String,
        /// How many times the request was sent (more than 1 after retries).
        attempts: u32,
        /// Boxed to keep `Result<T, Error>` small on the success path.
        source: Box<ApiError>,
    },

    /// The API kept answering `rate_limit_exceeded` until the retries ran
    /// out.
    #[error(
        "{method} {path}: rate limit exceeded, gave up after {attempts} attempts{}: {message}",
        reset_suffix(*reset_unix)
    )]
    RateLimited {
        method: Method,
        path: String,
        attempts: u32,
        /// `RateLimit-Reset` of the last answer, if it had one.
        reset_unix: Option<u64>,
        message: String,
    },

    /// An error status without an API error document: a proxy or load
    /// balancer in front of the API answered (bare 502, 504).
    #[error("{method} {path}: HTTP {status} without an API error body{}{}", body_suffix(body), attempts_suffix(*attempts))]
    UnexpectedStatus {
        method: Method,
        path: String,
        status: u16,
        /// The start of the body, for the operator.
        body: String,
        attempts: u32,
    },

    /// No answer: connection refused or reset, DNS, TLS, or the request
    /// timeout ran out.
    #[error("{method} {path}: {reason}{}", attempts_suffix(*attempts))]
    Transport {
        method: Method,
        path: String,
        reason: String,
        /// The request timeout ran out (the API may still have acted).
        timed_out: bool,
        attempts: u32,
    },

    /// A success answer we could not read: the API changed, or something
    /// else answered.
    #[error("{method} {path}: cannot decode the response: {reason}")]
    Decode {
        method: Method,
        path: String,
        reason: String,
    },

    /// An action ended with status `error`.
    #[error("GET /actions/{id}: action {id} ({command}) ended in error {code}: {message}")]
    ActionFailed {
        id: u64,
        command: String,
        code: String,
        message: String,
    },

    /// An action was still running when the wait ran out.
    #[error("GET /actions/{id}: action {id} ({command}) still running after {waited_ms} ms")]
    ActionTimeout {
        id: u64,
        command: String,
        waited_ms: u64,
    },

    #[error(transparent)]
    Token(#[from] TokenError),

    /// The client cannot be built from its config.
    #[error("invalid hcloud client config: {reason}")]
    Config { reason: String },
}

impl Error {
    /// The API's error document, if the API sent one.
    pub fn api_error(&self) -> Option<&ApiError> {
        match self {
            Error::Api { source, .. } => Some(source),
            _ => None,
        }
    }

    /// The API's error code, if the API sent one; `rate_limit_exceeded`
    /// for [`Error::RateLimited`].
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Error::Api { source, .. } => Some(source.code.clone()),
            Error::RateLimited { .. } => Some(ErrorCode::RateLimitExceeded),
            _ => None,
        }
    }

    /// Whether the API said the resource does not exist.
    pub fn is_not_found(&self) -> bool {
        self.code() == Some(ErrorCode::NotFound)
    }
}

fn attempts_suffix(attempts: u32) -> String {
    if attempts > 1 {
        format!(" (gave up after {attempts} attempts)")
    } else {
        String::new()
    }
}

fn reset_suffix(reset_unix: Option<u64>) -> String {
    match reset_unix {
        Some(reset) => format!(" (RateLimit-Reset {reset})"),
        None => String::new(),
    }
}

fn body_suffix(body: &str) -> String {
    if body.is_empty() {
        String::new()
    } else {
        format!(": {body:?}")
    }
}

/// An error document of the API: `{"error":{"code","message","details"}}`
/// and the HTTP status it came with.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{code} (HTTP {status}): {message}")]
pub struct ApiError {
    pub status: u16,
    pub code: ErrorCode,
    pub message: String,
    /// Free-form: `invalid_input` lists the offending fields here. `null`
    /// when the API sent none.
    pub details: serde_json::Value,
}

impl ApiError {
    /// Reads an error document; `None` when the body is not one (a proxy's
    /// HTML page, an empty body), so the caller can treat it as a bare
    /// status.
    pub(crate) fn from_body(status: u16, body: &[u8]) -> Option<ApiError> {
        #[derive(Deserialize)]
        struct Document {
            error: Inner,
        }
        #[derive(Deserialize)]
        struct Inner {
            #[serde(default)]
            code: Option<String>,
            #[serde(default)]
            message: Option<String>,
            #[serde(default)]
            details: serde_json::Value,
        }
        let document: Document = serde_json::from_slice(body).ok()?;
        let Inner {
            code,
            message,
            details,
        } = document.error;
        if code.is_none() && message.is_none() {
            return None;
        }
        Some(ApiError {
            status,
            code: ErrorCode::from(code.unwrap_or_default().as_str()),
            message: message.unwrap_or_default(),
            details,
        })
    }
}

/// The `code` of an API error. The ones the reference lists are variants;
/// anything else is kept as [`ErrorCode::Other`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum ErrorCode {
    Unauthorized,
    Forbidden,
    InvalidInput,
    JsonError,
    Locked,
    NotFound,
    Conflict,
    UniquenessError,
    Protected,
    Maintenance,
    RateLimitExceeded,
    ResourceUnavailable,
    ResourceLimitExceeded,
    ServiceError,
    BadGateway,
    Timeout,
    VolumeAlreadyAttached,
    Other(String),
}

impl ErrorCode {
    pub fn as_str(&self) -> &str {
        match self {
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::InvalidInput => "invalid_input",
            ErrorCode::JsonError => "json_error",
            ErrorCode::Locked => "locked",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Conflict => "conflict",
            ErrorCode::UniquenessError => "uniqueness_error",
            ErrorCode::Protected => "protected",
            ErrorCode::Maintenance => "maintenance",
            ErrorCode::RateLimitExceeded => "rate_limit_exceeded",
            ErrorCode::ResourceUnavailable => "resource_unavailable",
            ErrorCode::ResourceLimitExceeded => "resource_limit_exceeded",
            ErrorCode::ServiceError => "service_error",
            ErrorCode::BadGateway => "bad_gateway",
            ErrorCode::Timeout => "timeout",
            ErrorCode::VolumeAlreadyAttached => "volume_already_attached",
            ErrorCode::Other(code) => code,
        }
    }
}

impl From<&str> for ErrorCode {
    fn from(code: &str) -> Self {
        match code {
            "unauthorized" => ErrorCode::Unauthorized,
            "forbidden" => ErrorCode::Forbidden,
            "invalid_input" => ErrorCode::InvalidInput,
            "json_error" => ErrorCode::JsonError,
            "locked" => ErrorCode::Locked,
            "not_found" => ErrorCode::NotFound,
            "conflict" => ErrorCode::Conflict,
            "uniqueness_error" => ErrorCode::UniquenessError,
            "protected" => ErrorCode::Protected,
            "maintenance" => ErrorCode::Maintenance,
            "rate_limit_exceeded" => ErrorCode::RateLimitExceeded,
            "resource_unavailable" => ErrorCode::ResourceUnavailable,
            "resource_limit_exceeded" => ErrorCode::ResourceLimitExceeded,
            "service_error" => ErrorCode::ServiceError,
            "bad_gateway" => ErrorCode::BadGateway,
            "timeout" => ErrorCode::Timeout,
            "volume_already_attached" => ErrorCode::VolumeAlreadyAttached,
            other => ErrorCode::Other(other.to_string()),
        }
    }
}

impl From<String> for ErrorCode {
    fn from(code: String) -> Self {
        ErrorCode::from(code.as_str())
    }
}

impl From<ErrorCode> for String {
    fn from(code: ErrorCode) -> Self {
        code.as_str().to_string()
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_unknown_ones_are_kept() {
        for code in ["locked", "volume_already_attached", "rate_limit_exceeded"] {
            assert_eq!(ErrorCode::from(code).as_str(), code);
        }
        assert_eq!(
            ErrorCode::from("placement_error"),
            ErrorCode::Other("placement_error".to_string())
        );
    }

    #[test]
    fn error_documents_are_read_and_other_bodies_are_not() {
        let body = br#"{"error":{"code":"not_found","message":"volume not found","details":null}}"#;
        let error = ApiError::from_body(404, body).unwrap();
        assert_eq!(error.code, ErrorCode::NotFound);
        assert_eq!(error.to_string(), "not_found (HTTP 404): volume not found");
        assert!(ApiError::from_body(502, b"<html>bad gateway</html>").is_none());
        assert!(ApiError::from_body(502, b"").is_none());
        assert!(ApiError::from_body(502, br#"{"error":{}}"#).is_none());
    }

    #[test]
    fn messages_name_the_request_and_the_attempts() {
        let error = Error::Api {
            method: Method::POST,
            path: "/volumes/7/actions/attach".to_string(),
            attempts: 3,
            source: Box::new(ApiError {
                status: 409,
                code: ErrorCode::Conflict,
                message: "busy".to_string(),
                details: serde_json::Value::Null,
            }),
        };
        assert_eq!(
            error.to_string(),
            "POST /volumes/7/actions/attach: conflict (HTTP 409): busy (gave up after 3 attempts)"
        );
    }
}
