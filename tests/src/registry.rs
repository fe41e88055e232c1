//! A real Debian `docker-registry` on 127.0.0.1 for tests, and images pushed into it with
//! `skopeo` from OCI layouts generated here (no network, no docker).
//!
//! [`Registry`] owns its process and its temp dir: `Drop` kills the process by pid and removes
//! the directory. [`TokenServer`] is a tiny token endpoint for the registry's `silly` auth,
//! which answers unauthenticated requests with a real `Bearer` challenge.

use std::{
    io::{BufRead, BufReader, Write},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

pub const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

/// A running registry; killed and cleaned up on drop.
pub struct Registry {
    pub addr: String,
    child: Option<Child>,
    dir: PathBuf,
}

impl Registry {
    pub fn start() -> Result<Self> {
        Self::start_with_auth(None)
    }

    /// `silly_realm`: start with `auth: silly` pointing clients at this token realm.
    pub fn start_with_auth(silly_realm: Option<&str>) -> Result<Self> {
        let dir = temp_dir("eci-registry")?;
        let port = free_port()?;
        let addr = format!("127.0.0.1:{port}");
        let auth = match silly_realm {
            Some(realm) => {
                format!("auth:\n  silly:\n    realm: {realm}\n    service: eci-test-registry\n")
            }
            None => String::new(),
        };
        let config = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n{auth}",
            dir.join("data").display()
        );
        let config_path = dir.join("config.yml");
        std::fs::write(&config_path, config)?;
        let child = Command::new(REGISTRY_BIN)
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("registry.log"))?)
            .spawn()
            .with_context(|| format!("starting {REGISTRY_BIN}"))?;
        let reg = Self {
            addr,
            child: Some(child),
            dir,
        };
        reg.wait_ready()?;
        Ok(reg)
    }

    fn wait_ready(&self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if TcpStream::connect(&self.addr).is_ok() {
                return Ok(());
            }
            thread::sleep(Duration::from_millis(50));
        }
        let log = std::fs::read_to_string(self.dir.join("registry.log")).unwrap_or_default();
        bail!("registry on {} did not start: {log}", self.addr)
    }

    /// Stops the registry now (the "registry went down" case).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Pushes a single-platform image whose one layer holds `content`; returns the manifest digest.
    pub fn push_image(&self, repo_tag: &str, content: &str) -> Result<String> {
        let layout = OciLayout::build(&self.dir, content, false)?;
        self.skopeo_copy(&layout.dir, repo_tag, false)?;
        Ok(layout.top_digest)
    }

    /// Pushes an OCI index with one linux/amd64 manifest; returns (index digest, manifest digest).
    pub fn push_index(&self, repo_tag: &str, content: &str) -> Result<(String, String)> {
        let layout = OciLayout::build(&self.dir, content, true)?;
        self.skopeo_copy(&layout.dir, repo_tag, true)?;
        Ok((layout.top_digest, layout.manifest_digest))
    }

    fn skopeo_copy(&self, layout: &Path, repo_tag: &str, all: bool) -> Result<()> {
        let policy = self.dir.join("policy.json");
        std::fs::write(
            &policy,
            r#"{"default":[{"type":"insecureAcceptAnything"}]}"#,
        )?;
        let mut cmd = Command::new("skopeo");
        cmd.arg("--policy")
            .arg(&policy)
            .arg("copy")
            .arg("--quiet")
            .arg("--dest-tls-verify=false")
            .arg("--preserve-digests");
        if all {
            cmd.arg("--all");
        }
        cmd.arg(format!("oci:{}:latest", layout.display()))
            .arg(format!("docker://{}/{repo_tag}", self.addr));
        let out = cmd.output().context("running skopeo")?;
        if !out.status.success() {
            bail!(
                "skopeo copy to {repo_tag} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.cleanup();
    }
}

impl Registry {
    /// Stops the registry and removes its files (also what dropping it does; statics that are
    /// never dropped call it at exit).
    pub fn cleanup(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// An OCI image layout written by hand: one uncompressed layer, a config, a manifest, and
/// optionally an index above it.
struct OciLayout {
    dir: PathBuf,
    top_digest: String,
    manifest_digest: String,
}

static LAYOUTS: AtomicUsize = AtomicUsize::new(0);

impl OciLayout {
    fn build(parent: &Path, content: &str, with_index: bool) -> Result<Self> {
        let dir = parent.join(format!(
            "layout-{}",
            LAYOUTS.fetch_add(1, Ordering::Relaxed)
        ));
        let blobs = dir.join("blobs/sha256");
        std::fs::create_dir_all(&blobs)?;
        let put = |bytes: &[u8]| -> Result<(String, usize)> {
            let d = sha256_hex(bytes)?;
            std::fs::write(blobs.join(&d), bytes)?;
            Ok((format!("sha256:{d}"), bytes.len()))
        };
        let layer = tar_one_file("hello.txt", content.as_bytes());
        let (layer_digest, layer_size) = put(&layer)?;
        let config = format!(
            r#"{{"architecture":"amd64","os":"linux","config":{{}},"rootfs":{{"type":"layers","diff_ids":["{layer_digest}"]}}}}"#
        );
        let (config_digest, config_size) = put(config.as_bytes())?;
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config_digest}","size":{config_size}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{layer_digest}","size":{layer_size}}}]}}"#
        );
        let (manifest_digest, manifest_size) = put(manifest.as_bytes())?;
        let platform_desc = format!(
            r#"{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{manifest_digest}","size":{manifest_size},"platform":{{"architecture":"amd64","os":"linux"}}}}"#
        );
        let (top, top_type, top_size) = if with_index {
            let index = format!(
                r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{platform_desc}]}}"#
            );
            let (d, s) = put(index.as_bytes())?;
            (d, "application/vnd.oci.image.index.v1+json", s)
        } else {
            (
                manifest_digest.clone(),
                "application/vnd.oci.image.manifest.v1+json",
                manifest_size,
            )
        };
        // The layout's own index.json names the tag skopeo copies.
        let tagged = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{top_type}","digest":"{top}","size":{top_size},"annotations":{{"org.opencontainers.image.ref.name":"TAG"}}}}]}}"#
        );
        std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#)?;
        let layout = Self {
            dir,
            top_digest: top,
            manifest_digest,
        };
        Ok(layout.with_index_json(&tagged))
    }

    fn with_index_json(self, tagged: &str) -> Self {
        // Every tag maps to the same top manifest: skopeo looks the tag up by ref.name.
        let _ = std::fs::write(
            self.dir.join("index.json"),
            tagged.replace("\"TAG\"", "\"latest\""),
        );
        self
    }
}

/// A ustar archive with one regular file.
fn tar_one_file(name: &str, data: &[u8]) -> Vec<u8> {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    h[100..108].copy_from_slice(b"0000644\0");
    h[108..116].copy_from_slice(b"0000000\0");
    h[116..124].copy_from_slice(b"0000000\0");
    h[124..136].copy_from_slice(format!("{:011o}\0", data.len()).as_bytes());
    h[136..148].copy_from_slice(b"00000000000\0");
    h[156] = b'0';
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    let mut out = h.to_vec();
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
    out.extend_from_slice(&[0u8; 1024]);
    out
}

fn sha256_hex(bytes: &[u8]) -> Result<String> {
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    child.stdin.take().context("stdin")?.write_all(bytes)?;
    let out = child.wait_with_output()?;
    let s = String::from_utf8(out.stdout)?;
    Ok(s.split_whitespace()
        .next()
        .context("sha256sum output")?
        .to_owned())
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn temp_dir(prefix: &str) -> Result<PathBuf> {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// A token endpoint that hands every request an anonymous token and counts them.
pub struct TokenServer {
    pub realm: String,
    pub requests: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    handle: Option<thread::JoinHandle<()>>,
}

impl TokenServer {
    pub fn start() -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let realm = format!("http://{}/token", listener.local_addr()?);
        listener.set_nonblocking(true)?;
        let requests = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (r, s) = (requests.clone(), stop.clone());
        let handle = thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        r.fetch_add(1, Ordering::Relaxed);
                        let _ = answer_token(stream);
                    }
                    Err(_) => thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Ok(Self {
            realm,
            requests,
            stop,
            handle: Some(handle),
        })
    }
}

fn answer_token(mut stream: TcpStream) -> Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    while reader.read_line(&mut line)? > 0 && line != "\r\n" {
        line.clear();
    }
    let body = r#"{"token":"eci-test-token","expires_in":300}"#;
    write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    Ok(())
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
