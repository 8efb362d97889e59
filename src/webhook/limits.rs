//! The [`Limits`] on connections and requests: the flags set them (`serve`), the connection
//! layer (`conn`) and the `/mutate` route enforce them.

use std::time::Duration;

/// Limits applied to every connection and request. The defaults keep the server inside the
/// chart's 128 MiB memory limit whatever clients send (README, "What the server bounds").
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest AdmissionReview accepted. It carries object and oldObject, each up to etcd's
    /// 1.5 MiB (more as JSON than as stored protobuf): the default 6 MiB leaves headroom.
    pub max_body_bytes: usize,
    /// Request bytes held at once across all requests (bodies being read and processed). A
    /// request that does not fit is answered 503 with Retry-After at once, never buffered.
    pub memory_budget_bytes: usize,
    /// Time to read a request's headers, and for a new connection's first byte.
    pub header_read_timeout: Duration,
    /// Time to finish a TLS handshake.
    pub handshake_timeout: Duration,
    /// Time to read the body and answer.
    pub request_timeout: Duration,
    /// A connection with no request in flight for this long is closed (gracefully: HTTP/2
    /// GOAWAY), whether or not the client keeps it alive with PINGs.
    pub idle_timeout: Duration,
    /// Connections served at once; more are refused.
    pub max_connections: usize,
    /// HTTP/2 streams (requests) at once on one connection.
    pub max_concurrent_streams: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 6 * 1024 * 1024,
            memory_budget_bytes: 32 * 1024 * 1024,
            header_read_timeout: Duration::from_secs(5),
            handshake_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            // Longer than the API server's own idle timeout for webhook connections (Go's
            // 90 s), so the client closes first and never races a request against our close.
            idle_timeout: Duration::from_secs(120),
            max_connections: 1024,
            max_concurrent_streams: 32,
        }
    }
}

impl Limits {
    /// Small limits for the admin port, so probes answer while the webhook port is flooded.
    pub fn admin() -> Limits {
        Limits {
            max_body_bytes: 16 * 1024,
            memory_budget_bytes: 256 * 1024,
            header_read_timeout: Duration::from_secs(5),
            handshake_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(30),
            max_connections: 64,
            max_concurrent_streams: 8,
        }
    }
}
