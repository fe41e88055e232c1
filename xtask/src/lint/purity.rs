//! The decision core stays pure: `eci-agent/src/policy/` does no I/O, so that every verdict is a
//! function of typed values and is tested without root, sockets or an engine. It may use std
//! (but not its I/O modules), serde, eci-common and, inside the crate, only `policy` and `ids`.

use std::{fs, path::Path};

use super::imports::{references, strip};

/// std modules that touch the world.
const STD_IO: &[&str] = &["fs", "net", "process", "os", "env", "thread", "io"];
/// Crates that do I/O (or exist for it).
const IO_CRATES: &[&str] = &["tokio", "hyper", "aya", "reqwest", "libc", "nix", "tracing"];
/// What `crate::` may name from the core.
const CRATE_ALLOWED: &[&str] = &["policy", "ids"];

/// Every import of the core that breaks the rule, as `file: what`.
pub fn violations(policy_dir: &Path) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    let mut entries: Vec<_> = fs::read_dir(policy_dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
        .collect();
    entries.sort();
    for path in entries {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        let name = name.unwrap_or_default();
        out.extend(
            file_violations(&strip(&fs::read_to_string(&path)?))
                .into_iter()
                .map(|v| format!("policy/{name}: {v}")),
        );
    }
    Ok(out)
}

fn file_violations(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for head in references(text, "std::") {
        if STD_IO.contains(&head.as_str()) {
            out.push(format!("std::{head}"));
        }
    }
    for krate in IO_CRATES {
        if !references(text, &format!("{krate}::")).is_empty() {
            out.push(format!("{krate}::"));
        }
    }
    for head in references(text, "crate::") {
        if !CRATE_ALLOWED.contains(&head.as_str()) {
            out.push(format!("crate::{head}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_is_refused_and_pure_imports_pass() {
        assert!(
            file_violations(&strip(
                "use std::{fmt, collections::BTreeMap};\nuse crate::ids::CgroupId;\nuse serde::Deserialize;"
            ))
            .is_empty()
        );
        assert_eq!(
            file_violations(&strip(
                "use std::{fmt, fs};\nuse crate::gate::X;\nasync fn f() { tokio::spawn(g()); }"
            )),
            ["std::fs", "tokio::", "crate::gate"]
        );
    }
}
