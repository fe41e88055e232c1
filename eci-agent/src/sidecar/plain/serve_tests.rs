//! The plain path against a scripted engine (a listener in the test), for what the real engine
//! cannot be made to do on cue: close an idle connection, answer `Connection: close`, hold a
//! stream open while its client hangs up.

use std::time::Duration;

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{UnixListener, UnixStream},
    task::JoinHandle,
};

use super::{Ended, serve};

struct Rig {
    _dir: tempfile::TempDir,
    engine: UnixListener,
    client: UnixStream,
    served: JoinHandle<Ended>,
}

fn rig(carry: bool) -> Rig {
    rig_timing_heads(carry, Duration::from_secs(5))
}

fn rig_timing_heads(carry: bool, head_timeout: Duration) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("engine.sock");
    let engine = UnixListener::bind(&path).unwrap();
    let (client, sidecar_end) = UnixStream::pair().unwrap();
    let served = tokio::spawn(async move {
        serve(sidecar_end, Vec::new(), &path, head_timeout, |_| carry).await
    });
    Rig {
        _dir: dir,
        engine,
        client,
        served,
    }
}

/// Reads up to the end of a head (the tests' requests and answers have small bodies read
/// separately).
async fn head(stream: &mut UnixStream) -> String {
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while !got.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut byte))
            .await
            .expect("a head in time")
            .unwrap();
        assert_eq!(n, 1, "closed after {:?}", String::from_utf8_lossy(&got));
        got.push(byte[0]);
    }
    String::from_utf8(got).unwrap()
}

async fn send(stream: &mut UnixStream, bytes: &[u8]) {
    stream.write_all(bytes).await.unwrap();
}

/// What the client reads until the sidecar ends the connection (within 3 s).
async fn until_closed(client: &mut UnixStream) -> String {
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(3), client.read_to_end(&mut got))
        .await
        .expect("answered and closed in time")
        .unwrap();
    String::from_utf8_lossy(&got).into_owned()
}

async fn accept(engine: &UnixListener) -> UnixStream {
    tokio::time::timeout(Duration::from_secs(5), engine.accept())
        .await
        .expect("an engine connection in time")
        .unwrap()
        .0
}

/// The engine closing a kept-alive connection as a request arrives, before answering it: the
/// request went nowhere, so it goes again on a new connection (as hyper's client retries).
/// When the close is seen before the request is sent, the connection is not used at all.
#[tokio::test]
async fn a_request_goes_again_when_the_engine_closed_its_idle_connection() {
    for close_seen_first in [false, true] {
        let mut rig = rig(true);
        send(&mut rig.client, b"GET /a HTTP/1.1\r\nHost: d\r\n\r\n").await;
        let mut first = accept(&rig.engine).await;
        assert!(head(&mut first).await.starts_with("GET /a "));
        send(&mut first, b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na").await;
        assert!(head(&mut rig.client).await.starts_with("HTTP/1.1 200"));
        let mut body = [0u8; 1];
        rig.client.read_exact(&mut body).await.unwrap();
        if close_seen_first {
            drop(first);
            tokio::time::sleep(Duration::from_millis(50)).await;
            send(&mut rig.client, b"GET /b HTTP/1.1\r\nHost: d\r\n\r\n").await;
        } else {
            send(&mut rig.client, b"GET /b HTTP/1.1\r\nHost: d\r\n\r\n").await;
            assert!(head(&mut first).await.starts_with("GET /b "));
            drop(first);
        }
        let mut second = accept(&rig.engine).await;
        assert!(head(&mut second).await.starts_with("GET /b "));
        send(
            &mut second,
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nb",
        )
        .await;
        assert!(head(&mut rig.client).await.starts_with("HTTP/1.1 200"));
        rig.client.read_exact(&mut body).await.unwrap();
        assert_eq!(&body, b"b");
    }
}

/// Each head has the whole timeout from when the connection is ready for it, however long the
/// connection has lived; a head that does not come whole in time ends the connection.
#[tokio::test(start_paused = true)]
async fn each_head_has_the_head_timeout_and_a_late_one_ends_the_connection() {
    let timeout = Duration::from_millis(400);
    let mut rig = rig_timing_heads(true, timeout);
    let mut upstream = None;
    for _ in 0..3 {
        tokio::time::sleep(timeout * 3 / 4).await;
        send(&mut rig.client, b"GET /a HTTP/1.1\r\nHost: d\r\n\r\n").await;
        if upstream.is_none() {
            upstream = Some(accept(&rig.engine).await);
        }
        let engine = upstream.as_mut().unwrap();
        assert!(head(engine).await.starts_with("GET /a "));
        send(engine, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").await;
        assert!(head(&mut rig.client).await.starts_with("HTTP/1.1 200"));
    }
    let started = tokio::time::Instant::now();
    send(&mut rig.client, b"GET /a HTTP/1.1\r\nHost:").await;
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(timeout * 10, rig.client.read(&mut byte))
        .await
        .expect("closed by the head timeout");
    assert_eq!(read.unwrap(), 0);
    assert!(
        started.elapsed() >= timeout * 3 / 4,
        "{:?}",
        started.elapsed()
    );
    assert!(matches!(rig.served.await.unwrap(), Ended::Closed));
}

#[tokio::test]
async fn connection_close_from_the_engine_ends_only_the_engine_connection() {
    let mut rig = rig(true);
    send(&mut rig.client, b"GET /a HTTP/1.1\r\nHost: d\r\n\r\n").await;
    let mut first = accept(&rig.engine).await;
    head(&mut first).await;
    send(
        &mut first,
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\na",
    )
    .await;
    let answer = head(&mut rig.client).await;
    assert_eq!(answer, "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n");
    let mut body = [0u8; 1];
    rig.client.read_exact(&mut body).await.unwrap();
    // The next request goes on a new engine connection, though the old one is still open.
    send(&mut rig.client, b"GET /b HTTP/1.1\r\nHost: d\r\n\r\n").await;
    let mut second = accept(&rig.engine).await;
    assert!(head(&mut second).await.starts_with("GET /b "));
    drop(first);
}

/// `socat` and `nc -N` shut down their write side once the request is out and read the answer
/// until the server closes: the engine answers them, and so does the sidecar.
#[tokio::test]
async fn a_client_that_only_stopped_sending_is_answered_then_closed() {
    let mut rig = rig(true);
    send(&mut rig.client, b"GET /_ping HTTP/1.1\r\nHost: d\r\n\r\n").await;
    rig.client.shutdown().await.unwrap();
    let mut upstream = accept(&rig.engine).await;
    head(&mut upstream).await;
    // Answered after the sidecar has seen the half-close.
    tokio::time::sleep(Duration::from_millis(100)).await;
    send(
        &mut upstream,
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOK",
    )
    .await;
    let answer = until_closed(&mut rig.client).await;
    assert!(
        answer.starts_with("HTTP/1.1 200 OK\r\n") && answer.ends_with("\r\n\r\nOK"),
        "{answer}"
    );
    assert!(matches!(rig.served.await.unwrap(), Ended::Closed));
}

/// Requests written together before a half-close are each answered, in order, before the
/// connection ends: what the sidecar already read of the client is not lost to its end of file.
#[tokio::test]
async fn requests_pipelined_before_a_half_close_are_all_answered() {
    let mut rig = rig(true);
    send(
        &mut rig.client,
        b"GET /a HTTP/1.1\r\nHost: d\r\n\r\nGET /b HTTP/1.1\r\nHost: d\r\n\r\n",
    )
    .await;
    rig.client.shutdown().await.unwrap();
    let mut upstream = accept(&rig.engine).await;
    for path in ["/a", "/b"] {
        assert!(
            head(&mut upstream)
                .await
                .starts_with(&format!("GET {path} "))
        );
        send(
            &mut upstream,
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOK",
        )
        .await;
    }
    let answer = until_closed(&mut rig.client).await;
    assert_eq!(answer.matches("HTTP/1.1 200 OK\r\n").count(), 2, "{answer}");
    assert!(matches!(rig.served.await.unwrap(), Ended::Closed));
}

/// A client that goes away while its stream is open ends the stream and its engine connection,
/// whether it half-closed first (and was watched for its close) or not (seen by its end of file).
#[tokio::test]
async fn a_client_hanging_up_on_a_stream_ends_its_engine_connection() {
    for half_close_first in [false, true] {
        let mut rig = rig(true);
        send(&mut rig.client, b"GET /events HTTP/1.1\r\nHost: d\r\n\r\n").await;
        if half_close_first {
            rig.client.shutdown().await.unwrap();
        }
        let mut upstream = accept(&rig.engine).await;
        head(&mut upstream).await;
        send(
            &mut upstream,
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        )
        .await;
        head(&mut rig.client).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut byte = [0u8; 1];
        assert!(
            tokio::time::timeout(Duration::from_millis(200), upstream.read(&mut byte))
                .await
                .is_err(),
            "the stream ended while its client was still there (half-closed: {half_close_first})"
        );
        drop(rig.client);
        let read = tokio::time::timeout(Duration::from_secs(3), upstream.read(&mut byte))
            .await
            .unwrap_or_else(|_| {
                panic!("the engine connection stays (half-closed first: {half_close_first})")
            });
        assert_eq!(read.unwrap(), 0);
        assert!(matches!(rig.served.await.unwrap(), Ended::Closed));
    }
}

#[tokio::test]
async fn a_pipelined_request_is_not_taken_for_a_hang_up() {
    let mut rig = rig(true);
    send(&mut rig.client, b"GET /wait HTTP/1.1\r\nHost: d\r\n\r\n").await;
    let mut upstream = accept(&rig.engine).await;
    assert!(head(&mut upstream).await.starts_with("GET /wait "));
    // The next request arrives while the answer is awaited, and is seen then.
    send(&mut rig.client, b"GET /b HTTP/1.1\r\nHost: d\r\n\r\n").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    send(
        &mut upstream,
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    )
    .await;
    head(&mut rig.client).await;
    assert!(head(&mut upstream).await.starts_with("GET /b "));
}

#[tokio::test]
async fn what_is_not_carried_is_handed_on_with_every_byte_read() {
    let rig = rig(false);
    let sent = b"GET /a HTTP/1.1\r\nHost: d\r\n\r\nGET /b HTTP/1.1\r\n";
    let mut client = rig.client;
    client.write_all(sent).await.unwrap();
    match rig.served.await.unwrap() {
        Ended::HandOff { read, .. } => assert_eq!(read, sent),
        Ended::Closed => panic!("closed"),
    }
}

/// The engine's side of a `POST /images/load`: its connection, and the `len` bytes that came
/// after the head.
async fn load_at_the_engine(engine: &UnixListener, len: usize) -> (UnixStream, Vec<u8>) {
    let mut upstream = accept(engine).await;
    assert!(head(&mut upstream).await.starts_with("POST /images/load "));
    let mut got = vec![0u8; len];
    tokio::time::timeout(Duration::from_secs(10), upstream.read_exact(&mut got))
        .await
        .expect("the whole body in time")
        .unwrap();
    (upstream, got)
}

/// A body larger than the pipe moves whole and in order (by splice where the kernel allows),
/// and the connection then serves the next request.
#[tokio::test]
async fn a_large_body_reaches_the_engine_whole() {
    let mut rig = rig(true);
    let body: Vec<u8> = (0..3 * (1 << 20) + 12345)
        .map(|i| (i % 251) as u8)
        .collect();
    let head = format!(
        "POST /images/load HTTP/1.1\r\nHost: d\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let sent = body.clone();
    let mut client = rig.client;
    let writer = tokio::spawn(async move {
        client.write_all(head.as_bytes()).await.unwrap();
        client.write_all(&sent).await.unwrap();
        client
    });
    let (mut upstream, got) = load_at_the_engine(&rig.engine, body.len()).await;
    assert!(got == body, "the body arrived changed");
    send(
        &mut upstream,
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    )
    .await;
    rig.client = writer.await.unwrap();
    assert!(
        self::head(&mut rig.client)
            .await
            .starts_with("HTTP/1.1 200")
    );
    send(&mut rig.client, b"GET /b HTTP/1.1\r\nHost: d\r\n\r\n").await;
    assert!(self::head(&mut upstream).await.starts_with("GET /b "));
}

/// An engine that cannot be reached: the request, counted already, is answered here as hyper's
/// path answers it (502, the engine's path named), not handed on.
#[tokio::test]
async fn an_absent_engine_is_answered_502_here() {
    let mut rig = rig(true);
    drop(rig.engine);
    send(&mut rig.client, b"GET /a HTTP/1.1\r\nHost: d\r\n\r\n").await;
    let answer = until_closed(&mut rig.client).await;
    assert!(
        answer.starts_with("HTTP/1.1 502 Bad Gateway\r\n"),
        "{answer}"
    );
    assert!(
        answer.contains(r#"{"message":"eci-agent: cannot reach the engine at "#),
        "{answer}"
    );
    assert!(matches!(rig.served.await.unwrap(), Ended::Closed));
}

/// `payload` as Go's client frames a body it knows no length of: one chunk per `piece`.
fn chunked(payload: &[u8], piece: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for chunk in payload.chunks(piece) {
        out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

/// A chunked body (the CLI's `load` and `build`) reaches the engine as it came, chunk lines
/// included, whether its end came with the head or later; what the client sent right after it
/// is the next request: read as a head once the answer is out, not passed on as body, not lost.
#[tokio::test]
async fn a_chunked_body_reaches_the_engine_as_it_came_and_the_next_request_follows() {
    let payload: Vec<u8> = (0..300_000).map(|i| (i % 251) as u8).collect();
    let body = chunked(&payload, 32 << 10);
    let head = b"POST /images/load HTTP/1.1\r\nHost: d\r\nTransfer-Encoding: chunked\r\n\r\n";
    let next = b"GET /b HTTP/1.1\r\nHost: d\r\n\r\n";
    for first in [body.len(), 1000, body.len() - 3] {
        let mut rig = rig(true);
        let (early, late) = body.split_at(first);
        let (early, mut late) = ([&head[..], early].concat(), late.to_vec());
        late.extend_from_slice(next);
        let mut client = rig.client;
        let writer = tokio::spawn(async move {
            client.write_all(&early).await.unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
            client.write_all(&late).await.unwrap();
            client
        });
        let (mut upstream, got) = load_at_the_engine(&rig.engine, body.len()).await;
        assert!(got == body, "the body arrived changed (first {first})");
        let mut byte = [0u8; 1];
        assert!(
            tokio::time::timeout(Duration::from_millis(200), upstream.read(&mut byte))
                .await
                .is_err(),
            "bytes after the body's end went to the engine with it (first {first})"
        );
        send(
            &mut upstream,
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        )
        .await;
        rig.client = writer.await.unwrap();
        assert!(
            self::head(&mut rig.client)
                .await
                .starts_with("HTTP/1.1 200")
        );
        assert!(self::head(&mut upstream).await.starts_with("GET /b "));
    }
}

/// A chunk line the sidecar cannot read as the engine would (here a bare LF, which Go reads as
/// the line's end, so that what the sidecar took for body the engine would take for a request)
/// is answered 400; what came before it reached the engine, nothing of it or after it did.
#[tokio::test]
async fn a_broken_chunk_is_answered_400_and_never_reaches_the_engine() {
    let head = b"POST /build HTTP/1.1\r\nHost: d\r\nTransfer-Encoding: chunked\r\n\r\n";
    let good = b"5\r\nabcde\r\n";
    let bad = b"5;\nabcde\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: d\r\n\r\n";
    for with_head in [true, false] {
        let mut rig = rig(true);
        let early = if with_head {
            [&head[..], good, bad].concat()
        } else {
            [&head[..], good].concat()
        };
        send(&mut rig.client, &early).await;
        let upstream = if with_head {
            None
        } else {
            let mut upstream = accept(&rig.engine).await;
            let mut got = vec![0u8; head.len() + good.len()];
            upstream.read_exact(&mut got).await.unwrap();
            assert_eq!(got, [&head[..], good].concat());
            send(&mut rig.client, bad).await;
            Some(upstream)
        };
        let answer = until_closed(&mut rig.client).await;
        assert!(
            answer.starts_with("HTTP/1.1 400 Bad Request\r\n")
                && answer.ends_with(r#"{"message":"request body: malformed chunked body"}"#),
            "{answer}"
        );
        match upstream {
            Some(mut upstream) => {
                let mut rest = Vec::new();
                upstream.read_to_end(&mut rest).await.unwrap();
                assert_eq!(rest, b"", "bytes of the broken chunk reached the engine");
            }
            None => assert!(
                tokio::time::timeout(Duration::from_millis(200), rig.engine.accept())
                    .await
                    .is_err(),
                "a request refused whole went to the engine"
            ),
        }
        assert!(matches!(rig.served.await.unwrap(), Ended::Closed));
    }
}
