//! The engine's view of a request path, computed the way dockerd computes it, so the sidecar
//! classifies exactly the route the engine would run.
//!
//! dockerd hands every request to a gorilla/mux router with its defaults: it percent-decodes the
//! path once (Go's `url.ParseRequestURI`, where an invalid escape is a 400), answers any path that
//! is not clean (`//`, `/./`, `/../`, after decoding) with a 301 to the cleaned path instead of
//! routing it, keeps a trailing slash, and registers every route twice, bare and behind
//! `/v{version:[0-9.]+}`. Path segments are case-sensitive. Nothing here allocates a policy
//! decision: this module only says which path the engine would route, or that it would not route.

use std::borrow::Cow;

use crate::policy::path_clean::path_clean;

/// What the engine does with a request target's path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnginePath<'a> {
    /// The engine routes this request.
    Route(RoutePath<'a>),
    /// The engine answers `301 Moved Permanently` with this `Location` and routes nothing.
    Redirect { location: String },
}

/// A path the engine routes. It borrows the request's target unless percent escapes had to be
/// decoded, so that the requests clients send most cost no allocation to classify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutePath<'a> {
    /// The `/vX.Y` prefix's version, when the request carried one.
    pub version: Option<Cow<'a, str>>,
    /// The decoded, clean path with any version prefix removed: what the route table matches.
    pub api_path: Cow<'a, str>,
}

/// A target the engine itself rejects with 400 before routing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// Not an absolute path (origin-form); the engine's `ParseRequestURI` refuses it.
    #[error("request target is not an absolute path")]
    NotAbsolute,
    /// A `%` not followed by two hex digits.
    #[error("invalid URL escape {0:?}")]
    BadEscape(String),
}

/// Computes the engine's view of `path` (as received, still percent-encoded) and `query` (the
/// raw text after `?`, `Some("")` for a bare `?`).
pub fn engine_path<'a>(path: &'a str, query: Option<&str>) -> Result<EnginePath<'a>, PathError> {
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    // Most paths have nothing to decode and are clean already: those cost no allocation.
    let decoded: Cow<'a, str> = if path.as_bytes().contains(&b'%') {
        // Go's regexp treats each invalid UTF-8 byte as U+FFFD, which `.` and `[^/]` match like
        // any other character; a lossy conversion keeps that matching behaviour.
        Cow::Owned(String::from_utf8_lossy(&percent_decode(path)?).into_owned())
    } else {
        Cow::Borrowed(path)
    };
    if !is_clean(&decoded)
        && let clean = mux_clean(&decoded)
        && clean != decoded
    {
        let mut location = go_escape_path(clean.as_bytes());
        if let Some(query) = query {
            location.push('?');
            location.push_str(query);
        }
        return Ok(EnginePath::Redirect { location });
    }
    Ok(EnginePath::Route(match decoded {
        Cow::Borrowed(decoded) => {
            let (version, api_path) = split_version(decoded);
            RoutePath {
                version: version.map(Cow::Borrowed),
                api_path: Cow::Borrowed(api_path),
            }
        }
        Cow::Owned(decoded) => {
            let (version, api_path) = split_version(&decoded);
            RoutePath {
                version: version.map(|v| Cow::Owned(v.to_owned())),
                api_path: Cow::Owned(api_path.to_owned()),
            }
        }
    }))
}

/// Splits `/v{version:[0-9.]+}/rest` into the version and `/rest`; any other path has none.
/// No bare route starts with `/v` and a digit or dot, so stripping never hides a bare route.
pub fn split_version(path: &str) -> (Option<&str>, &str) {
    let Some(rest) = path.strip_prefix("/v") else {
        return (None, path);
    };
    let digits = rest
        .bytes()
        .take_while(|b| b.is_ascii_digit() || *b == b'.')
        .count();
    if digits == 0 || rest.as_bytes().get(digits) != Some(&b'/') {
        return (None, path);
    }
    (Some(&rest[..digits]), &rest[digits..])
}

/// Go's `url.unescape(s, encodePath)`: every `%` must introduce two hex digits; `+` stays `+`.
fn percent_decode(s: &str) -> Result<Vec<u8>, PathError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = |b: Option<&u8>| b.and_then(|b| (*b as char).to_digit(16));
            match (hex(bytes.get(i + 1)), hex(bytes.get(i + 2))) {
                (Some(hi), Some(lo)) => {
                    out.push((hi * 16 + lo) as u8);
                    i += 3;
                }
                _ => {
                    let end = (i + 3).min(bytes.len());
                    return Err(PathError::BadEscape(
                        String::from_utf8_lossy(&bytes[i..end]).into_owned(),
                    ));
                }
            }
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Ok(out)
}

/// Whether [`mux_clean`] would return `p` unchanged, found without building anything: rooted,
/// no empty segment but a trailing one, no `.` or `..` segment.
fn is_clean(p: &str) -> bool {
    let Some(rest) = p.strip_prefix('/') else {
        return false;
    };
    let mut segments = rest.split('/').peekable();
    while let Some(segment) = segments.next() {
        let last = segments.peek().is_none();
        if (segment.is_empty() && !last) || segment == "." || segment == ".." {
            return false;
        }
    }
    true
}

/// gorilla/mux `cleanPath`: Go's `path.Clean` on the path made rooted, keeping a trailing
/// slash (but not doubling the root's).
pub fn mux_clean(p: &str) -> String {
    let mut clean = if p.starts_with('/') {
        path_clean(p)
    } else {
        path_clean(&format!("/{p}"))
    };
    if p.ends_with('/') && clean != "/" {
        clean.push('/');
    }
    clean
}

/// Go's `url.PathEscape`-like escaping of `URL.String()` for a path (`shouldEscape(c,
/// encodePath)`): what dockerd writes into a redirect's `Location`.
fn go_escape_path(path: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(path.len());
    for &b in path {
        let keep = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'_'
                    | b'.'
                    | b'~'
                    | b'$'
                    | b'&'
                    | b'+'
                    | b','
                    | b'/'
                    | b':'
                    | b';'
                    | b'='
                    | b'@'
            );
        if keep {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(HEX[(b >> 4) as usize] as char);
            out.push(HEX[(b & 15) as usize] as char);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_clean_agrees_with_mux_clean() {
        for p in [
            "/",
            "//",
            "/a",
            "/a/",
            "/a//",
            "/a//b",
            "/./a",
            "/a/.",
            "/a/./b",
            "/a/..",
            "/..",
            "/a/../b/",
            "/.a/..b/...",
            "/v1.43/_ping",
            "/containers/x/json",
            "a",
            "",
            "/a/b/c/",
            "/%2e",
            "/a/.b",
            "/ä/ö",
        ] {
            if is_clean(p) {
                assert_eq!(mux_clean(p), p, "{p:?}");
            } else {
                assert!(
                    p.is_empty() || !p.starts_with('/') || mux_clean(p) != p,
                    "{p:?}"
                );
            }
        }
    }

    fn route(path: &str) -> (Option<String>, String) {
        match engine_path(path, None).unwrap() {
            EnginePath::Route(RoutePath { version, api_path }) => {
                (version.map(Cow::into_owned), api_path.into_owned())
            }
            other => panic!("{path}: expected a route, got {other:?}"),
        }
    }

    fn redirect(path: &str, query: Option<&str>) -> String {
        match engine_path(path, query).unwrap() {
            EnginePath::Redirect { location } => location,
            other => panic!("{path}: expected a redirect, got {other:?}"),
        }
    }

    #[test]
    fn version_prefix_is_optional_and_single() {
        assert_eq!(route("/containers/json"), (None, "/containers/json".into()));
        assert_eq!(
            route("/v1.41/containers/json"),
            (Some("1.41".into()), "/containers/json".into())
        );
        assert_eq!(route("/v1./x"), (Some("1.".into()), "/x".into()));
        assert_eq!(route("/v../x"), (Some("..".into()), "/x".into()));
        assert_eq!(
            route("/v1.41/v1.41/x"),
            (Some("1.41".into()), "/v1.41/x".into())
        );
        assert_eq!(
            route("/v/containers/json"),
            (None, "/v/containers/json".into())
        );
        assert_eq!(
            route("/V1.41/containers/json"),
            (None, "/V1.41/containers/json".into())
        );
        assert_eq!(route("/v1.41"), (None, "/v1.41".into()));
        assert_eq!(route("/version"), (None, "/version".into()));
        assert_eq!(route("/volumes/x"), (None, "/volumes/x".into()));
        assert_eq!(route("/v1a/x"), (None, "/v1a/x".into()));
    }

    #[test]
    fn routes_on_the_decoded_path() {
        assert_eq!(route("/images/a%2Fb/push").1, "/images/a/b/push");
        assert_eq!(route("/v1.41/images/x/p%75sh").1, "/images/x/push");
        assert_eq!(
            route("/%761.41/images/x/push"),
            (Some("1.41".into()), "/images/x/push".into())
        );
        assert_eq!(route("/a+b").1, "/a+b");
        assert_eq!(route("/a%2Bb").1, "/a+b");
        // Invalid UTF-8 stays one non-slash character, as for Go's regexp.
        assert_eq!(route("/containers/%FF/json").1, "/containers/\u{FFFD}/json");
    }

    #[test]
    fn trailing_slash_is_kept_and_clean() {
        assert_eq!(route("/containers/json/").1, "/containers/json/");
        assert_eq!(route("/").1, "/");
    }

    #[test]
    fn non_clean_paths_redirect_like_gorilla() {
        assert_eq!(redirect("//containers/json", None), "/containers/json");
        assert_eq!(
            redirect("/v1.41//containers/json", None),
            "/v1.41/containers/json"
        );
        assert_eq!(redirect("/containers/./json", None), "/containers/json");
        assert_eq!(
            redirect("/containers/x/../json", Some("all=1")),
            "/containers/json?all=1"
        );
        assert_eq!(redirect("/a/b/../", None), "/a/");
        assert_eq!(redirect("/..", None), "/");
        assert_eq!(redirect("/../../x", Some("")), "/x?");
        // Decoding happens before cleaning: encoded dots and slashes count.
        assert_eq!(
            redirect("/images/%2e%2e/containers/create", None),
            "/containers/create"
        );
        assert_eq!(redirect("/images%2F%2Fx", None), "/images/x");
        // The Location is re-escaped the way Go's URL.String() does.
        assert_eq!(redirect("/a%20b//c", None), "/a%20b/c");
        assert_eq!(redirect("/a%3Fb//c", None), "/a%3Fb/c");
        assert_eq!(redirect("/x!'()*//", None), "/x%21%27%28%29%2A/");
    }

    #[test]
    fn engine_refusals() {
        assert_eq!(
            engine_path("/a%zzb", None),
            Err(PathError::BadEscape("%zz".into()))
        );
        assert_eq!(
            engine_path("/a%2", None),
            Err(PathError::BadEscape("%2".into()))
        );
        assert_eq!(engine_path("*", None), Err(PathError::NotAbsolute));
        assert_eq!(engine_path("", None), Err(PathError::NotAbsolute));
    }

    #[test]
    fn clean_matches_go_path_clean() {
        for (input, want) in [
            ("", "/"),
            ("/", "/"),
            ("//", "/"),
            ("/a//b", "/a/b"),
            ("/a/./b/.", "/a/b"),
            ("/a/b/..", "/a"),
            ("/a/b/../", "/a/"),
            ("/../a", "/a"),
            ("/a/.../b", "/a/.../b"),
            ("/.a/..b/", "/.a/..b/"),
        ] {
            assert_eq!(mux_clean(input), want, "{input:?}");
        }
    }
}
