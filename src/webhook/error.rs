//! Every HTTP error the server answers, as one type: each variant knows its status, headers and
//! body, so the routes return `Err(ApiError::...)` instead of building responses.
//!
//! Not errors here: a body that is an AdmissionReview but cannot be acted on is answered with
//! HTTP 200 and a refusing AdmissionReview (Kubernetes convention, see `review`), so the API
//! server shows the reason to the user.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::review::NotAReview;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("use POST with an AdmissionReview body")]
    MethodNotAllowed,
    #[error("not found; the webhook path is POST /mutate")]
    NotFound,
    #[error("Content-Type must be application/json")]
    UnsupportedMediaType,
    /// Declared by Content-Length, or found while reading.
    #[error("request body exceeds {limit} bytes")]
    BodyTooLarge { limit: usize },
    #[error("request body could not be read")]
    BodyUnreadable,
    #[error("request body was not received in time")]
    BodyTimeout,
    /// The memory budget for request bodies is spent: retry (here or on another replica).
    #[error("the webhook is at its memory budget for request bodies; retry")]
    Overloaded,
    /// The body is not an AdmissionReview at all, not even far enough to read its uid.
    #[error(transparent)]
    NotAReview(#[from] NotAReview),
    /// `/readyz`: every reason the replica is not ready (see `crate::readiness`).
    #[error("not ready: {}", .0.join("; "))]
    NotReady(Vec<String>),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::BodyUnreadable | ApiError::NotAReview(_) => StatusCode::BAD_REQUEST,
            ApiError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::Overloaded | ApiError::NotReady(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

/// Retry-After on an overload answer: a second, long enough for in-flight bodies to finish.
const RETRY_AFTER_SECONDS: HeaderValue = HeaderValue::from_static("1");

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        match self {
            // The admin port speaks plain text to probes and people: one reason per line.
            ApiError::NotReady(reasons) => {
                let mut body = String::new();
                for reason in &reasons {
                    body.push_str(reason);
                    body.push('\n');
                }
                (status, body).into_response()
            }
            other => {
                // The whole cause chain, so a client sees where the JSON broke.
                let message = match &other {
                    ApiError::NotAReview(e) => crate::error_chain(e),
                    _ => other.to_string(),
                };
                let body =
                    serde_json::json!({"error": message, "code": status.as_u16()}).to_string();
                let mut response =
                    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response();
                if matches!(other, ApiError::Overloaded) {
                    response
                        .headers_mut()
                        .insert(header::RETRY_AFTER, RETRY_AFTER_SECONDS);
                }
                response
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn parts(e: ApiError) -> (StatusCode, axum::http::HeaderMap, String) {
        let r = e.into_response();
        let (parts, body) = r.into_parts();
        let bytes = body.collect().await.unwrap().to_bytes();
        (
            parts.status,
            parts.headers,
            String::from_utf8(bytes.to_vec()).unwrap(),
        )
    }

    #[tokio::test]
    async fn json_errors_carry_message_and_code() {
        let (status, headers, body) = parts(ApiError::BodyTooLarge { limit: 10 }).await;
        assert_eq!(status, 413);
        assert_eq!(headers[header::CONTENT_TYPE], "application/json");
        assert!(headers.get(header::RETRY_AFTER).is_none());
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"code": 413, "error": "request body exceeds 10 bytes"})
        );

        let not_json = serde_json::from_str::<serde_json::Value>("{x").unwrap_err();
        let (status, _, body) = parts(NotAReview(not_json).into()).await;
        assert_eq!(status, 400);
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["code"], 400);
        let message = body["error"].as_str().unwrap();
        assert!(
            message.starts_with("request body is not an AdmissionReview: key must be"),
            "{message}"
        );
    }

    #[tokio::test]
    async fn overload_says_when_to_retry() {
        let (status, headers, body) = parts(ApiError::Overloaded).await;
        assert_eq!(status, 503);
        assert_eq!(headers[header::RETRY_AFTER], "1");
        assert!(body.contains("memory budget"), "{body}");
    }

    #[tokio::test]
    async fn not_ready_lists_every_reason_as_text() {
        let reasons = vec!["shutting down".to_owned(), "no certificate".to_owned()];
        let (status, headers, body) = parts(ApiError::NotReady(reasons)).await;
        assert_eq!(status, 503);
        assert!(headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/plain"));
        assert_eq!(body, "shutting down\nno certificate\n");
    }
}
