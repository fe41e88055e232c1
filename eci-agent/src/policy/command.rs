//! The commandList: rules (a command or a group wildcard, see `vocabulary.rs`) compiled into the
//! allow/deny matcher that decides a classified request (`route.rs`).

use std::fmt;

use super::route::{Route, RouteKind, route_count};
use super::vocabulary::UNSUPPORTED;
pub use super::vocabulary::{CliCommand, CommandGroup};

/// One commandList entry, compiled.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Rule {
    Command(CliCommand),
    Wildcard(CommandGroup),
}

impl Rule {
    pub fn matches(self, command: CliCommand) -> bool {
        match self {
            Self::Command(c) => c == command,
            Self::Wildcard(g) => command.in_group(g),
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Command(c) => f.write_str(c.name()),
            Self::Wildcard(g) => f.write_str(g.wildcard()),
        }
    }
}

/// Why a commandList entry is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("empty command name")]
    Empty,
    #[error("{0:?} is not supported in the commandList (unsupported: {list})", list = UNSUPPORTED.join(", "))]
    Unsupported(String),
    #[error(
        "{0:?} is not a supported wildcard (use one of: container*, image*, volume*, network*, build*, system*, plugin*)"
    )]
    UnknownWildcard(String),
    #[error("{name:?} names a command group; use {hint:?} to cover all of its commands")]
    GroupName { name: String, hint: &'static str },
    #[error(
        "unknown docker command {0:?} (use a name as `docker --help` reports it, e.g. \"push\" or \"image push\")"
    )]
    Unknown(String),
}

/// Parses one entry of `commandList.commands`.
pub fn parse_rule(raw: &str) -> Result<Rule, CommandError> {
    let s = raw.trim();
    if s.is_empty() {
        return Err(CommandError::Empty);
    }
    let first = s.split_whitespace().next().unwrap_or(s);
    if UNSUPPORTED.contains(&first.trim_end_matches('*')) {
        return Err(CommandError::Unsupported(raw.to_owned()));
    }
    if s.contains('*') {
        return CommandGroup::from_wildcard(s)
            .map(Rule::Wildcard)
            .ok_or_else(|| CommandError::UnknownWildcard(raw.to_owned()));
    }
    if let Some(c) = CliCommand::from_name(s) {
        return Ok(Rule::Command(c));
    }
    let group_hint = match s {
        "container" => Some("container*"),
        "image" => Some("image*"),
        "volume" => Some("volume*"),
        "network" => Some("network*"),
        "builder" | "buildx" => Some("build*"),
        "system" => Some("system*"),
        "plugin" => Some("plugin*"),
        _ => None,
    };
    match group_hint {
        Some(hint) => Err(CommandError::GroupName {
            name: raw.to_owned(),
            hint,
        }),
        None => Err(CommandError::Unknown(raw.to_owned())),
    }
}

/// `commandList.type`.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub enum ListMode {
    /// Listed commands are blocked (the default).
    #[default]
    Deny,
    /// Only listed commands pass.
    Allow,
}

impl fmt::Display for ListMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Deny => "deny",
            Self::Allow => "allow",
        })
    }
}

/// The rule that decided, with the command of the route it matched (for the audit log).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct RuleMatch {
    pub rule: Rule,
    pub command: CliCommand,
}

/// Why a request may pass the commandList.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum AllowReason {
    /// `HEAD`/`GET /_ping`: version negotiation for every command.
    Ping,
    /// Allow list: an entry matched a command that sends this request.
    Listed(RuleMatch),
    /// Deny list: no entry matched the request's primary commands.
    NotListed,
    /// Deny list: the engine does not know this route and will answer 404 itself.
    UnknownRoute,
}

/// Why a request is blocked by the commandList.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum CommandDenyReason {
    /// Deny list: an entry matched one of the request's primary commands.
    Listed(RuleMatch),
    /// Allow list: no entry matched any command that sends this request.
    NotListed,
    /// Allow list: the route is not in the table, so nothing can allow it.
    UnknownRoute,
    /// Deny list: the route starts what the create gate never judges (a plugin, a swarm
    /// service); only an allow list that names it opens it to containers.
    Closed,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum CommandVerdict {
    Allow(AllowReason),
    Deny(CommandDenyReason),
}

impl CommandVerdict {
    pub fn is_allowed(&self) -> bool {
        matches!(self, Self::Allow(_))
    }
}

/// The compiled commandList: per route, the decision is precomputed once at load.
#[derive(Clone, Debug)]
pub struct CommandPolicy {
    mode: ListMode,
    rules: Vec<Rule>,
    /// Indexed by `Route::index`: deny mode = the rule that blocks it; allow mode = the rule that
    /// allows it.
    per_route: Vec<Option<RuleMatch>>,
}

impl Default for CommandPolicy {
    fn default() -> Self {
        Self::new(ListMode::Deny, Vec::new())
    }
}

impl CommandPolicy {
    pub fn new(mode: ListMode, rules: Vec<Rule>) -> Self {
        let per_route = super::route::routes()
            .iter()
            .map(|route| {
                let candidates: &[CliCommand] = match mode {
                    ListMode::Deny => route.primary(),
                    ListMode::Allow => route.granted_by(),
                };
                rules.iter().find_map(|&rule| {
                    candidates
                        .iter()
                        .find(|&&c| rule.matches(c))
                        .map(|&command| RuleMatch { rule, command })
                })
            })
            .collect::<Vec<_>>();
        debug_assert_eq!(per_route.len(), route_count());
        Self {
            mode,
            rules,
            per_route,
        }
    }

    pub fn mode(&self) -> ListMode {
        self.mode
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Decides one request. `route` is what [`super::route::classify`] returned for it.
    pub fn decide(&self, method: &str, route: Option<&'static Route>) -> CommandVerdict {
        let Some(route) = route else {
            return match self.mode {
                ListMode::Deny => CommandVerdict::Allow(AllowReason::UnknownRoute),
                ListMode::Allow => CommandVerdict::Deny(CommandDenyReason::UnknownRoute),
            };
        };
        if route.is_ping() && (method == "HEAD" || method == "GET") {
            return CommandVerdict::Allow(AllowReason::Ping);
        }
        let hit = self.per_route.get(route.index()).copied().flatten();
        if self.mode == ListMode::Deny && route.kind() == RouteKind::Closed {
            return CommandVerdict::Deny(
                hit.map_or(CommandDenyReason::Closed, CommandDenyReason::Listed),
            );
        }
        match (self.mode, hit) {
            (ListMode::Deny, Some(m)) => CommandVerdict::Deny(CommandDenyReason::Listed(m)),
            (ListMode::Deny, None) => CommandVerdict::Allow(AllowReason::NotListed),
            (ListMode::Allow, Some(m)) => CommandVerdict::Allow(AllowReason::Listed(m)),
            (ListMode::Allow, None) => CommandVerdict::Deny(CommandDenyReason::NotListed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::route::classify;

    fn policy(mode: ListMode, rules: &[&str]) -> CommandPolicy {
        CommandPolicy::new(mode, rules.iter().map(|r| parse_rule(r).unwrap()).collect())
    }

    #[test]
    fn every_name_is_unique() {
        let mut seen = std::collections::HashSet::new();
        for names in super::super::vocabulary::COMMANDS {
            for n in *names {
                assert!(seen.insert(*n), "{n} listed twice");
            }
        }
    }

    #[test]
    fn aliases_are_one_command() {
        for (a, b) in [
            ("ps", "container ls"),
            ("ps", "container  list"),
            ("push", "image push"),
            ("rmi", "image rm"),
            ("build", "builder build"),
            ("events", "system events"),
        ] {
            assert_eq!(
                CliCommand::from_name(a),
                CliCommand::from_name(b),
                "{a} vs {b}"
            );
            assert!(CliCommand::from_name(a).is_some());
        }
        assert_ne!(
            CliCommand::from_name("inspect"),
            CliCommand::from_name("container inspect")
        );
    }

    #[test]
    fn wildcards_cover_aliases() {
        let c = |n| CliCommand::from_name(n).unwrap();
        let cases = [
            ("ps", CommandGroup::Container, true),
            ("exec", CommandGroup::Container, true),
            ("images", CommandGroup::Image, true),
            ("push", CommandGroup::Image, true),
            ("build", CommandGroup::Image, true),
            ("build", CommandGroup::Build, true),
            ("bake", CommandGroup::Build, true),
            ("builder prune", CommandGroup::Build, true),
            ("search", CommandGroup::Image, false),
            ("version", CommandGroup::System, false),
            ("info", CommandGroup::System, true),
            ("inspect", CommandGroup::Container, false),
            ("volume ls", CommandGroup::Volume, true),
            ("network rm", CommandGroup::Network, true),
            ("login", CommandGroup::System, false),
        ];
        for (name, group, want) in cases {
            assert_eq!(c(name).in_group(group), want, "{name} in {group:?}");
        }
    }

    #[test]
    fn parse_rule_errors() {
        assert!(matches!(
            parse_rule("compose"),
            Err(CommandError::Unsupported(_))
        ));
        assert_eq!(
            parse_rule("plugin*").unwrap(),
            Rule::Wildcard(CommandGroup::Plugin)
        );
        assert!(parse_rule("plugin install").is_ok());
        assert!(matches!(
            parse_rule("plugin"),
            Err(CommandError::GroupName {
                hint: "plugin*",
                ..
            })
        ));
        assert!(matches!(
            parse_rule("scout*"),
            Err(CommandError::Unsupported(_))
        ));
        assert!(matches!(
            parse_rule("swarm*"),
            Err(CommandError::UnknownWildcard(_))
        ));
        assert!(matches!(
            parse_rule("cont*"),
            Err(CommandError::UnknownWildcard(_))
        ));
        assert!(matches!(
            parse_rule("container"),
            Err(CommandError::GroupName {
                hint: "container*",
                ..
            })
        ));
        assert!(matches!(
            parse_rule("frobnicate"),
            Err(CommandError::Unknown(_))
        ));
        assert!(matches!(parse_rule(" "), Err(CommandError::Empty)));
        assert_eq!(
            parse_rule("image*").unwrap(),
            Rule::Wildcard(CommandGroup::Image)
        );
        for u in UNSUPPORTED {
            assert!(parse_rule(u).is_err());
        }
    }

    /// (mode, rules, method, path, allowed)
    #[test]
    fn decision_table() {
        use ListMode::{Allow, Deny};
        let cases: &[(ListMode, &[&str], &str, &str, bool)] = &[
            (Deny, &["push"], "POST", "/images/myimage/push", false),
            (
                Deny,
                &["push"],
                "POST",
                "/images/docker.io/library/myimage/push",
                false,
            ),
            (Deny, &["image push"], "POST", "/images/x/push", false),
            (Deny, &["push"], "GET", "/containers/json", true),
            (Deny, &["push"], "HEAD", "/_ping", true),
            (Deny, &["build", "push"], "POST", "/build", false),
            (Deny, &["build"], "POST", "/grpc", false),
            (Deny, &["build"], "POST", "/session", false),
            (
                Deny,
                &["image*"],
                "POST",
                "/images/create?fromImage=x",
                false,
            ),
            (Deny, &["image*"], "POST", "/images/create?fromSrc=-", false),
            (Deny, &["image*"], "GET", "/images/search", true),
            (Deny, &["image*"], "GET", "/images/json", false),
            (Deny, &["container*"], "GET", "/containers/json", false),
            (Deny, &["container*"], "POST", "/exec/abc/start", false),
            (Deny, &["container*"], "GET", "/images/json", true),
            (Deny, &["ps"], "GET", "/containers/json", false),
            // Primary only: denying inspect must not break exec, denying events must not break stats.
            (Deny, &["inspect"], "POST", "/containers/abc/exec", true),
            (Deny, &["events"], "GET", "/containers/abc/stats", true),
            (Deny, &["kill"], "POST", "/containers/abc/wait", true),
            (Deny, &["kill"], "POST", "/containers/abc/kill", false),
            (Deny, &["system*"], "GET", "/info", false),
            (Deny, &["system*"], "GET", "/version", true),
            (Deny, &["volume*"], "DELETE", "/volumes/x", false),
            (Deny, &["network*"], "GET", "/networks/abc", false),
            (
                Deny,
                &["checkpoint rm"],
                "DELETE",
                "/containers/c/checkpoints/cp1",
                false,
            ),
            (
                Deny,
                &["rm"],
                "DELETE",
                "/containers/c/checkpoints/cp1",
                true,
            ),
            (Deny, &["rm"], "DELETE", "/containers/c", false),
            (Deny, &["ps"], "GET", "/no/such/route", true),
            (Allow, &["ps"], "GET", "/containers/json", true),
            (Allow, &["ps"], "HEAD", "/_ping", true),
            (Allow, &["ps"], "GET", "/_ping", true),
            (Allow, &["ps"], "POST", "/images/x/push", false),
            (Allow, &["ps"], "GET", "/no/such/route", false),
            // Any sender: allowing run allows the attach/wait/start it sends.
            (Allow, &["run"], "POST", "/containers/create", true),
            (Allow, &["run"], "POST", "/containers/abc/wait", true),
            (Allow, &["run"], "POST", "/containers/abc/attach", true),
            (
                Allow,
                &["run"],
                "POST",
                "/images/create?fromImage=x&tag=1",
                true,
            ),
            // `docker import` is its own command, not `pull`'s (nor `run`'s).
            (Allow, &["run"], "POST", "/images/create?fromSrc=-", false),
            (Allow, &["pull"], "POST", "/images/create?fromImage=x", true),
            (
                Allow,
                &["pull"],
                "POST",
                "/images/create?fromSrc=-&repo=x",
                false,
            ),
            (
                Allow,
                &["pull"],
                "POST",
                "/images/create?fromImage=&fromSrc=-",
                false,
            ),
            (Allow, &["import"], "POST", "/images/create?fromSrc=-", true),
            (
                Allow,
                &["import"],
                "POST",
                "/images/create?fromImage=x",
                false,
            ),
            (
                Deny,
                &["import"],
                "POST",
                "/images/create?fromImage=x",
                true,
            ),
            (
                Deny,
                &["import"],
                "POST",
                "/images/create?fromSrc=http://h/x",
                false,
            ),
            (Deny, &["pull"], "POST", "/images/create?fromSrc=-", true),
            (Deny, &["pull"], "POST", "/images/create?fromImage=x", false),
            (Allow, &["exec"], "GET", "/containers/abc/json", true),
            (Allow, &["container*"], "GET", "/containers/abc/json", true),
            (Allow, &["container*"], "POST", "/images/x/push", false),
            (Allow, &[], "GET", "/containers/json", false),
            // Listing X grants what X needs, never another command's own effect.
            (Allow, &["build", "ps", "images"], "POST", "/build", true),
            (
                Allow,
                &["build", "ps", "images"],
                "POST",
                "/images/x/push",
                false,
            ),
            (
                Allow,
                &["build", "ps", "images"],
                "POST",
                "/images/load",
                false,
            ),
            (Allow, &["build"], "POST", "/grpc", true),
            (Allow, &["buildx ls"], "POST", "/grpc", false),
            (Allow, &["buildx du"], "POST", "/grpc", false),
            (Allow, &["inspect"], "POST", "/grpc", false),
            (Allow, &["run"], "PUT", "/containers/other/archive", false),
            (Allow, &["run"], "HEAD", "/containers/other/archive", false),
            (Allow, &["run"], "GET", "/containers/other/archive", false),
            (Allow, &["run"], "POST", "/containers/other/pause", false),
            (Allow, &["run"], "POST", "/containers/other/unpause", false),
            (
                Allow,
                &["unpause"],
                "POST",
                "/containers/other/unpause",
                true,
            ),
            (
                Allow,
                &["unpause"],
                "POST",
                "/containers/other/pause",
                false,
            ),
            (Allow, &["cp"], "HEAD", "/containers/other/archive", true),
            (Allow, &["cp"], "GET", "/containers/other/archive", true),
            (Deny, &["cp"], "HEAD", "/containers/other/archive", false),
            (Deny, &["cp"], "GET", "/containers/other/archive", false),
            (Allow, &["run"], "POST", "/containers/other/copy", false),
            (Allow, &["cp"], "PUT", "/containers/other/archive", true),
            (Allow, &["push"], "POST", "/images/x/push", true),
            (Allow, &["image*"], "POST", "/images/load", true),
            (Allow, &["run"], "POST", "/containers/abc/exec", false),
            // Plugins and swarm services: closed under a deny list, opened by naming them.
            (Deny, &[], "POST", "/plugins/pull", false),
            (Deny, &[], "POST", "/plugins/create", false),
            (Deny, &[], "POST", "/plugins/p/enable", false),
            (Deny, &[], "POST", "/plugins/p/upgrade", false),
            (Deny, &[], "POST", "/plugins/p/set", false),
            (Deny, &[], "GET", "/plugins", true),
            (Deny, &[], "GET", "/plugins/privileges", false),
            (Deny, &[], "POST", "/plugins/p/disable", true),
            (Deny, &[], "POST", "/services/create", false),
            (Deny, &[], "POST", "/services/s/update", false),
            (Deny, &[], "POST", "/swarm/init", false),
            (Deny, &[], "POST", "/swarm/join", false),
            (Deny, &[], "GET", "/services", true),
            (Allow, &["plugin install"], "POST", "/plugins/pull", true),
            (
                Allow,
                &["plugin install"],
                "POST",
                "/plugins/p/enable",
                true,
            ),
            (Allow, &["plugin*"], "POST", "/plugins/create", true),
            (Allow, &["run"], "POST", "/plugins/pull", false),
            (Allow, &["service create"], "POST", "/services/create", true),
            (Deny, &[], "POST", "/images/x/push", true),
        ];
        for (mode, rules, method, path, want) in cases {
            let p = policy(*mode, rules);
            let (path, query) = path
                .split_once('?')
                .map_or((*path, None), |(p, q)| (p, Some(q)));
            let v = p.decide(method, classify(method, path, query));
            assert_eq!(
                v.is_allowed(),
                *want,
                "{mode} {rules:?}: {method} {path} -> {v:?}"
            );
        }
    }

    #[test]
    fn deny_verdict_names_rule_and_command() {
        let p = policy(ListMode::Deny, &["image push"]);
        let v = p.decide("POST", classify("POST", "/images/a/push", None));
        let push = CliCommand::from_name("push").unwrap();
        assert_eq!(
            v,
            CommandVerdict::Deny(CommandDenyReason::Listed(RuleMatch {
                rule: Rule::Command(push),
                command: push
            }))
        );
    }
}
