//! A stand-in for the Kubernetes API server in unit tests (as kube-rs's `controller-rs`
//! `fixtures.rs` does): a real [`kube::Client`] over a `tower_test` mock service. The test states
//! each request it expects, in order, and the answer; anything else fails the test with the
//! request that came. Conflicts, 404s and a hung API server are then unit-testable.
//!
//! ```ignore
//! let (client, mut api) = api_mock::pair();
//! let task = tokio::spawn(async move { code_under_test(&client).await });
//! let call = api.expect(Method::GET, "/api/v1/namespaces/ns/secrets/ca").await;
//! call.not_found();
//! api.expect(Method::POST, "/api/v1/namespaces/ns/secrets").await.json(201, &created);
//! let result = api_mock::finish(task).await;
//! ```
// Each test uses a subset of the helper.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use http::{Method, Request, Response};
use kube::client::Body;
use serde_json::{json, Value};
use tower_test::mock::{self, Handle, SendResponse};

/// How long the verifier waits for a request the code under test should send. Short: the
/// mock answers at once, so only a missing request takes this long.
const WAIT: Duration = Duration::from_secs(5);

/// The API server's side of the pair.
pub struct ApiServer {
    handle: Handle<Request<Body>, Response<Body>>,
}

/// A client whose requests reach the returned [`ApiServer`] and nothing else.
pub fn pair() -> (kube::Client, ApiServer) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    (kube::Client::new(service, "default"), ApiServer { handle })
}

/// One request received, waiting for its answer.
pub struct Call {
    pub method: Method,
    pub path: String,
    pub query: String,
    /// The request body as JSON (`Null` when empty).
    pub body: Value,
    /// The request's `Content-Type` (the patch type of a PATCH).
    pub content_type: String,
    respond: SendResponse<Response<Body>>,
}

impl ApiServer {
    /// The next request, which must have this method and path (the query is in [`Call::query`]).
    pub async fn expect(&mut self, method: Method, path: &str) -> Call {
        let call = self.next().await;
        assert_eq!(
            (&call.method, call.path.as_str()),
            (&method, path),
            "unexpected request {} {}?{} with body {}",
            call.method,
            call.path,
            call.query,
            call.body
        );
        call
    }

    /// The next request, whatever it is.
    pub async fn next(&mut self) -> Call {
        let (request, respond) = tokio::time::timeout(WAIT, self.handle.next_request())
            .await
            .expect("no request reached the API server in time")
            .expect("the client was dropped before sending a request");
        let (parts, body) = request.into_parts();
        let bytes = body.collect_bytes().await.expect("request body");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).expect("request body is JSON")
        };
        Call {
            method: parts.method,
            path: parts.uri.path().to_owned(),
            query: parts.uri.query().unwrap_or_default().to_owned(),
            body,
            content_type: parts
                .headers
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned(),
            respond,
        }
    }

    /// Asserts that no request arrives within `wait`.
    pub async fn expect_silence(&mut self, wait: Duration) {
        if let Ok(Some((request, _))) = tokio::time::timeout(wait, self.handle.next_request()).await
        {
            panic!(
                "expected no request, got {} {}",
                request.method(),
                request.uri()
            );
        }
    }
}

impl Call {
    /// Answers with `status` and a JSON body.
    pub fn json(self, status: u16, body: &Value) {
        let response = Response::builder()
            .status(status)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Body::from(serde_json::to_vec(body).expect("JSON")))
            .expect("response");
        self.respond.send_response(response);
    }

    /// Answers with a `metav1.Status` failure, as the API server does.
    pub fn status(self, code: u16, reason: &str, message: &str) {
        let body = json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": message, "reason": reason, "code": code,
        });
        self.json(code, &body);
    }

    /// Answers with `status` and a plain-text body, as the API server does for a path it does not
    /// serve at all (`404 page not found`), or as a proxy in front of it might.
    pub fn text(self, status: u16, body: &str) {
        let response = Response::builder()
            .status(status)
            .header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")
            .body(Body::from(body.to_owned().into_bytes()))
            .expect("response");
        self.respond.send_response(response);
    }

    pub fn not_found(self) {
        self.status(404, "NotFound", "not found");
    }

    pub fn conflict(self) {
        self.status(
            409,
            "Conflict",
            "the object has been modified; please apply your changes to the latest version",
        );
    }

    /// Never answers: the request stays in flight until the client gives up (a hung API
    /// server). Keep the returned guard alive for as long as it should hang.
    pub fn hang(self) -> SendResponse<Response<Body>> {
        self.respond
    }
}

/// The result of the spawned code under test, failing the test if it does not finish.
pub async fn finish<T>(task: tokio::task::JoinHandle<T>) -> T {
    tokio::time::timeout(WAIT, task)
        .await
        .expect("the code under test did not finish")
        .expect("the code under test panicked")
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Secret;
    use kube::Api;

    /// The helper itself: a request is seen with its path, and an answer reaches the client.
    #[tokio::test]
    async fn a_request_and_its_answer_round_trip() {
        let (client, mut api) = pair();
        let task =
            tokio::spawn(async move { Api::<Secret>::namespaced(client, "ns").get_opt("s").await });
        api.expect(Method::GET, "/api/v1/namespaces/ns/secrets/s")
            .await
            .not_found();
        assert!(finish(task).await.unwrap().is_none());
    }

    #[tokio::test]
    #[should_panic(expected = "unexpected request")]
    async fn a_different_request_fails_the_test() {
        let (client, mut api) = pair();
        tokio::spawn(async move { Api::<Secret>::namespaced(client, "ns").get("s").await });
        api.expect(Method::GET, "/api/v1/namespaces/other/secrets/s")
            .await;
    }
}
