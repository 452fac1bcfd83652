//! `vesper analytics`: builds the dbt project over a lake and prints the
//! top-5 table, by running the project's own driver (`dbt/analytics.py`,
//! which bootstraps uv and dbt). This command only finds the driver and
//! Python, and passes the options and the exit code through.

use std::{
    ffi::OsString,
    path::{Path, PathBuf},
    process::Stdio,
};

use anyhow::Context;
use clap::Args;
use vesper::config::{Lake, defaults};

/// The dbt project of the source tree this binary was built from.
const SOURCE_TREE_DBT_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../dbt");

/// Build the analytics (dbt + DuckDB) over a lake and print the top-5 table.
#[derive(Debug, Clone, Args)]
pub(crate) struct AnalyticsCommand {
    /// The lake to read: a directory or s3://BUCKET[/PREFIX] (S3 credentials
    /// and endpoint from the standard AWS variables).
    #[arg(
        long,
        env = "VESPER_LAKE",
        default_value = defaults::LAKE,
        value_name = "DIR|s3://BUCKET[/PREFIX]"
    )]
    pub(crate) lake: Lake,

    /// dbt target; default: s3 for an s3:// lake, else local.
    #[arg(long, value_parser = ["local", "s3"])]
    target: Option<String>,

    /// The DuckDB results file to build (default: results/dbt.duckdb at the
    /// repository root).
    #[arg(long, env = "VESPER_DUCKDB_PATH", value_name = "FILE")]
    results: Option<PathBuf>,

    /// Build only these dbt nodes (dbt's --select syntax).
    #[arg(long, num_args = 1.., value_name = "SELECTOR")]
    select: Vec<String>,

    /// The dbt project directory (default: ./dbt if it exists, else the dbt/
    /// directory of the source tree vesper was built from).
    #[arg(long, env = "VESPER_DBT_DIR", value_name = "DIR")]
    dbt_dir: Option<PathBuf>,

    /// The Python 3 interpreter that runs the driver (3.10 or newer).
    #[arg(
        long,
        env = "VESPER_PYTHON",
        default_value = "python3",
        value_name = "PATH"
    )]
    python: PathBuf,
}

/// The driver's own exit status, passed through as vesper's.
#[derive(Debug, thiserror::Error)]
#[error("analytics failed ({meaning}; exit status {code})")]
pub(crate) struct AnalyticsFailed {
    pub(crate) code: i32,
    meaning: &'static str,
}

impl AnalyticsCommand {
    /// Options for `lake`, everything else default (what `vesper demo` runs).
    pub(crate) fn for_lake(lake: Lake) -> Self {
        Self {
            lake,
            target: None,
            results: None,
            select: Vec::new(),
            dbt_dir: None,
            python: PathBuf::from("python3"),
        }
    }

    pub(crate) async fn run(self) -> anyhow::Result<()> {
        let dbt_dir = self.project_dir()?;
        let driver = dbt_dir.join("analytics.py");
        let mut args: Vec<OsString> = vec![driver.into(), "--lake".into(), lake_arg(&self.lake)?];
        if let Some(target) = &self.target {
            args.extend(["--target".into(), target.into()]);
        }
        if let Some(results) = &self.results {
            args.extend(["--results".into(), results.into()]);
        }
        if !self.select.is_empty() {
            args.push("--select".into());
            args.extend(self.select.iter().map(OsString::from));
        }
        tracing::info!(lake = %self.lake, project = %dbt_dir.display(), "building the analytics");
        let status = tokio::process::Command::new(&self.python)
            .args(&args)
            .stdin(Stdio::null())
            .status()
            .await
            .map_err(|err| match err.kind() {
                std::io::ErrorKind::NotFound => anyhow::anyhow!(
                    "the analytics run dbt through Python 3 (3.10 or newer), and {:?} was not found: \
                     install Python 3 with venv support (e.g. `apt install python3 python3-venv`), \
                     or point VESPER_PYTHON at an interpreter",
                    self.python
                ),
                _ => anyhow::anyhow!("cannot run {:?}: {err}", self.python),
            })?;
        match status.code() {
            Some(0) => Ok(()),
            Some(code) => Err(AnalyticsFailed {
                code,
                meaning: match code {
                    1 => "dbt build failed: a model or a data test failed, see dbt's output above",
                    2 => "bad arguments or environment, see the message above",
                    3 => "the Python/uv/dbt environment could not be set up; the message above says what to install",
                    4 => "built, but the results file could not be read",
                    _ => "unexpected exit",
                },
            }
            .into()),
            None => anyhow::bail!("the analytics driver was killed by a signal"),
        }
    }

    fn project_dir(&self) -> anyhow::Result<PathBuf> {
        if let Some(dir) = &self.dbt_dir {
            return check_project(dir);
        }
        let local = Path::new("dbt");
        if local.join("analytics.py").is_file() {
            return Ok(local.to_path_buf());
        }
        check_project(Path::new(SOURCE_TREE_DBT_DIR)).context(
            "no dbt project found: run from the repository root, or give --dbt-dir (env VESPER_DBT_DIR)",
        )
    }
}

fn check_project(dir: &Path) -> anyhow::Result<PathBuf> {
    let driver = dir.join("analytics.py");
    anyhow::ensure!(
        driver.is_file(),
        "{} is not vesper's dbt project (no analytics.py there)",
        dir.display()
    );
    Ok(dir.to_path_buf())
}

/// The lake as the driver takes it: directories absolute, so the driver's
/// working directory does not matter.
fn lake_arg(lake: &Lake) -> anyhow::Result<OsString> {
    Ok(match lake {
        Lake::Dir(path) => std::path::absolute(path)
            .with_context(|| format!("cannot resolve the lake directory {}", path.display()))?
            .into(),
        s3 @ Lake::S3 { .. } => s3.to_string().into(),
    })
}
