//! Where the test tools are.

use std::path::PathBuf;

/// The repository root.
pub fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

/// The path of a test tool: `$env_var` when set, else `relative` under the
/// tools directory (`$VESPER_TOOLS_DIR`, default `.tools/` at the root).
/// Panics with the command that installs it when it is missing.
pub fn tool(env_var: &str, relative: &str) -> PathBuf {
    let path = std::env::var_os(env_var)
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let tools = std::env::var_os("VESPER_TOOLS_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| workspace_root().join(".tools"));
            tools.join(relative)
        });
    assert!(
        path.exists(),
        "test tool {} is not installed ({env_var} unset or wrong). Run the test command \
         `scripts/test`, or `eval \"$(scripts/bootstrap-tools)\"` before `cargo test`.",
        path.display()
    );
    path
}
