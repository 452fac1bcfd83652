//! `scripts/check-protos`, the Buf checks of the protobuf contracts, on the
//! real contracts (they pass) and on copies with one change each: every
//! lint problem and every breaking change fails the check and is named,
//! while an addition passes. So the check in the test command can fail.

use std::{path::Path, process::Command};

use vesper_tests::{tool, workspace_root};

/// What a run of the checker said.
struct Verdict {
    code: Option<i32>,
    output: String,
}

fn buf() -> std::path::PathBuf {
    tool("VESPER_BUF", "buf/bin/buf")
}

/// Runs `scripts/check-protos` on the module at `root`, against the
/// repository's committed baseline.
fn check(root: &Path, buf: &Path) -> Verdict {
    let output = Command::new(workspace_root().join("scripts/check-protos"))
        .arg("--root")
        .arg(root)
        .arg("--against")
        .arg(workspace_root().join("proto/baseline.binpb"))
        .arg("--buf")
        .arg(buf)
        .output()
        .expect("cannot run scripts/check-protos (bash on PATH?)");
    Verdict {
        code: output.status.code(),
        output: format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    }
}

/// A scratch copy of the module (buf.yaml and the contracts), with `file`
/// (under proto/vesper/v1) changed by `change`.
fn module_with(file: &str, change: impl Fn(&str) -> String) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = workspace_root();
    std::fs::copy(root.join("buf.yaml"), dir.path().join("buf.yaml")).expect("copy buf.yaml");
    let contracts = dir.path().join("proto/vesper/v1");
    std::fs::create_dir_all(&contracts).expect("create proto/vesper/v1");
    let mut changed = false;
    for entry in std::fs::read_dir(root.join("proto/vesper/v1")).expect("read proto/vesper/v1") {
        let path = entry.expect("directory entry").path();
        let name = path.file_name().expect("file name").to_owned();
        let mut text = std::fs::read_to_string(&path).expect("read a proto file");
        if name == file {
            text = change(&text);
            changed = true;
        }
        std::fs::write(contracts.join(&name), text).expect("write a proto file");
    }
    assert!(changed, "no contract file {file} to change");
    dir
}

/// `text` with `from` replaced by `to`; `from` must occur exactly once, so
/// that a change can never silently stop applying when the file changes.
fn replace_once(text: &str, from: &str, to: &str) -> String {
    let count = text.matches(from).count();
    assert_eq!(
        count, 1,
        "the change expects {from:?} exactly once in the file, found it {count} times"
    );
    text.replacen(from, to, 1)
}

/// One change to the contracts and what the checker must say about it.
struct Change {
    what: &'static str,
    file: &'static str,
    apply: fn(&str) -> String,
    expected: &'static [&'static str],
}

const BATCH_BYTES: &str = "uint64 batch_bytes = 14;";

const BREAKING_OR_UNLINTED: &[Change] = &[
    Change {
        what: "a renamed field",
        file: "ingest.proto",
        apply: |text| replace_once(text, BATCH_BYTES, "uint64 batch_size_bytes = 14;"),
        expected: &[
            "changed name from \"batch_bytes\" to \"batch_size_bytes\"",
            "break the released contracts",
        ],
    },
    Change {
        what: "a deleted field",
        file: "ingest.proto",
        apply: |text| replace_once(text, BATCH_BYTES, ""),
        expected: &["field \"14\" with name \"batch_bytes\"", "was deleted"],
    },
    Change {
        what: "a field whose type changed",
        file: "ingest.proto",
        apply: |text| replace_once(text, BATCH_BYTES, "uint32 batch_bytes = 14;"),
        expected: &["changed type from \"uint64\" to \"uint32\""],
    },
    Change {
        what: "a renamed service",
        file: "storage.proto",
        apply: |text| replace_once(text, "service Storage {", "service StorageService {"),
        expected: &["service \"Storage\" was deleted"],
    },
    Change {
        what: "a new service without the Service suffix (the exception is per file)",
        file: "events.proto",
        apply: |text| {
            format!(
                "{text}\nservice Events {{\n  rpc Get(GetEventRequest) returns (GetEventResponse);\n}}\n\
                 message GetEventRequest {{}}\nmessage GetEventResponse {{}}\n"
            )
        },
        expected: &[
            "Service name \"Events\" should be suffixed with \"Service\"",
            "buf lint found the problems above",
        ],
    },
    Change {
        what: "a field name that is not lower_snake_case",
        file: "ingest.proto",
        apply: |text| {
            replace_once(
                text,
                BATCH_BYTES,
                "uint64 batch_bytes = 14;\n  uint64 newCounter = 99;",
            )
        },
        expected: &["Field name \"newCounter\" should be lower_snake_case"],
    },
];

#[test]
fn the_contracts_pass_lint_and_match_the_baseline() {
    let verdict = check(&workspace_root(), &buf());
    assert_eq!(
        verdict.code,
        Some(0),
        "scripts/check-protos fails on the repository's contracts:\n{}",
        verdict.output
    );
}

#[test]
fn every_breaking_change_and_lint_problem_fails_the_check_and_is_named() {
    let buf = buf();
    let mut wrong = Vec::new();
    for change in BREAKING_OR_UNLINTED {
        let module = module_with(change.file, change.apply);
        let verdict = check(module.path(), &buf);
        let missing: Vec<_> = change
            .expected
            .iter()
            .filter(|needle| !verdict.output.contains(*needle))
            .collect();
        if verdict.code != Some(1) || !missing.is_empty() {
            wrong.push(format!(
                "{}: exit {:?}, missing {missing:?} in:\n{}",
                change.what, verdict.code, verdict.output
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n\n"));
}

#[test]
fn an_added_field_passes() {
    let module = module_with("ingest.proto", |text| {
        replace_once(
            text,
            BATCH_BYTES,
            "uint64 batch_bytes = 14;\n  uint64 new_counter = 99;",
        )
    });
    let verdict = check(module.path(), &buf());
    assert_eq!(verdict.code, Some(0), "{}", verdict.output);
}

#[test]
fn a_missing_buf_is_an_error_not_a_pass() {
    let missing = workspace_root().join("no-such-buf");
    let verdict = check(&workspace_root(), &missing);
    assert_eq!(verdict.code, Some(2), "{}", verdict.output);
    assert!(
        verdict.output.contains("buf not found"),
        "{}",
        verdict.output
    );
}
