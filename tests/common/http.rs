//! The client side: a blocking HTTP client that treats 4xx and 5xx as answers, and the
//! check of the gateway's own JSON errors.

use std::time::Duration;

use serde_json::Value;

/// A response as the client saw it. Header names compare case-insensitively.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(field, _)| field.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// The `X-Request-Id` the gateway echoed; panics if there is none.
    pub fn request_id(&self) -> &str {
        self.header("X-Request-Id")
            .unwrap_or_else(|| panic!("no X-Request-Id on the response: {self:?}"))
    }

    /// The body parsed as JSON; panics with the body if it is not JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("response body is not JSON ({e}): {self:?}"))
    }
}

impl From<ureq::Response> for HttpResponse {
    fn from(response: ureq::Response) -> HttpResponse {
        let status = response.status();
        let mut names = response.headers_names();
        names.sort();
        names.dedup();
        let headers = names
            .iter()
            .flat_map(|name| {
                response
                    .all(name)
                    .into_iter()
                    .map(move |value| (name.clone(), value.to_string()))
            })
            .collect();
        let body = response.into_string().expect("read the response body");
        HttpResponse {
            status,
            headers,
            body,
        }
    }
}

/// An HTTP client that keeps connections alive, follows no redirects and gives up on
/// a hung server after ten seconds.
pub fn http_agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .redirects(0)
        .timeout_connect(Duration::from_secs(2))
        .timeout(Duration::from_secs(10))
        .build()
}

/// Sends one request without a body. A 4xx or 5xx is a response like any other; a
/// transport error (refused, reset, timed out) panics.
pub fn send(
    agent: &ureq::Agent,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
) -> HttpResponse {
    exchange(agent, method, url, headers, None)
}

/// [`send`] with a body (and its Content-Length).
pub fn send_body(
    agent: &ureq::Agent,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> HttpResponse {
    exchange(agent, method, url, headers, Some(body))
}

fn exchange(
    agent: &ureq::Agent,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> HttpResponse {
    let request = headers
        .iter()
        .fold(agent.request(method, url), |request, (name, value)| {
            request.set(name, value)
        });
    let answer = match body {
        Some(body) => request.send_string(body),
        None => request.call(),
    };
    match answer {
        Ok(response) | Err(ureq::Error::Status(_, response)) => response.into(),
        Err(error) => panic!("{method} {url}: {error}"),
    }
}

/// Asserts that `response` is an error the gateway built itself (SPEC §4): the status,
/// a JSON body `{"error": {"code", "message", "request_id"}}` with
/// `Content-Type: application/json`, and the request id echoed in the header.
pub fn assert_gateway_error(response: &HttpResponse, status: u16, code: &str) {
    assert_eq!(response.status, status, "{response:?}");
    let content_type = response.header("Content-Type").unwrap_or_default();
    assert!(
        content_type.starts_with("application/json"),
        "Content-Type {content_type:?}: {response:?}"
    );
    let error = &response.json()["error"];
    assert_eq!(error["code"], code, "{response:?}");
    assert!(error["message"].is_string(), "no message: {response:?}");
    assert_eq!(error["request_id"], response.request_id(), "{response:?}");
}

/// Writes `request` (raw HTTP/1.1 bytes, which should ask for `Connection: close`) to
/// `addr` and returns everything the server sent until it closed the connection. A
/// write the server cut short is not an error: its answer is still read.
pub fn raw_exchange(addr: &str, request: &[u8]) -> String {
    String::from_utf8_lossy(&raw_exchange_bytes(addr, request)).into_owned()
}

/// [`raw_exchange`], the answer's bytes as they came (a compressed body is not text).
pub fn raw_exchange_bytes(addr: &str, request: &[u8]) -> Vec<u8> {
    use std::io::{Read, Write};
    let mut stream =
        std::net::TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("set a read timeout");
    let _ = stream.write_all(request);
    let mut answer = Vec::new();
    if let Err(e) = stream.read_to_end(&mut answer) {
        assert!(
            !answer.is_empty(),
            "reading the answer from {addr} failed before any byte arrived: {e}"
        );
    }
    answer
}
