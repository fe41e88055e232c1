//! Classify and decide: the caller and the engine's view of the path in, admission out. The
//! route table and the commandList verdict are the policy module's; this only applies them to
//! the kind of caller.

use crate::policy::{
    CommandPolicy, CommandVerdict,
    command::{AllowReason, CommandDenyReason, Rule, RuleMatch},
    messages,
    route::{self, Route},
};

use super::path::RoutePath;
use crate::ids::CallerKind;

/// What the sidecar needs from the running policy, read once per request.
pub trait CommandGate: Send + Sync + 'static {
    /// False when `enhancedContainerIsolation.value` is false: nothing is filtered.
    fn eci_enabled(&self) -> bool;
    /// The compiled commandList.
    fn commands(&self) -> &CommandPolicy;
    /// Where an administrator changes the list, as the refusal text names it.
    fn settings_location(&self) -> String;
}

/// The agent's running policy: admin-settings.json as loaded (and reloaded).
impl CommandGate for crate::settings::Settings {
    fn eci_enabled(&self) -> bool {
        self.eci_enabled
    }
    fn commands(&self) -> &CommandPolicy {
        &self.policy.commands
    }
    fn settings_location(&self) -> String {
        self.location()
    }
}

/// The policy in force, as the agent publishes it (settings with their digests).
impl CommandGate for crate::settings::PolicySnapshot {
    fn eci_enabled(&self) -> bool {
        self.settings.eci_enabled()
    }
    fn commands(&self) -> &CommandPolicy {
        self.settings.commands()
    }
    fn settings_location(&self) -> String {
        self.settings.settings_location()
    }
}

/// The outcome of admission for one request.
#[derive(Debug, Clone)]
pub enum Admission {
    Admitted(Decision),
    Refused(Refusal, Decision),
}

/// How the decision was reached, for the audit log.
#[derive(Debug, Clone, Default)]
pub struct Decision {
    /// The matched route's pattern, if the path is a known route.
    pub route: Option<&'static str>,
    /// The command named by the deciding rule (or the route's primary command).
    pub command: Option<&'static str>,
    /// The commandList entry that decided, if one did (a copy of the compiled rule, so deciding
    /// allocates nothing; it is spelled out only where it is written down).
    pub rule: Option<Rule>,
    /// A stable snake_case reason.
    pub reason: &'static str,
    /// The command this request is depends on a form value: its form `Content-Type` goes, so
    /// the engine reads the query the route was classified by ([`Route::reads_form`]).
    pub reads_form: bool,
}

#[derive(Debug, Clone)]
pub enum Refusal {
    /// The commandList blocks this request; `message` is Docker Desktop's text.
    CommandBlocked { message: String },
    /// A caller in no container and no trusted cgroup.
    UnknownCaller,
    /// A caller in a container that is not allowed to use the socket (now).
    ContainerNotAllowed,
    /// The image of a container that mounts the socket is not allowed; Docker Desktop's text.
    SocketMountDenied { message: String },
    /// The gate could not verify a container's mounts or image: nothing passes unverified.
    Unverifiable { message: String },
    /// The gate refused what a container asks for (its cgroup parent, its privileges); an
    /// ECI-style text naming the reason.
    GateRefused { message: String },
}

/// Decides one request. `query` is the raw text after `?` (one route is two commands, told
/// apart by it); `raw_target` is quoted in the refusal text.
pub fn admit<G: CommandGate + ?Sized>(
    gate: &G,
    caller: &CallerKind,
    method: &str,
    path: &RoutePath<'_>,
    query: Option<&str>,
    raw_target: &str,
) -> Admission {
    let route = route::classify(method, &path.api_path, query);
    let mut decision = Decision {
        route: route.map(Route::pattern),
        command: route.and_then(|r| r.primary().first()).map(|c| c.name()),
        reads_form: route.is_some_and(Route::reads_form),
        ..Decision::default()
    };
    match caller {
        CallerKind::TrustedHost => {
            decision.reason = "trusted_host";
            Admission::Admitted(decision)
        }
        CallerKind::Unknown => {
            decision.reason = "unknown_caller";
            Admission::Refused(Refusal::UnknownCaller, decision)
        }
        CallerKind::Container(_) if !gate.eci_enabled() => {
            decision.reason = "eci_disabled";
            Admission::Admitted(decision)
        }
        CallerKind::Container(_) => {
            let verdict = gate.commands().decide(method, route);
            let rule_match = |m: RuleMatch, decision: &mut Decision| {
                decision.rule = Some(m.rule);
                decision.command = Some(m.command.name());
            };
            match verdict {
                CommandVerdict::Allow(reason) => {
                    decision.reason = match reason {
                        AllowReason::Ping => "ping",
                        AllowReason::Listed(m) => {
                            rule_match(m, &mut decision);
                            "command_allowed"
                        }
                        AllowReason::NotListed => "command_not_denied",
                        AllowReason::UnknownRoute => "unknown_route_engine_404",
                    };
                    Admission::Admitted(decision)
                }
                CommandVerdict::Deny(reason) => {
                    decision.reason = match reason {
                        CommandDenyReason::Listed(m) => {
                            rule_match(m, &mut decision);
                            messages::ReasonCode::CommandListed.as_str()
                        }
                        CommandDenyReason::NotListed => {
                            messages::ReasonCode::CommandNotListed.as_str()
                        }
                        CommandDenyReason::UnknownRoute => {
                            messages::ReasonCode::CommandUnknownRoute.as_str()
                        }
                        CommandDenyReason::Closed => messages::ReasonCode::CommandClosed.as_str(),
                    };
                    let message = messages::command_blocked(raw_target, &gate.settings_location());
                    Admission::Refused(Refusal::CommandBlocked { message }, decision)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::ContainerId;
    use crate::policy::command::{ListMode, parse_rule};

    struct Gate(bool, CommandPolicy);

    impl CommandGate for Gate {
        fn eci_enabled(&self) -> bool {
            self.0
        }
        fn commands(&self) -> &CommandPolicy {
            &self.1
        }
        fn settings_location(&self) -> String {
            "/etc/eci/admin-settings.json".into()
        }
    }

    fn gate(mode: ListMode, rules: &[&str]) -> Gate {
        Gate(
            true,
            CommandPolicy::new(mode, rules.iter().map(|r| parse_rule(r).unwrap()).collect()),
        )
    }

    fn container() -> CallerKind {
        CallerKind::Container(ContainerId::parse(&"a".repeat(64)).unwrap())
    }

    fn path(api_path: &str) -> RoutePath<'_> {
        RoutePath {
            version: Some("1.41".into()),
            api_path: api_path.into(),
        }
    }

    #[test]
    fn deny_list_blocks_push_with_docker_desktops_text() {
        let gate = gate(ListMode::Deny, &["push"]);
        let raw = "/v1.41/images/myimage/push?tag=latest";
        match admit(
            &gate,
            &container(),
            "POST",
            &path("/images/myimage/push"),
            Some("tag=latest"),
            raw,
        ) {
            Admission::Refused(Refusal::CommandBlocked { message }, decision) => {
                assert_eq!(
                    message,
                    "enhanced container isolation: docker command \"/v1.41/images/myimage/push?tag=latest\" is blocked; \
                     if you wish to allow it, configure the docker socket command list in /etc/eci/admin-settings.json"
                );
                assert_eq!(
                    decision.rule.map(|r| r.to_string()).as_deref(),
                    Some("push")
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            admit(
                &gate,
                &container(),
                "GET",
                &path("/containers/json"),
                None,
                "/containers/json"
            ),
            Admission::Admitted(_)
        ));
    }

    #[test]
    fn host_is_not_filtered_and_strangers_are_refused() {
        let gate = gate(ListMode::Allow, &[]);
        let p = path("/images/x/push");
        assert!(matches!(
            admit(&gate, &CallerKind::TrustedHost, "POST", &p, None, "/"),
            Admission::Admitted(_)
        ));
        assert!(matches!(
            admit(
                &gate,
                &CallerKind::Unknown,
                "GET",
                &path("/_ping"),
                None,
                "/"
            ),
            Admission::Refused(Refusal::UnknownCaller, _)
        ));
    }

    #[test]
    fn eci_off_filters_nothing() {
        let mut gate = gate(ListMode::Allow, &[]);
        gate.0 = false;
        assert!(matches!(
            admit(&gate, &container(), "POST", &path("/build"), None, "/build"),
            Admission::Admitted(_)
        ));
    }

    #[test]
    fn allow_list_lets_ping_and_listed_commands_through() {
        let gate = gate(ListMode::Allow, &["ps"]);
        assert!(matches!(
            admit(&gate, &container(), "HEAD", &path("/_ping"), None, "/_ping"),
            Admission::Admitted(_)
        ));
        assert!(matches!(
            admit(
                &gate,
                &container(),
                "GET",
                &path("/containers/json"),
                None,
                "/"
            ),
            Admission::Admitted(_)
        ));
        assert!(matches!(
            admit(&gate, &container(), "GET", &path("/images/json"), None, "/"),
            Admission::Refused(..)
        ));
        assert!(matches!(
            admit(&gate, &container(), "GET", &path("/nonsense"), None, "/"),
            Admission::Refused(..)
        ));
    }
}
