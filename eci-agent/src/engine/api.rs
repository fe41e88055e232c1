//! A small client for the real engine's API, used by the agent itself (not by the proxy path):
//! inspecting containers, images and volumes for the socket-mount gate, listing running
//! containers and following container events. Each call opens its own connection, so a slow
//! call never holds up another one.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt as _, Empty, Limited};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;

/// Answers the agent reads whole; the engine's JSON for one object is far smaller.
const MAX_ANSWER: usize = 32 << 20;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("cannot reach the engine at {path}: {source}")]
    Connect {
        path: String,
        source: std::io::Error,
    },
    #[error("engine {target}: {source}")]
    Http {
        target: String,
        source: hyper::Error,
    },
    #[error("engine {target}: HTTP {status}: {body}")]
    Status {
        target: String,
        status: u16,
        body: String,
    },
    #[error("engine {target}: answer larger than {MAX_ANSWER} bytes or cut short")]
    Body { target: String },
    #[error("engine {target}: invalid request target")]
    Target { target: String },
}

/// The engine, as the agent talks to it.
#[derive(Clone, Debug)]
pub struct EngineApi {
    socket: PathBuf,
}

impl EngineApi {
    pub fn new(socket: &Path) -> Self {
        Self {
            socket: socket.to_owned(),
        }
    }

    /// `GET target`; `Ok(None)` for a 404 (no such container, image or volume).
    pub async fn get(&self, target: &str) -> Result<Option<Bytes>, EngineError> {
        let resp = self.send(target).await?;
        let status = resp.status();
        let body = Limited::new(resp.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|_| EngineError::Body {
                target: target.to_owned(),
            })?
            .to_bytes();
        match status {
            StatusCode::OK => Ok(Some(body)),
            StatusCode::NOT_FOUND => Ok(None),
            status => Err(EngineError::Status {
                target: target.to_owned(),
                status: status.as_u16(),
                body: String::from_utf8_lossy(&body).trim().to_owned(),
            }),
        }
    }

    /// `GET target` as a stream of newline-delimited JSON documents (`/events`).
    pub async fn stream(&self, target: &str) -> Result<hyper::body::Incoming, EngineError> {
        let resp = self.send(target).await?;
        if resp.status() != StatusCode::OK {
            return Err(EngineError::Status {
                target: target.to_owned(),
                status: resp.status().as_u16(),
                body: String::new(),
            });
        }
        Ok(resp.into_body())
    }

    async fn send(
        &self,
        target: &str,
    ) -> Result<http::Response<hyper::body::Incoming>, EngineError> {
        let stream =
            UnixStream::connect(&self.socket)
                .await
                .map_err(|source| EngineError::Connect {
                    path: self.socket.display().to_string(),
                    source,
                })?;
        let http_err = |source| EngineError::Http {
            target: target.to_owned(),
            source,
        };
        let (mut sender, conn) = http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
            .await
            .map_err(http_err)?;
        tokio::spawn(async move {
            if let Err(err) = conn.await {
                tracing::debug!(%err, "engine API connection ended");
            }
        });
        let req = Request::builder()
            .method(Method::GET)
            .uri(target)
            .header(http::header::HOST, "docker")
            .body(Empty::new())
            .map_err(|_| EngineError::Target {
                target: target.to_owned(),
            })?;
        sender.send_request(req).await.map_err(http_err)
    }
}

/// Percent-encodes one path segment (a container, image or volume name as the user wrote it).
pub fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~:@".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_cannot_escape_their_place_in_the_path() {
        assert_eq!(segment("busybox:1.36"), "busybox:1.36");
        assert_eq!(segment("localhost:5000/a/b"), "localhost:5000%2Fa%2Fb");
        assert_eq!(segment("../x?y#z"), "..%2Fx%3Fy%23z");
        assert_eq!(segment("a b"), "a%20b");
    }
}
