//! The sidecar's HTTP/1.1 handling on a raw socket: keep-alive, pipelining (each request judged
//! on its own), bodies, HEAD, `Expect: 100-continue`, malformed input, slow heads, HTTP/2
//! prior knowledge; the sidecar's own HTTP/1 path and its hand-off to hyper; and a differential
//! test of odd paths against the engine itself, through both.

use std::{
    io::{Read as _, Write as _},
    os::unix::net::UnixStream,
    path::Path,
    time::Duration,
};

use eci_tests::{
    dockerd::{self, Dockerd},
    sidecar::{self, Sidecar},
};

fn engine() -> &'static Dockerd {
    dockerd::shared()
}

fn container_sidecar(kind: &str, commands: &[&str]) -> Sidecar {
    Sidecar::start_with(engine(), sidecar::command_list(kind, commands), |config| {
        sidecar::as_container(config);
        config.head_timeout = Duration::from_secs(2);
    })
}

/// Writes `request` and reads until the peer closes (or 5 s pass).
fn exchange(socket: &Path, request: &[u8]) -> String {
    let mut stream = UnixStream::connect(socket).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    // The sidecar may answer and close before taking all of an oversized request.
    let _ = stream.write_all(request);
    read_all(&mut stream)
}

fn read_all(stream: &mut UnixStream) -> String {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 65536];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn statuses(answer: &str) -> Vec<u16> {
    answer
        .split("HTTP/1.1 ")
        .skip(1)
        .filter_map(|part| part.get(..3)?.parse().ok())
        .collect()
}

#[test]
fn keep_alive_and_pipelining_judge_each_request() {
    let sc = container_sidecar("deny", &["volume*"]);
    let pipelined = b"GET /_ping HTTP/1.1\r\nHost: docker\r\n\r\n\
        GET /v1.41/volumes HTTP/1.1\r\nHost: docker\r\n\r\n\
        GET /v1.41/containers/json HTTP/1.1\r\nHost: docker\r\n\r\n\
        HEAD /_ping HTTP/1.1\r\nHost: docker\r\n\r\n\
        GET /v1.41/volumes/x HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n";
    let answer = exchange(sc.socket(), pipelined);
    assert_eq!(statuses(&answer), [200, 403, 200, 200, 403], "{answer}");
    assert!(
        answer.contains("docker command \\\"/v1.41/volumes\\\" is blocked"),
        "{answer}"
    );
    assert!(
        answer.contains("docker command \\\"/v1.41/volumes/x\\\" is blocked"),
        "{answer}"
    );
    assert!(
        answer.contains("Content-Type: application/json\r\n")
            || answer.contains("content-type: application/json\r\n")
    );
}

#[test]
fn sized_and_chunked_bodies_reach_the_engine() {
    let sc = container_sidecar("deny", &["push"]);
    let body = format!(
        r#"{{"Image":"{}","Cmd":["true"],"HostConfig":{{"NetworkMode":"none"}}}}"#,
        engine().cli_image()
    );
    let sized = format!(
        "POST /v1.41/containers/create HTTP/1.1\r\nHost: d\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let (a, b) = body.split_at(10);
    let chunked = format!(
        "POST /v1.41/containers/create HTTP/1.1\r\nHost: d\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\n\r\n",
        a.len(),
        b.len()
    );
    let answer = exchange(sc.socket(), format!("{sized}{chunked}").as_bytes());
    assert_eq!(statuses(&answer), [201, 201], "{answer}");
    for id in answer
        .split("\"Id\":\"")
        .skip(1)
        .filter_map(|s| s.get(..64))
    {
        let _ = engine().docker().args(["rm", "-f", id]).output();
    }
}

/// A chunked body on the sidecar's own path (as the CLI sends `load` and `build`) ends where the
/// engine's reader ends it, whether it came with its head or after it: a request written right
/// after it is judged on its own (403 here), never run by the engine as the rest of the body,
/// and a request framed as chunk data stays data.
#[test]
fn a_chunked_body_ends_where_the_engine_ends_it_and_what_follows_is_judged() {
    let sc = container_sidecar("deny", &["volume*"]);
    let data = "GET /v1.41/volumes HTTP/1.1\r\nHost: d\r\n\r\n";
    let head = "POST /v1.41/containers/eci-no-such-container/stop HTTP/1.1\r\nHost: d\r\nTransfer-Encoding: chunked\r\n\r\n";
    let first = format!("{:x}\r\n{data}\r\n", data.len());
    let volume = r#"{"Name":"eci-chunked-smuggled"}"#;
    let rest = format!(
        "{:x}\r\n{data}\r\n0\r\n\r\nPOST /v1.41/volumes/create HTTP/1.1\r\nHost: d\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{volume}GET /_ping HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n",
        data.len(),
        volume.len()
    );
    for in_one_write in [true, false] {
        let mut stream = UnixStream::connect(sc.socket()).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        if in_one_write {
            stream
                .write_all(format!("{head}{first}{rest}").as_bytes())
                .unwrap();
        } else {
            stream
                .write_all(format!("{head}{first}").as_bytes())
                .unwrap();
            std::thread::sleep(Duration::from_millis(200));
            stream.write_all(rest.as_bytes()).unwrap();
        }
        let answer = read_all(&mut stream);
        // The engine's own word: a request it read as the body's sequel would run unseen by
        // the client, whose answers come from the sidecar.
        let smuggled = engine()
            .docker()
            .args(["volume", "inspect", "eci-chunked-smuggled"])
            .output()
            .unwrap()
            .status
            .success();
        let _ = engine()
            .docker()
            .args(["volume", "rm", "-f", "eci-chunked-smuggled"])
            .output();
        assert!(
            !smuggled,
            "the engine ran the request after the body (in one write: {in_one_write})"
        );
        assert_eq!(
            statuses(&answer),
            [404, 403, 200],
            "in one write: {in_one_write}\n{answer}"
        );
        assert!(
            answer.contains("docker command \\\"/v1.41/volumes/create\\\" is blocked"),
            "{answer}"
        );
    }
}

/// Chunked bodies written oddly, each followed by a request the policy refuses (a tag) inside
/// what a parser reading the chunks differently from the engine would take for body: whatever
/// the sidecar makes of each (400, or a body that ends where Go's reader ends it), the engine
/// never runs the hidden request. The last body is plain, so its hidden request is judged: 403.
#[test]
fn odd_chunked_bodies_never_carry_a_request_past_the_policy() {
    let sc = container_sidecar("deny", &["tag", "image tag"]);
    let image = engine().cli_image();
    let bodies: [&[u8]; 15] = [
        b"5;\nabcde\r\n0\r\n\r\n",
        b"5\nabcde\r\n0\r\n\r\n",
        b"5\r\nabcde\n0\r\n\r\n",
        b"5\r\nabcde\r\n0\n\n",
        b"0\r\nX-T: a\n\n",
        b"0\r\nX-T: a\r\n\n",
        b"0\n\r\n",
        b"5;a\rb\r\nabcde\r\n0\r\n\r\n",
        b"5 \r\nabcde\r\n0\r\n\r\n",
        b"0005\r\nabcde\r\n0\r\n\r\n",
        b"5;x=\"y\"\r\nabcde\r\n0\r\n\r\n",
        b"0\r\n \r\n\r\n",
        b"0\r\nX-T: a\r\n b\r\n\r\n",
        b"+5\r\nabcde\r\n0\r\n\r\n",
        b"5\r\nabcde\r\n0\r\n\r\n",
    ];
    let mut answers = Vec::new();
    for (i, body) in bodies.iter().enumerate() {
        let mut request = b"POST /v1.41/containers/eci-no-such-container/stop HTTP/1.1\r\nHost: d\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        request.extend_from_slice(body);
        request.extend_from_slice(
            format!("POST /v1.41/images/{image}/tag?repo=eci-smuggled&tag={i} HTTP/1.1\r\nHost: d\r\n\r\n")
                .as_bytes(),
        );
        let mut stream = UnixStream::connect(sc.socket()).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        stream.write_all(&request).unwrap();
        // Whatever the sidecar still waits for never comes.
        stream.shutdown(std::net::Shutdown::Write).unwrap();
        answers.push(read_all(&mut stream));
    }
    let tagged = engine()
        .docker()
        .args(["images", "--format", "{{.Tag}}", "eci-smuggled"])
        .output()
        .unwrap();
    let tagged = String::from_utf8_lossy(&tagged.stdout).into_owned();
    for tag in tagged.lines() {
        let _ = engine()
            .docker()
            .args(["image", "rm", &format!("eci-smuggled:{tag}")])
            .output();
    }
    assert_eq!(
        tagged, "",
        "the engine ran hidden requests (tags = body numbers)"
    );
    for (i, answer) in answers.iter().enumerate() {
        assert!(!statuses(answer).contains(&201), "body {i}: {answer}");
    }
    assert_eq!(statuses(&answers[14]), [404, 403], "{}", answers[14]);
}

#[test]
fn expect_continue_only_after_admission() {
    let sc = container_sidecar("deny", &["volume*"]);
    // Refused: the 403 comes at once, without a 100 that would invite the body.
    let answer = exchange(
        sc.socket(),
        b"POST /v1.41/volumes/create HTTP/1.1\r\nHost: d\r\nContent-Type: application/json\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n",
    );
    assert_eq!(statuses(&answer), [403], "{answer}");
    // Admitted: 100 Continue, then the engine's answer once the body is sent.
    let mut stream = UnixStream::connect(sc.socket()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
        .write_all(b"POST /v1.41/networks/prune HTTP/1.1\r\nHost: d\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        .unwrap();
    assert_eq!(statuses(&read_all(&mut stream)), [200]);
    let mut stream = UnixStream::connect(sc.socket()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
        .write_all(b"POST /v1.41/containers/prune HTTP/1.1\r\nHost: d\r\nContent-Type: application/json\r\nContent-Length: 2\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut first = [0u8; 25];
    stream.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"HTTP/1.1 100 Continue\r\n\r\n");
    stream.write_all(b"{}").unwrap();
    assert_eq!(statuses(&read_all(&mut stream)), [200]);
}

/// Plain requests reach the engine as their bytes came and its answers come back as theirs
/// came (header case included: hyper writes names in lower case), a body arriving in pieces
/// and a chunked one included; the first request the plain path does not carry hands the
/// connection to hyper for good.
#[test]
fn plain_requests_pass_byte_for_byte_until_one_is_not() {
    let sc = container_sidecar("deny", &["push"]);
    let without_date = |answer: &str| {
        answer
            .lines()
            .filter(|l| !l.to_lowercase().starts_with("date: "))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let version = b"GET /v1.41/version HTTP/1.1\r\nHost: d\r\n\r\n";
    let mut direct = UnixStream::connect(engine().socket()).unwrap();
    direct.write_all(version).unwrap();
    let expected = one_answer(&mut direct, false);
    let mut stream = UnixStream::connect(sc.socket()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream.write_all(version).unwrap();
    let answer = one_answer(&mut stream, false);
    assert_eq!(without_date(&answer), without_date(&expected));
    assert!(answer.contains("\r\nApi-Version: "), "{answer}");

    let body = br#"{"Name":"eci-http-plain"}"#;
    stream
        .write_all(
            format!(
                "POST /v1.41/volumes/create HTTP/1.1\r\nHost: d\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        )
        .unwrap();
    for piece in body.chunks(10) {
        std::thread::sleep(Duration::from_millis(100));
        stream.write_all(piece).unwrap();
    }
    let created = one_answer(&mut stream, false);
    assert_eq!(statuses(&created), [201], "{created}");
    assert!(created.contains("eci-http-plain"), "{created}");
    stream
        .write_all(b"HEAD /_ping HTTP/1.1\r\nHost: d\r\n\r\n")
        .unwrap();
    let ping = one_answer(&mut stream, true);
    assert_eq!(statuses(&ping), [200], "{ping}");
    assert!(ping.contains("\r\nApi-Version: "), "{ping}");

    // A chunked body is plain too (the CLI's `load` and `build`).
    stream
        .write_all(b"GET /_ping HTTP/1.1\r\nHost: d\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n")
        .unwrap();
    let ping = one_answer(&mut stream, false);
    assert_eq!(statuses(&ping), [200], "{ping}");
    assert!(ping.contains("\r\nApi-Version: "), "{ping}");

    // A hop-by-hop header is not plain: hyper reads the request, and every request after it.
    stream
        .write_all(b"GET /_ping HTTP/1.1\r\nHost: d\r\nConnection: keep-alive\r\n\r\n")
        .unwrap();
    for _ in 0..2 {
        let ping = one_answer(&mut stream, false);
        assert_eq!(statuses(&ping), [200], "{ping}");
        assert!(ping.contains("\r\napi-version: "), "{ping}");
        stream
            .write_all(b"GET /_ping HTTP/1.1\r\nHost: d\r\n\r\n")
            .unwrap();
    }
    let _ = engine()
        .docker()
        .args(["volume", "rm", "eci-http-plain"])
        .output();
}

#[test]
fn malformed_input_gets_a_clean_error_and_the_connection_closes() {
    let sc = container_sidecar("deny", &[]);
    let big = format!(
        "GET /_ping HTTP/1.1\r\nHost: d\r\nX-Big: {}\r\n\r\n",
        "a".repeat(2 << 20)
    );
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("two different Content-Lengths", b"POST /v1.41/containers/prune HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}".to_vec(), 400),
        ("invalid Content-Length", b"POST /v1.41/containers/prune HTTP/1.1\r\nContent-Length: -1\r\n\r\n".to_vec(), 400),
        ("non-chunked Transfer-Encoding", b"POST /v1.41/containers/prune HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n".to_vec(), 400),
        ("NUL in a header", b"GET /_ping HTTP/1.1\r\nX-A: a\0b\r\n\r\n".to_vec(), 400),
        ("bare CR in a header", b"GET /_ping HTTP/1.1\r\nX-A: a\rb\r\n\r\n".to_vec(), 400),
        ("space in the target", b"GET /a b HTTP/1.1\r\n\r\n".to_vec(), 400),
        ("bad percent escape", b"GET /v1.41/containers/%zz/json HTTP/1.1\r\n\r\n".to_vec(), 400),
        ("huge head", big.into_bytes(), 431),
    ];
    for (what, request, status) in cases {
        let answer = exchange(sc.socket(), &request);
        // `exchange` returns only when the sidecar closed the connection.
        assert_eq!(statuses(&answer), [status], "{what}: {answer}");
    }
}

#[test]
fn smuggling_attempts_are_judged_or_dropped() {
    let sc = container_sidecar("deny", &["volume*"]);
    // Content-Length and chunked together, in either order: 400, the connection is closed, and
    // neither the request nor the one hidden behind it runs.
    for head in [
        "Content-Length: 60\r\nTransfer-Encoding: chunked",
        "Transfer-Encoding: chunked\r\nContent-Length: 60",
    ] {
        let answer = exchange(
            sc.socket(),
            format!("POST /v1.41/containers/prune HTTP/1.1\r\nHost: d\r\n{head}\r\n\r\n0\r\n\r\nPOST /v1.41/volumes/create HTTP/1.1\r\nHost: d\r\n\r\n").as_bytes(),
        );
        assert_eq!(statuses(&answer), [400], "{answer}");
    }
    // The same bytes as a body, properly framed, are only data.
    let hidden = "POST /v1.41/volumes/create HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
    let answer = exchange(
        sc.socket(),
        format!("POST /v1.41/containers/prune HTTP/1.1\r\nHost: d\r\nContent-Length: {}\r\n\r\n{hidden}GET /_ping HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n", hidden.len()).as_bytes(),
    );
    assert_eq!(statuses(&answer), [200, 200], "{answer}");
    // A bad chunk size: the body is malformed, the connection is closed.
    let answer = exchange(
        sc.socket(),
        b"POST /v1.41/containers/prune HTTP/1.1\r\nHost: d\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nPOST /v1.41/volumes/create HTTP/1.1\r\nHost: d\r\n\r\n",
    );
    assert!(statuses(&answer).iter().all(|s| *s != 201), "{answer}");
    assert!(
        !sc.audit_lines()
            .iter()
            .any(|l| l["target"] == "/v1.41/volumes/create" && l["verdict"] == "allow")
    );
}

#[test]
fn slow_heads_are_cut_but_silent_streams_are_not() {
    let sc = container_sidecar("deny", &[]);
    let mut stream = UnixStream::connect(sc.socket()).unwrap();
    stream
        .write_all(b"GET /_ping HTTP/1.1\r\nHost: d\r\n")
        .unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let started = std::time::Instant::now();
    let answer = read_all(&mut stream);
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "the head timeout (2 s) closed the connection"
    );
    assert!(!answer.contains("200 OK"), "{answer}");
    // An events stream stays open past the head timeout while nothing happens.
    let mut stream = UnixStream::connect(sc.socket()).unwrap();
    stream
        .write_all(b"GET /v1.41/events HTTP/1.1\r\nHost: d\r\n\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    engine()
        .docker()
        .args(["volume", "create", "eci-http-silent"])
        .output()
        .unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    while !seen.contains("eci-http-silent") {
        let n = stream
            .read(&mut buf)
            .expect("event arrives on the idle stream");
        assert!(n > 0, "stream closed: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    engine()
        .docker()
        .args(["volume", "rm", "eci-http-silent"])
        .output()
        .unwrap();
}

#[test]
fn http2_prior_knowledge_is_refused_for_containers() {
    let sc = container_sidecar("deny", &[]);
    let mut stream = UnixStream::connect(sc.socket()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .unwrap();
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    // SETTINGS (type 4), then GOAWAY (type 7) with HTTP_1_1_REQUIRED (0xd).
    assert_eq!(out[3], 4, "{out:?}");
    assert_eq!(out[9 + 3], 7, "{out:?}");
    assert_eq!(&out[9 + 9 + 4..9 + 9 + 8], &[0, 0, 0, 0x0d]);
}

/// Odd paths, sent to the engine directly and through the sidecar: the answers must agree, and
/// with an allow list of `ps` the sidecar only ever lets through what the engine runs as `ps`.
#[test]
fn differential_odd_paths() {
    let host = Sidecar::start(engine(), sidecar::command_list("allow", &["ps"]));
    let contained = container_sidecar("allow", &["ps"]);
    let corpus = [
        "/_ping",
        "//_ping",
        "/./_ping",
        "/v1.41/_ping",
        "/v1.41//containers/json",
        "/v1.41/containers/json/",
        "/v1.41/containers/./json",
        "/v1.41/containers/x/../json",
        "/containers%2Fjson",
        "/v1.41/%63ontainers/json",
        "/%761.41/containers/json",
        "/V1.41/containers/json",
        "/v1.41/containers/json?all=1",
        "/v/containers/json",
        "/v1.41/v1.41/containers/json",
        "/v1.41/images/%2e%2e/containers/json",
        "/v1.41/images/%2E%2E%2Fcontainers/json",
        "/v1.41/containers/json%00",
        "/v1.41/containers/x%0Ay/json",
        "/v1.41/images/json",
        "/v1.41/images/a%2fb/json",
        "/v1.41/containers/json%3Fall=1",
        "/v1./containers/json",
        "/v1.41/containers/JSON",
        "/v1.41/volumes/",
        "/v1.41/%zz",
    ];
    // With `Connection: close` hyper reads each request; without, the sidecar's own HTTP/1
    // path does, on a connection that must stay in step for the next request.
    for (path, close) in corpus.iter().flat_map(|p| [(*p, true), (*p, false)]) {
        let request = if close {
            format!("GET {path} HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n")
        } else {
            format!("GET {path} HTTP/1.1\r\nHost: docker\r\n\r\n")
        };
        let send = |socket: &Path| {
            if close {
                exchange(socket, request.as_bytes())
            } else {
                kept_alive_exchange(socket, request.as_bytes())
            }
        };
        let direct = send(engine().socket());
        let via_host = send(host.socket());
        let (d, h) = (head(&direct), head(&via_host));
        assert_eq!(
            d.0, h.0,
            "{path}: engine {direct:?} vs sidecar {via_host:?}"
        );
        assert_eq!(d.1, h.1, "{path}: Location differs");
        let via_container = send(contained.socket());
        let c = head(&via_container);
        if c.0 != 403 {
            assert_eq!(c, d, "{path}: a forwarded answer must be the engine's");
        }
        if (200..300).contains(&d.0) && c.0 != 403 {
            // Something ran: it must have been classified as ps (or the ping).
            let audit = contained.audit_lines();
            let line = audit
                .iter()
                .rev()
                .find(|l| l["target"] == path)
                .unwrap_or_else(|| panic!("{path} audited"));
            assert!(
                line["reason"] == "ping" || line["command"] == "ps",
                "{path}: {line}"
            );
        }
    }
}

/// Sends `request` on a new connection, reads one answer, then checks that the connection
/// still serves a ping; returns the answer.
fn kept_alive_exchange(socket: &Path, request: &[u8]) -> String {
    let mut stream = UnixStream::connect(socket).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream.write_all(request).unwrap();
    let answer = one_answer(&mut stream, false);
    if !answer.contains("Connection: close") && !answer.contains("connection: close") {
        stream
            .write_all(b"GET /_ping HTTP/1.1\r\nHost: d\r\n\r\n")
            .unwrap();
        let ping = one_answer(&mut stream, false);
        assert_eq!(statuses(&ping), [200], "after {answer:?}: {ping:?}");
    }
    answer
}

/// Reads one answer (its head, and its body by `Content-Length` or chunks) from a kept-alive
/// connection.
fn one_answer(stream: &mut UnixStream, to_head: bool) -> String {
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while !got.ends_with(b"\r\n\r\n") {
        assert_eq!(
            stream.read(&mut byte).expect("an answer head"),
            1,
            "{got:?}"
        );
        got.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&got).to_lowercase();
    let length = head.lines().find_map(|l| {
        l.strip_prefix("content-length: ")?
            .trim()
            .parse::<usize>()
            .ok()
    });
    if to_head {
    } else if let Some(length) = length {
        let mut body = vec![0u8; length];
        stream.read_exact(&mut body).unwrap();
        got.extend_from_slice(&body);
    } else if head.contains("transfer-encoding: chunked") {
        while !got.ends_with(b"\r\n0\r\n\r\n") {
            assert_eq!(stream.read(&mut byte).expect("a chunk"), 1, "{got:?}");
            got.push(byte[0]);
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// Status and Location of the first response.
fn head(answer: &str) -> (u16, Option<String>) {
    let status = statuses(answer).first().copied().unwrap_or(0);
    let location = answer
        .split("\r\n\r\n")
        .next()
        .unwrap_or("")
        .lines()
        .find_map(|l| {
            l.strip_prefix("Location: ")
                .or_else(|| l.strip_prefix("location: "))
        })
        .map(str::to_owned);
    (status, location)
}

/// `socat`, `nc -N` and shell health checks shut down their write side once the request is out,
/// then read the answer until the server closes. The engine answers them; so must the sidecar,
/// on its own path and on hyper's (`Connection: keep-alive` is not a plain head), for a container
/// caller and for the host.
#[test]
fn a_client_that_stops_sending_after_its_request_is_answered() {
    let container = container_sidecar("deny", &[]);
    let host = Sidecar::start(engine(), sidecar::command_list("deny", &[]));
    let requests = [
        "GET /_ping HTTP/1.1\r\nHost: d\r\n\r\n",
        "GET /_ping HTTP/1.1\r\nHost: d\r\nConnection: keep-alive\r\n\r\n",
        "GET /_ping HTTP/1.0\r\n\r\n",
    ];
    for socket in [engine().socket(), container.socket(), host.socket()] {
        for request in requests {
            let mut stream = UnixStream::connect(socket).unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            stream.write_all(request.as_bytes()).unwrap();
            stream.shutdown(std::net::Shutdown::Write).unwrap();
            let started = std::time::Instant::now();
            let answer = read_all(&mut stream);
            // The engine answers an HTTP/1.0 request in HTTP/1.0, and hyper in HTTP/1.1.
            assert!(
                (answer.starts_with("HTTP/1.1 200 OK\r\n")
                    || answer.starts_with("HTTP/1.0 200 OK\r\n"))
                    && answer.ends_with("\r\n\r\nOK"),
                "{} for {request:?}: {answer:?}",
                socket.display()
            );
            assert!(
                started.elapsed() < Duration::from_secs(4),
                "{} kept the connection of {request:?} open after answering",
                socket.display()
            );
        }
    }
}

/// A client that goes away from an events stream ends it at the engine, on the sidecar's own
/// path and on hyper's, whether or not it half-closed first (half-closed clients are answered):
/// the engine's count of events listeners (`/info`) goes back down. A dockerd of its own, so that other tests' streams
/// do not move the count.
#[test]
fn a_client_that_goes_away_ends_its_events_stream_at_the_engine() {
    let engine = Dockerd::start().unwrap();
    let sc = Sidecar::start(&engine, sidecar::command_list("deny", &[]));
    let listeners = || {
        let answer = exchange(engine.socket(), b"GET /info HTTP/1.0\r\n\r\n");
        let body = answer.split_once("\r\n\r\n").map_or("", |(_, body)| body);
        let info: serde_json::Value = serde_json::from_str(body).expect("/info is JSON");
        info["NEventsListener"].as_u64().expect("NEventsListener")
    };
    let settle = |want: u64, what: &str| {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while listeners() != want {
            assert!(std::time::Instant::now() < deadline, "{what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let before = listeners();
    for request in [
        "GET /v1.41/events HTTP/1.1\r\nHost: d\r\n\r\n",
        "GET /v1.41/events HTTP/1.1\r\nHost: d\r\nConnection: keep-alive\r\n\r\n",
    ] {
        for half_close_first in [false, true] {
            let mut stream = UnixStream::connect(sc.socket()).unwrap();
            stream.write_all(request.as_bytes()).unwrap();
            if half_close_first {
                stream.shutdown(std::net::Shutdown::Write).unwrap();
            }
            settle(before + 1, "the events stream never reached the engine");
            drop(stream);
            settle(
                before,
                &format!(
                    "the engine still streams events to a client that went away \
                     (half-closed first: {half_close_first}): {request:?}"
                ),
            );
        }
    }
    engine.stop();
}
