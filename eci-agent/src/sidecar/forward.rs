//! Forwarding an admitted request to the engine and its answer back, streaming both bodies, and
//! turning the connection into a byte tunnel when — and only when — the engine answers 101.
//!
//! The engine receives the request as hyper parsed it (origin-form target, re-framed body), so it
//! routes exactly the path the pipeline classified: nothing the client sent bypasses the parse.

use std::path::Path;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt as _, Full, Limited, combinators::BoxBody};
use hyper::{body::Incoming, client::conn::http1};
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;

/// Bodies the sidecar sends either way: a peer's stream or a small body of its own.
pub type ProxyBody = BoxBody<Bytes, hyper::Error>;

/// Upgrade requests carry at most a small JSON document (exec start's `{"Detach":false,…}`).
const MAX_UPGRADE_BODY: usize = 1 << 20;

/// Why a request could not be forwarded; the caller turns it into an HTTP answer.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// The engine socket refused or vanished.
    #[error("cannot reach the engine at {path}: {source}")]
    Connect {
        path: String,
        source: std::io::Error,
    },
    /// The engine broke the HTTP exchange.
    #[error("engine connection failed: {0}")]
    Upstream(#[source] hyper::Error),
    /// The client's body was malformed or cut short while it was being forwarded.
    #[error("request body: {0}")]
    ClientBody(String),
    /// An upgrade request's body was larger than such requests ever are.
    #[error("the body of an upgrade request exceeds {MAX_UPGRADE_BODY} bytes")]
    UpgradeBodyTooLarge,
}

impl ForwardError {
    /// Did the client, rather than the engine, cause it?
    pub fn is_client_fault(&self) -> bool {
        matches!(self, Self::ClientBody(_) | Self::UpgradeBodyTooLarge)
    }
}

pub fn full(body: impl Into<Bytes>) -> ProxyBody {
    Full::new(body.into())
        .map_err(|never| match never {})
        .boxed()
}

/// One client connection's way to the engine: a kept-alive engine connection, opened on first
/// use and replaced when the engine closes it. Requests on a client connection are answered in
/// order, so one engine connection per client connection keeps keep-alive and ordering intact.
#[derive(Debug)]
pub struct EngineLink {
    engine: std::path::PathBuf,
    sender: Option<http1::SendRequest<ProxyBody>>,
    /// Turns `true` when the caller's container loses its allowance: tunnels end with it.
    revoked: Option<tokio::sync::watch::Receiver<bool>>,
}

impl EngineLink {
    pub fn new(engine: &Path) -> Self {
        Self {
            engine: engine.to_owned(),
            sender: None,
            revoked: None,
        }
    }

    /// Ends this connection's tunnels when `revoked` turns `true`.
    pub fn with_revocation(mut self, revoked: Option<tokio::sync::watch::Receiver<bool>>) -> Self {
        self.revoked = revoked;
        self
    }

    /// Forwards an ordinary (non-upgrade) request.
    pub async fn forward(
        &mut self,
        req: Request<ProxyBody>,
    ) -> Result<Response<ProxyBody>, ForwardError> {
        let req = upstream_request(req, false);
        let reusable = match self.sender.take() {
            Some(mut sender) => sender.ready().await.is_ok().then_some(sender),
            None => None,
        };
        let mut sender = match reusable {
            Some(sender) => sender,
            None => connect(&self.engine, false).await?,
        };
        let resp = match sender.try_send_request(req).await {
            Ok(resp) => resp,
            Err(mut err) => match err.take_message() {
                // The engine closed the kept-alive connection before taking the request: the
                // request was not sent, so sending it on a fresh connection is safe.
                Some(req) => {
                    sender = connect(&self.engine, false).await?;
                    sender
                        .send_request(req)
                        .await
                        .map_err(classify_send_error)?
                }
                None => return Err(classify_send_error(err.into_error())),
            },
        };
        self.sender = Some(sender);
        Ok(downstream_response(resp))
    }

    /// Forwards a hijack request (`attach`, `exec` start, BuildKit `/session`, `/grpc`) on an
    /// engine connection of its own. If the engine answers 101, both connections become one
    /// byte tunnel that honours half-close in each direction; any other answer is passed on.
    pub async fn forward_upgrade(
        &mut self,
        mut req: Request<ProxyBody>,
    ) -> Result<Response<ProxyBody>, ForwardError> {
        let client_upgrade = hyper::upgrade::on(&mut req);
        let (parts, body) = req.into_parts();
        // The whole (small) body goes to the engine before either side switches protocols.
        let body = Limited::new(body, MAX_UPGRADE_BODY)
            .collect()
            .await
            .map_err(|err| {
                if err.is::<http_body_util::LengthLimitError>() {
                    ForwardError::UpgradeBodyTooLarge
                } else {
                    ForwardError::ClientBody(err.to_string())
                }
            })?;
        let req =
            upstream_request(Request::from_parts(parts, ()), true).map(|()| full(body.to_bytes()));
        let mut sender = connect(&self.engine, true).await?;
        let mut resp = sender
            .send_request(req)
            .await
            .map_err(classify_send_error)?;
        if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
            return Ok(downstream_response(resp));
        }
        let engine_upgrade = hyper::upgrade::on(&mut resp);
        let revoked = self.revoked.clone();
        tokio::spawn(async move {
            let (client, engine) = match tokio::try_join!(client_upgrade, engine_upgrade) {
                Ok(pair) => pair,
                Err(err) => {
                    tracing::debug!(%err, "upgrade did not complete");
                    return;
                }
            };
            let mut client = TokioIo::new(client);
            let mut engine = TokioIo::new(engine);
            // copy_bidirectional shuts down each write side when the other side's read ends,
            // which is how `docker run -i` tells the container that stdin is over. Buffers of
            // TUNNEL_BUFFER rather than its 8 KiB: an attach or exec stream moves in 8× fewer
            // reads and writes.
            let tunnel = tokio::io::copy_bidirectional_with_sizes(
                &mut client,
                &mut engine,
                TUNNEL_BUFFER,
                TUNNEL_BUFFER,
            );
            tokio::select! {
                ended = tunnel => if let Err(err) = ended {
                    tracing::debug!(%err, "tunnel ended with an error");
                },
                () = super::revocation(revoked) => tracing::info!("tunnel closed: the container lost its allowance"),
            }
        });
        let (mut parts, _) = resp.into_parts();
        strip_hop_by_hop(&mut parts.headers, true);
        Ok(Response::from_parts(parts, full(Bytes::new())))
    }
}

/// The send buffer asked for engine connections (the kernel caps it at `net.core.wmem_max`).
/// The default (`wmem_default`, usually 208 KiB) splits a streamed request body — image load,
/// build context, `docker cp` — into writes of that size, each waking the engine; larger
/// writes cost the agent about a fifth less CPU per GiB uploaded (see the commit that set it).
const ENGINE_SEND_BUFFER: usize = 1 << 20;

/// Each direction's buffer in a tunnel (attach, exec, BuildKit sessions): 128 KiB per tunnel
/// in all, which a host with hundreds of attached clients still affords.
const TUNNEL_BUFFER: usize = 64 << 10;

/// A new connection to the engine, with the send buffer streamed bodies want.
pub async fn connect_engine(engine: &Path) -> Result<UnixStream, ForwardError> {
    let stream = UnixStream::connect(engine)
        .await
        .map_err(|source| ForwardError::Connect {
            path: engine.display().to_string(),
            source,
        })?;
    if let Err(err) = socket2::SockRef::from(&stream).set_send_buffer_size(ENGINE_SEND_BUFFER) {
        // Only slower: the connection works as well with the default buffer.
        tracing::debug!(%err, "engine connection: SO_SNDBUF");
    }
    Ok(stream)
}

async fn connect(
    engine: &Path,
    upgrades: bool,
) -> Result<http1::SendRequest<ProxyBody>, ForwardError> {
    let stream = connect_engine(engine).await?;
    let (sender, conn) = http1::Builder::new()
        .max_buf_size(super::MAX_HEAD_BYTES)
        .handshake(TokioIo::new(stream))
        .await
        .map_err(ForwardError::Upstream)?;
    if upgrades {
        tokio::spawn(async move {
            if let Err(err) = conn.with_upgrades().await {
                tracing::debug!(%err, "engine connection (upgrade) ended");
            }
        });
    } else {
        tokio::spawn(async move {
            if let Err(err) = conn.await {
                tracing::debug!(%err, "engine connection ended");
            }
        });
    }
    Ok(sender)
}

fn classify_send_error(err: hyper::Error) -> ForwardError {
    // hyper reports a failing request body as a user body error; that is the client's doing.
    if err.is_user() || err.is_body_write_aborted() {
        ForwardError::ClientBody(err.to_string())
    } else {
        ForwardError::Upstream(err)
    }
}

/// The request as the engine gets it: origin-form target, no hop-by-hop headers (hyper frames
/// the body itself); hijack requests keep `Connection: Upgrade` and their `Upgrade` protocol.
fn upstream_request<B>(req: Request<B>, upgrade: bool) -> Request<B> {
    let (mut parts, body) = req.into_parts();
    if let Some(path_and_query) = parts.uri.path_and_query().cloned() {
        parts.uri = http::Uri::from(path_and_query);
    }
    let protocol = parts.headers.get(header::UPGRADE).cloned();
    strip_hop_by_hop(&mut parts.headers, false);
    // hyper's server answers `Expect: 100-continue` itself once the body is read, which is
    // only after the request was admitted.
    parts.headers.remove(header::EXPECT);
    if upgrade {
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        parts.headers.insert(
            header::UPGRADE,
            protocol.unwrap_or(HeaderValue::from_static("tcp")),
        );
    }
    Request::from_parts(parts, body)
}

fn downstream_response(resp: Response<Incoming>) -> Response<ProxyBody> {
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers, false);
    Response::from_parts(parts, body.boxed())
}

/// Removes the headers that describe one hop's connection (RFC 9110 §7.6.1), keeping
/// `Connection: Upgrade`/`Upgrade` on a 101.
///
/// One pass over the names (a message has a handful) finds which are there, so only headers
/// actually present are removed: each removal hashes its name, and trying every hop-by-hop name
/// on every message cost about a tenth of the sidecar's instructions per request.
fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    let mut doomed: Vec<HeaderName> = Vec::new();
    let mut connection = false;
    for name in headers.keys() {
        if name == header::CONNECTION {
            connection = true;
        } else if is_hop_by_hop(name, keep_upgrade) {
            doomed.push(name.clone());
        }
    }
    if connection {
        // The headers `Connection` lists belong to this hop too (present ones, any case).
        for value in headers.get_all(header::CONNECTION) {
            let Ok(value) = value.to_str() else {
                continue;
            };
            for token in value.split(',').map(str::trim) {
                if keep_upgrade && token.eq_ignore_ascii_case("upgrade") {
                    continue;
                }
                if let Some(name) = headers
                    .keys()
                    .find(|name| name.as_str().eq_ignore_ascii_case(token))
                    && !doomed.contains(name)
                {
                    doomed.push(name.clone());
                }
            }
        }
        if !keep_upgrade && !doomed.contains(&header::CONNECTION) {
            doomed.push(header::CONNECTION);
        }
    }
    for name in doomed {
        headers.remove(name);
    }
}

/// The hop-by-hop headers every message loses (`Connection` aside, handled with its list).
fn is_hop_by_hop(name: &HeaderName, keep_upgrade: bool) -> bool {
    name == header::TE
        || name == header::TRAILER
        || name == header::TRANSFER_ENCODING
        || (name == header::UPGRADE && !keep_upgrade)
        || name.as_str() == "keep-alive"
        || name.as_str() == "proxy-connection"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(n, v)| {
                (
                    HeaderName::from_bytes(n.as_bytes()).unwrap(),
                    HeaderValue::from_str(v).unwrap(),
                )
            })
            .collect()
    }

    fn names(map: &HeaderMap) -> Vec<&str> {
        let mut names: Vec<&str> = map.keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        names
    }

    #[test]
    fn hop_by_hop_headers_and_those_connection_lists_go() {
        let mut map = headers(&[
            ("Connection", "keep-alive, X-Secret , close"),
            ("Keep-Alive", "timeout=5"),
            ("x-secret", "1"),
            ("TE", "trailers"),
            ("Trailer", "X-T"),
            ("Transfer-Encoding", "chunked"),
            ("Upgrade", "tcp"),
            ("Proxy-Connection", "keep-alive"),
            ("Content-Type", "text/plain"),
            ("Api-Version", "1.43"),
        ]);
        strip_hop_by_hop(&mut map, false);
        assert_eq!(names(&map), ["api-version", "content-type"]);
    }

    #[test]
    fn a_switch_of_protocols_keeps_connection_upgrade() {
        let mut map = headers(&[
            ("Connection", "Upgrade, x-hop"),
            ("Upgrade", "tcp"),
            ("X-Hop", "1"),
            ("Keep-Alive", "timeout=5"),
            ("Content-Type", "application/vnd.docker.raw-stream"),
        ]);
        strip_hop_by_hop(&mut map, true);
        assert_eq!(names(&map), ["connection", "content-type", "upgrade"]);
        // Several Connection lines, and a message with nothing to strip.
        let mut map = headers(&[("Content-Length", "2"), ("Api-Version", "1.43")]);
        strip_hop_by_hop(&mut map, false);
        assert_eq!(names(&map), ["api-version", "content-length"]);
        let mut map = HeaderMap::new();
        map.append(header::CONNECTION, HeaderValue::from_static("close"));
        map.append(header::CONNECTION, HeaderValue::from_static("x-a"));
        map.append("x-a", HeaderValue::from_static("1"));
        map.append(header::HOST, HeaderValue::from_static("docker"));
        strip_hop_by_hop(&mut map, false);
        assert_eq!(names(&map), ["host"]);
    }
}
