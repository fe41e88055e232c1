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
    /// Where the head to pass on begins in the buffer: 0, unless hop-by-hop lines were cut
    /// out, and what was before them moved up against the rest ([`read`]).
    pub start: usize,
    /// Where the head ends in the buffer (its body, if any was read, follows).
    pub len: usize,
    /// A 1xx answer: another head follows.
    pub interim: bool,
    pub framing: Framing,
    /// The engine ends the connection after this answer (`Connection: close`, HTTP/1.0).
    pub engine_closes: bool,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    Partial,
    Head(AnswerHead),
    /// Not an HTTP/1 answer this sidecar passes on (a malformed head, a switch of protocols
    /// nobody asked for, conflicting framing).
    Invalid(&'static str),
}

/// Reads the answer head at the front of `buf`; `to_head` says the request was a `HEAD`. A
/// head with hop-by-hop headers (`Connection`, the headers it names, and the others of RFC 9110
/// §7.6.1) is edited in place: their lines go, and the lines before them move up against the
/// lines after, so the head ends where it did and the body read with it follows it still (one
/// write, no copy of the body). `buf` changes only when a head is returned.
pub fn read(buf: &mut [u8], to_head: bool) -> Answer {
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
    let (mut length, mut chunked) = (None, false);
    let mut engine_closes = version == 0;
    // Bit i: the i-th header's line goes; the i-th header is a `Connection`; the i-th header
    // frames the body (at most MAX_ANSWER_HEADERS, 64, headers).
    let (mut cut, mut connection, mut frames) = (0u64, 0u64, 0u64);
    for (i, h) in resp.headers.iter().enumerate() {
        if !may_matter(h.name) {
            continue;
        }
        if h.name.eq_ignore_ascii_case("content-length") {
            frames |= 1 << i;
            let parsed = super::request::content_length(h.value.trim_ascii());
            match (length, parsed) {
                (None, Some(n)) => length = Some(n),
                (Some(seen), Some(n)) if seen == n => {}
                _ => return Answer::Invalid("bad Content-Length in answer"),
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            frames |= 1 << i;
            let last = h.value.rsplit(|&b| b == b',').next().unwrap_or_default();
            if chunked || !last.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                return Answer::Invalid("answer framing other than chunked");
            }
            chunked = true;
        } else if h.name.eq_ignore_ascii_case("connection") {
            cut |= 1 << i;
            connection |= 1 << i;
            engine_closes |= tokens(h.value).any(|t| t.eq_ignore_ascii_case(b"close"));
        } else if is_hop_by_hop(h.name) {
            cut |= 1 << i;
        }
    }
    // The headers a `Connection` names go too, but never the body's framing: the sidecar finds
    // where the body ends by it, and the client must find the same end.
    for i in bits(connection) {
        for token in tokens(resp.headers[i].value) {
            for (j, h) in resp.headers.iter().enumerate() {
                if h.name.as_bytes().eq_ignore_ascii_case(token) {
                    cut |= 1 << j;
                }
            }
        }
    }
    cut &= !frames;
    let interim = (100..200).contains(&status);
    let framing = match (length, chunked) {
        _ if interim || to_head || status == 204 || status == 304 => Framing::Length(0),
        (Some(_), true) => return Answer::Invalid("answer with both Content-Length and chunked"),
        (Some(n), false) => Framing::Length(n),
        (None, true) => Framing::Chunked,
        (None, false) => Framing::UntilClose,
    };
    // Nothing to cut (the engine's usual answer): no table of lines to fill.
    let start = if cut == 0 {
        0
    } else {
        // Each cut header's line, from its name to the next header's name (or, for the last, to
        // the empty line that ends the head), in the order they came.
        let base = buf.as_ptr() as usize;
        let start_of = |i: usize| resp.headers[i].name.as_ptr() as usize - base;
        // The empty line is CRLF or a bare LF (which httparse takes, as Go does).
        let last_line_end = len - if buf[..len].ends_with(b"\r\n") { 2 } else { 1 };
        let mut lines = [(0, 0); MAX_ANSWER_HEADERS];
        let mut count = 0;
        for i in bits(cut) {
            let end = if i + 1 < resp.headers.len() {
                start_of(i + 1)
            } else {
                last_line_end
            };
            lines[count] = (start_of(i), end);
            count += 1;
        }
        close_up(buf, &lines[..count])
    };
    Answer::Head(AnswerHead {
        start,
        len,
        interim,
        framing,
        engine_closes,
    })
}

/// The comma-separated tokens of a header value, trimmed, empty ones skipped.
fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

/// The indices of the bits set in `set`, lowest first.
fn bits(mut set: u64) -> impl Iterator<Item = usize> {
    std::iter::from_fn(move || {
        let i = set.trailing_zeros();
        (set != 0).then(|| {
            set &= set - 1;
            i as usize
        })
    })
}

/// Removes `lines` (byte ranges, in order, not overlapping) from the front part of `buf` by
/// moving what is before each one up against what is after it, last first; returns where the
/// bytes kept now begin. Only the head's bytes before a cut line move, never the body's.
fn close_up(buf: &mut [u8], lines: &[(usize, usize)]) -> usize {
    let mut kept_from = lines.last().map_or(0, |&(_, end)| end);
    for (k, &(line_start, _)) in lines.iter().enumerate().rev() {
        let before = if k == 0 { 0 } else { lines[k - 1].1 };
        let moved = line_start - before;
        buf.copy_within(before..line_start, kept_from - moved);
        kept_from -= moved;
    }
    kept_from
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The head read from `buf`, and the bytes it leaves to pass on: the head as edited, and
    /// what followed it.
    fn head(buf: &[u8], to_head: bool) -> (AnswerHead, Vec<u8>) {
        let mut buf = buf.to_vec();
        match read(&mut buf, to_head) {
            Answer::Head(head) => {
                let sent = buf[head.start..].to_vec();
                (head, sent)
            }
            other => panic!("{other:?}"),
        }
    }

    fn read_of(buf: &[u8]) -> Answer {
        read(&mut buf.to_vec(), false)
    }

    const PING: &[u8] = b"HTTP/1.1 200 OK\r\nApi-Version: 1.47\r\nContent-Length: 2\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nOK";

    #[test]
    fn the_engines_answers_are_passed_on_unchanged() {
        let (ping, sent) = head(PING, false);
        assert_eq!(
            (ping.start, ping.len, ping.framing, ping.engine_closes),
            (0, PING.len() - 2, Framing::Length(2), false)
        );
        assert_eq!(sent, PING);
        assert_eq!(head(PING, true).0.framing, Framing::Length(0));
        let list = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
        let (answer, sent) = head(list, false);
        assert_eq!(
            (answer.framing, sent.as_slice()),
            (Framing::Chunked, &list[..])
        );
        assert_eq!(
            head(b"HTTP/1.1 204 No Content\r\n\r\n", false).0.framing,
            Framing::Length(0)
        );
        assert!(head(b"HTTP/1.1 100 Continue\r\n\r\n", false).0.interim);
        assert_eq!(
            head(b"HTTP/1.1 200 OK\r\n\r\n", false).0.framing,
            Framing::UntilClose
        );
        for cut in 0..PING.len() - 2 {
            assert_eq!(read_of(&PING[..cut]), Answer::Partial, "cut at {cut}");
        }
    }

    #[test]
    fn hop_by_hop_headers_go_and_close_is_noted() {
        let (answer, sent) = head(
            b"HTTP/1.1 400 Bad Request\r\nConnection: close, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\nContent-Length: 2\r\n\r\nno",
            false,
        );
        assert!(answer.engine_closes);
        assert_eq!(
            String::from_utf8_lossy(&sent),
            "HTTP/1.1 400 Bad Request\r\nContent-Length: 2\r\n\r\nno"
        );
        assert!(
            head(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", false)
                .0
                .engine_closes
        );
    }

    #[test]
    fn lines_are_cut_wherever_they_are_and_the_rest_kept_as_it_came() {
        for (engine, passed) in [
            // nginx's keep-alive answers, the bench's engine.
            (
                &b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Length: 2\r\nConnection: keep-alive\r\nApi-Version: 1.43\r\n\r\nOK"[..],
                &b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Length: 2\r\nApi-Version: 1.43\r\n\r\nOK"[..],
            ),
            // First and last, apart, with odd spacing kept and a named header after.
            (
                b"HTTP/1.1 200 OK\r\nUpgrade: x\r\nA:  1 \r\nConnection:x-b\r\nX-B: 2\r\nContent-Length: 0\r\nTE: y\r\n\r\n",
                b"HTTP/1.1 200 OK\r\nA:  1 \r\nContent-Length: 0\r\n\r\n",
            ),
            // Bare LFs, which httparse takes.
            (
                b"HTTP/1.1 200 OK\nTrailer: x\nContent-Length: 1\nKeep-Alive: 1\n\nZ",
                b"HTTP/1.1 200 OK\nContent-Length: 1\n\nZ",
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nKeep-Alive: 1\n\r\nZ",
                b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nZ",
            ),
            // A `Connection` naming the framing does not take it away.
            (
                b"HTTP/1.1 200 OK\r\nConnection: Content-Length, transfer-encoding\r\nContent-Length: 2\r\n\r\nOK",
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOK",
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: Transfer-Encoding\r\n\r\n0\r\n\r\n",
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            ),
            // Every header goes.
            (
                b"HTTP/1.1 204 No Content\r\nConnection: keep-alive\r\nKeep-Alive: 5\r\n\r\n",
                b"HTTP/1.1 204 No Content\r\n\r\n",
            ),
        ] {
            let (answer, sent) = head(engine, false);
            assert_eq!(
                String::from_utf8_lossy(&sent),
                String::from_utf8_lossy(passed),
                "from {:?}",
                String::from_utf8_lossy(engine)
            );
            // The head still ends where it did, and the body follows it unmoved.
            assert_eq!(&engine[answer.len..], &sent[answer.len - answer.start..]);
        }
    }

    #[test]
    fn answers_not_passed_on_are_left_as_they_came() {
        for buf in [
            &b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: tcp\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nKeep-Alive: 1\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"NOT HTTP\r\n\r\n",
        ] {
            let mut copy = buf.to_vec();
            assert!(
                matches!(read(&mut copy, false), Answer::Invalid(_)),
                "{:?}",
                String::from_utf8_lossy(buf)
            );
            assert_eq!(copy, buf);
        }
    }
}
