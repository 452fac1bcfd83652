//! `vesper tokens`: issue bearer tokens (docs/security.md).

use std::io::Write;

use anyhow::Context;
use clap::{Args, Subcommand};
use vesper::auth::{Right, Rights, Token, tokens_file_line};

/// Issue bearer tokens for the servers' tokens files.
#[derive(Debug, Args)]
pub(crate) struct TokensCommand {
    #[command(subcommand)]
    action: TokensAction,
}

#[derive(Debug, Subcommand)]
enum TokensAction {
    /// Make a fresh random token: print it once (for the client), and the
    /// line that lets it in (for the servers' --auth-tokens file, which
    /// holds only its SHA-256).
    New(NewCommand),
    /// Print the tokens-file line of an existing token (read from a file):
    /// to let it into another server with other rights, or to write the
    /// line again.
    Line(LineCommand),
}

#[derive(Debug, Args)]
struct LineCommand {
    /// The name the line gives the token.
    #[arg(long, value_name = "NAME")]
    name: String,

    /// A right the token carries on this server (repeat, or separate with
    /// commas).
    #[arg(
        long = "right",
        value_name = "RIGHT",
        required = true,
        value_delimiter = ','
    )]
    rights: Vec<Right>,

    /// The file holding the token.
    #[arg(long, value_name = "FILE")]
    token_file: std::path::PathBuf,
}

impl LineCommand {
    fn run(self) -> anyhow::Result<()> {
        vesper::auth::check_name(&self.name)?;
        let token = Token::from_file(&self.token_file)?;
        let rights: Rights = self.rights.iter().copied().collect();
        let mut out = std::io::stdout().lock();
        writeln!(out, "{}", tokens_file_line(&self.name, rights, &token))?;
        out.flush()?;
        Ok(())
    }
}

#[derive(Debug, Args)]
struct NewCommand {
    /// Who or what holds the token (letters, digits, '.', '_', '-'); the
    /// servers record it on each call's span, and name it when a right is
    /// missing.
    #[arg(long, value_name = "NAME")]
    name: String,

    /// A right the token carries (repeat, or separate with commas):
    /// events:write, lake:read, lake:write, pipelines:run,
    /// generator:control, source:read, status:read.
    #[arg(
        long = "right",
        value_name = "RIGHT",
        required = true,
        value_delimiter = ','
    )]
    rights: Vec<Right>,

    /// Write the token to this file (created, mode 0600 on Unix; refused if
    /// it exists) instead of printing it.
    #[arg(long, value_name = "FILE")]
    token_file: Option<std::path::PathBuf>,
}

impl TokensCommand {
    pub(crate) fn run(self) -> anyhow::Result<()> {
        match self.action {
            TokensAction::New(command) => command.run(),
            TokensAction::Line(command) => command.run(),
        }
    }
}

impl NewCommand {
    fn run(self) -> anyhow::Result<()> {
        vesper::auth::check_name(&self.name)?;
        let rights: Rights = self.rights.iter().copied().collect();
        let token = Token::generate();
        let line = tokens_file_line(&self.name, rights, &token);
        let mut out = std::io::stdout().lock();
        match &self.token_file {
            Some(path) => {
                write_secret(path, token.expose())
                    .with_context(|| format!("cannot write {}", path.display()))?;
                writeln!(out, "# token written to {}", path.display())?;
            }
            None => {
                writeln!(
                    out,
                    "# the token (shown once; give it to the client: --token-file, VESPER_TOKEN or --peer-token-file):"
                )?;
                writeln!(out, "{}", token.expose())?;
            }
        }
        writeln!(
            out,
            "# the line for the servers' tokens file (--auth-tokens):"
        )?;
        writeln!(out, "{line}")?;
        out.flush()?;
        Ok(())
    }
}

fn write_secret(path: &std::path::Path, token: &str) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    writeln!(file, "{token}")?;
    file.sync_all()
}
