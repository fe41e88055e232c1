//! What the systemd host gets through the share: the repository files its install steps name
//! (the static agent as `target/agent/eci-agent`, `examples/`, `deploy/systemd/`), the install
//! and uninstall steps themselves, read out of `eci-agent.service`'s header (so the test runs
//! what a user reads), the DaemonSet's pod ([`crate::image::share_pod`]), and the tier's own two
//! units, which stage 1
//! installs before systemd starts.

use std::{fs, path::Path};

use anyhow::{Context as _, bail};

/// The test driver (`evm shost driver`): an ordinary system unit, so a trusted host caller in
/// `system.slice`, as an admin's shell would be. It writes its result lines to the console.
const DRIVER_UNIT: &str = "\
[Unit]
Description=eci-agent systemd-host tier: the test driver (from the 9p share)
After=local-fs.target

[Service]
Type=exec
ExecStart=/mnt/eci/bin/evm shost driver
StandardOutput=tty
StandardError=tty
TTYPath=/dev/console
TimeoutStartSec=infinity
";

/// An unlisted root process that probes both sockets from the first second of boot: no default
/// dependencies (so it starts with the first jobs, before sysinit.target), in a slice that no
/// verdict names (system.slice is trusted by the units).
const PROBE_UNIT: &str = "\
[Unit]
Description=eci-agent systemd-host tier: an unlisted root process probing both sockets from boot
DefaultDependencies=no

[Service]
Type=exec
Slice=eci-probe.slice
ExecStart=/mnt/eci/bin/evm shost early-probe
";

/// Stage 1 runs this (busybox sh, `$1` = the new root, `$B` = busybox) before systemd starts.
const STAGE1_HOOK: &str = r#"R=$1
B=/bin/busybox
$B cp $R/mnt/eci/units/eci-shost.service $R/mnt/eci/units/eci-shost-probe.service $R/etc/systemd/system/
$B mkdir -p $R/etc/systemd/system/multi-user.target.wants $R/etc/systemd/system/sysinit.target.wants
$B ln -sf /etc/systemd/system/eci-shost.service $R/etc/systemd/system/multi-user.target.wants/eci-shost.service
$B ln -sf /etc/systemd/system/eci-shost-probe.service $R/etc/systemd/system/sysinit.target.wants/eci-shost-probe.service
"#;

/// Fills `share` (already holding bin/evm and bin/eci-agent) for the systemd host.
pub fn fill(root: &Path, share: &Path) -> anyhow::Result<()> {
    let repo = share.join("repo");
    fs::create_dir_all(repo.join("target/agent"))?;
    fs::copy(
        share.join("bin/eci-agent"),
        repo.join("target/agent/eci-agent"),
    )?;
    fs::create_dir_all(repo.join("examples"))?;
    fs::copy(
        root.join("examples/admin-settings.json"),
        repo.join("examples/admin-settings.json"),
    )?;
    copy_tree(&root.join("deploy/systemd"), &repo.join("deploy/systemd"))?;
    let unit = fs::read_to_string(root.join("deploy/systemd/eci-agent.service"))
        .context("reading deploy/systemd/eci-agent.service")?;
    for (section, script) in [("Install", "install.sh"), ("Uninstall", "uninstall.sh")] {
        let steps = header_steps(&unit, section)?;
        fs::write(
            share.join(script),
            format!("set -e\ncd /mnt/eci/repo\n{}\n", steps.join("\n")),
        )?;
    }
    crate::image::share_pod(root, share)?;
    fs::create_dir_all(share.join("units"))?;
    fs::write(share.join("units/eci-shost.service"), DRIVER_UNIT)?;
    fs::write(share.join("units/eci-shost-probe.service"), PROBE_UNIT)?;
    fs::write(share.join("stage1.sh"), STAGE1_HOOK)?;
    Ok(())
}

fn copy_tree(from: &Path, to: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(to)?;
    for entry in fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &to.join(entry.file_name()))?;
        } else {
            fs::copy(entry.path(), to.join(entry.file_name()))?;
        }
    }
    Ok(())
}

/// The commands under `# {section}…:` in a unit's header comment, continuation lines joined.
pub fn header_steps(unit: &str, section: &str) -> anyhow::Result<Vec<String>> {
    let opening = format!("# {section}");
    let mut lines = unit.lines().skip_while(|l| {
        !(l.starts_with(&opening)
            && l[opening.len()..].starts_with([':', ' '])
            && l.trim_end().ends_with(':'))
    });
    if lines.next().is_none() {
        bail!("eci-agent.service's header has no `# {section}:` section");
    }
    let mut steps: Vec<String> = Vec::new();
    let mut continued = false;
    for line in lines {
        let Some(text) = line.strip_prefix("#   ") else {
            break;
        };
        let text = text.trim();
        let (text, more) = match text.strip_suffix('\\') {
            Some(head) => (head.trim_end(), true),
            None => (text, false),
        };
        match steps.last_mut() {
            Some(last) if continued => {
                last.push(' ');
                last.push_str(text);
            }
            _ => steps.push(text.to_owned()),
        }
        continued = more;
    }
    if steps.is_empty() {
        bail!("eci-agent.service's `# {section}:` section lists no command");
    }
    Ok(steps)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_steps_join_continuations_and_stop_at_the_section_end() {
        let unit = "# Head\n#\n# Install:\n#   install -m 0755 a \\\n#       b /x/\n#   systemctl daemon-reload\n#\n# Uninstall (why):\n#   rm x\n[Unit]\n";
        assert_eq!(
            header_steps(unit, "Install").unwrap(),
            vec!["install -m 0755 a b /x/", "systemctl daemon-reload"]
        );
        assert_eq!(header_steps(unit, "Uninstall").unwrap(), vec!["rm x"]);
        assert!(header_steps("[Unit]\n", "Install").is_err());
    }

    #[test]
    fn the_shipped_header_has_install_steps() {
        let unit = include_str!("../../../deploy/systemd/eci-agent.service");
        let steps = header_steps(unit, "Install").unwrap();
        assert!(
            steps
                .iter()
                .any(|s| s.starts_with("systemctl enable --now"))
        );
        assert!(
            steps
                .last()
                .unwrap()
                .starts_with("eci-agent status --check")
        );
        let uninstall = header_steps(unit, "Uninstall").unwrap();
        assert!(uninstall.iter().any(|s| s == "eci-agent unload"));
    }
}
