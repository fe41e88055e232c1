//! The configuration files of the bench's peers, kept as files beside this one (`nginx.conf`,
//! `haproxy.cfg`, `haproxy-tcp.cfg`) and filled in here: each `{name}` placeholder is replaced by its value.

use std::path::Path;

const NGINX: &str = include_str!("nginx.conf");
const HAPROXY: &str = include_str!("haproxy.cfg");
const HAPROXY_TCP: &str = include_str!("haproxy-tcp.cfg");

/// How HAProxy treats its engine connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HaproxyMode {
    /// `option http-server-close`: a fresh engine connection per request (Tecnativa's setting).
    ServerClose,
    /// `option http-keep-alive` + `http-reuse always`: the best-configured HAProxy.
    KeepAlive,
    /// `mode tcp`: no HTTP at all, one engine connection per client connection (a byte relay,
    /// `haproxy-tcp.cfg`).
    Tcp,
}

/// Replaces each `{name}` of `template`; every name must occur (a renamed placeholder is a bug).
fn fill(template: &str, values: &[(&str, &str)]) -> String {
    let mut out = template.to_owned();
    for (name, value) in values {
        let placeholder = format!("{{{name}}}");
        assert!(
            out.contains(&placeholder),
            "template has no {placeholder} placeholder"
        );
        out = out.replace(&placeholder, value);
    }
    out
}

/// nginx as a fast stand-in engine on `socket`, its files under `dir`.
pub fn nginx_conf(dir: &Path, socket: &Path) -> String {
    fill(
        NGINX,
        &[
            ("dir", &dir.display().to_string()),
            ("socket", &socket.display().to_string()),
            ("containers_json", &containers_json()),
        ],
    )
}

/// The API sections of the popular HAProxy socket proxies, in their order, and whether this
/// bench enables each (the read-mostly set a dashboard asks for, plus POST for the upload and
/// build for the streams section's `docker build`).
pub const HAPROXY_SECTIONS: &[(&str, bool)] = &[
    ("auth", false),
    ("build", true),
    ("commit", false),
    ("configs", false),
    ("containers", true),
    ("distribution", false),
    ("events", true),
    ("exec", false),
    ("grpc", false),
    ("images", true),
    ("info", true),
    ("networks", false),
    ("nodes", false),
    ("_ping", true),
    ("plugins", false),
    ("secrets", false),
    ("services", false),
    ("session", false),
    ("swarm", false),
    ("system", false),
    ("tasks", false),
    ("version", true),
    ("volumes", false),
];

/// HAProxy listening on `listen` in front of `engine`.
pub fn haproxy_cfg(listen: &Path, engine: &Path, mode: HaproxyMode) -> String {
    let (engine, listen) = (engine.display().to_string(), listen.display().to_string());
    let (connection_mode, reuse) = match mode {
        HaproxyMode::ServerClose => ("http-server-close", ""),
        HaproxyMode::KeepAlive => ("http-keep-alive", "    http-reuse always\n"),
        HaproxyMode::Tcp => {
            return fill(HAPROXY_TCP, &[("engine", &engine), ("listen", &listen)]);
        }
    };
    let mut rules = String::new();
    for (section, enabled) in HAPROXY_SECTIONS {
        let flag = if *enabled {
            "always_true"
        } else {
            "always_false"
        };
        rules.push_str(&format!(
            "    http-request allow if {{ path,url_dec -m reg -i ^(/v[\\d\\.]+)?(/\\w+)?/{section} }} {{ {flag} }}\n"
        ));
    }
    fill(
        HAPROXY,
        &[
            ("connection_mode", connection_mode),
            ("reuse", reuse),
            ("engine", &engine),
            ("listen", &listen),
            ("rules", &rules),
        ],
    )
}

/// A `GET /containers/json` answer of about 2 KiB, shaped like the engine's.
pub fn containers_json() -> String {
    let container = |n: u32| {
        serde_json::json!({
            "Id": format!("{n:064x}"),
            "Names": [format!("/bench-{n}")],
            "Image": "registry.example/team/app:1.2.3",
            "ImageID": format!("sha256:{:064x}", n + 100),
            "Command": "/docker-entrypoint.sh nginx -g daemon-off",
            "Created": 1_760_000_000 + n,
            "Ports": [{"IP": "0.0.0.0", "PrivatePort": 80, "PublicPort": 8080 + n, "Type": "tcp"}],
            "Labels": {"com.docker.compose.project": "bench", "com.docker.compose.service": format!("web{n}")},
            "State": "running",
            "Status": "Up 2 hours",
            "HostConfig": {"NetworkMode": "bridge"},
            "NetworkSettings": {"Networks": {"bridge": {
                "NetworkID": format!("{:064x}", n + 200),
                "EndpointID": format!("{:064x}", n + 300),
                "Gateway": "172.17.0.1",
                "IPAddress": format!("172.17.0.{}", n + 2),
                "IPPrefixLen": 16,
                "MacAddress": format!("02:42:ac:11:00:{:02x}", n + 2),
            }}},
            "Mounts": [],
        })
    };
    serde_json::Value::Array((0..3).map(container).collect()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containers_json_is_about_two_kib_of_json_nginx_can_quote() {
        let body = containers_json();
        assert!((1800..=2600).contains(&body.len()), "{} bytes", body.len());
        assert!(!body.contains('\''));
        let parsed: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(parsed.as_array().unwrap().len(), 3);
    }

    #[test]
    fn nginx_serves_the_fixed_answers_on_the_socket() {
        let conf = nginx_conf(Path::new("/t"), Path::new("/t/e.sock"));
        assert!(conf.contains("listen unix:/t/e.sock;"));
        assert!(conf.contains("pid /t/nginx.pid;"));
        assert!(conf.contains(&containers_json()));
        assert!(!conf.contains("{dir}") && !conf.contains("{socket}"));
    }

    #[test]
    fn haproxy_in_tcp_mode_relays_bytes_between_the_two_sockets() {
        let tcp = haproxy_cfg(
            Path::new("/t/h.sock"),
            Path::new("/t/e.sock"),
            HaproxyMode::Tcp,
        );
        assert!(tcp.contains("    mode tcp\n"));
        assert!(tcp.contains("bind /t/h.sock"));
        assert!(tcp.contains("server engine /t/e.sock"));
        assert!(!tcp.contains("http"));
    }

    #[test]
    fn haproxy_is_a_path_regex_proxy_in_either_connection_mode() {
        let close = haproxy_cfg(
            Path::new("/t/h.sock"),
            Path::new("/t/e.sock"),
            HaproxyMode::ServerClose,
        );
        assert!(close.contains("option http-server-close"));
        assert!(!close.contains("    http-reuse"));
        assert!(close.contains("server dockersocket /t/e.sock"));
        assert!(close.contains("bind /t/h.sock"));
        assert!(close.contains(r"^(/v[\d\.]+)?(/\w+)?/_ping } { always_true }"));
        assert!(close.contains(r"^(/v[\d\.]+)?(/\w+)?/exec } { always_false }"));
        assert_eq!(
            close.matches("http-request allow if").count(),
            HAPROXY_SECTIONS.len()
        );
        let keep = haproxy_cfg(
            Path::new("/t/h.sock"),
            Path::new("/t/e.sock"),
            HaproxyMode::KeepAlive,
        );
        assert!(keep.contains("option http-keep-alive"));
        assert!(keep.contains("    http-reuse always\n    server dockersocket"));
        for placeholder in ["{connection_mode}", "{reuse}", "{rules}", "{listen}"] {
            assert!(!keep.contains(placeholder), "{placeholder}");
        }
    }
}
