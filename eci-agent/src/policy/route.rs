//! The Engine API route table (`routes.tsv`, embedded) and the classifier that finds the route a
//! request reaches, the way the daemon's gorilla/mux router does: routes are tried in
//! registration order and the first whose method and path template match wins.
//!
//! Callers pass the path the engine would route: percent-decoded, clean, and without the
//! optional `/vX.Y` prefix (the sidecar does that normalisation), and the raw query: one route
//! serves two commands, told apart by a form value in the engine's handler (`POST
//! /images/create` pulls when `fromImage` is set and imports when not), and the table has a row
//! for each ([`Route::when_empty`]).

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
    /// `PATTERN?KEY=` in the table: this row is the request only when the form value `KEY` is
    /// empty or absent; otherwise the next row of the same pattern is.
    when_empty: Option<&'static str>,
    /// Another row shares this pattern, split by a form value: the engine's handler reads the
    /// form, so a form body could change which command runs (the sidecar strips its
    /// `Content-Type`, see [`Route::reads_form`]).
    reads_form: bool,
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

    /// The form value that must be empty or absent for this row to be the request
    /// (`fromImage` for `docker import`).
    pub fn when_empty(&self) -> Option<&'static str> {
        self.when_empty
    }

    /// Whether the command this request is depends on a form value, which Go reads from a form
    /// body (`Content-Type: application/x-www-form-urlencoded`) before the query. The sidecar
    /// removes the `Content-Type` of such requests, so the query alone decides, for the engine
    /// as for the table (no client sends a form body to them).
    pub fn reads_form(&self) -> bool {
        self.reads_form
    }

    /// Whether this row is the request with `query` (the raw text after `?`).
    fn applies(&self, query: Option<&str>) -> bool {
        self.when_empty.is_none_or(|key| {
            query
                .and_then(|q| super::go_query::form_value(q, key))
                .is_none_or(|v| v.is_empty())
        })
    }

    /// `/_ping`, which every client needs for API version negotiation.
    pub fn is_ping(&self) -> bool {
        self.pattern == "/_ping"
    }

    /// The pattern's first path segment when it is literal text (`containers` for
    /// `/containers/{name:.*}/json`, `_ping` for `/_ping`); `None` when a variable begins or
    /// ends inside it.
    fn first_segment(&self) -> Option<&'static str> {
        let Some(Part::Literal(lit)) = self.parts.first() else {
            return None;
        };
        let rest = lit.strip_prefix('/')?;
        match rest.split_once('/') {
            Some((seg, _)) => Some(seg),
            None if self.parts.len() == 1 => Some(rest),
            None => None,
        }
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.method, self.pattern)?;
        match self.when_empty {
            Some(key) => write!(f, " (no {key})"),
            None => Ok(()),
        }
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

/// The route the engine dispatches `method path` to, or `None` when it would answer 404; for a
/// route split by a form value, the row `query` (the raw text after `?`) selects.
///
/// The first match in registration order, as the daemon's router finds it, but only among the
/// routes that can match at all: those of `method` whose pattern starts with the path's first
/// segment, or whose first segment is a variable ([`Index`]). On the sidecar's path for every
/// request; a scan of the whole table cost about 1,600 instructions for `/_ping`.
pub fn classify(method: &str, path: &str, query: Option<&str>) -> Option<&'static Route> {
    index().classify(routes(), method, path, query)
}

/// For each method, the routes worth trying per first path segment, each list in registration
/// order. A route whose first segment is literal (`/containers/…`, `/_ping`) can only match
/// paths with that first segment; one whose first segment holds a variable (`/{anyroute:.*}`)
/// is a candidate for every path of its method.
struct Index {
    methods: Vec<MethodRoutes>,
}

struct MethodRoutes {
    method: &'static str,
    /// (first segment, the routes with it or with a variable one).
    segments: Vec<(&'static str, Vec<u16>)>,
    /// The routes with a variable first segment alone, for any other path.
    variable: Vec<u16>,
}

impl Index {
    fn build(routes: &[Route]) -> Self {
        let index = |i: usize| u16::try_from(i).expect("the route table has fewer than 65536 rows");
        let mut methods: Vec<MethodRoutes> = Vec::new();
        for route in routes {
            if !methods.iter().any(|m| m.method == route.method) {
                let of_method = || routes.iter().filter(|r| r.method == route.method);
                let mut segments: Vec<(&'static str, Vec<u16>)> = Vec::new();
                for seg in of_method().filter_map(Route::first_segment) {
                    if !segments.iter().any(|(s, _)| *s == seg) {
                        let list = of_method()
                            .filter(|r| r.first_segment().is_none_or(|s| s == seg))
                            .map(|r| index(r.index))
                            .collect();
                        segments.push((seg, list));
                    }
                }
                let variable = of_method()
                    .filter(|r| r.first_segment().is_none())
                    .map(|r| index(r.index))
                    .collect();
                methods.push(MethodRoutes {
                    method: route.method,
                    segments,
                    variable,
                });
            }
        }
        Self { methods }
    }

    /// The first of `routes` (the table the index was built from) that `method path` matches.
    fn classify<'r>(
        &self,
        routes: &'r [Route],
        method: &str,
        path: &str,
        query: Option<&str>,
    ) -> Option<&'r Route> {
        self.candidates(method, path)
            .iter()
            .map(|&i| &routes[usize::from(i)])
            .find(|r| match_parts(&r.parts, path) && r.applies(query))
    }

    fn candidates(&self, method: &str, path: &str) -> &[u16] {
        let Some(m) = self.methods.iter().find(|m| m.method == method) else {
            return &[];
        };
        // By byte: a char searcher cost more than the rest of the lookup.
        let seg = path.strip_prefix('/').map_or("", |rest| {
            rest.bytes()
                .position(|b| b == b'/')
                .map_or(rest, |slash| &rest[..slash])
        });
        m.segments
            .iter()
            .find(|(s, _)| *s == seg)
            .map_or(&m.variable, |(_, list)| list)
    }
}

fn index() -> &'static Index {
    static INDEX: OnceLock<Index> = OnceLock::new();
    INDEX.get_or_init(|| Index::build(routes()))
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
    // A row split by a form value, and the row it falls back to, read the form.
    let split: Vec<(&str, &str)> = out
        .iter()
        .filter(|r| r.when_empty.is_some())
        .map(|r| (r.method, r.pattern))
        .collect();
    for r in &mut out {
        r.reads_form = split.contains(&(r.method, r.pattern));
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
    let (pattern, when_empty) = match pattern.split_once('?') {
        Some((pattern, cond)) => match cond.strip_suffix('=') {
            Some(key) if !key.is_empty() => (pattern, Some(key)),
            _ => return Err(format!("bad query condition {cond:?} (expected KEY=)")),
        },
        None => (pattern, None),
    };
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
        when_empty,
        reads_form: false,
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
        assert_eq!(routes.len(), 124);
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

    /// `POST /images/create` is `docker pull` when the engine's handler reads a `fromImage`, and
    /// `docker import` (of stdin or a URL) when not.
    #[test]
    fn a_form_value_splits_pull_from_import() {
        let primary = |query| {
            let r = classify("POST", "/images/create", query).unwrap();
            assert!(r.reads_form(), "{r}");
            r.primary()[0].name()
        };
        assert_eq!(primary(Some("fromImage=alpine&tag=3")), "pull");
        assert_eq!(primary(Some("tag=3&fromImage=alpine")), "pull");
        assert_eq!(primary(Some("fromSrc=-&repo=x&tag=1")), "import");
        assert_eq!(primary(Some("fromSrc=http%3A%2F%2Fh%2Fx.tar")), "import");
        assert_eq!(primary(Some("fromImage=&fromSrc=-")), "import");
        assert_eq!(primary(Some("fromImage=&fromImage=alpine")), "import");
        assert_eq!(primary(Some("")), "import");
        assert_eq!(primary(None), "import");
        let import = classify("POST", "/images/create", None).unwrap();
        assert_eq!(import.kind(), RouteKind::Is);
        assert_eq!(import.to_string(), "POST /images/create (no fromImage)");
        assert!(!classify("GET", "/images/json", None).unwrap().reads_form());
        // Every split row falls back to a later row of its pattern with no condition.
        for (i, r) in routes().iter().enumerate() {
            if r.when_empty().is_some() {
                assert!(
                    routes()[i + 1..].iter().any(|o| o.method == r.method
                        && o.pattern == r.pattern
                        && o.when_empty().is_none()),
                    "{r}"
                );
            }
        }
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
            let got = classify(method, path, None).map(Route::pattern);
            assert_eq!(got, *want, "{method} {path:?}");
        }
    }

    /// Paths for every pattern (variables as empty, one segment, several) and around them.
    fn sample_paths() -> Vec<String> {
        let mut paths = vec![
            String::new(),
            "/".into(),
            "//".into(),
            "_ping".into(),
            "/nope".into(),
            "/containers".into(),
        ];
        for r in routes() {
            for value in ["", "x", "a/b", "a\nb"] {
                let mut p = String::new();
                for part in &r.parts {
                    match part {
                        Part::Literal(l) => p.push_str(l),
                        _ => p.push_str(value),
                    }
                }
                paths.push(format!("{p}/"));
                paths.push(format!("{p}x"));
                paths.push(p[..p.len() / 2].to_owned());
                paths.push(p);
            }
        }
        paths
    }

    #[test]
    fn the_index_finds_what_a_scan_of_the_table_finds() {
        let mut methods: Vec<&str> = routes().iter().map(Route::method).collect();
        methods.extend(["get", "PATCH", ""]);
        let paths = sample_paths();
        let mut found = 0;
        for method in &methods {
            for path in &paths {
                let scan = routes().iter().find(|r| {
                    r.method == *method && match_parts(&r.parts, path) && r.applies(None)
                });
                let got = classify(method, path, None);
                assert_eq!(
                    got.map(Route::index),
                    scan.map(Route::index),
                    "{method} {path:?}"
                );
                found += usize::from(got.is_some());
            }
        }
        // Every route is reached by its own sample path.
        assert!(found >= routes().len(), "{found}");
    }

    #[test]
    fn a_variable_first_segment_is_tried_for_every_path_in_its_place() {
        // The real table has one such route (OPTIONS, alone in its method); this one mixes them.
        const TABLE: &str = "GET\t/a/one\tr\tother\tps\t\n\
                             GET\t/{any:.*}/x\tr\tother\tps\t\n\
                             GET\t/a/{x}\tr\tother\tps\t\n\
                             GET\t/b\tr\tother\tps\t\n";
        let routes = parse_table(TABLE);
        let index = Index::build(&routes);
        for (path, want) in [
            ("/a/one", Some("/a/one")),
            ("/a/x", Some("/{any:.*}/x")),
            ("/a/two", Some("/a/{x}")),
            ("/b", Some("/b")),
            ("/b/x", Some("/{any:.*}/x")),
            ("/c/d/x", Some("/{any:.*}/x")),
            ("/c", None),
        ] {
            let got = index
                .classify(&routes, "GET", path, None)
                .map(Route::pattern);
            assert_eq!(got, want, "{path}");
        }
    }

    #[test]
    fn matcher_handles_unicode_and_empty() {
        assert!(classify("GET", "/containers/é/json", None).is_some());
        assert!(classify("GET", "", None).is_none());
        assert!(classify("", "/_ping", None).is_none());
    }
}
