//! The layering ARCHITECTURE.md promises, checked on the sources: the core crate
//! depends on no runtime, model or protocol crate, only the engine crate builds
//! llama.cpp, remote engines know neither the local engine nor the protocols, and no crate's modules depend on each other in a cycle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The `[dependencies]` of a Cargo.toml (every table whose name ends in
/// `dependencies]` but not `dev-dependencies]`), by name.
fn dependencies(manifest: &Path) -> BTreeSet<String> {
    let text = std::fs::read_to_string(manifest).unwrap();
    let mut in_dependencies = false;
    let mut names = BTreeSet::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            in_dependencies =
                line.ends_with("dependencies]") && !line.ends_with("dev-dependencies]");
            continue;
        }
        if in_dependencies && let Some((name, _)) = line.split_once('=') {
            let name = name.trim();
            if !name.is_empty() && !name.starts_with('#') {
                names.insert(name.to_owned());
            }
        }
    }
    names
}

#[test]
fn the_core_has_no_runtime_model_or_protocol_dependency() {
    let core = dependencies(&repository().join("server/core/Cargo.toml"));
    for banned in [
        "tokio",
        "serde",
        "serde_json",
        "llama-cpp-2",
        "llama-cpp-sys-2",
        "tower-lsp-server",
        "axum",
        "hyper",
        "reqwest",
        "inkling-engine",
        "inkling-remote",
        "inkling",
    ] {
        assert!(!core.contains(banned), "inkling-core depends on {banned}");
    }
}

#[test]
fn remote_engines_know_neither_the_local_engine_nor_the_protocols() {
    let remote = dependencies(&repository().join("server/remote/Cargo.toml"));
    assert!(remote.contains("inkling-core"));
    for banned in ["inkling-engine", "inkling", "tower-lsp-server", "axum"] {
        assert!(
            !remote.contains(banned),
            "inkling-remote depends on {banned}"
        );
    }
    let server = dependencies(&repository().join("server/Cargo.toml"));
    assert!(server.contains("inkling-remote"));
}

#[test]
fn only_the_engine_depends_on_llama_cpp() {
    for manifest in [
        "server/Cargo.toml",
        "server/core/Cargo.toml",
        "server/remote/Cargo.toml",
        "benches/Cargo.toml",
    ] {
        let found = dependencies(&repository().join(manifest));
        for llama in ["llama-cpp-2", "llama-cpp-sys-2"] {
            assert!(!found.contains(llama), "{manifest} depends on {llama}");
        }
    }
    let engine = dependencies(&repository().join("server/engine/Cargo.toml"));
    assert!(engine.contains("llama-cpp-2"));
    assert!(
        !engine.contains("inkling"),
        "the engine depends on the server"
    );
}

/// The modules of the crate at `src` that each module refers to (`crate::name`).
fn module_graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut modules = BTreeMap::new();
    let mut files: Vec<PathBuf> = Vec::new();
    let mut folders = vec![src.to_path_buf()];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                folders.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    let top = |path: &Path| {
        let relative = path.strip_prefix(src).unwrap();
        let first = relative.components().next().unwrap();
        first
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_owned()
    };
    let names: BTreeSet<String> = files.iter().map(|f| top(f)).collect();
    for file in &files {
        let module = top(file);
        if module == "lib" || module == "main" {
            continue;
        }
        let text = std::fs::read_to_string(file).unwrap();
        // Test modules may reach across (a fixture of another module), and comments
        // (doc links) are no dependency.
        let code: String = text
            .split("#[cfg(test)]")
            .next()
            .unwrap_or_default()
            .lines()
            .filter(|line| !line.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        let used: &mut BTreeSet<String> = modules.entry(module.clone()).or_default();
        for (at, _) in code.match_indices("crate::") {
            let rest = &code[at + "crate::".len()..];
            let mut named = Vec::new();
            if let Some(group) = rest.strip_prefix('{') {
                let group = &group[..group.find('}').unwrap_or(group.len())];
                named.extend(
                    group
                        .split(',')
                        .map(|s| s.trim().split("::").next().unwrap()),
                );
            } else {
                named.push(
                    rest.split(|c: char| !c.is_alphanumeric() && c != '_')
                        .next()
                        .unwrap(),
                );
            }
            for name in named {
                if name != module && names.contains(name) && name != "lib" {
                    used.insert(name.to_owned());
                }
            }
        }
    }
    modules
}

/// A cycle in `graph`, if there is one.
fn cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(start) = path.iter().position(|n| n == node) {
            return Some(path[start..].to_vec());
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(found) = visit(next, graph, path, done) {
                return Some(found);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|node| visit(node, graph, &mut Vec::new(), &mut done))
}

#[test]
fn no_crate_has_a_cycle_between_its_modules() {
    for crate_src in [
        "server/core/src",
        "server/engine/src",
        "server/remote/src",
        "server/src",
    ] {
        let graph = module_graph(&repository().join(crate_src));
        assert!(graph.len() >= 5, "{crate_src}: {graph:?}");
        if let Some(found) = cycle(&graph) {
            panic!("{crate_src}: modules in a cycle: {}", found.join(" → "));
        }
    }
}

#[test]
fn the_cycle_check_finds_cycles() {
    let graph: BTreeMap<String, BTreeSet<String>> = [
        ("a", vec!["b"]),
        ("b", vec!["c"]),
        ("c", vec!["a"]),
        ("d", vec![]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.into_iter().map(str::to_owned).collect()))
    .collect();
    assert_eq!(cycle(&graph).map(|c| c.len()), Some(3));
}
