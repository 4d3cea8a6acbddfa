//! The crate graph's allowed directions, read from `cargo metadata`: `docs/architecture.md`
//! ("Crates and who may depend on whom") states the same rules. A new dependency between berth
//! crates that breaks them fails here, before it grows roots.

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

/// Edges that break the rules today and are tolerated until they are removed, each with the
/// reason it exists. Nothing may be added here without a line in docs/architecture.md.
const TOLERATED: &[(&str, &str, &str)] = &[];

/// Crates that host or drive every service: they may depend on any berth crate.
const HOSTS: &[&str] = &["berthd", "berth-bench", "berth-tests"];

struct Crate {
    /// `shared` or `services` (the top-level folder), or another folder for hosts.
    layer: String,
    deps: BTreeSet<String>,
}

fn workspace() -> BTreeMap<String, Crate> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(&root)
        .output()
        .expect("running cargo metadata");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: Value = serde_json::from_slice(&out.stdout).expect("cargo metadata's JSON");
    let root = Path::new(meta["workspace_root"].as_str().unwrap()).to_path_buf();
    let mut crates = BTreeMap::new();
    for p in meta["packages"].as_array().unwrap() {
        let name = p["name"].as_str().unwrap().to_string();
        let manifest = Path::new(p["manifest_path"].as_str().unwrap());
        let rel = manifest.strip_prefix(&root).unwrap();
        let layer = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .into_owned();
        let deps = p["dependencies"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["kind"].is_null() && d["path"].is_string())
            .map(|d| d["name"].as_str().unwrap().to_string())
            .collect();
        crates.insert(name, Crate { layer, deps });
    }
    crates
}

/// Every rule broken by one edge `from → to`, as a sentence.
fn broken(crates: &BTreeMap<String, Crate>, from: &str, to: &str) -> Option<String> {
    if HOSTS.contains(&from) {
        return None;
    }
    let (f, t) = (&crates[from], &crates[to]);
    if from == "berth-proto" {
        return Some(format!(
            "berth-proto holds types only and depends on no berth crate, but depends on {to}"
        ));
    }
    if f.layer == "shared" && t.layer != "shared" {
        return Some(format!(
            "{from} is shared and may depend only on shared crates, but depends on {to} ({})",
            t.layer
        ));
    }
    if f.layer == "services" && t.layer == "services" {
        return Some(format!(
            "{from} is a service and talks to other services over the bus, but depends on {to}"
        ));
    }
    None
}

#[test]
fn berth_crates_depend_only_in_the_allowed_directions() {
    let crates = workspace();
    assert!(crates.contains_key("berth-proto") && crates.contains_key("berthd"));
    let mut errors = vec![];
    for (from, c) in &crates {
        for to in c.deps.iter().filter(|d| crates.contains_key(*d)) {
            if let Some(why) = broken(&crates, from, to) {
                if !TOLERATED.iter().any(|(f, t, _)| f == from && t == to) {
                    errors.push(why);
                }
            }
        }
    }
    assert!(errors.is_empty(), "{}", errors.join("\n"));
}

#[test]
fn every_tolerated_edge_still_exists() {
    // An edge removed from the code is removed from the list too, so the list stays true.
    let crates = workspace();
    for (from, to, why) in TOLERATED {
        assert!(
            crates.get(*from).is_some_and(|c| c.deps.contains(*to)),
            "{from} → {to} ({why}) is gone: remove it from TOLERATED and docs/architecture.md"
        );
        assert!(
            broken(&crates, from, to).is_some(),
            "{from} → {to} breaks no rule"
        );
    }
}

#[test]
fn the_rules_catch_a_forbidden_edge() {
    // The checker itself: a shared crate depending on a service is reported.
    let mut crates = workspace();
    crates
        .get_mut("berth-spec")
        .unwrap()
        .deps
        .insert("berth-supervisor".into());
    let why = broken(&crates, "berth-spec", "berth-supervisor").expect("reported");
    assert!(why.contains("may depend only on shared crates"), "{why}");
    assert!(broken(&crates, "berth-supervisor", "berth-bus").is_none());
    assert!(broken(&crates, "berth-supervisor", "berth-reconciler").is_some());
}
