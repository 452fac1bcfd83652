//! Access control: bearer tokens that carry rights, checked on every gRPC
//! port (a tower layer, [`AuthLayer`]) and on the gateway's REST, control
//! and webhook routes.
//!
//! A server reads a tokens file (`--auth-tokens`, `VESPER_AUTH_TOKENS`)
//! that holds, per token, a name, its rights and the SHA-256 of the token,
//! never the token itself, so a leaked configuration leaks no credential:
//!
//! ```text
//! # name   rights                                 sha256 of the token
//! gateway  events:write,source:read,status:read    sha256:9f86d0...
//! ```
//!
//! A client sends `authorization: Bearer <token>`; the server hashes what
//! it got and compares the digest with every known digest in constant
//! time. Without a tokens file a server lets everyone in, as before (the
//! loopback default, so the README's commands need no token).
//!
//! Every method of every contract needs one [`Right`] ([`grpc_access`]);
//! `grpc.health.v1.Health` is open for probes, and reflection follows
//! `--reflection`. A missing, malformed or unknown token gets
//! UNAUTHENTICATED (401 on HTTP), a known token without the right gets
//! PERMISSION_DENIED (403) naming the missing right. The token's name, never
//! the token, is recorded on the call's span (`enduser.id`).
//!
//! Tokens never reach a log, a span or a metric: [`Token`]'s `Debug` is
//! redacted, it has no `Display`, and the header value is marked
//! sensitive (HTTP/2 never indexes it).

use std::{
    collections::HashSet,
    fmt,
    future::Future,
    net::SocketAddr,
    path::{Path, PathBuf},
    pin::Pin,
    str::FromStr,
    sync::{Arc, OnceLock},
    task::{Context, Poll},
};

use http::{HeaderMap, HeaderValue, header::AUTHORIZATION};
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tonic::body::Body;

/// The environment variable a client command reads its token from.
pub const TOKEN_ENV: &str = "VESPER_TOKEN";
/// The environment variable a serving command reads the token of its own
/// calls to its peers from.
pub const PEER_TOKEN_ENV: &str = "VESPER_PEER_TOKEN";
/// What every fresh token starts with, so secret scanners and people can
/// tell a vesper token when they see one.
pub const TOKEN_PREFIX: &str = "vsp_";
/// Random bytes in a fresh token.
const TOKEN_BYTES: usize = 32;
/// The longest token accepted, from a header or a file.
pub const MAX_TOKEN_LEN: usize = 512;
/// The longest tokens file read (a file larger than this is a mistake).
pub const MAX_TOKENS_FILE_BYTES: u64 = 1024 * 1024;
/// The `www-authenticate` challenge of a refusal for want of a token.
pub const CHALLENGE: &str = "Bearer realm=\"vesper\"";

/// What a token may do. Each gRPC method and each gateway route needs one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Right {
    /// `events:write`: send events (EventIngest/Ingest and Flush, the
    /// webhook).
    EventsWrite,
    /// `lake:read`: read the lake (Storage/GetObject, HeadObject,
    /// ListObjects).
    LakeRead,
    /// `lake:write`: write and delete in the lake (Storage/PutObject,
    /// DeleteObject).
    LakeWrite,
    /// `pipelines:run`: run batch pipelines (BatchPipeline/Run).
    PipelinesRun,
    /// `generator:control`: start and stop the event generator
    /// (DataSource/StartGenerator, StopGenerator; POST /start-generator,
    /// /stop-generator).
    GeneratorControl,
    /// `source:read`: read the mock upstream's data (DataSource/ListUsers,
    /// ListContent, GenerateEvents; GET /api/*).
    SourceRead,
    /// `status:read`: read counters and status (EventIngest/Stats,
    /// DataSource/GeneratorStatus, BatchPipeline/List).
    StatusRead,
}

impl Right {
    /// Every right, in the order the docs list them.
    pub const ALL: [Right; 7] = [
        Right::EventsWrite,
        Right::LakeRead,
        Right::LakeWrite,
        Right::PipelinesRun,
        Right::GeneratorControl,
        Right::SourceRead,
        Right::StatusRead,
    ];

    /// The right's name, as tokens files and messages write it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::EventsWrite => "events:write",
            Self::LakeRead => "lake:read",
            Self::LakeWrite => "lake:write",
            Self::PipelinesRun => "pipelines:run",
            Self::GeneratorControl => "generator:control",
            Self::SourceRead => "source:read",
            Self::StatusRead => "status:read",
        }
    }

    const fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl fmt::Display for Right {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Right {
    type Err = AuthError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|right| right.as_str() == text.trim())
            .ok_or_else(|| AuthError::UnknownRight {
                right: text.trim().to_owned(),
            })
    }
}

/// A set of rights.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Rights(u8);

impl Rights {
    /// No rights.
    pub const NONE: Rights = Rights(0);

    /// Every right.
    pub fn all() -> Self {
        Right::ALL.into_iter().collect()
    }

    /// Whether `right` is in the set.
    pub const fn contains(self, right: Right) -> bool {
        self.0 & right.bit() != 0
    }

    /// Whether the set is empty.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The rights in the set, in [`Right::ALL`]'s order.
    pub fn iter(self) -> impl Iterator<Item = Right> {
        Right::ALL
            .into_iter()
            .filter(move |right| self.contains(*right))
    }
}

impl FromIterator<Right> for Rights {
    fn from_iter<I: IntoIterator<Item = Right>>(rights: I) -> Self {
        Self(rights.into_iter().fold(0, |bits, right| bits | right.bit()))
    }
}

impl fmt::Display for Rights {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.iter().map(Right::as_str).collect();
        f.write_str(&names.join(","))
    }
}

impl fmt::Debug for Rights {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Rights({self})")
    }
}

impl FromStr for Rights {
    type Err = AuthError;

    /// Rights separated by commas: `events:write,lake:read`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let rights = text
            .split(',')
            .filter(|part| !part.trim().is_empty())
            .map(Right::from_str)
            .collect::<Result<Rights, _>>()?;
        if rights.is_empty() {
            return Err(AuthError::NoRights);
        }
        Ok(rights)
    }
}

/// A bearer token: a secret. Its `Debug` form is redacted and it has no
/// `Display`, so it cannot end up in a log line or an error by accident.
#[derive(Clone)]
pub struct Token(String);

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl Token {
    /// A fresh random token: `vsp_` and 64 hex digits (256 bits from the
    /// operating system's generator via a CSPRNG).
    pub fn generate() -> Self {
        let mut bytes = [0u8; TOKEN_BYTES];
        rand::rng().fill_bytes(&mut bytes);
        Self(format!("{TOKEN_PREFIX}{}", hex::encode(bytes)))
    }

    /// A token from its text; surrounding whitespace (a file's newline) is
    /// dropped. The error never quotes the text.
    pub fn new(text: &str) -> Result<Self, AuthError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(AuthError::BadToken {
                why: "it is empty".into(),
            });
        }
        if text.len() > MAX_TOKEN_LEN {
            return Err(AuthError::BadToken {
                why: format!("it is longer than {MAX_TOKEN_LEN} bytes"),
            });
        }
        if !text.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(AuthError::BadToken {
                why: "it holds a space or a character that is not printable ASCII".into(),
            });
        }
        Ok(Self(text.to_owned()))
    }

    /// The token in the file at `path` (one line; surrounding whitespace
    /// dropped).
    pub fn from_file(path: &Path) -> Result<Self, AuthError> {
        let text = read_bounded(path)?;
        Self::new(&text).map_err(|err| AuthError::File {
            path: path.to_owned(),
            line: None,
            message: err.to_string(),
        })
    }

    /// The token's text, for the one place that needs it: the header.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The SHA-256 of the token, which is what a server stores.
    pub fn digest(&self) -> TokenDigest {
        TokenDigest::of(self.0.as_bytes())
    }

    /// `Bearer <token>` as a header value marked sensitive.
    pub fn authorization(&self) -> HeaderValue {
        let mut value = HeaderValue::from_str(&format!("Bearer {}", self.0))
            .unwrap_or_else(|_| HeaderValue::from_static(""));
        value.set_sensitive(true);
        value
    }
}

/// The SHA-256 of a token, written `sha256:<64 hex digits>`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenDigest([u8; 32]);

impl TokenDigest {
    fn of(bytes: &[u8]) -> Self {
        Self(Sha256::digest(bytes).into())
    }
}

impl fmt::Display for TokenDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", hex::encode(self.0))
    }
}

impl fmt::Debug for TokenDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenDigest({self})")
    }
}

impl FromStr for TokenDigest {
    type Err = AuthError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || AuthError::BadDigest;
        let hex_digits = text.strip_prefix("sha256:").ok_or_else(bad)?;
        let bytes = hex::decode(hex_digits).map_err(|_| bad())?;
        Ok(Self(bytes.try_into().map_err(|_| bad())?))
    }
}

/// Why auth could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// A file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file is over [`MAX_TOKENS_FILE_BYTES`].
    #[error("{} is larger than {MAX_TOKENS_FILE_BYTES} bytes; is it the right file?", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
    },
    /// A file holds something else than expected.
    #[error("{}{}: {message}", path.display(), line.map(|line| format!(" line {line}")).unwrap_or_default())]
    File {
        /// The file.
        path: PathBuf,
        /// The line (1-based), when one line is wrong.
        line: Option<usize>,
        /// What is wrong.
        message: String,
    },
    /// A right no one knows.
    #[error("unknown right {right:?}; the rights are {}", Right::ALL.map(Right::as_str).join(", "))]
    UnknownRight {
        /// What was written.
        right: String,
    },
    /// An empty list of rights.
    #[error("no rights given; a token needs at least one of {}", Right::ALL.map(Right::as_str).join(", "))]
    NoRights,
    /// A token's name is not a name.
    #[error("invalid token name {name:?}: 1 to 64 letters, digits, '.', '_' or '-'")]
    BadName {
        /// What was written.
        name: String,
    },
    /// A digest is not `sha256:` and 64 hex digits.
    #[error(
        "invalid token digest: write sha256: and 64 hex digits (as `vesper tokens new` prints)"
    )]
    BadDigest,
    /// A token is not usable (the text is never quoted).
    #[error("invalid token: {why}")]
    BadToken {
        /// Why.
        why: String,
    },
}

fn read_bounded(path: &Path) -> Result<String, AuthError> {
    let read_error = |source| AuthError::Read {
        path: path.to_owned(),
        source,
    };
    let size = std::fs::metadata(path).map_err(read_error)?.len();
    if size > MAX_TOKENS_FILE_BYTES {
        return Err(AuthError::TooLarge {
            path: path.to_owned(),
        });
    }
    std::fs::read_to_string(path).map_err(read_error)
}

/// Checks a token name: 1 to 64 letters, digits, `.`, `_` or `-`.
pub fn check_name(name: &str) -> Result<(), AuthError> {
    let valid = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if valid {
        Ok(())
    } else {
        Err(AuthError::BadName {
            name: name.to_owned(),
        })
    }
}

/// Who a token belongs to, once it is recognised: its name and rights.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The token's name in the tokens file.
    pub name: Arc<str>,
    /// What it may do.
    pub rights: Rights,
}

#[derive(Debug, Clone)]
struct Entry {
    principal: Principal,
    digest: TokenDigest,
}

/// The tokens a server accepts: names, rights and digests.
#[derive(Debug, Clone, Default)]
pub struct TokenTable {
    entries: Vec<Entry>,
}

/// The line of a tokens file for a token: `NAME RIGHTS sha256:DIGEST`.
pub fn tokens_file_line(name: &str, rights: Rights, token: &Token) -> String {
    format!("{name} {rights} {}", token.digest())
}

impl TokenTable {
    /// Reads a tokens file: one token a line, `NAME RIGHTS sha256:DIGEST`
    /// (rights comma-separated), blank lines and `#` comments ignored. A
    /// name may appear on several lines (a token and its successor during
    /// a rotation); a digest only once.
    pub fn load(path: &Path) -> Result<Self, AuthError> {
        Self::parse(&read_bounded(path)?, path)
    }

    /// [`TokenTable::load`] on text already read from `path`.
    pub fn parse(text: &str, path: &Path) -> Result<Self, AuthError> {
        let mut table = Self::default();
        let mut seen = HashSet::new();
        for (index, line) in text.lines().enumerate() {
            let line_error = |message: String| AuthError::File {
                path: path.to_owned(),
                line: Some(index + 1),
                message,
            };
            let line = line.split('#').next().unwrap_or_default().trim();
            if line.is_empty() {
                continue;
            }
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [name, rights, digest] = fields[..] else {
                return Err(line_error(format!(
                    "expected NAME RIGHTS sha256:DIGEST (3 fields), got {} fields",
                    fields.len()
                )));
            };
            check_name(name).map_err(|err| line_error(err.to_string()))?;
            let rights: Rights = rights
                .parse()
                .map_err(|err: AuthError| line_error(err.to_string()))?;
            let digest: TokenDigest = digest
                .parse()
                .map_err(|err: AuthError| line_error(err.to_string()))?;
            if !seen.insert(digest) {
                return Err(line_error(
                    "this digest is on an earlier line too: every token must be different".into(),
                ));
            }
            table.insert(name, rights, digest);
        }
        Ok(table)
    }

    fn insert(&mut self, name: &str, rights: Rights, digest: TokenDigest) {
        self.entries.push(Entry {
            principal: Principal {
                name: Arc::from(name),
                rights,
            },
            digest,
        });
    }

    /// Accepts `token` as `name` with `rights` too (the one-process
    /// platform's own token, which lives only in memory).
    pub fn with_token(mut self, name: &str, rights: Rights, token: &Token) -> Self {
        self.insert(name, rights, token.digest());
        self
    }

    /// How many tokens are accepted.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no token is accepted (every call is refused).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Who the bearer of `headers`' `authorization` is. Every known digest
    /// is compared, in constant time, whichever matches: the time taken
    /// tells nothing about which digest is close.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Principal, Refusal> {
        let value = headers.get(AUTHORIZATION).ok_or(Refusal::Missing)?;
        let token = bearer(value).ok_or(Refusal::Malformed)?;
        let digest = TokenDigest::of(token);
        let mut found = None;
        for entry in &self.entries {
            if bool::from(entry.digest.0.ct_eq(&digest.0)) {
                found = Some(&entry.principal);
            }
        }
        found.cloned().ok_or(Refusal::Unknown)
    }

    /// [`TokenTable::authenticate`], then the check that the bearer has
    /// `right`.
    pub fn authorize(&self, headers: &HeaderMap, right: Right) -> Result<Principal, Refusal> {
        let principal = self.authenticate(headers)?;
        if principal.rights.contains(right) {
            Ok(principal)
        } else {
            Err(Refusal::Lacks {
                name: principal.name,
                right,
            })
        }
    }
}

/// The token in an `authorization: Bearer <token>` value (the scheme is
/// case-insensitive).
fn bearer(value: &HeaderValue) -> Option<&[u8]> {
    let bytes = value.as_bytes();
    let (scheme, rest) = bytes.split_at_checked(7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let token = rest.trim_ascii();
    (!token.is_empty() && token.len() <= MAX_TOKEN_LEN).then_some(token)
}

/// Why a request was refused. None of the texts holds the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No `authorization` header.
    Missing,
    /// An `authorization` header that is not `Bearer <token>`.
    Malformed,
    /// A token this server does not know.
    Unknown,
    /// A known token without the right the call needs.
    Lacks {
        /// The token's name.
        name: Arc<str>,
        /// The right it lacks.
        right: Right,
    },
}

impl Refusal {
    /// Whether this is a refusal of who the caller is (UNAUTHENTICATED,
    /// 401) rather than of what it may do (PERMISSION_DENIED, 403).
    pub fn is_unauthenticated(&self) -> bool {
        !matches!(self, Self::Lacks { .. })
    }

    /// The message for a call to `what` (`vesper.v1.Storage/DeleteObject`,
    /// `POST /stop-generator`) that needs `needed` (None: any known token).
    pub fn message(&self, what: &str, needed: Option<Right>) -> String {
        let needs = match needed {
            Some(right) => format!("a bearer token with the right {right}"),
            None => "a bearer token".to_owned(),
        };
        match self {
            Self::Missing => {
                format!("{what} needs {needs}: send the header `authorization: Bearer <token>`")
            }
            Self::Malformed => {
                format!("{what} needs {needs}: the authorization header is not `Bearer <token>`")
            }
            Self::Unknown => format!(
                "{what} needs {needs}: the token sent is not one this server accepts (revoked, mistyped, or meant for another deployment)"
            ),
            Self::Lacks { name, right } => {
                format!("{what} needs the right {right}, which the token {name:?} does not have")
            }
        }
    }

    /// The gRPC status of this refusal of a call to `rpc`.
    pub fn status(&self, rpc: &str, needed: Option<Right>) -> tonic::Status {
        let message = self.message(rpc, needed);
        if self.is_unauthenticated() {
            let mut status = tonic::Status::unauthenticated(message);
            status.metadata_mut().insert(
                "www-authenticate",
                tonic::metadata::MetadataValue::from_static(CHALLENGE),
            );
            status
        } else {
            tonic::Status::permission_denied(message)
        }
    }
}

/// Who may make a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone (health probes, and reflection when `--reflection open`).
    Open,
    /// Any known token.
    Authenticated,
    /// A token with this right.
    Needs(Right),
}

/// What `--reflection` allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Reflection {
    /// Served to anyone: the contracts are public (they are in the
    /// repository), and grpcurl needs them to encode requests.
    #[default]
    Open,
    /// Served to any known token (when auth is on).
    Authenticated,
    /// Not served.
    Off,
}

/// Who may call `rpc` (`package.Service/Method`). Every method of every
/// contract is named here (a test walks the descriptors); a path no
/// contract declares needs a known token, so that anonymous callers learn
/// nothing from probing.
pub fn grpc_access(rpc: &str, reflection: Reflection) -> Access {
    use Right::*;
    let needs = |right| Access::Needs(right);
    match rpc {
        "grpc.health.v1.Health/Check" | "grpc.health.v1.Health/Watch" => Access::Open,
        "grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
        | "grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo" => match reflection {
            Reflection::Open => Access::Open,
            Reflection::Authenticated | Reflection::Off => Access::Authenticated,
        },
        "vesper.v1.Storage/PutObject" | "vesper.v1.Storage/DeleteObject" => needs(LakeWrite),
        "vesper.v1.Storage/GetObject"
        | "vesper.v1.Storage/HeadObject"
        | "vesper.v1.Storage/ListObjects" => needs(LakeRead),
        "vesper.v1.DataSource/ListUsers"
        | "vesper.v1.DataSource/ListContent"
        | "vesper.v1.DataSource/GenerateEvents" => needs(SourceRead),
        "vesper.v1.DataSource/StartGenerator" | "vesper.v1.DataSource/StopGenerator" => {
            needs(GeneratorControl)
        }
        "vesper.v1.DataSource/GeneratorStatus"
        | "vesper.v1.EventIngest/Stats"
        | "vesper.v1.BatchPipeline/List" => needs(StatusRead),
        "vesper.v1.EventIngest/Ingest" | "vesper.v1.EventIngest/Flush" => needs(EventsWrite),
        "vesper.v1.BatchPipeline/Run" => needs(PipelinesRun),
        _ => Access::Authenticated,
    }
}

/// How a gRPC server checks its callers: the tokens it accepts (none: auth
/// is off) and who may use reflection.
#[derive(Debug, Clone, Default)]
pub struct ServerAuth {
    /// The accepted tokens; `None` lets every caller in.
    pub tokens: Option<Arc<TokenTable>>,
    /// Who may use reflection.
    pub reflection: Reflection,
}

static PROCESS_AUTH: OnceLock<ServerAuth> = OnceLock::new();
static CLIENT_TOKEN: OnceLock<Token> = OnceLock::new();

impl ServerAuth {
    /// Makes this the auth of every gRPC server this process starts from
    /// now on (the binary calls it once, from its flags; the first call
    /// wins).
    pub fn install(&self) {
        if PROCESS_AUTH.set(self.clone()).is_err() {
            tracing::debug!("gRPC auth was installed already");
        }
    }

    /// The auth installed for this process, or none (everyone in,
    /// reflection open).
    pub fn current() -> Self {
        PROCESS_AUTH.get().cloned().unwrap_or_default()
    }

    /// Whether tokens are checked.
    pub fn is_on(&self) -> bool {
        self.tokens.is_some()
    }
}

/// Makes `token` the one every gRPC channel ([`crate::grpc::connect_lazy`])
/// and the generator's webhook calls of this process send (the first call
/// wins).
pub fn install_client_token(token: Token) {
    if CLIENT_TOKEN.set(token).is_err() {
        tracing::debug!("a client token was installed already");
    }
}

/// The token this process's calls to its peers carry, if any.
pub fn client_token() -> Option<&'static Token> {
    CLIENT_TOKEN.get()
}

/// The server side of `--auth-tokens`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct AuthArgs {
    /// The tokens file: one accepted token a line, `NAME RIGHTS
    /// sha256:DIGEST` (`vesper tokens new` prints the line). When given,
    /// every call needs a bearer token with the right it needs (health
    /// stays open); without it, anyone who can reach the port may do
    /// anything (the loopback default). See docs/security.md.
    #[arg(long, env = "VESPER_AUTH_TOKENS", value_name = "FILE")]
    pub auth_tokens: Option<PathBuf>,
}

impl AuthArgs {
    /// The accepted tokens, or `None` when auth is off.
    pub fn tokens(&self) -> Result<Option<TokenTable>, AuthError> {
        self.auth_tokens
            .as_deref()
            .map(TokenTable::load)
            .transpose()
    }

    /// The auth of a server bound to `addrs`: the tokens file read, the
    /// state logged (and a warning when a reachable port is left open).
    pub fn server_auth(
        &self,
        reflection: Reflection,
        addrs: &[SocketAddr],
    ) -> Result<ServerAuth, AuthError> {
        let tokens = self.tokens()?;
        self.announce(tokens.as_ref(), addrs);
        Ok(ServerAuth {
            tokens: tokens.map(Arc::new),
            reflection,
        })
    }

    /// Logs whether auth is on, and warns when a port that others can
    /// reach is left open.
    pub fn announce(&self, tokens: Option<&TokenTable>, addrs: &[SocketAddr]) {
        match tokens {
            Some(table) => tracing::info!(
                tokens = table.len(),
                "auth on: every call needs a bearer token"
            ),
            None => {
                if let Some(open) = addrs.iter().find(|addr| !addr.ip().is_loopback()) {
                    tracing::warn!(
                        address = %open,
                        "auth is off on an address other hosts can reach: anyone there may call every method; give --auth-tokens (VESPER_AUTH_TOKENS)"
                    );
                }
            }
        }
    }
}

/// `--reflection`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ReflectionArgs {
    /// Who may use gRPC reflection (what grpcurl uses to list and encode
    /// calls): open (anyone), authenticated (any accepted token, when
    /// --auth-tokens is given) or off (not served).
    #[arg(
        long,
        env = "VESPER_REFLECTION",
        value_enum,
        default_value_t = Reflection::Open,
        value_name = "WHO"
    )]
    pub reflection: Reflection,
}

/// The token a serving command's own calls to its peers carry.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct PeerTokenArgs {
    /// A file holding the token this service sends on its calls to its
    /// peers (only the rights it needs; see docs/security.md). Else the
    /// environment variable VESPER_PEER_TOKEN (never a flag, so it stays
    /// out of `ps`); else calls carry no token.
    #[arg(long, env = "VESPER_PEER_TOKEN_FILE", value_name = "FILE")]
    pub peer_token_file: Option<PathBuf>,
}

impl PeerTokenArgs {
    /// Reads the token and makes every call of this process carry it.
    pub fn install(&self) -> Result<(), AuthError> {
        if let Some(token) = token_from(self.peer_token_file.as_deref(), PEER_TOKEN_ENV)? {
            install_client_token(token);
        }
        Ok(())
    }
}

/// The token a client command sends.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ClientTokenArgs {
    /// A file holding the bearer token to send. Else the environment
    /// variable VESPER_TOKEN (never a flag, so it stays out of `ps`); else
    /// no token.
    #[arg(long, env = "VESPER_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<PathBuf>,
}

impl ClientTokenArgs {
    /// Reads the token and makes every call of this process carry it.
    pub fn install(&self) -> Result<(), AuthError> {
        if let Some(token) = token_from(self.token_file.as_deref(), TOKEN_ENV)? {
            install_client_token(token);
        }
        Ok(())
    }
}

fn token_from(file: Option<&Path>, env: &str) -> Result<Option<Token>, AuthError> {
    if let Some(path) = file {
        return Token::from_file(path).map(Some);
    }
    match std::env::var(env) {
        Ok(text) if !text.trim().is_empty() => {
            Token::new(&text)
                .map(Some)
                .map_err(|err| AuthError::BadToken {
                    why: format!("{env}: {err}"),
                })
        }
        _ => Ok(None),
    }
}

/// The tower layer that checks every call on a gRPC port (inside the
/// observing layer, so refusals are counted and traced like any answer).
#[derive(Debug, Clone)]
pub struct AuthLayer {
    auth: Arc<ServerAuth>,
}

impl AuthLayer {
    /// Checks calls as `auth` says.
    pub fn new(auth: ServerAuth) -> Self {
        Self {
            auth: Arc::new(auth),
        }
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = Authorized<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Authorized {
            inner,
            auth: self.auth.clone(),
        }
    }
}

/// A gRPC service behind [`AuthLayer`].
#[derive(Debug, Clone)]
pub struct Authorized<S> {
    inner: S,
    auth: Arc<ServerAuth>,
}

impl<S> tower::Service<http::Request<Body>> for Authorized<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let Some(tokens) = &self.auth.tokens else {
            return Box::pin(self.inner.call(request));
        };
        let rpc = request.uri().path().trim_start_matches('/');
        let (checked, needed) = match grpc_access(rpc, self.auth.reflection) {
            Access::Open => return Box::pin(self.inner.call(request)),
            Access::Authenticated => (tokens.authenticate(request.headers()), None),
            Access::Needs(right) => (tokens.authorize(request.headers(), right), Some(right)),
        };
        match checked {
            Ok(principal) => {
                tracing::Span::current().record("enduser.id", &*principal.name);
                Box::pin(self.inner.call(request))
            }
            Err(refusal) => {
                if let Refusal::Lacks { name, .. } = &refusal {
                    tracing::Span::current().record("enduser.id", &**name);
                }
                let answer = refusal.status(rpc, needed).into_http();
                Box::pin(async move { Ok::<_, S::Error>(answer) })
            }
        }
    }
}

#[cfg(test)]
mod tests;
