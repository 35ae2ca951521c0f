//! The architecture rules of `host/src`, checked on its source: folders by
//! role whose dependencies point one way (`lib.rs`, `docs/architecture.md`).
//!
//! A dependency is a `crate::…` path in a module's code (comments and
//! `#[cfg(test)]` modules left out); `use` groups (`crate::{a, b}`) are
//! split into their paths.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Module path (`swap::pipeline`) → the modules its code names.
type Graph = BTreeMap<String, BTreeSet<String>>;

fn host_src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../host/src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read host/src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            out.push(path);
        }
    }
}

/// `swap/pipeline.rs` → `swap::pipeline`, `admin/mod.rs` → `admin`; the
/// crate roots are not modules of their own.
fn module_name(root: &Path, file: &Path) -> Option<String> {
    let relative = file.strip_prefix(root).ok()?.with_extension("");
    let mut parts: Vec<String> = relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().map(String::as_str) == Some("mod") {
        parts.pop();
    }
    match parts.as_slice() {
        [only] if only == "lib" || only == "main" => None,
        _ => Some(parts.join("::")),
    }
}

/// The code of a file: before its first `#[cfg(test)]`, without comments.
fn code_of(text: &str) -> String {
    let code = text.split("#[cfg(test)]").next().unwrap_or_default();
    code.lines()
        .map(|line| {
            // A comment starts at `//` not preceded by `:` (as in "http://").
            let bytes = line.as_bytes();
            let start = (0..bytes.len().saturating_sub(1))
                .find(|&i| &bytes[i..i + 2] == b"//" && (i == 0 || bytes[i - 1] != b':'));
            start.map_or(line, |start| &line[..start])
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every `crate::a::b…` path in `code`, with `crate::{x, y::z}` groups expanded.
fn crate_paths(code: &str) -> Vec<String> {
    let mut paths = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            paths.extend(group[..end].split(',').map(|p| p.trim().to_string()));
            continue;
        }
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(rest.len());
        paths.push(rest[..end].trim_end_matches(':').to_string());
    }
    paths
}

/// The module graph of `host/src`.
fn graph() -> Graph {
    let root = host_src();
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    let modules: BTreeMap<String, PathBuf> = files
        .into_iter()
        .filter_map(|file| Some((module_name(&root, &file)?, file)))
        .collect();
    // The longest known module a path starts with.
    let resolve = |path: &str| -> Option<String> {
        let segments: Vec<&str> = path.split("::").collect();
        (1..=segments.len())
            .rev()
            .map(|n| segments[..n].join("::"))
            .find(|candidate| modules.contains_key(candidate))
    };
    let mut graph = Graph::new();
    for (module, file) in &modules {
        let code = code_of(&std::fs::read_to_string(file).expect("read source"));
        let targets = crate_paths(&code)
            .iter()
            .filter_map(|path| resolve(path))
            .filter(|target| target != module && !module.starts_with(&format!("{target}::")))
            .collect();
        graph.insert(module.clone(), targets);
    }
    graph
}

/// The top-level module or folder a module belongs to.
fn folder(module: &str) -> &str {
    module.split("::").next().unwrap_or(module)
}

/// The graph between folders (and top-level files).
fn folder_graph(graph: &Graph) -> Graph {
    let mut folders = Graph::new();
    for (from, targets) in graph {
        for to in targets {
            if folder(from) != folder(to) {
                folders
                    .entry(folder(from).to_string())
                    .or_default()
                    .insert(folder(to).to_string());
            }
        }
    }
    folders
}

/// One cycle of `graph`, if it has any (depth-first search).
fn find_cycle(graph: &Graph) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &Graph,
        done: &mut BTreeSet<String>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        if let Some(start) = path.iter().position(|n| n == node) {
            let mut cycle = path[start..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, done, path) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|node| visit(node, graph, &mut done, &mut Vec::new()))
}

#[test]
fn the_parser_sees_imports_and_their_groups() {
    let code = code_of(
        "use crate::swap::pipeline::{A, B};\nuse crate::{admin, front::listener};\n// crate::watch\nlet u = \"http://x\"; crate::units::parse(); // crate::cli\n#[cfg(test)]\nuse crate::cli;",
    );
    assert_eq!(
        crate_paths(&code),
        ["swap::pipeline", "admin", "front::listener", "units::parse"]
    );
    let mut looped = Graph::new();
    looped.insert("a".into(), ["b".into()].into());
    looped.insert("b".into(), ["a".into()].into());
    assert!(find_cycle(&looped).is_some());
}

#[test]
fn no_module_of_host_src_imports_itself_back() {
    let graph = graph();
    assert!(graph.contains_key("swap::pipeline"), "{graph:?}");
    assert_eq!(find_cycle(&graph), None);
}

#[test]
fn folders_depend_one_way() {
    let folders = folder_graph(&graph());
    assert_eq!(find_cycle(&folders), None, "{folders:#?}");
    let uses = |from: &str, to: &str| {
        folders
            .get(from)
            .is_some_and(|targets| targets.contains(to))
    };
    // The request path and the swap pipeline meet only in the registry snapshot.
    assert!(!uses("front", "swap"), "front imports swap: {folders:#?}");
    assert!(uses("front", "model") && uses("swap", "model"));
    // The model is the bottom: it knows nothing of who changes or serves it.
    for upper in ["front", "swap", "admin", "cli", "serve", "watch", "config"] {
        assert!(!uses("model", upper), "model imports {upper}: {folders:#?}");
    }
    for upper in ["front", "swap", "model", "admin", "cli", "serve", "watch"] {
        assert!(
            !uses("engine", upper),
            "engine imports {upper}: {folders:#?}"
        );
    }
}
