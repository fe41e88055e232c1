//! The engine's answer to a plain request: where its head ends, what it says about the
//! connection, and how its body is framed (so the engine connection can carry the next
//! request once [`super::body_end`] found the body's end).
//!
//! The engine is Go's net/http: it frames every answer to an HTTP/1.1 request by
//! `Content-Length` or chunked. Its bytes are passed on unchanged, chunk framing included,
//! unless the head carries hop-by-hop headers (`Connection: close` when the engine ends the
//! connection), which are dropped as hyper's path drops them.

use super::body_end::Framing;

/// Longer answer heads are an engine fault (Go writes a few hundred bytes).
pub const MAX_ANSWER_HEAD: usize = 64 << 10;
const MAX_ANSWER_HEADERS: usize = 64;

#[derive(Debug, PartialEq, Eq)]
pub struct AnswerHead {
    /// The head's length in the buffer.
    pub len: usize,
    /// A 1xx answer: another head follows.
    pub interim: bool,
    pub framing: Framing,
    /// The engine ends the connection after this answer (`Connection: close`, HTTP/1.0).
    pub engine_closes: bool,
    /// The head to send instead of the engine's, when hop-by-hop headers had to go.
    pub rewritten: Option<Vec<u8>>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    Partial,
    Head(AnswerHead),
    /// Not an HTTP/1 answer this sidecar passes on (a malformed head, a switch of protocols
    /// nobody asked for, conflicting framing).
    Invalid(&'static str),
}

/// Reads the answer head at the front of `buf`; `to_head` says the request was a `HEAD`.
pub fn read(buf: &[u8], to_head: bool) -> Answer {
    // Left uninitialised, as for requests: zeroing the array cost more than parsing.
    let mut headers =
        [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_ANSWER_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut resp,
        buf,
        &mut headers,
    ) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() < MAX_ANSWER_HEAD => return Answer::Partial,
        Ok(httparse::Status::Partial) => return Answer::Invalid("answer head too long"),
        Err(_) => return Answer::Invalid("malformed answer head"),
    };
    let (Some(version), Some(status)) = (resp.version, resp.code) else {
        return Answer::Invalid("malformed answer head");
    };
    if status == 101 {
        return Answer::Invalid("switch of protocols that was not asked for");
    }
    let (mut length, mut chunked, mut hop) = (None, false, false);
    let mut engine_closes = version == 0;
    for h in resp.headers.iter() {
        if !may_matter(h.name) {
            continue;
        }
        if h.name.eq_ignore_ascii_case("content-length") {
            let parsed = super::request::content_length(h.value.trim_ascii());
            match (length, parsed) {
                (None, Some(n)) => length = Some(n),
                (Some(seen), Some(n)) if seen == n => {}
                _ => return Answer::Invalid("bad Content-Length in answer"),
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            let last = h.value.rsplit(|&b| b == b',').next().unwrap_or_default();
            if chunked || !last.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                return Answer::Invalid("answer framing other than chunked");
            }
            chunked = true;
        } else if h.name.eq_ignore_ascii_case("connection") {
            hop = true;
            engine_closes |= h
                .value
                .split(|&b| b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"));
        } else if is_hop_by_hop(h.name) {
            hop = true;
        }
    }
    let interim = (100..200).contains(&status);
    let framing = match (length, chunked) {
        _ if interim || to_head || status == 204 || status == 304 => Framing::Length(0),
        (Some(_), true) => return Answer::Invalid("answer with both Content-Length and chunked"),
        (Some(n), false) => Framing::Length(n),
        (None, true) => Framing::Chunked,
        (None, false) => Framing::UntilClose,
    };
    let rewritten = hop.then(|| without_hop_by_hop(&buf[..len], resp.headers));
    Answer::Head(AnswerHead {
        len,
        interim,
        framing,
        engine_closes,
        rewritten,
    })
}

/// Hop-by-hop headers besides `Connection` (RFC 9110 §7.6.1). `Transfer-Encoding` stays: the
/// chunks pass unchanged.
const HOP_BY_HOP: [&str; 5] = ["keep-alive", "proxy-connection", "te", "trailer", "upgrade"];

fn is_hop_by_hop(name: &str) -> bool {
    HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h))
}

/// False for a header that is none of those [`read`] acts on, by its name's length alone:
/// most of an answer's headers (`Date`, `Content-Type`, `Api-Version`, …) cost one look.
fn may_matter(name: &str) -> bool {
    let len = name.len();
    len == "content-length".len()
        || len == "transfer-encoding".len()
        || len == "connection".len()
        || HOP_BY_HOP.iter().any(|h| h.len() == len)
}

/// The head again, its status line as the engine wrote it, without `Connection`, the headers
/// it names, and the other hop-by-hop headers.
fn without_hop_by_hop(head: &[u8], headers: &[httparse::Header<'_>]) -> Vec<u8> {
    let named = |name: &[u8]| {
        headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("connection"))
            .flat_map(|h| h.value.split(|&b| b == b','))
            .any(|n| n.trim_ascii().eq_ignore_ascii_case(name))
    };
    let status_line = head
        .iter()
        .position(|&b| b == b'\n')
        .map_or(head, |lf| &head[..=lf]);
    let mut out = Vec::with_capacity(head.len());
    out.extend_from_slice(status_line);
    for h in headers {
        let name = h.name.as_bytes();
        if h.name.eq_ignore_ascii_case("connection") || is_hop_by_hop(h.name) || named(name) {
            continue;
        }
        out.extend_from_slice(name);
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(buf: &[u8], to_head: bool) -> AnswerHead {
        match read(buf, to_head) {
            Answer::Head(head) => head,
            other => panic!("{other:?}"),
        }
    }

    const PING: &[u8] = b"HTTP/1.1 200 OK\r\nApi-Version: 1.47\r\nContent-Length: 2\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nOK";

    #[test]
    fn the_engines_answers_are_passed_on_unchanged() {
        let ping = head(PING, false);
        assert_eq!(
            (ping.len, ping.framing, ping.engine_closes, ping.rewritten),
            (PING.len() - 2, Framing::Length(2), false, None)
        );
        assert_eq!(head(PING, true).framing, Framing::Length(0));
        let list = head(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
            false,
        );
        assert_eq!((list.framing, list.rewritten), (Framing::Chunked, None));
        assert_eq!(
            head(b"HTTP/1.1 204 No Content\r\n\r\n", false).framing,
            Framing::Length(0)
        );
        assert!(head(b"HTTP/1.1 100 Continue\r\n\r\n", false).interim);
        assert_eq!(
            head(b"HTTP/1.1 200 OK\r\n\r\n", false).framing,
            Framing::UntilClose
        );
        for cut in 0..PING.len() - 2 {
            assert_eq!(read(&PING[..cut], false), Answer::Partial, "cut at {cut}");
        }
    }

    #[test]
    fn hop_by_hop_headers_go_and_close_is_noted() {
        let answer = head(
            b"HTTP/1.1 400 Bad Request\r\nConnection: close, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\nContent-Length: 0\r\n\r\n",
            false,
        );
        assert!(answer.engine_closes);
        assert_eq!(
            answer.rewritten.as_deref(),
            Some(&b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"[..])
        );
        assert!(head(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", false).engine_closes);
    }

    #[test]
    fn answers_not_passed_on() {
        for buf in [
            &b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: tcp\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"NOT HTTP\r\n\r\n",
        ] {
            assert!(
                matches!(read(buf, false), Answer::Invalid(_)),
                "{:?}",
                String::from_utf8_lossy(buf)
            );
        }
    }
}
