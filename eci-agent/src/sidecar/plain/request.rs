//! Which request heads the sidecar carries itself, byte for byte.
//!
//! A head is *plain* when every parser on the way reads it the same: hyper's, Go's (the engine)
//! and this one. Then forwarding its bytes unchanged sends the engine exactly what was
//! classified, as re-serialising hyper's parse did. Anything else (other line endings, bytes
//! outside printable ASCII, a framing other than one `Content-Length` or one
//! `Transfer-Encoding: chunked`, hop-by-hop or `Expect` headers, an unusual method or target
//! character) is not plain, and goes to hyper, which refuses or re-frames it as before.

use super::body_end::Framing;

/// Longer heads are left to hyper (which takes up to [`super::super::MAX_HEAD_BYTES`]): the
/// docker CLI's heads are a few hundred bytes.
pub const MAX_PLAIN_HEAD: usize = 16 << 10;
/// Heads with more headers are left to hyper (its own limit is 100).
const MAX_PLAIN_HEADERS: usize = 32;

/// A plain request head at the front of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub struct PlainHead<'a> {
    pub method: &'a str,
    /// The origin-form target, verbatim (no `#`: a plain target has none).
    pub target: &'a str,
    /// The head's length in the buffer, its final CRLF included.
    pub len: usize,
    /// The body's framing: its `Content-Length` (0 without one), or chunked (never until close).
    pub body: Framing,
}

/// What the front of a connection's buffer holds.
#[derive(Debug, PartialEq, Eq)]
pub enum Head<'a> {
    /// The start of a head that may still turn out plain: read more.
    Partial,
    Plain(PlainHead<'a>),
    /// Not plain (or not a head at all): hyper's to read.
    Other,
}

/// Reads the head at the front of `buf`.
pub fn read(buf: &[u8]) -> Head<'_> {
    // A head starts with its method; hyper skips empty lines before it, Go does not.
    if buf.first().is_some_and(|b| !b.is_ascii_uppercase()) {
        return Head::Other;
    }
    // Left uninitialised: zeroing the array for every request cost more than parsing.
    let mut headers =
        [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_PLAIN_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(buf, &mut headers) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() < MAX_PLAIN_HEAD => return Head::Partial,
        _ => return Head::Other,
    };
    let (Some(method), Some(target), Some(1)) = (req.method, req.path, req.version) else {
        return Head::Other;
    };
    if len > MAX_PLAIN_HEAD
        || !matches!(method, "GET" | "HEAD" | "POST" | "PUT" | "DELETE")
        || !plain_target(target)
        || !crlf_only(&buf[..len])
    {
        return Head::Other;
    }
    let (mut length, mut chunked) = (None, false);
    for header in req.headers.iter() {
        if !header
            .value
            .iter()
            .all(|&b| b == b'\t' || (b' '..=b'~').contains(&b))
        {
            return Head::Other;
        }
        let name = header.name;
        if name.eq_ignore_ascii_case("content-length") {
            match (length, content_length(header.value)) {
                (None, Some(n)) => length = Some(n),
                _ => return Head::Other,
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            // Go takes one coding, `chunked`, and only from HTTP/1.1 (it ignores the header in
            // an HTTP/1.0 request, which is not plain); anything else is hyper's to refuse.
            if chunked || header.value != b"chunked" {
                return Head::Other;
            }
            chunked = true;
        } else if HANDED_ON.iter().any(|h| name.eq_ignore_ascii_case(h)) {
            return Head::Other;
        }
    }
    let body = match (length, chunked) {
        (length, false) => Framing::Length(length.unwrap_or(0)),
        (None, true) => Framing::Chunked,
        // Go drops the length, hyper refuses the request: hyper's to answer.
        (Some(_), true) => return Head::Other,
    };
    Head::Plain(PlainHead {
        method,
        target,
        len,
        body,
    })
}

/// Headers that make a request hyper's: what one hop tells the next (which the sidecar strips
/// or answers itself on hyper's path).
const HANDED_ON: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "expect",
];

/// An origin-form target of the characters RFC 3986 gives a path and query (no `#`, no
/// characters hyper's URI parser and Go's could take differently).
fn plain_target(target: &str) -> bool {
    target.starts_with('/')
        && target.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'-' | b'.'
                        | b'_'
                        | b'~'
                        | b'!'
                        | b'$'
                        | b'&'
                        | b'\''
                        | b'('
                        | b')'
                        | b'*'
                        | b'+'
                        | b','
                        | b';'
                        | b'='
                        | b':'
                        | b'@'
                        | b'/'
                        | b'?'
                        | b'%'
                )
        })
}

/// Every line ends in CRLF: no bare LF (which hyper and Go accept, but an engine behind another
/// parser might not) and no CR but before a LF. That is, of any two neighbouring bytes, the
/// first is a CR exactly when the second is a LF; folded with no early exit, so that it runs
/// as vector code (a branch per byte was a tenth of the sidecar's own instructions per request).
fn crlf_only(head: &[u8]) -> bool {
    let paired = head
        .iter()
        .zip(head.get(1..).unwrap_or_default())
        .fold(true, |paired, (&a, &b)| {
            paired & ((a == b'\r') == (b == b'\n'))
        });
    paired && head.first() != Some(&b'\n') && head.last() != Some(&b'\r')
}

/// Go's reading of `Content-Length`: decimal digits only, no sign, no spaces (at most 18, so
/// it cannot overflow).
pub fn content_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > 18 {
        return None;
    }
    value.iter().try_fold(0u64, |n, &b| {
        b.is_ascii_digit().then(|| n * 10 + u64::from(b - b'0'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(head: &[u8]) -> PlainHead<'_> {
        match read(head) {
            Head::Plain(plain) => plain,
            other => panic!("{other:?} for {:?}", String::from_utf8_lossy(head)),
        }
    }

    #[test]
    fn the_clis_heads_are_plain() {
        let head = b"GET /v1.47/containers/json?all=1 HTTP/1.1\r\nHost: api.moby.localhost\r\nUser-Agent: Docker-Client/27.5.1 (linux)\r\n\r\nGET /_ping";
        assert_eq!(
            plain(head),
            PlainHead {
                method: "GET",
                target: "/v1.47/containers/json?all=1",
                len: head.len() - 10,
                body: Framing::Length(0)
            }
        );
        let post = b"POST /v1.47/images/load?quiet=1 HTTP/1.1\r\nHost: d\r\nContent-Type: application/x-tar\r\nContent-Length: 268435456\r\n\r\n";
        assert_eq!(plain(post).body, Framing::Length(268_435_456));
        // How the CLI sends `docker load` and `docker build` bodies (Go's client knows no length).
        let chunked = b"POST /v1.47/images/load?quiet=1 HTTP/1.1\r\nHost: d\r\nTransfer-Encoding: chunked\r\nContent-Type: application/x-tar\r\n\r\n";
        assert_eq!(plain(chunked).body, Framing::Chunked);
    }

    #[test]
    fn a_head_not_yet_whole_is_partial() {
        let head = b"GET /_ping HTTP/1.1\r\nHost: d\r\n\r\n";
        for cut in 1..head.len() {
            assert_eq!(read(&head[..cut]), Head::Partial, "cut at {cut}");
        }
        assert_eq!(read(b""), Head::Partial);
        let long = format!("GET /_ping HTTP/1.1\r\nX-A: {}", "a".repeat(MAX_PLAIN_HEAD));
        assert_eq!(read(long.as_bytes()), Head::Other);
    }

    #[test]
    fn anything_unusual_is_hypers() {
        for head in [
            // Framing: two lengths (even equal ones), signs, spaces; other codings, chunked
            // twice, chunked with a length, chunked in HTTP/1.0 (which Go ignores).
            &b"POST /x HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n"[..],
            b"POST /x HTTP/1.1\r\nContent-Length: +2\r\n\r\n",
            b"POST /x HTTP/1.1\r\nContent-Length: 2 2\r\n\r\n",
            b"POST /x HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
            b"POST /x HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            b"POST /x HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n",
            b"POST /x HTTP/1.1\r\nTransfer-Encoding: identity\r\n\r\n",
            b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST /x HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
            b"POST /x HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            // What a hop says to the next, and what hyper answers itself.
            b"GET /x HTTP/1.1\r\nConnection: close\r\n\r\n",
            b"GET /x HTTP/1.1\r\nconnection: keep-alive, x-a\r\n\r\n",
            b"POST /x HTTP/1.1\r\nUpgrade: tcp\r\n\r\n",
            b"POST /x HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n",
            b"GET /x HTTP/1.1\r\nTE: trailers\r\n\r\n",
            // Line endings and bytes two parsers could read differently.
            b"GET /x HTTP/1.1\nHost: d\n\n",
            b"GET /x HTTP/1.1\r\nHost: d\n\r\n",
            b"\r\nGET /x HTTP/1.1\r\n\r\n",
            b"GET /x HTTP/1.1\r\nX-A: caf\xc3\xa9\r\n\r\n",
            b"GET /x HTTP/1.1\r\nX-A: a\x01b\r\n\r\n",
            b"GET /x HTTP/1.1\r\nX-A: a\rb\r\n\r\n",
            // Versions, methods and targets off the common path.
            b"GET /x HTTP/1.0\r\n\r\n",
            b"PATCH /x HTTP/1.1\r\n\r\n",
            b"get /x HTTP/1.1\r\n\r\n",
            b"GET http://d/x HTTP/1.1\r\n\r\n",
            b"GET * HTTP/1.1\r\n\r\n",
            b"GET /x#y HTTP/1.1\r\n\r\n",
            b"GET /x{y} HTTP/1.1\r\n\r\n",
            b"GET /x\"y HTTP/1.1\r\n\r\n",
            b"GET /x\\y HTTP/1.1\r\n\r\n",
            b"GET /\xc3\xa9 HTTP/1.1\r\n\r\n",
            b"GET /a b HTTP/1.1\r\n\r\n",
            b"GARBAGE\r\n\r\n",
        ] {
            assert_eq!(
                read(head),
                Head::Other,
                "{:?}",
                String::from_utf8_lossy(head)
            );
        }
    }

    /// Every string of up to seven bytes of `a`, CR and LF, against the rule read one byte at
    /// a time.
    #[test]
    fn crlf_only_takes_exactly_the_heads_whose_every_line_ends_in_crlf() {
        fn by_bytes(head: &[u8]) -> bool {
            head.iter().enumerate().all(|(i, &b)| match b {
                b'\r' => head.get(i + 1) == Some(&b'\n'),
                b'\n' => i > 0 && head[i - 1] == b'\r',
                _ => true,
            })
        }
        let mut checked = 0;
        for len in 0..=7u32 {
            for n in 0..3usize.pow(len) {
                let head: Vec<u8> = (0..len).map(|k| b"a\r\n"[n / 3usize.pow(k) % 3]).collect();
                assert_eq!(crlf_only(&head), by_bytes(&head), "{head:?}");
                checked += 1;
            }
        }
        assert_eq!(checked, 3280);
    }

    #[test]
    fn many_headers_are_hypers() {
        let mut head = String::from("GET /x HTTP/1.1\r\n");
        for i in 0..=MAX_PLAIN_HEADERS {
            head.push_str(&format!("X-{i}: {i}\r\n"));
        }
        head.push_str("\r\n");
        assert_eq!(read(head.as_bytes()), Head::Other);
    }

    #[test]
    fn escapes_and_queries_stay_verbatim() {
        let head = b"DELETE /v1.47/containers/a%2Fb?force=1&v=1 HTTP/1.1\r\nHost: d\r\n\r\n";
        assert_eq!(plain(head).target, "/v1.47/containers/a%2Fb?force=1&v=1");
        assert_eq!(plain(b"HEAD /_ping HTTP/1.1\r\n\r\n").method, "HEAD");
        assert_eq!(
            plain(b"PUT /x HTTP/1.1\r\nContent-Length: 0\r\n\r\n").body,
            Framing::Length(0)
        );
    }
}
