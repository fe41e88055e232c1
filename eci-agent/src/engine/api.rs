//! A small client for the real engine's API, used by the agent itself (not by the proxy path):
//! inspecting containers, images and volumes for the socket-mount gate, listing running
//! containers and following container events. Calls run on kept-alive connections, one call
//! per connection at a time, so a slow call never holds up another one.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt as _, Empty, Limited};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;

use crate::error_chain::chain;

/// Answers the agent reads whole; the engine's JSON for one object is far smaller.
const MAX_ANSWER: usize = 32 << 20;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    // The cause is in the message and not also a `source()`, which `{:#}` would print again.
    #[error("cannot reach the engine at {path}: {}", chain(.cause))]
    Connect { path: String, cause: std::io::Error },
    #[error("engine {target}: {}", chain(.cause))]
    Http { target: String, cause: hyper::Error },
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

/// Idle kept-alive connections kept for the next call; the gate asks a few questions per
/// `start` and a fresh connection for each cost more than the answers.
const MAX_IDLE: usize = 4;

type Sender = http1::SendRequest<Empty<Bytes>>;

/// The engine, as the agent talks to it.
#[derive(Clone, Debug)]
pub struct EngineApi {
    socket: PathBuf,
    idle: Arc<Mutex<Vec<Sender>>>,
}

impl EngineApi {
    pub fn new(socket: &Path) -> Self {
        Self {
            socket: socket.to_owned(),
            idle: Arc::default(),
        }
    }

    /// `GET target`; `Ok(None)` for a 404 (no such container, image or volume).
    pub async fn get(&self, target: &str) -> Result<Option<Bytes>, EngineError> {
        let (resp, sender) = match self.pooled().await {
            // A kept-alive connection the engine may have closed meanwhile: a GET is safe to
            // send again on a fresh one.
            Some(mut sender) => match sender.send_request(request(target)?).await {
                Ok(resp) => (resp, sender),
                Err(_) => self.send_fresh(target).await?,
            },
            None => self.send_fresh(target).await?,
        };
        let status = resp.status();
        let body = Limited::new(resp.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|_| EngineError::Body {
                target: target.to_owned(),
            })?
            .to_bytes();
        self.give_back(sender);
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

    /// `GET target` as a stream of newline-delimited JSON documents (`/events`), on a
    /// connection of its own.
    pub async fn stream(&self, target: &str) -> Result<hyper::body::Incoming, EngineError> {
        let (resp, _sender) = self.send_fresh(target).await?;
        if resp.status() != StatusCode::OK {
            return Err(EngineError::Status {
                target: target.to_owned(),
                status: resp.status().as_u16(),
                body: String::new(),
            });
        }
        Ok(resp.into_body())
    }

    async fn pooled(&self) -> Option<Sender> {
        loop {
            let mut sender = self.idle.lock().ok()?.pop()?;
            if sender.ready().await.is_ok() {
                return Some(sender);
            }
        }
    }

    fn give_back(&self, sender: Sender) {
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < MAX_IDLE
            && !sender.is_closed()
        {
            idle.push(sender);
        }
    }

    async fn send_fresh(
        &self,
        target: &str,
    ) -> Result<(http::Response<hyper::body::Incoming>, Sender), EngineError> {
        let stream =
            UnixStream::connect(&self.socket)
                .await
                .map_err(|cause| EngineError::Connect {
                    path: self.socket.display().to_string(),
                    cause,
                })?;
        let http_err = |cause| EngineError::Http {
            target: target.to_owned(),
            cause,
        };
        let (mut sender, conn) = http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
            .await
            .map_err(http_err)?;
        tokio::spawn(async move {
            if let Err(err) = conn.await {
                tracing::debug!(%err, "engine API connection ended");
            }
        });
        let resp = sender
            .send_request(request(target)?)
            .await
            .map_err(http_err)?;
        Ok((resp, sender))
    }
}

fn request(target: &str) -> Result<Request<Empty<Bytes>>, EngineError> {
    Request::builder()
        .method(Method::GET)
        .uri(target)
        .header(http::header::HOST, "docker")
        .body(Empty::new())
        .map_err(|_| EngineError::Target {
            target: target.to_owned(),
        })
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

    #[tokio::test]
    async fn calls_reuse_a_kept_alive_connection() {
        let engine = crate::engine::fake::FakeEngine::start();
        engine.answer("/info", "{}");
        let api = EngineApi::new(engine.socket());
        for _ in 0..5 {
            assert_eq!(api.get("/info").await.unwrap().as_deref(), Some(&b"{}"[..]));
        }
        assert_eq!(api.get("/missing").await.unwrap(), None);
        assert_eq!(engine.accepted(), 1);
    }

    #[test]
    fn segments_cannot_escape_their_place_in_the_path() {
        assert_eq!(segment("busybox:1.36"), "busybox:1.36");
        assert_eq!(segment("localhost:5000/a/b"), "localhost:5000%2Fa%2Fb");
        assert_eq!(segment("../x?y#z"), "..%2Fx%3Fy%23z");
        assert_eq!(segment("a b"), "a%20b");
    }
}
