//! `cargo xtask vm-image`: the eci VM's disk image, from Debian's packages only.
//!
//! A bookworm root by `debootstrap` (minbase plus the engine, the registry and a few tools), the
//! standard 6.1 kernel's modules that the VM needs, an ext4 image of it all made by `mkfs.ext4 -d`
//! (no loop mount), a tiny stage-1 initramfs (busybox and the disk/9p modules) and the kernel
//! decompressed to `vmlinux` (booted through its PVH entry by qboot: no decompression under TCG).
//!
//! The image holds none of the project's code: the guest init, the agent and the tests come in
//! through the 9p share at each boot. So the image is rebuilt only when one of its inputs changes
//! (`inputs.txt` beside it lists them; the recipe's own source is one of them).
//!
//! Two recipes share this code: the eci VM's ([`ECI`]: our own init as PID 1) and the
//! systemd host's ([`SHOST`], `cargo xtask shost`: Debian's systemd as PID 1, Debian's
//! `docker.service`, the project's units installed by the test as a user would).

use std::{
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context as _, bail};

use crate::{cpio, exec, setup::Kernel};

/// One disk image: its packages, what stage 1 hands over to, and the changes made to the
/// bootstrapped root before it is packed.
pub struct Recipe {
    /// Its directory under target/vm.
    pub name: &'static str,
    pub hostname: &'static str,
    pub packages: &'static [&'static str],
    /// Stage 1's last lines: hand over to the second stage (`$B` is busybox).
    pub handover: &'static str,
    /// Files written into the root (path relative to it, contents); a path ending in `@mask` is
    /// the unit before it masked (a link to /dev/null).
    pub files: &'static [(&'static str, &'static str)],
}

/// The eci VM: our own init (`evm`, from the share) as PID 1. `kmod` for modprobe, `iproute2` to
/// hand the host channel's network device to the relay's namespace, `busybox-static` for stage 1
/// and the test images.
pub const ECI: Recipe = Recipe {
    name: "eci",
    hostname: "eci-vm",
    packages: &[
        "docker.io",
        "containerd",
        "runc",
        "docker-registry",
        "busybox-static",
        "kmod",
        "iproute2",
    ],
    handover: r#"[ -x /newroot/mnt/eci/bin/evm ] || fail "the share has no bin/evm"
$B umount /proc
$B mount --move /dev /newroot/dev
exec $B switch_root /newroot /mnt/eci/bin/evm
"#,
    files: &[],
};

/// The systemd host: Debian's systemd as PID 1 and Debian's own docker.service and docker.socket
/// (systemd cgroup driver), nothing of the project. Stage 1 runs the share's `stage1.sh` (the
/// test installs its driver units there), then hands over to /sbin/init. The engine makes no
/// bridge and no iptables rules (as the eci VM's: twice as fast under TCG, and the tier needs
/// no network); timers and gettys that would compete for the two emulated CPUs are masked.
pub const SHOST: Recipe = Recipe {
    name: "shost",
    hostname: "shost",
    packages: &[
        "systemd-sysv",
        "docker.io",
        "containerd",
        "runc",
        "busybox-static",
        "kmod",
    ],
    handover: r#"[ -f /newroot/mnt/eci/stage1.sh ] && { $B sh /newroot/mnt/eci/stage1.sh /newroot || fail "the share's stage1.sh"; }
$B umount /proc
$B mount --move /dev /newroot/dev
exec $B switch_root /newroot /sbin/init
"#,
    files: &[
        (
            "etc/docker/daemon.json",
            "{ \"bridge\": \"none\", \"iptables\": false }\n",
        ),
        ("etc/modules-load.d/shost.conf", "overlay\nvirtio_rng\n"),
        ("etc/systemd/system/serial-getty@ttyS0.service@mask", ""),
        ("etc/systemd/system/getty@tty1.service@mask", ""),
        ("etc/systemd/system/apt-daily.timer@mask", ""),
        ("etc/systemd/system/apt-daily-upgrade.timer@mask", ""),
        ("etc/systemd/system/dpkg-db-backup.timer@mask", ""),
        ("etc/systemd/system/e2scrub_all.timer@mask", ""),
        ("etc/systemd/system/fstrim.timer@mask", ""),
        ("etc/systemd/system/systemd-tmpfiles-clean.timer@mask", ""),
    ],
};

/// Modules the guest loads (their dependencies come along): the disk, the 9p share, the network
/// device of the host channel, entropy, and overlayfs for the engine.
const MODULES: &[&str] = &[
    "virtio_pci",
    "virtio_blk",
    "ext4",
    "9p",
    "9pnet_virtio",
    "virtio_net",
    "virtio_rng",
    "overlay",
];

/// What stage 1 loads before it can mount the disk and the share (the rest is modprobe's job in
/// stage 2).
const STAGE1_MODULES: &[&str] = &["virtio_pci", "virtio_blk", "ext4", "9p", "9pnet_virtio"];

/// Stage 1: load the disk and share modules, mount the disk and the share, hand over to the
/// recipe's second stage. Any failure powers the guest off; the host sees no ready line.
const STAGE1_INIT: &str = r#"#!/bin/busybox sh
B=/bin/busybox
fail() { echo "evm-stage1: error: $*"; echo o > /proc/sysrq-trigger; $B sleep 10; }
$B mount -t devtmpfs devtmpfs /dev
$B mount -t proc proc /proc
# Optional alternatives (crc32c-intel needs SSE4.2, which TCG's CPU lacks) may fail: a module
# that is really missing shows as a failed mount below.
for m in $($B cat /modules.order); do $B insmod /modules/$m 2>/dev/null || echo "evm-stage1: skipped $m"; done
i=0; while [ ! -b /dev/vda ] && [ $i -lt 200 ]; do $B sleep 0.05; i=$((i+1)); done
$B mount -t ext4 -o rw,noatime /dev/vda /newroot || fail "mount /dev/vda"
$B mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 eci /newroot/mnt/eci || fail "mount the 9p share"
"#;

/// The built image: everything a boot needs.
#[derive(Clone, Debug)]
pub struct Image {
    pub disk: PathBuf,
    pub stage1: PathBuf,
    pub vmlinux: PathBuf,
}

impl Image {
    fn at(dir: &Path) -> Self {
        Self {
            disk: dir.join("disk.img"),
            stage1: dir.join("stage1.cpio"),
            vmlinux: dir.join("vmlinux"),
        }
    }
}

/// The eci VM's directory.
pub fn dir(root: &Path) -> PathBuf {
    recipe_dir(root, &ECI)
}

pub fn recipe_dir(root: &Path, recipe: &Recipe) -> PathBuf {
    root.join("target/vm").join(recipe.name)
}

/// The eci VM's image for `kernel` (see [`ensure_recipe`]).
pub fn ensure(root: &Path, kernel: &Kernel) -> anyhow::Result<Image> {
    ensure_recipe(root, kernel, &ECI)
}

/// The image of `recipe` for `kernel`, built unless the one under target/ was built from the
/// same inputs.
pub fn ensure_recipe(root: &Path, kernel: &Kernel, recipe: &Recipe) -> anyhow::Result<Image> {
    let dir = recipe_dir(root, recipe);
    let image = Image::at(&dir);
    let inputs = inputs(kernel, recipe);
    let recorded = dir.join("inputs.txt");
    if fs::read_to_string(&recorded).is_ok_and(|r| r == inputs)
        && [&image.disk, &image.stage1, &image.vmlinux]
            .iter()
            .all(|p| p.exists())
    {
        println!("xtask vm-image: {} is current", image.disk.display());
        return Ok(image);
    }
    fs::create_dir_all(&dir)?;
    // The record goes last: an interrupted build is never taken for a current one.
    let _ = fs::remove_file(&recorded);
    build(&dir, kernel, recipe, &image)?;
    fs::write(&recorded, inputs)?;
    Ok(image)
}

/// Everything the image is made from, as text: the kernel package, the package list, the module
/// lists and this recipe's own source.
fn inputs(kernel: &Kernel, recipe: &Recipe) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "image {}", recipe.name);
    let _ = writeln!(s, "suite bookworm variant minbase");
    let _ = writeln!(s, "kernel {}", kernel.package);
    let _ = writeln!(s, "packages {}", recipe.packages.join(","));
    let _ = writeln!(s, "modules {}", MODULES.join(","));
    let _ = writeln!(
        s,
        "recipe fnv1a64 {:016x}",
        fnv1a64(include_str!("image.rs"))
    );
    s
}

/// A stable hash (std's hasher may change between releases).
fn fnv1a64(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn build(dir: &Path, kernel: &Kernel, recipe: &Recipe, image: &Image) -> anyhow::Result<()> {
    let started = Instant::now();
    let rootfs = dir.join("rootfs");
    remove_tree(&rootfs)?;
    let kver = kernel_release(kernel)?;
    println!(
        "xtask vm-image: {}: debootstrap bookworm ({})",
        recipe.name,
        recipe.packages.join(" ")
    );
    exec::run(
        Command::new("debootstrap")
            .arg("--variant=minbase")
            .arg(format!("--include={}", recipe.packages.join(",")))
            .arg("bookworm")
            .arg(&rootfs)
            .arg(mirror()?),
    )
    .context("debootstrap (needs root and the Debian mirror apt uses)")?;
    let bootstrapped = started.elapsed();
    for junk in [
        "var/cache/apt/archives",
        "var/lib/apt/lists",
        "usr/share/doc",
        "usr/share/man",
        "usr/share/locale",
        "usr/share/info",
    ] {
        remove_tree(&rootfs.join(junk))?;
        fs::create_dir_all(rootfs.join(junk))?;
    }
    let order = modules(&rootfs, kernel, &kver)?;
    fs::create_dir_all(rootfs.join("mnt/eci"))?;
    // The engine's data and the registry's storage live on the disk (a snapshot per boot).
    fs::create_dir_all(rootfs.join("var/lib/eci-registry"))?;
    fs::write(
        rootfs.join("etc/hostname"),
        format!("{}\n", recipe.hostname),
    )?;
    for (path, text) in recipe.files {
        if let Some(unit) = path.strip_suffix("@mask") {
            let link = rootfs.join(unit);
            fs::create_dir_all(link.parent().context("unit path")?)?;
            let _ = fs::remove_file(&link);
            std::os::unix::fs::symlink("/dev/null", &link)?;
        } else {
            let file = rootfs.join(path);
            fs::create_dir_all(file.parent().context("file path")?)?;
            fs::write(&file, text)?;
        }
    }

    println!("xtask vm-image: ext4 image");
    let tmp = dir.join("disk.img.partial");
    let _ = fs::remove_file(&tmp);
    fs::File::create(&tmp)?.set_len(4 << 30)?;
    exec::run(
        Command::new("mkfs.ext4")
            .args(["-q", "-F", "-L", "eci-vm", "-d"])
            .arg(&rootfs)
            .arg(&tmp),
    )?;
    fs::rename(&tmp, &image.disk)?;
    stage1(&rootfs, &kver, &order, recipe.handover, &image.stage1)?;
    vmlinux(&kernel.vmlinuz, &image.vmlinux)?;
    remove_tree(&rootfs)?;
    println!(
        "xtask vm-image: built in {:.0} s (debootstrap {:.0} s): {}",
        started.elapsed().as_secs_f64(),
        bootstrapped.as_secs_f64(),
        image.disk.display()
    );
    Ok(())
}

/// The Debian mirror the host's apt uses for bookworm: a deb822 stanza or a one-line source
/// whose suites include `bookworm` (apt itself reads only `*.sources` and `*.list`).
fn mirror() -> anyhow::Result<String> {
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(entries) = fs::read_dir("/etc/apt/sources.list.d") {
        files.extend(entries.flatten().map(|e| e.path()));
    }
    for file in files {
        let Ok(text) = fs::read_to_string(&file) else {
            continue;
        };
        let found = match file.extension().and_then(|e| e.to_str()) {
            Some("sources") => mirror_deb822(&text),
            Some("list") => mirror_one_line(&text),
            _ => None,
        };
        if let Some(uri) = found {
            return Ok(uri);
        }
    }
    bail!("apt has no bookworm source in /etc/apt/sources.list(.d)")
}

fn mirror_deb822(text: &str) -> Option<String> {
    text.split("\n\n").find_map(|stanza| {
        let field = |name: &str| {
            stanza
                .lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .map(str::trim)
        };
        let is_bookworm = field("Suites")?.split_whitespace().any(|s| s == "bookworm");
        let is_deb = field("Types")?.split_whitespace().any(|t| t == "deb");
        (is_bookworm && is_deb)
            .then(|| field("URIs")?.split_whitespace().next().map(str::to_owned))?
    })
}

fn mirror_one_line(text: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let mut words = line.trim().strip_prefix("deb ")?.split_whitespace();
        let uri = words.find(|w| !w.starts_with('['))?;
        (words.next()? == "bookworm").then(|| uri.to_owned())
    })
}

/// `6.1.0-57-amd64` from the unpacked package's lib/modules.
fn kernel_release(kernel: &Kernel) -> anyhow::Result<String> {
    let modules = kernel
        .vmlinuz
        .parent()
        .and_then(Path::parent)
        .context("kernel path")?
        .join("lib/modules");
    fs::read_dir(&modules)
        .with_context(|| format!("reading {}", modules.display()))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .next()
        .with_context(|| format!("{} is empty", modules.display()))
}

/// Copies the kernel's modules into the root, keeps only [`MODULES`] and their dependencies, and
/// returns stage 1's load order (module paths relative to lib/modules/KVER, dependencies first).
fn modules(rootfs: &Path, kernel: &Kernel, kver: &str) -> anyhow::Result<Vec<String>> {
    let from = kernel
        .vmlinuz
        .parent()
        .and_then(Path::parent)
        .context("kernel path")?
        .join("lib/modules")
        .join(kver);
    let to = rootfs.join("lib/modules").join(kver);
    fs::create_dir_all(rootfs.join("lib/modules"))?;
    exec::run(Command::new("cp").arg("-a").arg(&from).arg(&to))?;
    exec::run(Command::new("chroot").arg(rootfs).args(["depmod", kver]))?;
    let depends = |names: &[&str]| -> anyhow::Result<Vec<String>> {
        let mut order: Vec<String> = Vec::new();
        for name in names {
            let out = exec::stdout(Command::new("chroot").arg(rootfs).args([
                "modprobe",
                "-S",
                kver,
                "--show-depends",
                name,
            ]))?;
            for line in out.lines() {
                // `insmod /lib/modules/KVER/kernel/…/x.ko ` (built-ins print `builtin x`).
                if let Some(path) = line.strip_prefix("insmod ") {
                    let path = path.split_whitespace().next().unwrap_or_default();
                    let rel = path
                        .strip_prefix(&format!("/lib/modules/{kver}/"))
                        .unwrap_or(path)
                        .to_owned();
                    if !order.contains(&rel) {
                        order.push(rel);
                    }
                }
            }
        }
        Ok(order)
    };
    let keep = depends(MODULES)?;
    let mut removed = 0;
    for entry in walk(&to.join("kernel"))? {
        let rel = entry
            .strip_prefix(&to)
            .unwrap_or(&entry)
            .to_string_lossy()
            .into_owned();
        if !keep.contains(&rel) {
            fs::remove_file(&entry)?;
            removed += 1;
        }
    }
    exec::run(Command::new("chroot").arg(rootfs).args(["depmod", kver]))?;
    println!(
        "xtask vm-image: kept {} kernel modules of {}",
        keep.len(),
        keep.len() + removed
    );
    depends(STAGE1_MODULES)
}

/// Every file under `dir`, recursively.
fn walk(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                stack.push(entry.path());
            } else {
                files.push(entry.path());
            }
        }
    }
    Ok(files)
}

fn stage1(
    rootfs: &Path,
    kver: &str,
    order: &[String],
    handover: &str,
    out: &Path,
) -> anyhow::Result<()> {
    let mut archive = cpio::Archive::new(Vec::new());
    for dir in ["bin", "dev", "proc", "newroot", "modules"] {
        archive.dir(dir)?;
    }
    archive.file("init", 0o755, format!("{STAGE1_INIT}{handover}").as_bytes())?;
    let busybox = rootfs.join("bin/busybox");
    archive.file(
        "bin/busybox",
        0o755,
        &fs::read(&busybox).with_context(|| format!("reading {}", busybox.display()))?,
    )?;
    let mut names = Vec::new();
    for rel in order {
        let path = rootfs.join("lib/modules").join(kver).join(rel);
        let name = path
            .file_name()
            .context("module name")?
            .to_string_lossy()
            .into_owned();
        let data = fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        // Debian compresses nothing in 6.1; a compressed module would need busybox's decompressor.
        if !name.ends_with(".ko") {
            bail!("{name}: stage 1 loads only uncompressed modules");
        }
        archive.file(&format!("modules/{name}"), 0o644, &data)?;
        names.push(name);
    }
    archive.file(
        "modules.order",
        0o644,
        format!("{}\n", names.join("\n")).as_bytes(),
    )?;
    fs::write(out, archive.finish()?)?;
    Ok(())
}

/// The kernel proper, out of the bzImage: the xz stream after the setup code, decompressed.
fn vmlinux(vmlinuz: &Path, out: &Path) -> anyhow::Result<()> {
    let data = fs::read(vmlinuz).with_context(|| format!("reading {}", vmlinuz.display()))?;
    let magic = b"\xfd7zXZ\x00";
    let offset = data
        .windows(magic.len())
        .position(|w| w == magic)
        .with_context(|| format!("{} has no xz stream", vmlinuz.display()))?;
    let tmp = out.with_extension("xz");
    fs::write(&tmp, &data[offset..])?;
    let decompressed = exec::output(
        Command::new("xz")
            .args(["--decompress", "--stdout", "--single-stream"])
            .arg(&tmp),
    )?;
    fs::remove_file(&tmp)?;
    if !decompressed.stdout.starts_with(b"\x7fELF") {
        bail!("{}: the xz stream is not an ELF kernel", vmlinuz.display());
    }
    fs::write(out, decompressed.stdout)?;
    Ok(())
}

fn remove_tree(path: &Path) -> anyhow::Result<()> {
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(err).with_context(|| format!("removing {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bookworm_source_is_the_mirror() {
        let sources = "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\n\n\
                       Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\n";
        assert_eq!(
            mirror_deb822(sources).as_deref(),
            Some("http://mirror.example/debian")
        );
        assert_eq!(
            mirror_deb822("Types: deb\nURIs: http://x/node\nSuites: nodistro\n"),
            None
        );
        let list = "deb [arch=amd64] http://mirror.example/debian bookworm main\n";
        assert_eq!(
            mirror_one_line(list).as_deref(),
            Some("http://mirror.example/debian")
        );
        assert_eq!(
            mirror_one_line("deb http://x/y cloud-sdk-bookworm main"),
            None
        );
    }

    #[test]
    fn fnv1a64_is_the_published_function() {
        assert_eq!(fnv1a64(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64("a"), 0xaf63_dc4c_8601_ec8c);
    }
}
