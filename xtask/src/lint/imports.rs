//! Imports run downhill only: the `crate::` and `super::` references between eci-agent's modules
//! form no circle, at two levels — between the top-level modules (`sidecar` → `gate` → `policy`),
//! and between the files of one directory (`kernel/probe.rs` → `kernel/loader.rs`). A circle
//! makes a layer impossible to enter or test alone, so `cargo xtask test` refuses one.
//!
//! This reads source text, not the compiler's resolution: it sees every `crate::a::…` and
//! `super::b::…` path (in `use` trees too), skips comments, strings' contents and `#[cfg(test)]`
//! modules (tests may reach anywhere), and does not follow re-exports (a `pub use` is an edge of
//! the module that writes it).

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::Path,
};

/// Module name → modules it refers to.
pub type Graph = BTreeMap<String, BTreeSet<String>>;

/// The two graphs of the crate whose sources are in `src`: the top-level one, and one per
/// directory (named by the directory).
pub fn graphs(src: &Path) -> anyhow::Result<Vec<(String, Graph)>> {
    let mut top = Graph::new();
    let mut dirs: BTreeMap<String, Graph> = BTreeMap::new();
    for entry in walk(src)? {
        let rel = entry.strip_prefix(src)?.to_string_lossy().into_owned();
        let text = strip(&fs::read_to_string(&entry)?);
        let parts: Vec<&str> = rel.trim_end_matches(".rs").split('/').collect();
        let top_module = match parts.as_slice() {
            ["lib" | "main"] => continue,
            [one] => one.to_string(),
            [dir, ..] => dir.to_string(),
            [] => continue,
        };
        let node = top.entry(top_module.clone()).or_default();
        for target in references(&text, "crate::") {
            if target != top_module && !target.is_empty() {
                node.insert(target);
            }
        }
        // Files of one directory: `super::x` from `dir/y.rs`, or `crate::dir::x`; at any depth.
        if let Some((file, dir)) = parts.split_last()
            && !dir.is_empty()
        {
            let this = file.to_string();
            let mut edges: BTreeSet<String> = references(&text, "super::").into_iter().collect();
            edges.extend(references(&text, &format!("crate::{}::", dir.join("::"))));
            if this == "mod" {
                // `super::` in mod.rs is the parent's; its children are `self::`/bare names.
                edges = references(&text, "self::").into_iter().collect();
                // A directory below another is a node of its parent's graph, and its mod.rs's
                // `super::` names that node's siblings.
                if let Some((name, parent)) = dir.split_last()
                    && !parent.is_empty()
                {
                    let mut up: BTreeSet<String> =
                        references(&text, "super::").into_iter().collect();
                    up.extend(references(
                        &text,
                        &format!("crate::{}::", parent.join("::")),
                    ));
                    let node = dirs.entry(parent.join("/")).or_default();
                    let node = node.entry(name.to_string()).or_default();
                    node.extend(up.into_iter().filter(|t| t != name && t != "mod"));
                }
            }
            let graph = dirs.entry(dir.join("/")).or_default();
            let node = graph.entry(this.clone()).or_default();
            for target in edges {
                if target != this && target != "mod" {
                    node.insert(target);
                }
            }
        }
    }
    let mut all = vec![("eci-agent/src".to_owned(), top)];
    for (dir, mut graph) in dirs {
        // Only edges between files of this directory count here.
        let files: BTreeSet<String> = graph.keys().cloned().collect();
        for edges in graph.values_mut() {
            edges.retain(|t| files.contains(t));
        }
        all.push((format!("eci-agent/src/{dir}"), graph));
    }
    Ok(all)
}

/// The circles of `graph` (strongly connected components of more than one module), each sorted.
pub fn circles(graph: &Graph) -> Vec<Vec<String>> {
    // Tarjan's algorithm; the graphs have tens of nodes, so recursion depth is no concern.
    struct State<'g> {
        graph: &'g Graph,
        index: BTreeMap<&'g str, usize>,
        low: BTreeMap<&'g str, usize>,
        stack: Vec<&'g str>,
        on_stack: BTreeSet<&'g str>,
        next: usize,
        out: Vec<Vec<String>>,
    }
    fn visit<'g>(s: &mut State<'g>, v: &'g str) {
        s.index.insert(v, s.next);
        s.low.insert(v, s.next);
        s.next += 1;
        s.stack.push(v);
        s.on_stack.insert(v);
        for w in s.graph.get(v).into_iter().flatten() {
            let w = w.as_str();
            if !s.index.contains_key(w) {
                visit(s, w);
                let lw = s.low[w];
                let lv = s.low.get_mut(v).expect("visited");
                *lv = (*lv).min(lw);
            } else if s.on_stack.contains(w) {
                let iw = s.index[w];
                let lv = s.low.get_mut(v).expect("visited");
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                component.push(w.to_owned());
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                s.out.push(component);
            }
        }
    }
    let mut state = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in graph.keys() {
        if !state.index.contains_key(v.as_str()) {
            visit(&mut state, v);
        }
    }
    state.out.sort();
    state.out
}

/// The edges inside one circle, so that the message says which imports to undo.
pub fn edges_within(graph: &Graph, circle: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for from in circle {
        for to in graph.get(from).into_iter().flatten() {
            if circle.contains(to) {
                out.push(format!("{from} -> {to}"));
            }
        }
    }
    out
}

/// The first path segment after each `prefix` (`crate::a::b` → `a`; `crate::{a, b::c}` → `a`, `b`).
pub(super) fn references(text: &str, prefix: &str) -> Vec<String> {
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    let mut from = 0;
    while let Some(at) = text[from..].find(prefix) {
        let start = from + at;
        from = start + prefix.len();
        // `foo_crate::` is not `crate::`.
        if start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_') {
            continue;
        }
        let rest = &text[from..];
        if let Some(group) = rest.strip_prefix('{') {
            out.extend(group_heads(group));
        } else {
            let ident: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !ident.is_empty() {
                out.push(ident);
            }
        }
    }
    out
}

/// The leading identifier of each item of a `{…}` use group (the text after its `{`).
fn group_heads(group: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut depth = 0usize;
    let mut item_start = true;
    let mut ident = String::new();
    let flush = |ident: &mut String, out: &mut Vec<String>| {
        if !ident.is_empty() {
            out.push(std::mem::take(ident));
        }
    };
    for c in group.chars() {
        match c {
            '{' => {
                flush(&mut ident, &mut out);
                depth += 1;
                item_start = false;
            }
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                flush(&mut ident, &mut out);
                item_start = true;
            }
            c if item_start && (c.is_ascii_alphanumeric() || c == '_') => ident.push(c),
            _ => {
                if item_start && !ident.is_empty() {
                    flush(&mut ident, &mut out);
                    item_start = false;
                }
            }
        }
    }
    flush(&mut ident, &mut out);
    out.retain(|i| i != "self");
    out
}

/// The source without comments, string contents and the `#[cfg(test)]` module at its end.
pub(super) fn strip(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => &text[..at],
        None => text,
    };
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    let mut in_str = false;
    while let Some(c) = chars.next() {
        if in_str {
            match c {
                '\\' => {
                    chars.next();
                }
                '"' => {
                    in_str = false;
                    out.push('"');
                }
                _ => {}
            }
            continue;
        }
        match c {
            '/' if chars.peek() == Some(&'/') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            '"' => {
                in_str = true;
                out.push('"');
            }
            c => out.push(c),
        }
    }
    out
}

fn walk(dir: &Path) -> anyhow::Result<Vec<std::path::PathBuf>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            out.extend(walk(&path)?);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(edges: &[(&str, &str)]) -> Graph {
        let mut g = Graph::new();
        for (a, b) in edges {
            g.entry(a.to_string()).or_default().insert(b.to_string());
            g.entry(b.to_string()).or_default();
        }
        g
    }

    #[test]
    fn a_circle_is_found_and_a_chain_is_not() {
        assert!(circles(&graph(&[("a", "b"), ("b", "c")])).is_empty());
        let g = graph(&[("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")]);
        assert_eq!(circles(&g), vec![vec!["a", "b", "c"]]);
        assert_eq!(
            edges_within(&g, &circles(&g)[0]),
            ["a -> b", "b -> c", "c -> a"]
        );
    }

    #[test]
    fn nested_directories_have_graphs_and_are_nodes_of_their_parents() {
        let src = std::env::temp_dir().join(format!("xtask-imports-{}", std::process::id()));
        let write = |rel: &str, text: &str| {
            let path = src.join(rel);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, text).unwrap();
        };
        write("lib.rs", "mod side;");
        write("side/mod.rs", "mod inner; mod util; use self::util::X;");
        write("side/util.rs", "use super::inner::Y;");
        write("side/inner/mod.rs", "mod a; mod b; use super::util::Z;");
        write("side/inner/a.rs", "use super::b::W;");
        write(
            "side/inner/b.rs",
            "use super::a::V; use crate::side::inner::a::U;",
        );
        let graphs: BTreeMap<String, Graph> = graphs(&src).unwrap().into_iter().collect();
        fs::remove_dir_all(&src).unwrap();
        let side = &graphs["eci-agent/src/side"];
        assert_eq!(circles(side), vec![vec!["inner", "util"]]);
        let inner = &graphs["eci-agent/src/side/inner"];
        assert_eq!(circles(inner), vec![vec!["a", "b"]]);
    }

    #[test]
    fn references_read_paths_and_use_groups_not_comments_or_strings() {
        let text = strip(
            "use crate::{a::X, b, c::{d, e}};\nlet _ = crate::f::g();\n// crate::h\nlet s = \"crate::i\";\nfoo_crate::j;\n#[cfg(test)]\nmod tests { use crate::k; }",
        );
        assert_eq!(references(&text, "crate::"), ["a", "b", "c", "f"]);
    }
}
