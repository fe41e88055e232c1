//! A fake engine for unit tests: a unix socket in a temporary directory that answers `GET`s
//! from a table of canned JSON (404 for anything else) and counts the connections it accepted.
//! The agent's code talks to it through the real [`EngineApi`](super::EngineApi), so the
//! gate's decisions are tested without root or a dockerd; the host tier runs the real one.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering::SeqCst},
    },
};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

pub struct FakeEngine {
    _dir: tempfile::TempDir,
    socket: PathBuf,
    answers: Arc<Mutex<HashMap<String, String>>>,
    accepted: Arc<AtomicUsize>,
}

impl FakeEngine {
    /// Starts serving on the current tokio runtime.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("engine.sock");
        let listener = tokio::net::UnixListener::bind(&socket).unwrap();
        let answers: Arc<Mutex<HashMap<String, String>>> = Arc::default();
        let accepted = Arc::new(AtomicUsize::new(0));
        let (table, count) = (answers.clone(), accepted.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                count.fetch_add(1, SeqCst);
                tokio::spawn(serve(stream, table.clone()));
            }
        });
        Self {
            _dir: dir,
            socket,
            answers,
            accepted,
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// `GET target` answers 200 with `json` from now on.
    pub fn answer(&self, target: &str, json: &str) {
        self.answers
            .lock()
            .unwrap()
            .insert(target.to_owned(), json.to_owned());
    }

    /// `GET target` answers 404 from now on.
    pub fn forget(&self, target: &str) {
        self.answers.lock().unwrap().remove(target);
    }

    pub fn accepted(&self) -> usize {
        self.accepted.load(SeqCst)
    }
}

async fn serve(mut stream: tokio::net::UnixStream, answers: Arc<Mutex<HashMap<String, String>>>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while let Ok(n) = stream.read(&mut chunk).await {
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            buf.drain(..end + 4);
            let target = head.split(' ').nth(1).unwrap_or_default();
            let found = answers.lock().unwrap().get(target).cloned();
            let answer = match found {
                Some(json) => format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{json}",
                    json.len()
                ),
                None => "HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\n{}".to_owned(),
            };
            if stream.write_all(answer.as_bytes()).await.is_err() {
                return;
            }
        }
    }
}
