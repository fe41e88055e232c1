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
use eci_agent::kernel::{KernelMaps, PinLayout, btf, cgroup::CgroupId, events};
use eci_common::{CLASS_PUBLIC, CgroupVerdict, DenyEvent, Hook, MAP_EVENTS};

use crate::{
    fixture::{
        Agent, BindMount, CONTAINER_PARENT, Cgroup, Holder, TRUSTED, eventually, listen, probe,
        probe_with_stdin,
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
    let engine = listen(&work.join("engine.sock"));
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
        maps.set_verdict(eci_agent::kernel::cgroup::CgroupId(cg.id()), v)
            .expect("set verdict");
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
            expect(
                "unlisted → public after SIGKILL",
                probe(&unlisted.rel, "connect", &public, None),
                EPERM,
            ),
            // The listener died with the agent: passing the kernel check now ends in ECONNREFUSED.
            expect(
                "allowed → public after SIGKILL",
                probe(&allowed.rel, "connect", &public, None),
                REFUSED,
            ),
            expect(
                "allowed → engine after SIGKILL",
                probe(&allowed.rel, "connect", &engine, None),
                EPERM,
            ),
        ]),
    );

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

    crate::gate_cases::run(r, &pins, &public);

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
    let _ = fs::remove_dir_all(work);
    let _ = fs::remove_dir_all("/sys/fs/cgroup/eci-agent");
}

fn eci_agent_cmd(args: &[&str]) -> Result<String, String> {
    let out = Command::new(AGENT_BIN)
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
            && e.hook == Hook::InodePermission as u32
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

/// Sends an fd of `path` (opened by `send_op`: `send-connected`, `send-opath`, `send-file`) from a
/// process in `from` to a process in `to` over a socket pair; returns the receiver's exit code
/// (`CONNECTED`: it got the fd, `TRUNCATED`: the kernel kept it back).
fn pass_fd(from: &str, send_op: &str, path: &Path, to: &str) -> Result<u8, String> {
    let (sender, receiver) = UnixStream::pair().map_err(|e| format!("socketpair: {e}"))?;
    let path = path.to_str().ok_or("a non-UTF-8 path")?;
    let sent = probe_with_stdin(from, send_op, path, sender.into());
    if sent != CONNECTED {
        return Err(format!("{send_op} {path} from {from} failed (exit {sent})"));
    }
    Ok(probe_with_stdin(to, "recv-fd", "-", receiver.into()))
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
