//! Each file under fixtures/bad/ starts with `# error: LINE:COLUMN: MESSAGE` (or
//! `# error: MESSAGE` when there is no position): loading it must fail with exactly
//! `NAME.yaml:LINE:COLUMN: MESSAGE`.

use berth_spec::*;
use std::path::PathBuf;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bad")
}

#[test]
fn every_bad_fixture_fails_with_its_exact_message() {
    let mut checked = 0;
    let mut failures = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(fixtures())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    entries.sort();
    for path in entries {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&path).unwrap();
        let want = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# error: "))
            .unwrap_or_else(|| panic!("{name}: the first line must be `# error: ...`"));
        let want = if want.starts_with(|c: char| c.is_ascii_digit()) {
            format!("{name}:{want}")
        } else {
            want.to_string()
        };
        let got = load_texts(
            vec![(name.clone(), text.clone())],
            PathBuf::from("/srv/app"),
            &LoadOptions {
                env: Some(Default::default()),
                ..Default::default()
            },
        );
        match got {
            Ok(_) => failures.push(format!("{name}: loaded, expected `{want}`")),
            Err(e) if e.to_string() != want => {
                failures.push(format!("{name}:\n  got  `{e}`\n  want `{want}`"))
            }
            Err(_) => {}
        }
        checked += 1;
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
    assert!(checked >= 30, "only {checked} fixtures");
}
