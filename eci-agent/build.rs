//! Builds the BPF object (eci-ebpf, target bpfel-unknown-none) with aya-build and leaves it in
//! OUT_DIR for `include_bytes_aligned!`. With `AYA_BUILD_SKIP=1` an empty placeholder is written
//! instead, so `cargo check`, clippy and the pure unit tests need no bpf-linker; the loader then
//! refuses the empty object with an error that says how to build it.

use anyhow::{Context as _, anyhow};
use cargo_metadata::{Metadata, MetadataCommand, Package};

const EBPF_PACKAGE: &str = "eci-ebpf";
/// The `[[bin]]` of eci-ebpf; aya-build copies it to OUT_DIR under this name.
const EBPF_BIN: &str = "eci";

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
    let out_dir = std::env::var_os("OUT_DIR").context("OUT_DIR is not set")?;
    let object = std::path::Path::new(&out_dir).join(EBPF_BIN);
    if std::env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v == "true") {
        std::fs::write(&object, []).context("writing the placeholder BPF object")?;
        return Ok(());
    }
    let Metadata { packages, .. } = MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let Package {
        name,
        manifest_path,
        ..
    } = packages
        .into_iter()
        .find(|p| p.name.as_str() == EBPF_PACKAGE)
        .ok_or_else(|| anyhow!("package {EBPF_PACKAGE} not found in the workspace"))?;
    let root_dir = manifest_path
        .parent()
        .ok_or_else(|| anyhow!("{manifest_path} has no parent directory"))?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: name.as_str(),
            root_dir: root_dir.as_str(),
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
}
