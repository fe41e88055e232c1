//! The cases, in order: they share one protected setup (agent, sockets, cgroups), because booting a
//! kernel per case would cost minutes; each case creates and removes its own aliases and cgroups.

use std::{
    fs,
    os::unix::{
        fs::{MetadataExt as _, symlink},
        net::UnixStream,
    },
    path::{Path, PathBuf},
    process::{Command, ExitCode},
    time::Duration,
};

use aya::maps::{Map, MapData, RingBuf};
use eci_agent::{
    ids::{CgroupId, ContainerId},
    kernel::{KernelMaps, PinLayout, btf, events},
};
use eci_common::{CLASS_ENGINE, CLASS_PUBLIC, CgroupVerdict, DenyEvent, Hook, MAP_EVENTS};

use crate::{
    fixture::{
        Agent, BindMount, CONTAINER_PARENT, Cgroup, Holder, Rebound, TRUSTED, eventually, listen,
        listen_seqpacket, probe, probe_with_stdin, receive_datagrams,
    },
    probe::{CONNECTED, EPERM, REFUSED, TRUNCATED},
};

const WORK: &str = "/tmp/eci";
pub const PIN_DIR: &str = "/sys/fs/bpf/eci-test";
const AGENT_BIN: &str = "/bin/eci-agent";

pub struct Report {
    passed: usize,
    failed: usize,
}

impl Report {
    pub fn case(&mut self, name: &str, result: Result<(), String>) {
        match result {
            Ok(()) => {
                self.passed += 1;
                println!("eci-test {name}: ok");
            }
            Err(err) => {
                self.failed += 1;
                println!("eci-test {name}: FAILED: {err}");
            }
        }
    }
}

pub fn expect(what: &str, got: u8, want: u8) -> Result<(), String> {
    let name = |c| match c {
        CONNECTED => "connected",
        EPERM => "EPERM",
        REFUSED => "ECONNREFUSED",
        TRUNCATED => "no fd (MSG_CTRUNC)",
        _ => "another error",
    };
    if got == want {
        Ok(())
    } else {
        Err(format!("{what}: {} instead of {}", name(got), name(want)))
    }
}

pub fn all(checks: impl IntoIterator<Item = Result<(), String>>) -> Result<(), String> {
    let errors: Vec<String> = checks.into_iter().filter_map(Result::err).collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}

pub fn main(_args: &[String]) -> ExitCode {
    let mut report = Report {
        passed: 0,
        failed: 0,
    };
    run(&mut report);
    println!(
        "eci-tests: {} passed, {} failed",
        report.passed, report.failed
    );
    if report.failed == 0 && report.passed > 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn run(r: &mut Report) {
    let work = Path::new(WORK);
    let _ = fs::remove_dir_all(work);
    fs::create_dir_all(work.join("bdir")).expect("work dir");
    // The engine socket in a directory of its own, which a case replaces.
    fs::create_dir_all(work.join("run")).expect("engine dir");
    let engine = listen(&work.join("run/engine.sock"));
    let other = listen(&work.join("other.sock"));
    let public = work.join("docker.sock");
    let plain_file = work.join("plain.txt");
    fs::write(&plain_file, "x").expect("plain file");

    let unlisted = Cgroup::create("/t-unlisted");
    let allowed = Cgroup::create("/t-allowed");
    let allowed_deep = Cgroup::create("/t-allowed/sub/deeper");
    let trusted = Cgroup::create(TRUSTED);
    let trusted_child = Cgroup::create("/t-trusted/child");
    let container_parent = Cgroup::create(CONTAINER_PARENT);
    let container = Cgroup::create("/t-trusted/docker/c1");
    let denied = Cgroup::create("/t-denied");
    let denied_child = Cgroup::create("/t-denied/child");
    // A Docker systemd-driver scope that exists before the agent starts (under a trusted parent).
    let early_scope = Cgroup::create(&format!("{TRUSTED}/docker-{}.scope", "e".repeat(64)));

    let pins = PinLayout::new(Path::new(PIN_DIR));
    let agent = Agent::start(Path::new(PIN_DIR), &engine, &public);
    crate::fixture::join(crate::fixture::AGENT_CGROUP);

    r.case(
        "agent_loads_and_pins",
        (|| {
            if !pins.is_loaded() {
                return Err(format!("no link pinned under {PIN_DIR}"));
            }
            let out = eci_agent_cmd(&["status", "--pin-dir", PIN_DIR])?;
            if !out.contains("enforcement: on") {
                return Err(format!("status does not say enforcement is on:\n{out}"));
            }
            Ok(())
        })(),
    );

    // What a container allow and an explicit deny look like: the agent writes them on container
    // start; here the suite writes them through the same map API.
    let mut maps = KernelMaps::open_pinned(&pins).expect("open pinned maps");
    let set = |maps: &mut KernelMaps, cg: &Cgroup, v: CgroupVerdict| {
        maps.set_verdict(CgroupId(cg.id()), v).expect("set verdict");
    };
    set(
        &mut maps,
        &allowed,
        CgroupVerdict {
            classes: CLASS_PUBLIC,
            flags: 0,
        },
    );
    set(&mut maps, &denied, CgroupVerdict::DENY);

    r.case(
        "trusted_root_connects_exactly",
        all([
            expect(
                "root cgroup → public",
                probe("/", "connect", &public, None),
                CONNECTED,
            ),
            expect(
                "unlisted child of root → public",
                probe(&unlisted.rel, "connect", &public, None),
                EPERM,
            ),
        ]),
    );
    r.case(
        "unlisted_cgroup_denied_by_path",
        expect(
            "unlisted → public",
            probe(&unlisted.rel, "connect", &public, None),
            EPERM,
        ),
    );
    r.case(
        "hard_link_denied",
        (|| {
            let link = work.join("hard.sock");
            fs::hard_link(&public, &link).map_err(|e| format!("link: {e}"))?;
            let got = probe(&unlisted.rel, "connect", &link, None);
            let _ = fs::remove_file(&link);
            expect("unlisted → hard link", got, EPERM)
        })(),
    );
    r.case(
        "bind_mount_aliases_denied",
        (|| {
            let alias = work.join("alias.sock");
            fs::write(&alias, "").map_err(|e| format!("alias file: {e}"))?;
            let file_mount = BindMount::new(&public, &alias);
            let dir_mount = BindMount::new(work, &work.join("bdir"));
            let result = all([
                expect(
                    "unlisted → file bind mount",
                    probe(&unlisted.rel, "connect", &alias, None),
                    EPERM,
                ),
                expect(
                    "unlisted → dir bind mount",
                    probe(
                        &unlisted.rel,
                        "connect",
                        &work.join("bdir/docker.sock"),
                        None,
                    ),
                    EPERM,
                ),
            ]);
            drop(dir_mount);
            drop(file_mount);
            let _ = fs::remove_file(&alias);
            result
        })(),
    );
    r.case(
        "proc_root_path_denied",
        expect(
            "unlisted → /proc/PID/root/…",
            probe(
                &unlisted.rel,
                "connect",
                &Path::new(&format!("/proc/{}/root", agent.pid()))
                    .join(public.strip_prefix("/").unwrap()),
                None,
            ),
            EPERM,
        ),
    );
    r.case(
        "symlink_and_relative_path_denied",
        (|| {
            let sym = work.join("sym.sock");
            symlink(&public, &sym).map_err(|e| format!("symlink: {e}"))?;
            let result = all([
                expect(
                    "unlisted → symlink",
                    probe(&unlisted.rel, "connect", &sym, None),
                    EPERM,
                ),
                expect(
                    "unlisted → relative path",
                    probe(
                        &unlisted.rel,
                        "connect-rel",
                        Path::new("docker.sock"),
                        Some(work),
                    ),
                    EPERM,
                ),
            ]);
            let _ = fs::remove_file(&sym);
            result
        })(),
    );
    r.case(
        "o_path_fd_denied",
        expect(
            "unlisted → /proc/self/fd/N of O_PATH",
            probe(&unlisted.rel, "connect-opath", &public, None),
            EPERM,
        ),
    );
    r.case(
        "allowed_cgroup_and_descendants_connect",
        all([
            expect(
                "allowed → public",
                probe(&allowed.rel, "connect", &public, None),
                CONNECTED,
            ),
            expect(
                "allowed/sub/deeper → public",
                probe(&allowed_deep.rel, "connect", &public, None),
                CONNECTED,
            ),
            expect(
                "allowed → public via hard-link-free alias (O_PATH)",
                probe(&allowed.rel, "connect-opath", &public, None),
                CONNECTED,
            ),
        ]),
    );
    r.case(
        "denied_cgroup_and_descendants_denied",
        all([
            expect(
                "denied → public",
                probe(&denied.rel, "connect", &public, None),
                EPERM,
            ),
            expect(
                "denied/child → public",
                probe(&denied_child.rel, "connect", &public, None),
                EPERM,
            ),
        ]),
    );
    r.case(
        "trusted_subtree_but_container_parent_denied",
        all([
            expect(
                "trusted → public",
                probe(&trusted.rel, "connect", &public, None),
                CONNECTED,
            ),
            expect(
                "trusted/child → public",
                probe(&trusted_child.rel, "connect", &public, None),
                CONNECTED,
            ),
            expect(
                "container parent → public",
                probe(&container_parent.rel, "connect", &public, None),
                EPERM,
            ),
            expect(
                "new container under the parent → public",
                probe(&container.rel, "connect", &public, None),
                EPERM,
            ),
        ]),
    );
    r.case(
        "only_the_agent_cgroup_reaches_the_engine",
        all([
            expect(
                "allowed → engine",
                probe(&allowed.rel, "connect", &engine, None),
                EPERM,
            ),
            expect(
                "trusted root → engine",
                probe("/", "connect", &engine, None),
                EPERM,
            ),
            expect(
                "agent cgroup → engine",
                probe("/eci-agent", "connect", &engine, None),
                CONNECTED,
            ),
        ]),
    );
    r.case(
        "unrelated_sockets_and_files_untouched",
        all([
            expect(
                "unlisted → other socket",
                probe(&unlisted.rel, "connect", &other, None),
                CONNECTED,
            ),
            expect(
                "unlisted → read a plain file",
                probe(&unlisted.rel, "read", &plain_file, None),
                CONNECTED,
            ),
        ]),
    );
    r.case(
        "denials_are_reported",
        check_events(&pins, unlisted.id(), &public),
    );

    other_socket_types_cases(r, &mut maps, work, &allowed, &unlisted);
    fd_passing_cases(
        r,
        &pins,
        &allowed,
        &allowed_deep,
        &unlisted,
        &denied_child,
        &public,
    );
    pidfd_getfd_cases(r, &allowed, &allowed_deep, &unlisted, &public, &other);
    r.case(
        "unrelated_fds_still_pass",
        all([
            pass_fd(&allowed.rel, "send-connected", &other, &unlisted.rel)
                .and_then(|got| expect("unrelated connected socket → unlisted", got, CONNECTED)),
            pass_fd(&allowed.rel, "send-file", &plain_file, &unlisted.rel)
                .and_then(|got| expect("plain file → unlisted", got, CONNECTED)),
            pass_fd(&unlisted.rel, "send-connected", &other, &denied.rel)
                .and_then(|got| expect("unlisted's unrelated socket → denied", got, CONNECTED)),
        ]),
    );
    admission_cases(r, &mut maps, &early_scope);
    r.case("btf_offsets_of_running_kernel", btf_offsets());

    let agent_pid = agent.pid();
    agent.kill();
    r.case(
        "enforcement_survives_sigkill",
        all([
            if Path::new(&format!("/proc/{agent_pid}")).exists() {
                Err("the agent still runs".into())
            } else {
                Ok(())
            },
            // The public listener died with the agent, and a connect is judged at the listener:
            // with none there, every caller gets ECONNREFUSED. The engine's listener (the suite's
            // own) still runs.
            expect(
                "allowed → public after SIGKILL",
                probe(&allowed.rel, "connect", &public, None),
                REFUSED,
            ),
            expect(
                "unlisted → engine after SIGKILL",
                probe(&unlisted.rel, "connect", &engine, None),
                EPERM,
            ),
            expect(
                "allowed → engine after SIGKILL",
                probe(&allowed.rel, "connect", &engine, None),
                EPERM,
            ),
            expect(
                "agent cgroup → engine after SIGKILL",
                probe("/eci-agent", "connect", &engine, None),
                CONNECTED,
            ),
        ]),
    );

    r.case(
        "recreated_sockets_protected_without_agent",
        recreated_without_agent(&unlisted, &allowed, &engine, &public),
    );
    // A listener of the suite's own at the engine path again (tagged by the kernel at bind).
    listen(&engine);

    let agent = Agent::start(Path::new(PIN_DIR), &engine, &public);
    r.case(
        "restart_adopts_pinned_state",
        all([
            expect(
                "allowed → public after restart",
                probe(&allowed.rel, "connect", &public, None),
                CONNECTED,
            ),
            expect(
                "unlisted → public after restart",
                probe(&unlisted.rel, "connect", &public, None),
                EPERM,
            ),
        ]),
    );

    r.case(
        "recreated_socket_is_protected_again",
        (|| {
            let old_ino = fs::metadata(&engine)
                .map(|m| m.ino())
                .map_err(|e| e.to_string())?;
            fs::remove_file(&engine).map_err(|e| e.to_string())?;
            listen(&engine);
            let new_ino = fs::metadata(&engine)
                .map(|m| m.ino())
                .map_err(|e| e.to_string())?;
            if new_ino == old_ino {
                return Err("the re-created socket kept its inode number".into());
            }
            if !eventually(Duration::from_secs(5), || {
                probe(&allowed.rel, "connect", &engine, None) == EPERM
            }) {
                return Err(
                    "the re-created engine socket stayed reachable from a non-agent cgroup".into(),
                );
            }
            expect(
                "agent cgroup → re-created engine",
                probe("/eci-agent", "connect", &engine, None),
                CONNECTED,
            )
        })(),
    );

    r.case(
        "replaced_directory_caught_by_the_agent_watch",
        replaced_directory(&maps, work, &unlisted, &engine),
    );
    r.case(
        "unprotected_name_no_longer_tags",
        unprotected_name(&mut maps, &unlisted, &engine),
    );

    crate::gate_cases::run(r, &pins, &public);
    crate::guard_cases::run(r, &pins, &unlisted, &public);
    crate::cgroup_cases::run(
        r,
        &crate::cgroup_cases::Cgroups {
            unlisted: &unlisted,
            allowed: &allowed,
            allowed_deep: &allowed_deep,
            trusted_child: &trusted_child,
            container: &container,
            denied: &denied,
        },
    );

    crate::lifecycle_cases::removed_cgroups_lose_their_verdicts(r, &mut maps);
    let agent = crate::lifecycle_cases::restart_in_new_cgroup(
        r, agent, &maps, &engine, &public, &unlisted, &allowed,
    );

    r.case(
        "unload_removes_enforcement",
        (|| {
            drop(maps);
            eci_agent_cmd(&["unload", "--pin-dir", PIN_DIR])?;
            if Path::new(PIN_DIR).exists() {
                return Err(format!("{PIN_DIR} still exists"));
            }
            // The kernel detaches a link whose last reference (the pin) is gone from a work
            // queue, not in the unlink itself, so the programs go away shortly after.
            let gone = |cgroup: &Cgroup, socket: &Path| {
                eventually(Duration::from_secs(10), || {
                    probe(&cgroup.rel, "connect", socket, None) == CONNECTED
                })
            };
            all([
                if gone(&unlisted, &public) {
                    Ok(())
                } else {
                    Err("unlisted → public still refused 10 s after unload".into())
                },
                if gone(&allowed, &engine) {
                    Ok(())
                } else {
                    Err("allowed → engine still refused 10 s after unload".into())
                },
            ])
        })(),
    );
    drop(agent);

    drop((
        early_scope,
        denied_child,
        denied,
        container,
        container_parent,
        trusted_child,
        trusted,
    ));
    drop((allowed_deep, allowed, unlisted));
    crate::fixture::join("/");
    let _ = fs::remove_dir_all(work);
    let _ = fs::remove_dir_all("/sys/fs/cgroup/eci-agent");
}

/// With the agent killed: a restarting engine (or anything else) re-creates the engine socket and
/// the public socket, at once reachable only as before; sockets under other names are not touched.
fn recreated_without_agent(
    unlisted: &Cgroup,
    allowed: &Cgroup,
    engine: &Path,
    public: &Path,
) -> Result<(), String> {
    let dir = engine.parent().ok_or("the engine path has no directory")?;
    let connect = |cgroup: &str, path: &Path| probe(cgroup, "connect", path, None);

    let rebound = Rebound::at(&allowed.rel, engine)?;
    // No agent runs and nothing polls: every check below comes right after the bind.
    let engine_checks = all([
        expect(
            "unlisted → re-created engine",
            connect(&unlisted.rel, engine),
            EPERM,
        ),
        expect(
            "allowed → re-created engine",
            connect(&allowed.rel, engine),
            EPERM,
        ),
        expect(
            "agent cgroup → re-created engine",
            connect("/eci-agent", engine),
            CONNECTED,
        ),
        status_shows_tagged(engine, "engine socket"),
    ]);
    drop(rebound);

    let staging = dir.join("staging.sock");
    let renamed = Rebound::renamed(&allowed.rel, engine, &staging)?;
    let rename_checks = all([
        expect(
            "unlisted → engine bound elsewhere and renamed into place",
            connect(&unlisted.rel, engine),
            EPERM,
        ),
        expect(
            "agent cgroup → engine renamed into place",
            connect("/eci-agent", engine),
            CONNECTED,
        ),
    ]);
    drop(renamed);

    let neighbour = dir.join("neighbour.sock");
    let beside = Rebound::at(&allowed.rel, &neighbour)?;
    let neighbour_check = expect(
        "unlisted → new socket under another name beside the engine",
        connect(&unlisted.rel, &neighbour),
        CONNECTED,
    );
    drop(beside);
    let _ = fs::remove_file(&neighbour);

    let rebound = Rebound::at(&allowed.rel, public)?;
    let public_checks = all([
        expect(
            "unlisted → re-created public socket",
            connect(&unlisted.rel, public),
            EPERM,
        ),
        expect(
            "allowed → re-created public socket",
            connect(&allowed.rel, public),
            CONNECTED,
        ),
    ]);
    drop(rebound);
    all([engine_checks, rename_checks, neighbour_check, public_checks])
}

/// `eci-agent status` lists `path` as a protected name whose current inode carries `class`.
fn status_shows_tagged(path: &Path, class: &str) -> Result<(), String> {
    let out = eci_agent_cmd(&["status", "--pin-dir", PIN_DIR])?;
    let path = fs::canonicalize(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let ino = fs::metadata(&path).map_err(|e| e.to_string())?.ino();
    let line = format!("{}: {class}; now ino {ino} tagged {class}", path.display());
    if out.lines().any(|l| l.trim() == line) {
        Ok(())
    } else {
        Err(format!("status lacks `{line}`:\n{out}"))
    }
}

/// The engine's directory itself replaced: its new inode carries no tag, so the kernel does not tag
/// a socket created in it; the agent's watch (the second line) does, and tags the new directory,
/// so that the next re-creation is tagged by the kernel again.
fn replaced_directory(
    maps: &KernelMaps,
    work: &Path,
    unlisted: &Cgroup,
    engine: &Path,
) -> Result<(), String> {
    let dir = engine.parent().ok_or("the engine path has no directory")?;
    let old = work.join("run.old");
    let _ = fs::remove_dir_all(&old);
    fs::rename(dir, &old).map_err(|e| format!("rename {}: {e}", dir.display()))?;
    fs::create_dir(dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
    listen(engine);
    let result = (|| {
        if !eventually(Duration::from_secs(5), || {
            probe(&unlisted.rel, "connect", engine, None) == EPERM
        }) {
            return Err("the engine socket in a replaced directory stayed reachable".into());
        }
        all([
            // The watch tags the directory before the inode, so it is tagged by now.
            protects(maps, dir, "engine.sock", CLASS_ENGINE),
            expect(
                "agent cgroup → engine in the replaced directory",
                probe("/eci-agent", "connect", engine, None),
                CONNECTED,
            ),
        ])
    })();
    let _ = fs::remove_dir_all(&old);
    result
}

/// Whether the directory `dir` carries a tag that protects `name` as `class`. Checked on the map
/// itself: with an agent watching, a socket re-created there would be tagged anyway.
fn protects(maps: &KernelMaps, dir: &Path, name: &str, class: u32) -> Result<(), String> {
    let tag = maps
        .dir_tag(dir)
        .map_err(|e| format!("{e:#}"))?
        .ok_or_else(|| format!("{} carries no directory tag", dir.display()))?;
    if tag
        .used()
        .any(|n| n.bytes() == name.as_bytes() && n.class == class)
    {
        Ok(())
    } else {
        Err(format!(
            "the tag of {} does not protect {name} as class {class}: {:?}",
            dir.display(),
            tag.used()
                .map(|n| (String::from_utf8_lossy(n.bytes()).into_owned(), n.class))
                .collect::<Vec<_>>()
        ))
    }
}

/// A name protected and then unprotected through the maps API: while protected, a socket created
/// under it is tagged; afterwards it is not, and `status` no longer lists it. The engine's own name
/// in the same directory stays protected.
fn unprotected_name(maps: &mut KernelMaps, unlisted: &Cgroup, engine: &Path) -> Result<(), String> {
    let dir = engine.parent().ok_or("the engine path has no directory")?;
    let scratch = dir.join("scratch.sock");
    maps.protect_name(&scratch, CLASS_ENGINE)
        .map_err(|e| format!("protect_name: {e:#}"))?;
    let protected = {
        let _listener = Rebound::at("/", &scratch)?;
        all([
            expect(
                "unlisted → socket created under a protected name",
                probe(&unlisted.rel, "connect", &scratch, None),
                EPERM,
            ),
            status_shows_tagged(&scratch, "engine socket"),
        ])
    };
    maps.unprotect(&scratch)
        .map_err(|e| format!("unprotect: {e:#}"))?;
    let status = eci_agent_cmd(&["status", "--pin-dir", PIN_DIR])?;
    let listed = if status.contains("scratch.sock") {
        Err(format!(
            "status still lists the unprotected name:\n{status}"
        ))
    } else {
        Ok(())
    };
    let unprotected = {
        let _listener = Rebound::at("/", &scratch)?;
        expect(
            "unlisted → socket created under a name no longer protected",
            probe(&unlisted.rel, "connect", &scratch, None),
            CONNECTED,
        )
    };
    let _ = fs::remove_file(&scratch);
    all([
        protected,
        listed,
        unprotected,
        protects(maps, dir, "engine.sock", CLASS_ENGINE),
    ])
}

fn eci_agent_cmd(args: &[&str]) -> Result<String, String> {
    let out = crate::fixture::in_root_cgroup(&mut Command::new(AGENT_BIN))
        .args(args)
        .output()
        .map_err(|e| format!("{AGENT_BIN}: {e}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(text)
    } else {
        Err(format!("eci-agent {} failed: {text}", args.join(" ")))
    }
}

fn check_events(pins: &PinLayout, cgroup_id: u64, public: &PathBuf) -> Result<(), String> {
    let ino = fs::metadata(public)
        .map(|m| m.ino())
        .map_err(|e| e.to_string())?;
    let data = MapData::from_pin(pins.map(MAP_EVENTS)).map_err(|e| format!("events map: {e}"))?;
    let map = Map::from_map_data(data).map_err(|e| e.to_string())?;
    let mut ring = RingBuf::try_from(map).map_err(|e| e.to_string())?;
    let seen = events::drain(&mut ring);
    let found = seen.iter().any(|e| {
        e.cgroup_id == cgroup_id
            && e.ino == ino
            && e.hook == Hook::UnixStreamConnect as u32
            && events::comm(e) == "kernel-tests"
    });
    if found {
        Ok(())
    } else {
        Err(format!(
            "no denial of cgroup {cgroup_id} on inode {ino} among {} events: {seen:?}",
            seen.len()
        ))
    }
}

/// Seqpacket listeners (judged at `unix_stream_connect` like stream ones) and datagram sockets
/// (judged at `unix_may_send`, on connect and on every send) behind a tag, and a datagram socket an
/// allowed process connected, handed to an unlisted one: judged again at its first send.
fn other_socket_types_cases(
    r: &mut Report,
    maps: &mut KernelMaps,
    work: &Path,
    allowed: &Cgroup,
    unlisted: &Cgroup,
) {
    let seqpacket = listen_seqpacket(&work.join("seqpacket.sock"));
    let dgram = receive_datagrams(&work.join("dgram.sock"));
    let unrelated_dgram = receive_datagrams(&work.join("dgram-other.sock"));
    for path in [&seqpacket, &dgram] {
        maps.protect(path, CLASS_PUBLIC).expect("protect");
    }
    r.case(
        "seqpacket_listener_judged",
        all([
            expect(
                "unlisted → protected seqpacket listener",
                probe(&unlisted.rel, "connect-seqpacket", &seqpacket, None),
                EPERM,
            ),
            expect(
                "allowed → protected seqpacket listener",
                probe(&allowed.rel, "connect-seqpacket", &seqpacket, None),
                CONNECTED,
            ),
        ]),
    );
    r.case(
        "datagram_sends_judged",
        all([
            expect(
                "unlisted sends to a protected datagram socket",
                probe(&unlisted.rel, "send-dgram", &dgram, None),
                EPERM,
            ),
            expect(
                "unlisted connects a datagram socket to a protected one",
                probe(&unlisted.rel, "connect-dgram", &dgram, None),
                EPERM,
            ),
            expect(
                "allowed sends to a protected datagram socket",
                probe(&allowed.rel, "send-dgram", &dgram, None),
                CONNECTED,
            ),
            expect(
                "unlisted sends to an unrelated datagram socket",
                probe(&unlisted.rel, "send-dgram", &unrelated_dgram, None),
                CONNECTED,
            ),
            pass_fd(&allowed.rel, "send-dgram-connected", &dgram, &unlisted.rel).and_then(|got| {
                expect(
                    "allowed's connected datagram socket → unlisted, who sends on it",
                    got,
                    EPERM,
                )
            }),
            pass_fd(&allowed.rel, "send-dgram-connected", &dgram, &allowed.rel).and_then(|got| {
                expect(
                    "allowed's connected datagram socket → allowed, who sends on it",
                    got,
                    CONNECTED,
                )
            }),
        ]),
    );
    for path in [&seqpacket, &dgram] {
        let _ = maps.unprotect(path);
        let _ = fs::remove_file(path);
    }
    let _ = fs::remove_file(&unrelated_dgram);
}

/// Sends an fd of `path` (opened by `send_op`: `send-connected`, `send-opath`, `send-file`,
/// `send-dgram-connected`) from a process in `from` to a process in `to` over a socket pair;
/// returns the receiver's exit code (`CONNECTED`: it got the fd, `TRUNCATED`: the kernel kept it
/// back; for `send-dgram-connected` the receiver also sends a datagram on it, and `EPERM` says
/// that send was refused).
fn pass_fd(from: &str, send_op: &str, path: &Path, to: &str) -> Result<u8, String> {
    let (sender, receiver) = UnixStream::pair().map_err(|e| format!("socketpair: {e}"))?;
    let path = path.to_str().ok_or("a non-UTF-8 path")?;
    let sent = probe_with_stdin(from, send_op, path, sender.into());
    if sent != CONNECTED {
        return Err(format!("{send_op} {path} from {from} failed (exit {sent})"));
    }
    let recv_op = if send_op == "send-dgram-connected" {
        "recv-fd-send"
    } else {
        "recv-fd"
    };
    Ok(probe_with_stdin(to, recv_op, "-", receiver.into()))
}

fn fd_passing_cases(
    r: &mut Report,
    pins: &PinLayout,
    allowed: &Cgroup,
    allowed_deep: &Cgroup,
    unlisted: &Cgroup,
    denied_child: &Cgroup,
    public: &Path,
) {
    r.case(
        "connected_socket_not_passed_to_denied_cgroup",
        (|| {
            drain_events(pins)?;
            all([
                expect(
                    "allowed → connected public socket → unlisted",
                    pass_fd(&allowed.rel, "send-connected", public, &unlisted.rel)?,
                    TRUNCATED,
                ),
                expect(
                    "allowed → connected public socket → denied/child",
                    pass_fd(&allowed.rel, "send-connected", public, &denied_child.rel)?,
                    TRUNCATED,
                ),
                find_event(
                    pins,
                    "a file_receive denial of the unlisted receiver",
                    |e| {
                        e.hook == Hook::FileReceive as u32
                            && e.cgroup_id == unlisted.id()
                            && Some(e.ino) == fs::metadata(public).ok().map(|m| m.ino())
                    },
                ),
            ])
        })(),
    );
    r.case(
        "connected_socket_passed_to_allowed_cgroup",
        (|| {
            all([
                expect(
                    "allowed → connected public socket → allowed/sub/deeper",
                    pass_fd(&allowed.rel, "send-connected", public, &allowed_deep.rel)?,
                    CONNECTED,
                ),
                expect(
                    "trusted root → connected public socket → allowed",
                    pass_fd("/", "send-connected", public, &allowed.rel)?,
                    CONNECTED,
                ),
            ])
        })(),
    );
    r.case(
        "o_path_fd_of_protected_socket_not_passed",
        (|| {
            all([
                expect(
                    "allowed → O_PATH of public → unlisted",
                    pass_fd(&allowed.rel, "send-opath", public, &unlisted.rel)?,
                    TRUNCATED,
                ),
                expect(
                    "allowed → O_PATH of public → allowed/sub/deeper",
                    pass_fd(&allowed.rel, "send-opath", public, &allowed_deep.rel)?,
                    CONNECTED,
                ),
            ])
        })(),
    );
}

fn pidfd_getfd_cases(
    r: &mut Report,
    allowed: &Cgroup,
    allowed_deep: &Cgroup,
    unlisted: &Cgroup,
    public: &Path,
    other: &Path,
) {
    let getfd = |cgroup: &str, holder: &Holder| {
        probe(
            cgroup,
            "getfd",
            Path::new(&holder.pid().to_string()),
            Some(Path::new(&holder.fd.to_string())),
        )
    };
    r.case(
        "pidfd_getfd_from_denied_cgroup_refused",
        (|| {
            let holder = Holder::start(&allowed.rel, public)?;
            all([
                expect(
                    "unlisted takes the allowed holder's public connection",
                    getfd(&unlisted.rel, &holder),
                    EPERM,
                ),
                expect(
                    "allowed/sub/deeper takes the allowed holder's public connection",
                    getfd(&allowed_deep.rel, &holder),
                    CONNECTED,
                ),
            ])
        })(),
    );
    r.case(
        "pidfd_getfd_of_unrelated_socket_works",
        (|| {
            let holder = Holder::start(&allowed.rel, other)?;
            expect(
                "unlisted takes the allowed holder's unrelated connection",
                getfd(&unlisted.rel, &holder),
                CONNECTED,
            )
        })(),
    );
}

fn admission_cases(r: &mut Report, maps: &mut KernelMaps, early_scope: &Cgroup) {
    let public = || PathBuf::from(WORK).join("docker.sock");
    let verdict_of = |maps: &KernelMaps, cg: &Cgroup| {
        maps.verdicts()
            .into_iter()
            .find(|(id, _)| *id == CgroupId(cg.id()))
            .map(|(_, v)| v)
    };
    let explicit_deny = |maps: &KernelMaps, cg: &Cgroup, what: &str| match verdict_of(maps, cg) {
        Some(v) if v == CgroupVerdict::DENY => Ok(()),
        other => Err(format!(
            "{what}: verdict {other:?} instead of an explicit deny"
        )),
    };
    r.case(
        "new_docker_scope_under_trusted_parent_denied_until_allowed",
        (|| {
            let scope = Cgroup::create(&format!("{TRUSTED}/docker-{}.scope", "0a".repeat(32)));
            let not_a_scope =
                Cgroup::create(&format!("{TRUSTED}/docker-{}.scope", "0a".repeat(31)));
            let checks = all([
                explicit_deny(maps, &scope, "new docker scope"),
                expect(
                    "new docker scope → public",
                    probe(
                        &scope.rel,
                        "connect",
                        &PathBuf::from(WORK).join("docker.sock"),
                        None,
                    ),
                    EPERM,
                ),
                match verdict_of(maps, &not_a_scope) {
                    None => Ok(()),
                    Some(v) => Err(format!("a cgroup that is no scope got a verdict: {v:?}")),
                },
                expect(
                    "trusted cgroup with another name → public",
                    probe(
                        &not_a_scope.rel,
                        "connect",
                        &PathBuf::from(WORK).join("docker.sock"),
                        None,
                    ),
                    CONNECTED,
                ),
            ]);
            maps.set_verdict(
                CgroupId(scope.id()),
                CgroupVerdict {
                    classes: CLASS_PUBLIC,
                    flags: 0,
                },
            )
            .map_err(|e| e.to_string())?;
            all([
                checks,
                expect(
                    "docker scope once allowed → public",
                    probe(
                        &scope.rel,
                        "connect",
                        &PathBuf::from(WORK).join("docker.sock"),
                        None,
                    ),
                    CONNECTED,
                ),
            ])
        })(),
    );
    // A container's cgroup under a parent the agent never registered (`--cgroup-parent`), named
    // as Docker names it under either driver: denied at birth, whatever its ancestors allow.
    r.case(
        "container_named_cgroup_under_any_parent_denied_at_creation",
        {
            let id = "5b".repeat(32);
            let anywhere = Cgroup::create("/t-anywhere");
            let under_trusted = Cgroup::create(&format!("{TRUSTED}/{id}"));
            let elsewhere = Cgroup::create(&format!("{}/x/{id}", anywhere.rel));
            let scope_elsewhere = Cgroup::create(&format!("{}/docker-{id}.scope", anywhere.rel));
            let not_an_id = Cgroup::create(&format!("{TRUSTED}/{}", "5b".repeat(31)));
            all([
                explicit_deny(maps, &under_trusted, "64-hex cgroup under a trusted parent"),
                expect(
                    "64-hex cgroup under a trusted parent → public",
                    probe(&under_trusted.rel, "connect", &public(), None),
                    EPERM,
                ),
                explicit_deny(maps, &elsewhere, "64-hex cgroup under an unknown parent"),
                explicit_deny(
                    maps,
                    &scope_elsewhere,
                    "docker scope under an unknown parent",
                ),
                match verdict_of(maps, &not_an_id) {
                    None => Ok(()),
                    Some(v) => Err(format!(
                        "a cgroup that is no container's got a verdict: {v:?}"
                    )),
                },
            ])
        },
    );
    // The gate approves an allowed container before it forwards `start`: its cgroup, whoever
    // makes it and wherever, is allowed at birth, so its first process can connect at once.
    r.case("approved_container_cgroup_allowed_at_creation", {
        let allow = CgroupVerdict {
            classes: CLASS_PUBLIC,
            flags: 0,
        };
        let scope_id = ContainerId::parse(&"a1".repeat(32)).expect("an id");
        let plain_id = ContainerId::parse(&"a2".repeat(32)).expect("an id");
        let approved = [&scope_id, &plain_id]
            .into_iter()
            .map(|id| maps.set_approval(id, allow).map_err(|e| e.to_string()))
            .collect::<Result<Vec<()>, String>>();
        let anywhere = Cgroup::create("/t-approved");
        let scope = Cgroup::create(&format!("{TRUSTED}/docker-{scope_id}.scope"));
        let plain = Cgroup::create(&format!("{}/{plain_id}", anywhere.rel));
        let checks = all([
            approved.map(drop),
            match verdict_of(maps, &scope) {
                Some(v) if v == allow => Ok(()),
                other => Err(format!("approved docker scope: verdict {other:?} at birth")),
            },
            expect(
                "approved docker scope under a trusted parent → public",
                probe(&scope.rel, "connect", &public(), None),
                CONNECTED,
            ),
            expect(
                "approved 64-hex cgroup under an unknown parent → public",
                probe(&plain.rel, "connect", &public(), None),
                CONNECTED,
            ),
        ]);
        // Withdrawn: a cgroup made with that name afterwards is denied again.
        let withdrawn = maps.remove_approval(&scope_id).map_err(|e| e.to_string());
        let again = Cgroup::create(&format!("{}/docker-{scope_id}.scope", anywhere.rel));
        let _ = maps.remove_approval(&plain_id);
        all([
            checks,
            withdrawn,
            explicit_deny(maps, &again, "a withdrawn approval's docker scope"),
        ])
    });
    r.case("new_child_of_container_parent_denied_at_creation", {
        let container = Cgroup::create(&format!("{CONTAINER_PARENT}/c2"));
        explicit_deny(maps, &container, "new cgroup under the container parent")
    });
    r.case(
        "existing_container_cgroups_denied_at_start",
        all([
            explicit_deny(
                maps,
                early_scope,
                "docker scope made before the agent started",
            ),
            expect(
                "docker scope made before the agent started → public",
                probe(
                    &early_scope.rel,
                    "connect",
                    &PathBuf::from(WORK).join("docker.sock"),
                    None,
                ),
                EPERM,
            ),
        ]),
    );
}

/// The BTF reader on this kernel's own BTF: every offset found, and a fact that holds on every
/// kernel (`struct path` is `{mnt, dentry}`). The programs that use the offsets are exercised by the
/// fd-passing and admission cases.
fn btf_offsets() -> Result<(), String> {
    let btf = btf::Btf::from_sys_fs().map_err(|e| format!("{e:#}"))?;
    let offsets = btf::kernel_offsets(&btf).map_err(|e| e.to_string())?;
    println!("eci-test: kernel offsets {offsets:?}");
    let path = btf
        .member("unix_sock", &["path"])
        .map_err(|e| e.to_string())?
        .offset;
    if offsets.unix_sock_path_dentry != path + 8 {
        return Err(format!(
            "unix_sock.path.dentry at {} but unix_sock.path at {path}",
            offsets.unix_sock_path_dentry
        ));
    }
    // `struct qstr` is {hash, len} (little-endian), then the name pointer.
    let d_name = btf
        .member("dentry", &["d_name"])
        .map_err(|e| e.to_string())?
        .offset;
    if (offsets.dentry_d_name_len, offsets.dentry_d_name_name) != (d_name + 4, d_name + 8) {
        return Err(format!(
            "dentry.d_name at {d_name} but its len at {} and name at {}",
            offsets.dentry_d_name_len, offsets.dentry_d_name_name
        ));
    }
    Ok(())
}

fn open_events(pins: &PinLayout) -> Result<RingBuf<MapData>, String> {
    let data = MapData::from_pin(pins.map(MAP_EVENTS)).map_err(|e| format!("events map: {e}"))?;
    let map = Map::from_map_data(data).map_err(|e| e.to_string())?;
    RingBuf::try_from(map).map_err(|e| e.to_string())
}

/// Forgets the events so far, so that a case sees only its own.
fn drain_events(pins: &PinLayout) -> Result<(), String> {
    events::drain(&mut open_events(pins)?);
    Ok(())
}

fn find_event(
    pins: &PinLayout,
    what: &str,
    pred: impl Fn(&DenyEvent) -> bool,
) -> Result<(), String> {
    let seen = events::drain(&mut open_events(pins)?);
    if seen
        .iter()
        .any(|e| pred(e) && events::comm(e) == "kernel-tests")
    {
        Ok(())
    } else {
        Err(format!("no {what} among {} events: {seen:?}", seen.len()))
    }
}
