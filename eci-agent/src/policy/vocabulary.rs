//! The docker CLI's vocabulary: every command name (as `docker --help` reports them, short and
//! management forms) and the six group wildcards. The route table says which requests a command
//! sends; the commandList matcher says which commands a settings file allows. Both name commands
//! from here, and neither knows the other's job.
//!
//! A command is one entry of [`COMMANDS`], whatever name it is written with: `ps`, `container ls`,
//! `container list` and `container ps` are the same command. A wildcard covers a command when any
//! of its names is a `docker <group> …` command, so `container*` covers `ps` and `exec`.

use std::fmt;

/// Every docker CLI command that the route table or an admin may name. The first name is the
/// one shown in the audit log; the others are its aliases (same command, same requests).
/// Sources: docker/cli `cli/command/*/cmd.go` and the `Aliases` of each subcommand.
pub(super) const COMMANDS: &[&[&str]] = &[
    // docker container …
    &["attach", "container attach"],
    &["commit", "container commit"],
    &["cp", "container cp"],
    &["create", "container create"],
    &["diff", "container diff"],
    &["exec", "container exec"],
    &["export", "container export"],
    &["container inspect"],
    &["kill", "container kill"],
    &["logs", "container logs"],
    &["ps", "container ls", "container list", "container ps"],
    &["pause", "container pause"],
    &["port", "container port"],
    &["container prune"],
    &["rename", "container rename"],
    &["restart", "container restart"],
    &["rm", "container rm", "container remove"],
    &["run", "container run"],
    &["start", "container start"],
    &["stats", "container stats"],
    &["stop", "container stop"],
    &["top", "container top"],
    &["unpause", "container unpause"],
    &["update", "container update"],
    &["wait", "container wait"],
    // docker image …
    &[
        "build",
        "image build",
        "builder build",
        "buildx build",
        "buildx b",
    ],
    &["history", "image history"],
    &["import", "image import"],
    &["image inspect"],
    &["load", "image load"],
    &["images", "image ls", "image list"],
    &["image prune"],
    &["pull", "image pull"],
    &["push", "image push"],
    &["rmi", "image rm", "image remove"],
    &["save", "image save"],
    &["tag", "image tag"],
    // docker builder / buildx …
    &["builder prune"],
    &["bake", "buildx bake"],
    &["buildx prune"],
    &["buildx du"],
    &["buildx ls"],
    &["buildx inspect"],
    &["buildx create"],
    &["buildx rm"],
    &["buildx use"],
    &["buildx stop"],
    &["buildx imagetools"],
    &["buildx history"],
    &["buildx version"],
    // docker volume …
    &["volume create"],
    &["volume inspect"],
    &["volume ls", "volume list"],
    &["volume prune"],
    &["volume rm", "volume remove"],
    &["volume update"],
    // docker network …
    &["network connect"],
    &["network create"],
    &["network disconnect"],
    &["network inspect"],
    &["network ls", "network list"],
    &["network prune"],
    &["network rm", "network remove"],
    // docker system …
    &["system df"],
    &["events", "system events"],
    &["info", "system info"],
    &["system prune"],
    &["system dial-stdio"],
    // top level, in no group
    &["inspect"],
    &["login"],
    &["logout"],
    &["search"],
    &["version"],
    // docker context … (no Engine API calls of their own)
    &["context create"],
    &["context export"],
    &["context import"],
    &["context inspect"],
    &["context ls", "context list"],
    &["context rm", "context remove"],
    &["context show"],
    &["context update"],
    &["context use"],
    // docker checkpoint … (experimental)
    &["checkpoint create"],
    &["checkpoint ls", "checkpoint list"],
    &["checkpoint rm", "checkpoint remove"],
    // swarm
    &["swarm init"],
    &["swarm join"],
    &["swarm leave"],
    &["swarm update"],
    &["swarm ca"],
    &["swarm join-token"],
    &["swarm unlock"],
    &["swarm unlock-key"],
    &["service create"],
    &["service inspect"],
    &["service logs"],
    &["service ls", "service list"],
    &["service ps"],
    &["service rm", "service remove"],
    &["service rollback"],
    &["service scale"],
    &["service update"],
    &["node demote"],
    &["node inspect"],
    &["node ls", "node list"],
    &["node promote"],
    &["node ps"],
    &["node rm", "node remove"],
    &["node update"],
    &["secret create"],
    &["secret inspect"],
    &["secret ls", "secret list"],
    &["secret rm", "secret remove"],
    &["config create"],
    &["config inspect"],
    &["config ls", "config list"],
    &["config rm", "config remove"],
    &["stack config"],
    &["stack deploy", "stack up"],
    &["stack ls", "stack list"],
    &["stack ps"],
    &["stack rm", "stack remove", "stack down"],
    &["stack services"],
    // docker plugin … (Docker Desktop does not support them in the commandList; this agent does,
    // with a `plugin*` wildcard, so that an allow list can name them)
    &["plugin create"],
    &["plugin disable"],
    &["plugin enable"],
    &["plugin inspect"],
    &["plugin install"],
    &["plugin ls", "plugin list"],
    &["plugin push"],
    &["plugin rm", "plugin remove"],
    &["plugin set"],
    &["plugin upgrade"],
];

/// Commands the seed says commandList does not support; any name starting with one is refused.
pub const UNSUPPORTED: &[&str] = &[
    "compose",
    "dev",
    "extension",
    "feedback",
    "init",
    "manifest",
    "sbom",
    "scout",
    "trust",
];

/// One docker CLI command, whatever alias it was named by.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CliCommand(u16);

impl CliCommand {
    /// Looks a name up among all commands and aliases; inner whitespace is collapsed.
    pub fn from_name(name: &str) -> Option<Self> {
        let words: Vec<&str> = name.split_whitespace().collect();
        let normalised = words.join(" ");
        COMMANDS
            .iter()
            .position(|names| names.contains(&normalised.as_str()))
            .and_then(|i| u16::try_from(i).ok())
            .map(Self)
    }

    /// The name shown in logs (the form `docker --help` lists first).
    pub fn name(self) -> &'static str {
        self.names()[0]
    }

    /// Every name of this command.
    pub fn names(self) -> &'static [&'static str] {
        COMMANDS[usize::from(self.0)]
    }

    /// Whether one of this command's names is a `docker <group> …` command.
    pub fn in_group(self, group: CommandGroup) -> bool {
        self.names().iter().any(|n| {
            let first = n.split(' ').next().unwrap_or(n);
            group.first_words().contains(&first)
        })
    }

    pub fn all() -> impl Iterator<Item = Self> {
        (0..COMMANDS.len())
            .filter_map(|i| u16::try_from(i).ok())
            .map(Self)
    }
}

impl fmt::Display for CliCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl fmt::Debug for CliCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CliCommand({})", self.name())
    }
}

/// The groups the documented wildcards name.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub enum CommandGroup {
    Container,
    Image,
    Volume,
    Network,
    Build,
    System,
    /// Not one of Docker Desktop's six: `docker plugin …`.
    Plugin,
}

impl CommandGroup {
    pub const ALL: [Self; 7] = [
        Self::Container,
        Self::Image,
        Self::Volume,
        Self::Network,
        Self::Build,
        Self::System,
        Self::Plugin,
    ];

    /// The wildcard as written in settings.
    pub fn wildcard(self) -> &'static str {
        match self {
            Self::Container => "container*",
            Self::Image => "image*",
            Self::Volume => "volume*",
            Self::Network => "network*",
            Self::Build => "build*",
            Self::System => "system*",
            Self::Plugin => "plugin*",
        }
    }

    /// First words of the command names in this group. `build*` is "all docker build …
    /// commands": `build` itself and the `builder`/`buildx` families it is forwarded to.
    fn first_words(self) -> &'static [&'static str] {
        match self {
            Self::Container => &["container"],
            Self::Image => &["image"],
            Self::Volume => &["volume"],
            Self::Network => &["network"],
            Self::Build => &["build", "builder", "buildx"],
            Self::System => &["system"],
            Self::Plugin => &["plugin"],
        }
    }

    pub fn from_wildcard(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|g| g.wildcard() == s)
    }
}
