//! [`ApiError`]: every failure a request can meet, as its HTTP status and the JSON body
//! `{"error": {"code", "message"}}`. 4xx for what the client can fix, 5xx for ours.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use mica::ErrorKind;

/// A request's failure: status, a stable machine code and a message for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// A short stable code (`bad_media`, `bad_options`, `busy`, ...).
    pub code: &'static str,
    /// What went wrong and what to do about it.
    pub message: String,
}

impl ApiError {
    /// An error with this status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    /// 400 `bad_options`: an option the client sent is unknown or out of range.
    pub fn options(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_options", message)
    }

    /// 400 `bad_input`: the request body is not what its content type says.
    pub fn input(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_input", message)
    }

    /// 500 `internal`: our fault.
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    /// The JSON body.
    pub fn body(&self) -> String {
        serde_json::json!({"error": {"code": self.code, "message": self.message}}).to_string()
    }
}

impl From<mica::Error> for ApiError {
    fn from(e: mica::Error) -> ApiError {
        let message = e.to_string();
        match e.kind() {
            ErrorKind::Media => ApiError::new(StatusCode::BAD_REQUEST, "bad_media", message),
            ErrorKind::Input => ApiError::input(message),
            ErrorKind::Options if matches!(e, mica::Error::Model(_)) => {
                ApiError::new(StatusCode::BAD_REQUEST, "unknown_model", message)
            }
            ErrorKind::Options => ApiError::options(message),
            // The server cancels only on its time limit or its shutdown; the handler says
            // which before this is reached.
            ErrorKind::Cancelled => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "cancelled",
                "the analysis was cancelled",
            ),
            ErrorKind::Device => {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "device", message)
            }
            ErrorKind::Model => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "model", message),
            _ => ApiError::internal(message),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            self.body(),
        )
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_errors_map_to_the_client_or_to_us() {
        let e: ApiError = mica::Error::UnknownTask("ocr".into()).into();
        assert_eq!((e.status, e.code), (StatusCode::BAD_REQUEST, "bad_options"));
        let e: ApiError = mica::Error::Io(std::io::Error::other("gone")).into();
        assert_eq!((e.status, e.code), (StatusCode::BAD_REQUEST, "bad_media"));
        let body: serde_json::Value = serde_json::from_str(&e.body()).unwrap();
        assert_eq!(body["error"]["code"], "bad_media");
        assert!(body["error"]["message"].as_str().unwrap().contains("gone"));
    }
}
