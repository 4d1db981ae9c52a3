//! docs/requirements.md cites, for each requirement, the tests that show it. A cited
//! test that was renamed or removed would leave the trace pointing at nothing, so this
//! checks that every test named in a `cargo test ...` command there exists.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// Every `.rs` file under `dir`, skipping build output.
fn sources(dir: &Path, out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        if path.is_dir() {
            if name != "target" && name != ".git" {
                sources(&path, out);
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(std::fs::read_to_string(&path).unwrap_or_default());
        }
    }
}

#[test]
fn every_test_cited_in_the_requirements_trace_exists() {
    let trace = std::fs::read_to_string(root().join("docs/requirements.md")).expect("trace");
    let mut code = Vec::new();
    sources(&root(), &mut code);
    let mut cited = 0;
    let mut missing = Vec::new();
    for command in trace.split('`').filter(|c| c.starts_with("cargo test ")) {
        let words: Vec<&str> = command.split_whitespace().collect();
        // The test filter is the last word that is not a flag or a flag's value.
        let Some(name) = words.last().filter(|w| !w.starts_with('-')) else {
            continue;
        };
        if words.len() < 5 || words[words.len() - 2].starts_with('-') {
            continue; // a whole crate or test target, no single test
        }
        if name.contains(['<', '…']) {
            continue; // a template in the explanations, not a citation
        }
        let test = name.rsplit("::").next().unwrap_or(name);
        cited += 1;
        let needle = format!("fn {test}(");
        if !code.iter().any(|file| file.contains(&needle)) {
            missing.push(command.to_string());
        }
    }
    assert!(cited > 100, "only {cited} cited tests found");
    assert!(
        missing.is_empty(),
        "cited but not found:\n{}",
        missing.join("\n")
    );
}
