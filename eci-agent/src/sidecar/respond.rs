//! The only place where refusals and sidecar failures become HTTP answers.
//!
//! Every answer the sidecar writes itself has the engine's error shape, `Content-Type:
//! application/json` exactly and `{"message":"…"}`, so the docker CLI prints
//! `Error response from daemon: <message>`.

use std::time::Duration;

use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::BodyExt as _;

use super::{
    admit::Refusal,
    forward::{ForwardError, ProxyBody, full},
    path::PathError,
};

/// Refused bodies read before answering. A client still writing its body (a build context, a
/// `cp` archive) when the connection closes gets a reset that destroys the answer, so the
/// refusal would show as "broken pipe"; reading a bounded amount first lets it read the 403.
const DRAIN_LIMIT: usize = 32 << 20;
const DRAIN_TIME: Duration = Duration::from_secs(10);

/// Answers a refused request, after reading (a bounded part of) its body.
pub async fn refuse(req: Request<ProxyBody>, refusal: &Refusal) -> Response<ProxyBody> {
    // With `Expect: 100-continue` the client sends nothing until told to; reading would tell it.
    if !req.headers().contains_key(header::EXPECT) {
        let mut body = req.into_body();
        let mut seen = 0usize;
        let drain = async {
            while let Some(Ok(frame)) = body.frame().await {
                seen += frame.data_ref().map_or(0, |d| d.len());
                if seen > DRAIN_LIMIT {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(DRAIN_TIME, drain).await;
    }
    refused(refusal)
}

/// A request the policy refused.
pub fn refused(refusal: &Refusal) -> Response<ProxyBody> {
    let message = match refusal {
        Refusal::CommandBlocked { message, .. }
        | Refusal::SocketMountDenied { message }
        | Refusal::Unverifiable { message }
        | Refusal::GateRefused { message } => message.clone(),
        Refusal::ContainerNotAllowed => "enhanced container isolation: this container is not allowed to use the docker \
                                         socket; configure the docker socket image list to allow its image"
            .to_owned(),
        Refusal::UnknownCaller => "enhanced container isolation: this process is neither in a container allowed to use the \
                                   docker socket nor in a trusted host cgroup"
            .to_owned(),
    };
    json_error(StatusCode::FORBIDDEN, &message, false)
}

/// What gorilla/mux answers for a path that is not clean: the engine routes nothing.
pub fn redirect(location: &str) -> Response<ProxyBody> {
    let mut resp = Response::new(full(""));
    *resp.status_mut() = StatusCode::MOVED_PERMANENTLY;
    if let Ok(location) = HeaderValue::from_str(location) {
        resp.headers_mut().insert(header::LOCATION, location);
    }
    resp.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    resp
}

/// A request target the engine itself would refuse to parse; the connection is not reused.
pub fn malformed_target(err: &PathError) -> Response<ProxyBody> {
    json_error(
        StatusCode::BAD_REQUEST,
        &format!("malformed request target: {err}"),
        true,
    )
}

/// A request the sidecar refuses to judge (framing it will not pass on); the connection ends.
pub fn malformed_request(reason: &str) -> Response<ProxyBody> {
    json_error(
        StatusCode::BAD_REQUEST,
        &format!("malformed request: {reason}"),
        true,
    )
}

pub fn forward_failed(err: &ForwardError) -> Response<ProxyBody> {
    match err {
        ForwardError::UpgradeBodyTooLarge => {
            json_error(StatusCode::PAYLOAD_TOO_LARGE, &err.to_string(), true)
        }
        ForwardError::ClientBody(_) => json_error(StatusCode::BAD_REQUEST, &err.to_string(), true),
        ForwardError::Connect { .. } | ForwardError::Upstream(_) => {
            json_error(StatusCode::BAD_GATEWAY, &format!("eci-agent: {err}"), false)
        }
    }
}

/// An engine failure as [`forward_failed`] answers it (`eci-agent: ` and the failure), in
/// bytes, for the sidecar's own HTTP/1 path ([`super::plain`]), which then closes the
/// connection.
pub fn engine_failed_plain(err: &dyn std::fmt::Display) -> Vec<u8> {
    json_error_plain(StatusCode::BAD_GATEWAY, &format!("eci-agent: {err}"))
}

/// A request body the sidecar could not follow to its end (a broken chunk), in bytes, for the
/// sidecar's own HTTP/1 path, which then closes the connection: hyper's path answers 400 too.
pub fn bad_body_plain(err: &dyn std::fmt::Display) -> Vec<u8> {
    json_error_plain(StatusCode::BAD_REQUEST, &format!("request body: {err}"))
}

/// [`json_error`] as bytes, for the sidecar's own HTTP/1 path, always closing the connection.
fn json_error_plain(status: StatusCode, message: &str) -> Vec<u8> {
    let body = serde_json::json!({ "message": message }).to_string();
    format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn json_error(status: StatusCode, message: &str, close: bool) -> Response<ProxyBody> {
    let body = serde_json::json!({ "message": message }).to_string();
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if close {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}
