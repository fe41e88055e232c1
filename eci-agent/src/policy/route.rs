//! The Engine API route table (`routes.tsv`, embedded) and the classifier that finds the route a
//! request reaches, the way the daemon's gorilla/mux router does: routes are tried in
//! registration order and the first whose method and path template match wins.
//!
//! Callers pass the path the engine would route: percent-decoded, clean, and without the
//! optional `/vX.Y` prefix (the sidecar does that normalisation).

use std::{fmt, sync::OnceLock};

use super::vocabulary::CliCommand;

const TABLE: &str = include_str!("routes.tsv");

/// The `group` column: which family of commands a route belongs to (informational; wildcards
/// are matched on the commands themselves).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum RouteGroup {
    Container,
    Exec,
    Image,
    Build,
    Volume,
    Network,
    System,
    Other,
}

impl RouteGroup {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "container" => Self::Container,
            "exec" => Self::Exec,
            "image" => Self::Image,
            "build" => Self::Build,
            "volume" => Self::Volume,
            "network" => Self::Network,
            "system" => Self::System,
            "other" => Self::Other,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Container => "container",
            Self::Exec => "exec",
            Self::Image => "image",
            Self::Build => "build",
            Self::Volume => "volume",
            Self::Network => "network",
            Self::System => "system",
            Self::Other => "other",
        }
    }
}

/// What listing a command grants on a route (the `kind` column): the one definition of
/// "routes a command needs" versus "routes that are a command".
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum RouteKind {
    /// Its senders need it: an allow list that names any of them grants it.
    Needs,
    /// It is its primary commands' own effect (push, load, copy into a container, exec, a
    /// BuildKit solve): only they grant it.
    Is,
    /// It starts what the create gate never judges (plugins, swarm services, joining a swarm):
    /// closed to container callers under a deny list; its senders grant it under an allow list.
    Closed,
}

impl RouteKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Needs => "needed by its senders",
            Self::Is => "is its primary commands' own effect",
            Self::Closed => "closed to containers unless allowed",
        }
    }
}

/// One piece of a gorilla/mux path template.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Part {
    Literal(&'static str),
    /// `{name}`: `[^/]+`.
    Segment,
    /// `{name:.*}`: Go's `.` does not match `\n`, so neither does this.
    Any,
    /// `{name:.+}`.
    AnyNonEmpty,
}

/// One Engine API route.
#[derive(Debug)]
pub struct Route {
    index: usize,
    method: &'static str,
    pattern: &'static str,
    router: &'static str,
    removed: bool,
    group: RouteGroup,
    parts: Vec<Part>,
    primary: Vec<CliCommand>,
    senders: Vec<CliCommand>,
    kind: RouteKind,
}

impl Route {
    /// Position in the daemon's registration order.
    pub fn index(&self) -> usize {
        self.index
    }

    pub fn method(&self) -> &'static str {
        self.method
    }

    /// The gorilla/mux template, e.g. `/images/{name:.*}/push`.
    pub fn pattern(&self) -> &'static str {
        self.pattern
    }

    /// The moby router that registers it (`container`, `image`, …).
    pub fn router(&self) -> &'static str {
        self.router
    }

    /// Removed from current engines but still served by older ones (`POST /containers/{name}/copy`).
    pub fn removed(&self) -> bool {
        self.removed
    }

    pub fn group(&self) -> RouteGroup {
        self.group
    }

    /// The commands whose purpose is this request; a deny list blocks on these.
    pub fn primary(&self) -> &[CliCommand] {
        &self.primary
    }

    /// Every command that sends this request (a superset of `primary`); an allow list passes
    /// on these.
    pub fn senders(&self) -> &[CliCommand] {
        &self.senders
    }

    pub fn kind(&self) -> RouteKind {
        self.kind
    }

    /// The commands whose listing grants this route under an allow list: its senders when they
    /// need it, only its primary commands when it is their effect.
    pub fn granted_by(&self) -> &[CliCommand] {
        match self.kind {
            RouteKind::Needs | RouteKind::Closed => &self.senders,
            RouteKind::Is => &self.primary,
        }
    }

    /// `/_ping`, which every client needs for API version negotiation.
    pub fn is_ping(&self) -> bool {
        self.pattern == "/_ping"
    }

    fn matches(&self, method: &str, path: &str) -> bool {
        self.method == method && match_parts(&self.parts, path)
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.method, self.pattern)
    }
}

/// All routes, in the daemon's registration order.
pub fn routes() -> &'static [Route] {
    static ROUTES: OnceLock<Vec<Route>> = OnceLock::new();
    ROUTES.get_or_init(|| parse_table(TABLE))
}

pub fn route_count() -> usize {
    routes().len()
}

/// The route the engine dispatches `method path` to, or `None` when it would answer 404.
pub fn classify(method: &str, path: &str) -> Option<&'static Route> {
    routes().iter().find(|r| r.matches(method, path))
}

fn parse_table(table: &'static str) -> Vec<Route> {
    let mut out = Vec::new();
    for (lineno, line) in table.lines().enumerate() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        // The table is compiled in; a malformed row is a bug that the unit tests catch.
        let route = parse_row(out.len(), line)
            .unwrap_or_else(|e| panic!("routes.tsv line {}: {e}", lineno + 1));
        out.push(route);
    }
    out
}

fn parse_row(index: usize, line: &'static str) -> Result<Route, String> {
    let cols: Vec<&'static str> = line.split('\t').collect();
    let (method, pattern, router, group, primary, senders, kind) = match cols[..] {
        [m, p, r, g, pr, s] => (m, p, r, g, pr, s, RouteKind::Needs),
        [m, p, r, g, pr, s, "is"] => (m, p, r, g, pr, s, RouteKind::Is),
        [m, p, r, g, pr, s, "closed"] => (m, p, r, g, pr, s, RouteKind::Closed),
        [.., k] if cols.len() == 7 => return Err(format!("bad kind column {k:?}")),
        _ => return Err(format!("expected 6 or 7 columns, got {}", cols.len())),
    };
    let command =
        |name: &str| CliCommand::from_name(name).ok_or_else(|| format!("unknown command {name:?}"));
    let primary = primary
        .split('|')
        .filter(|s| !s.is_empty())
        .map(command)
        .collect::<Result<Vec<_>, _>>()?;
    let mut all = senders
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(command)
        .collect::<Result<Vec<_>, _>>()?;
    all.extend(primary.iter().copied());
    all.sort();
    all.dedup();
    let (router, removed) = match router.split_once(' ') {
        Some((r, "removed")) => (r, true),
        None => (router, false),
        Some(_) => return Err(format!("bad router column {router:?}")),
    };
    Ok(Route {
        index,
        method,
        pattern,
        router,
        removed,
        group: RouteGroup::parse(group).ok_or_else(|| format!("bad group {group:?}"))?,
        parts: compile_template(pattern)?,
        primary,
        senders: all,
        kind,
    })
}

fn compile_template(pattern: &'static str) -> Result<Vec<Part>, String> {
    let mut parts = Vec::new();
    let mut rest = pattern;
    while let Some(open) = rest.find('{') {
        if open > 0 {
            parts.push(Part::Literal(&rest[..open]));
        }
        let close = rest[open..].find('}').ok_or("unclosed {")? + open;
        let var = &rest[open + 1..close];
        parts.push(match var.split_once(':').map(|(_, re)| re) {
            None => Part::Segment,
            Some(".*") => Part::Any,
            Some(".+") => Part::AnyNonEmpty,
            Some(other) => return Err(format!("unsupported variable pattern {other:?}")),
        });
        rest = &rest[close + 1..];
    }
    if !rest.is_empty() {
        parts.push(Part::Literal(rest));
    }
    Ok(parts)
}

/// Anchored match of a template against a path: does some assignment of the variables exist?
/// (Which assignment RE2 would pick does not matter for routing.)
fn match_parts(parts: &[Part], path: &str) -> bool {
    let Some((first, rest)) = parts.split_first() else {
        return path.is_empty();
    };
    match *first {
        Part::Literal(lit) => path.strip_prefix(lit).is_some_and(|p| match_parts(rest, p)),
        Part::Segment | Part::Any | Part::AnyNonEmpty => {
            let allowed = |c: char| match *first {
                Part::Segment => c != '/',
                _ => c != '\n',
            };
            let min = usize::from(!matches!(*first, Part::Any));
            // Candidate ends: every char boundary up to the first char the variable cannot hold.
            let limit = path.find(|c: char| !allowed(c)).unwrap_or(path.len());
            (min..=limit)
                .rev()
                .filter(|&end| path.is_char_boundary(end))
                .any(|end| match_parts(rest, &path[end..]))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_parses_and_is_complete() {
        let routes = routes();
        assert_eq!(routes.len(), 123);
        for (i, r) in routes.iter().enumerate() {
            assert_eq!(r.index(), i);
            for p in r.primary() {
                assert!(
                    r.senders().contains(p),
                    "{r}: primary {p} not among senders"
                );
            }
        }
        // Every router appears in the daemon's order (checkpoint before container, grpc last).
        let order = [
            "checkpoint",
            "container",
            "image",
            "system",
            "volume",
            "build",
            "session",
            "swarm",
            "plugin",
            "distribution",
            "network",
            "debug",
            "grpc",
        ];
        let seen: Vec<&str> = routes
            .iter()
            .map(|r| r.router())
            .fold(Vec::new(), |mut v, r| {
                if v.last() != Some(&r) {
                    v.push(r);
                }
                v
            });
        assert_eq!(seen, order);
    }

    #[test]
    fn group_column_agrees_with_command_groups() {
        use crate::policy::vocabulary::CommandGroup;
        for r in routes() {
            let want = match r.group() {
                RouteGroup::Container | RouteGroup::Exec => CommandGroup::Container,
                RouteGroup::Image => CommandGroup::Image,
                RouteGroup::Build => CommandGroup::Build,
                RouteGroup::Volume => CommandGroup::Volume,
                RouteGroup::Network => CommandGroup::Network,
                RouteGroup::System => CommandGroup::System,
                RouteGroup::Other => continue,
            };
            if r.primary().is_empty() {
                continue;
            }
            assert!(
                r.primary().iter().any(|c| c.in_group(want)),
                "{r} (group {}) has no primary command in {want:?}",
                r.group().as_str()
            );
        }
    }

    /// (method, path, expected pattern or None)
    #[test]
    fn classifies_like_gorilla_mux() {
        let cases: &[(&str, &str, Option<&str>)] = &[
            ("GET", "/_ping", Some("/_ping")),
            ("HEAD", "/_ping", Some("/_ping")),
            ("GET", "/containers/json", Some("/containers/json")),
            (
                "GET",
                "/containers/abc/json",
                Some("/containers/{name:.*}/json"),
            ),
            (
                "GET",
                "/containers/a/b/json",
                Some("/containers/{name:.*}/json"),
            ),
            ("HEAD", "/containers/json", None),
            (
                "POST",
                "/images/myimage/push",
                Some("/images/{name:.*}/push"),
            ),
            (
                "POST",
                "/images/docker.io/library/myimage/push",
                Some("/images/{name:.*}/push"),
            ),
            (
                "GET",
                "/images/foo/json/history",
                Some("/images/{name:.*}/history"),
            ),
            ("GET", "/images/json", Some("/images/json")),
            (
                "DELETE",
                "/images/docker.io/library/alpine:3.20",
                Some("/images/{name:.*}"),
            ),
            (
                "DELETE",
                "/containers/c/checkpoints/cp",
                Some("/containers/{name}/checkpoints/{checkpoint}"),
            ),
            (
                "DELETE",
                "/containers/a/b/checkpoints/cp",
                Some("/containers/{name:.*}"),
            ),
            ("DELETE", "/containers/abc", Some("/containers/{name:.*}")),
            ("DELETE", "/containers/", Some("/containers/{name:.*}")),
            ("GET", "/volumes/", Some("/volumes/{name:.*}")),
            ("GET", "/volumes", Some("/volumes")),
            ("GET", "/networks/", Some("/networks/")),
            ("GET", "/networks/x", Some("/networks/{id:.+}")),
            ("GET", "/services/x", Some("/services/{id}")),
            ("GET", "/services/x/y", None),
            ("GET", "/services/x/logs", Some("/services/{id}/logs")),
            ("POST", "/grpc", Some("/grpc")),
            ("POST", "/session", Some("/session")),
            ("OPTIONS", "/anything/at/all", Some("/{anyroute:.*}")),
            ("POST", "/containers/create", Some("/containers/create")),
            (
                "POST",
                "/containers/x/copy",
                Some("/containers/{name:.*}/copy"),
            ),
            ("GET", "/nope", None),
            ("GET", "/debug/pprof/heap", Some("/debug/pprof/{name}")),
            ("GET", "/debug/pprof/cmdline", Some("/debug/pprof/cmdline")),
            // Go's regexp `.` stops at a newline: the engine 404s such a name.
            ("GET", "/containers/a\nb/json", None),
            ("get", "/containers/json", None),
            ("GET", "/Containers/json", None),
        ];
        for (method, path, want) in cases {
            let got = classify(method, path).map(Route::pattern);
            assert_eq!(got, *want, "{method} {path:?}");
        }
    }

    #[test]
    fn matcher_handles_unicode_and_empty() {
        assert!(classify("GET", "/containers/é/json").is_some());
        assert!(classify("GET", "").is_none());
        assert!(classify("", "/_ping").is_none());
    }
}
