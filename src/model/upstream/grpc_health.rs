//! `health_check: {type: grpc}`: the standard gRPC health protocol
//! (`grpc.health.v1.Health/Check`), sent over the pool's own HTTP/2 peer (h2c, or h2 over
//! TLS). A target is healthy when it answers `grpc-status: 0` with status `SERVING`.
//!
//! The two messages involved have one field each (`HealthCheckRequest.service = 1`,
//! `HealthCheckResponse.status = 1`), so they are encoded here rather than through a
//! protobuf code generator.

use std::time::Duration;

use async_trait::async_trait;
use bytes::{BufMut, Bytes, BytesMut};
use pingora::connectors::http::Connector;
use pingora::lb::health_check::{HealthCheck, HealthObserveCallback};
use pingora::lb::Backend;
use pingora::protocols::http::client::HttpSession;
use pingora::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorType, OkOrErr, Result};
use pingora_http::RequestHeader;

/// The method every gRPC health service answers.
const CHECK_PATH: &str = "/grpc.health.v1.Health/Check";
/// `HealthCheckResponse.ServingStatus.SERVING`.
const SERVING: u64 = 1;
/// Longest answer read: a health answer is a few bytes.
const MAX_ANSWER: usize = 1024;

/// One pool's gRPC health check.
pub(super) struct GrpcHealthCheck {
    peer_template: HttpPeer,
    connector: Connector,
    request: RequestHeader,
    message: Bytes,
    timeout: Duration,
    pub(super) consecutive_success: usize,
    pub(super) consecutive_failure: usize,
    pub(super) health_changed_callback: Option<HealthObserveCallback>,
}

impl GrpcHealthCheck {
    /// A check asking about `service` (empty: the server as a whole) through a peer like
    /// the pool's `peer`, within `timeout`.
    pub(super) fn new(peer: &HttpPeer, service: &str, timeout: Duration) -> Result<Self> {
        let mut request = RequestHeader::build("POST", CHECK_PATH.as_bytes(), None)?;
        request.insert_header("content-type", "application/grpc")?;
        request.insert_header("te", "trailers")?;
        request.insert_header("user-agent", "portcullis-health-check")?;
        let mut peer_template = peer.clone();
        peer_template.options.connection_timeout = Some(timeout);
        peer_template.options.read_timeout = Some(timeout);
        peer_template.options.write_timeout = Some(timeout);
        Ok(Self {
            peer_template,
            connector: Connector::new(None),
            request,
            message: grpc_frame(&health_request(service)),
            timeout,
            consecutive_success: 1,
            consecutive_failure: 1,
            health_changed_callback: None,
        })
    }

    async fn ask(&self, target: &Backend) -> Result<()> {
        let mut peer = self.peer_template.clone();
        peer._address = target.addr.clone();
        let (session, _) = self.connector.get_http_session(&peer).await?;
        let HttpSession::H2(mut session) = session else {
            return Error::e_explain(
                ErrorType::H2Error,
                "the target answered over HTTP/1, not HTTP/2",
            );
        };
        let mut request = Box::new(self.request.clone());
        // HTTP/2 needs an authority; the target's address is the honest one.
        request.insert_header("host", target.addr.to_string())?;
        session.write_request_header(request, false)?;
        session
            .write_request_body(self.message.clone(), true)
            .await?;
        session.read_response_header().await?;
        let header = session
            .response_header()
            .or_err(ErrorType::H2Error, "no answer")?;
        if header.status != 200 {
            return Error::e_explain(
                ErrorType::CustomCode("gRPC health check status", header.status.as_u16()),
                "a gRPC answer has HTTP status 200",
            );
        }
        let mut status = header.headers.get("grpc-status").cloned();
        let mut answer = BytesMut::new();
        while let Some(chunk) = session.read_response_body().await? {
            if answer.len() + chunk.len() > MAX_ANSWER {
                return Error::e_explain(ErrorType::H2Error, "health answer too long");
            }
            answer.extend_from_slice(&chunk);
        }
        if let Some(trailers) = session.read_trailers().await? {
            status = status.or_else(|| trailers.get("grpc-status").cloned());
        }
        if status.as_ref().map(|s| s.as_bytes()) != Some(b"0") {
            let status = status.map(|s| String::from_utf8_lossy(s.as_bytes()).into_owned());
            return Error::e_explain(
                ErrorType::new("gRPC health check failed"),
                format!("grpc-status {}", status.as_deref().unwrap_or("missing")),
            );
        }
        match serving_status(&answer) {
            Some(SERVING) => Ok(()),
            other => Error::e_explain(
                ErrorType::new("gRPC health check failed"),
                format!("serving status {} (1 is SERVING)", other.unwrap_or(0)),
            ),
        }
    }
}

#[async_trait]
impl HealthCheck for GrpcHealthCheck {
    async fn check(&self, target: &Backend) -> Result<()> {
        match tokio::time::timeout(self.timeout, self.ask(target)).await {
            Ok(result) => result,
            Err(_) => Error::e_explain(ErrorType::ReadTimedout, "gRPC health check timed out"),
        }
    }

    async fn health_status_change(&self, target: &Backend, healthy: bool) {
        if let Some(callback) = &self.health_changed_callback {
            callback.observe(target, healthy).await;
        }
    }

    fn health_threshold(&self, success: bool) -> usize {
        if success {
            self.consecutive_success
        } else {
            self.consecutive_failure
        }
    }
}

/// `HealthCheckRequest { service }` in protobuf: field 1, length-delimited.
fn health_request(service: &str) -> Vec<u8> {
    let mut message = Vec::with_capacity(service.len() + 6);
    if !service.is_empty() {
        message.push(0x0a);
        put_varint(&mut message, service.len() as u64);
        message.extend_from_slice(service.as_bytes());
    }
    message
}

/// A gRPC length-prefixed message: uncompressed flag, 4-byte big-endian length, bytes.
fn grpc_frame(message: &[u8]) -> Bytes {
    let mut frame = BytesMut::with_capacity(5 + message.len());
    frame.put_u8(0);
    frame.put_u32(u32::try_from(message.len()).unwrap_or(u32::MAX));
    frame.extend_from_slice(message);
    frame.freeze()
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// `HealthCheckResponse.status` from one gRPC frame: `None` when the frame is malformed,
/// 0 (`UNKNOWN`, proto3's default) when the field is absent. Unknown fields are skipped.
fn serving_status(frame: &[u8]) -> Option<u64> {
    let (&compressed, rest) = frame.split_first()?;
    if compressed != 0 || rest.len() < 4 {
        return None;
    }
    let (length, mut message) = rest.split_at(4);
    let length = u32::from_be_bytes(length.try_into().ok()?) as usize;
    if message.len() != length {
        return None;
    }
    let mut status = 0;
    while !message.is_empty() {
        let key = varint(&mut message)?;
        match key & 7 {
            0 => {
                let value = varint(&mut message)?;
                if key >> 3 == 1 {
                    status = value;
                }
            }
            2 => {
                let len = usize::try_from(varint(&mut message)?).ok()?;
                message = message.get(len..)?;
            }
            1 => message = message.get(8..)?,
            5 => message = message.get(4..)?,
            _ => return None,
        }
    }
    Some(status)
}

fn varint(bytes: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = bytes.split_first()?;
        *bytes = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_the_request_as_protobuf() {
        assert!(health_request("").is_empty());
        assert_eq!(health_request("a.B"), b"\x0a\x03a.B");
        assert_eq!(&grpc_frame(b"\x0a\x01x")[..], b"\0\0\0\0\x03\x0a\x01x");
    }

    #[test]
    fn reads_the_serving_status_and_refuses_malformed_frames() {
        assert_eq!(serving_status(b"\0\0\0\0\x02\x08\x01"), Some(SERVING));
        assert_eq!(serving_status(b"\0\0\0\0\x02\x08\x02"), Some(2));
        assert_eq!(
            serving_status(b"\0\0\0\0\0"),
            Some(0),
            "absent field is UNKNOWN"
        );
        // An unknown length-delimited field before the status is skipped.
        assert_eq!(
            serving_status(b"\0\0\0\0\x05\x12\x01z\x08\x01"),
            Some(SERVING)
        );
        assert_eq!(
            serving_status(b"\x01\0\0\0\x02\x08\x01"),
            None,
            "compressed"
        );
        assert_eq!(serving_status(b"\0\0\0\0\x09\x08\x01"), None, "short");
        assert_eq!(
            serving_status(b"\0\0\0\0\x02\x12\x09"),
            None,
            "overlong field"
        );
        assert_eq!(serving_status(b"\0\0\0\0\x01\xff"), None, "cut varint");
        assert_eq!(serving_status(b""), None);
    }
}
