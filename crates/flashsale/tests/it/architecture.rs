//! The absences ARCHITECTURE.md states about the code, and its code map, checked against the
//! source files: so the document cannot drift from the house it draws.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn server_src() -> PathBuf {
    workspace().join("crates/flashsale-server/src")
}

/// Every `.rs` file under `root`, as a path relative to it with `/` separators.
fn rust_files(root: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, found: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, found);
            } else if path.extension().is_some_and(|extension| extension == "rs") {
                let relative = path.strip_prefix(root).unwrap();
                found.push(relative.to_string_lossy().replace('\\', "/"));
            }
        }
    }
    let mut found = Vec::new();
    walk(root, root, &mut found);
    found.sort();
    found
}

/// A file's code as the build sees it outside tests: its test module and its comments left out.
fn code_of(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let text = text.split("#[cfg(test)]").next().unwrap_or_default();
    text.lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .map(|line| line.split(" // ").next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n")
}

fn names_word(code: &str, word: &str) -> bool {
    code.match_indices(word).any(|(at, _)| {
        let before = code[..at].chars().next_back();
        let after = code[at + word.len()..].chars().next();
        let boundary = |c: Option<char>| !c.is_some_and(|c| c.is_alphanumeric() || c == '_');
        boundary(before) && boundary(after)
    })
}

/// The server library's files whose code names any of `words`.
fn files_naming(words: &[&str]) -> BTreeSet<String> {
    let root = server_src();
    rust_files(&root)
        .into_iter()
        .filter(|file| {
            let code = code_of(&root.join(file));
            words.iter().any(|word| names_word(&code, word))
        })
        .collect()
}

fn set(files: &[&str]) -> BTreeSet<String> {
    files.iter().map(|file| (*file).to_owned()).collect()
}

#[test]
fn the_domain_imports_no_io_and_nothing_of_the_crate_outside_itself() {
    let root = server_src();
    let forbidden = [
        "tokio",
        "axum",
        "hyper",
        "redis",
        "rusqlite",
        "tokio_postgres",
        "deadpool_postgres",
        "lapin",
        "async_nats",
        "std::fs",
        "std::net",
        "std::thread",
        "SystemTime",
        "Instant::now",
        "Timestamp::now",
        "async fn",
    ];
    let mut breaks = Vec::new();
    for file in rust_files(&root.join("domain")) {
        let code = code_of(&root.join("domain").join(&file));
        for (at, _) in code.match_indices("crate::") {
            if !code[at..].starts_with("crate::domain") {
                breaks.push(format!("domain/{file} names {}", &code[at..at + 20]));
            }
        }
        breaks.extend(
            forbidden
                .iter()
                .filter(|word| names_word(&code, word))
                .map(|word| format!("domain/{file} names {word}")),
        );
    }
    assert!(breaks.is_empty(), "{breaks:#?}");
}

#[test]
fn only_the_error_mapping_names_status_codes() {
    // Stripe's client reads the statuses Stripe answers; no other code decides one.
    assert_eq!(
        files_naming(&["StatusCode"]),
        set(&["http/error.rs", "payments/stripe.rs"])
    );
}

#[test]
fn only_the_redis_module_names_redis_keys() {
    let naming = files_naming(&["RedisKeys"]);
    let outside: Vec<_> = naming
        .iter()
        .filter(|file| !file.starts_with("redis/"))
        .collect();
    assert!(outside.is_empty(), "{outside:?}");
    assert!(naming.contains("redis/keys.rs"), "{naming:?}");
}

#[test]
fn only_the_service_uses_both_gate_and_store_beside_the_wiring_and_the_named_maintenance() {
    let gates = files_naming(&["StockGate", "MemoryGate", "RedisGate"]);
    let stores = files_naming(&[
        "OrderStore",
        "JournalStore",
        "SqliteStore",
        "PostgresStore",
        "ClusterStore",
    ]);
    let allowed = set(&[
        "app.rs",
        "cluster/mod.rs",
        "cluster/reconcile.rs",
        "cluster/archive.rs",
    ]);
    let outside: Vec<_> = gates
        .intersection(&stores)
        .filter(|file| !file.starts_with("service/") && !allowed.contains(*file))
        .collect();
    assert!(outside.is_empty(), "{outside:?}");
    assert!(
        gates
            .intersection(&stores)
            .any(|file| file == "service/mod.rs"),
        "the service calls both"
    );
}

/// The code map's rows of one section: the paths in each row's first column.
fn mapped_paths(architecture: &str, heading: &str) -> Vec<String> {
    let section = architecture
        .split("\n### ")
        .find(|section| section.starts_with(heading))
        .unwrap_or_else(|| panic!("no section {heading:?} in ARCHITECTURE.md"));
    let section = section.split("\n## ").next().unwrap_or_default();
    section
        .lines()
        .filter(|line| line.starts_with("| `"))
        .flat_map(|line| {
            let first = line.split('|').nth(1).unwrap_or_default();
            first
                .split('`')
                .skip(1)
                .step_by(2)
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn the_code_map_names_files_that_exist_and_covers_every_file() {
    let architecture = std::fs::read_to_string(workspace().join("ARCHITECTURE.md")).unwrap();
    for (heading, crate_dir) in [
        ("The server library", "crates/flashsale-server/src"),
        ("The load generator", "crates/flashsale-bench/src"),
        ("The binary", "crates/flashsale/src"),
    ] {
        let root = workspace().join(crate_dir);
        let mapped = mapped_paths(&architecture, heading);
        assert!(!mapped.is_empty(), "{heading}: no rows");
        let missing: Vec<_> = mapped
            .iter()
            .filter(|path| !root.join(path).exists())
            .collect();
        assert!(
            missing.is_empty(),
            "{heading}: mapped but absent: {missing:?}"
        );
        let unmapped: Vec<_> = rust_files(&root)
            .into_iter()
            .filter(|file| {
                !mapped.iter().any(|path| {
                    file == path || (path.ends_with('/') && file.starts_with(path.as_str()))
                })
            })
            .collect();
        assert!(
            unmapped.is_empty(),
            "{heading}: files the map leaves out: {unmapped:?}"
        );
    }
}

#[test]
fn the_library_layout_names_every_module() {
    let lib = std::fs::read_to_string(server_src().join("lib.rs")).unwrap();
    let layout: String = lib
        .lines()
        .filter(|line| line.starts_with("//!"))
        .collect::<Vec<_>>()
        .join("\n");
    let unnamed: Vec<_> = lib
        .lines()
        .filter_map(|line| line.strip_prefix("pub mod "))
        .map(|name| name.trim_end_matches(';'))
        .filter(|name| !layout.contains(&format!("`{name}`")))
        .collect();
    assert!(unnamed.is_empty(), "lib.rs's layout leaves out {unnamed:?}");
}
