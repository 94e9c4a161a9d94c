//! The box's layering, checked from its sources (the map in `src/lib.rs` must stay true):
//! no import cycle between top-level modules, the leaf modules import nothing of the crate,
//! nothing below the wiring imports `daemon` or `cli`, and `config` is imported only by the
//! wiring (it builds every module's settings, not the other way round).
//!
//! The graph is read from `crate::module` paths in code (comments stripped), the way a
//! newcomer would draw it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const LEAVES: &[&str] = &[
    "shutdown", "clock", "backoff", "secret", "fsutil", "systemd",
];
/// Pure domain code: no I/O, nothing of the crate but the leaves.
const PURE: &[&str] = &["media", "consent"];
const WIRING: &[&str] = &["daemon", "cli"];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

fn strip_comments(text: &str) -> String {
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Top-level module → the top-level modules it names through `crate::`.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let root = src();
    let mut modules = BTreeSet::new();
    for e in std::fs::read_dir(&root).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_stem().unwrap().to_string_lossy().into_owned();
        let is_module = p.is_dir() && name != "bin" || p.extension().is_some_and(|x| x == "rs");
        if is_module && name != "lib" && name != "main" {
            modules.insert(name);
        }
    }
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    let mut g: BTreeMap<String, BTreeSet<String>> = modules
        .iter()
        .map(|m| (m.clone(), BTreeSet::new()))
        .collect();
    for f in files {
        let rel = f.strip_prefix(&root).unwrap();
        let first = rel.iter().next().unwrap().to_string_lossy();
        let from = first.trim_end_matches(".rs").to_owned();
        if !modules.contains(&from) {
            continue;
        }
        let text = strip_comments(&std::fs::read_to_string(&f).unwrap());
        let mut rest = text.as_str();
        while let Some(i) = rest.find("crate::") {
            rest = &rest[i + "crate::".len()..];
            let names: Vec<&str> = if let Some(group) = rest.strip_prefix('{') {
                let end = group.find('}').unwrap_or(group.len());
                group[..end]
                    .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
                    .filter_map(|s| s.split("::").next())
                    .collect()
            } else {
                let end = rest
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(rest.len());
                vec![&rest[..end]]
            };
            for n in names {
                if n != from && modules.contains(n) {
                    g.get_mut(&from).unwrap().insert(n.to_owned());
                }
            }
        }
    }
    g
}

#[test]
fn the_graph_sees_the_edges_it_should() {
    // A sanity check of the parser itself: edges that the architecture has on purpose.
    let g = graph();
    assert!(g["daemon"].contains("store"), "{:?}", g["daemon"]);
    assert!(g["sharing"].contains("consent"), "{:?}", g["sharing"]);
    assert!(g["ingest"].contains("media"), "{:?}", g["ingest"]);
    assert!(g.len() > 20, "{g:?}");
}

#[test]
fn top_level_modules_have_no_import_cycle() {
    let g = graph();
    // Depth-first search for a back edge; reports the cycle it finds.
    fn visit(
        m: &str,
        g: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) {
        if let Some(i) = path.iter().position(|p| p == m) {
            panic!("import cycle: {} -> {m}", path[i..].join(" -> "));
        }
        if done.contains(m) {
            return;
        }
        path.push(m.to_owned());
        for n in &g[m] {
            visit(n, g, path, done);
        }
        path.pop();
        done.insert(m.to_owned());
    }
    let mut done = BTreeSet::new();
    for m in g.keys() {
        visit(m, &g, &mut Vec::new(), &mut done);
    }
}

#[test]
fn leaf_modules_import_nothing_of_the_crate() {
    let g = graph();
    for leaf in LEAVES {
        assert!(g[*leaf].is_empty(), "{leaf} imports {:?}", g[*leaf]);
    }
}

#[test]
fn pure_modules_import_only_leaves() {
    let g = graph();
    for m in PURE {
        let bad: Vec<_> = g[*m]
            .iter()
            .filter(|n| !LEAVES.contains(&n.as_str()))
            .collect();
        assert!(bad.is_empty(), "{m} imports {bad:?}");
    }
}

#[test]
fn nothing_below_the_wiring_imports_daemon_cli_or_config() {
    let g = graph();
    for (m, deps) in &g {
        if WIRING.contains(&m.as_str()) || m == "config" {
            continue;
        }
        for w in WIRING.iter().chain(["config"].iter()) {
            assert!(!deps.contains(*w), "{m} imports {w}");
        }
    }
}
