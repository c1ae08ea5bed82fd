//! The library's modules are layers that import only downward (see `src/lib.rs`): a file may use
//! its own layer and the layers listed before it, never one after it. Read from the sources, so
//! an import that points up a layer fails here with the file and the line.

use std::path::Path;

/// The layers, lowest first.
const LAYERS: &[&str] = &["text", "data", "eval", "config", "model", "store", "infer", "train", "serve", "apps"];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| *l == module)
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every `crate::NAME` a source text mentions, with its line number.
fn crate_paths(text: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for (no, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            let after = &rest[at + "crate::".len()..];
            let name: String = after.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            if !name.is_empty() {
                found.push((no + 1, name));
            }
            rest = after;
        }
    }
    found
}

#[test]
fn library_layers_import_only_downward() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut wrong = Vec::new();
    let mut checked = 0;
    for file in &files {
        let rel = file.strip_prefix(&src).unwrap();
        let top = rel.components().next().unwrap().as_os_str().to_string_lossy().trim_end_matches(".rs").to_string();
        if top == "cli" || top == "main" || top == "lib" {
            continue; // the binary uses the library from outside
        }
        let own = layer_of(&top).unwrap_or_else(|| panic!("src/{}: module {top} is in no layer of tests/layers.rs", rel.display()));
        let text = std::fs::read_to_string(file).unwrap();
        for (line, name) in crate_paths(&text) {
            let used = layer_of(&name).unwrap_or_else(|| panic!("src/{}:{line}: crate::{name} is in no layer", rel.display()));
            checked += 1;
            if used > own {
                wrong.push(format!("src/{}:{line}: layer {top} uses crate::{name}, a layer above it", rel.display()));
            }
        }
    }
    assert!(checked > 100, "only {checked} crate paths found: is the scan broken?");
    assert!(wrong.is_empty(), "imports pointing up a layer:\n{}", wrong.join("\n"));
}

#[test]
fn the_scan_sees_paths_and_skips_comments() {
    let paths = crate_paths("use crate::store::layout::X; // crate::apps\nlet a = crate::text::f(crate::data::g());");
    assert_eq!(paths, vec![(1, "store".into()), (2, "text".into()), (2, "data".into())]);
}
