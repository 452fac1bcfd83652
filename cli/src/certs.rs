//! `vesper certs`: a development CA and the certificates TLS needs, in one
//! command, so TLS can be turned on for `vesper up` or the compose stack in
//! a minute. Not a production PKI: the CA's key sits next to the
//! certificates it signed.

use std::{
    io::Write,
    net::IpAddr,
    path::{Path, PathBuf},
};

use anyhow::{Context, bail};
use clap::Args;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

/// The names every server certificate carries, so a local process and
/// `vesper up` (which calls itself on 127.0.0.1) are reachable by default.
const LOOPBACK_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// The files written, in order.
const FILES: [&str; 6] = [
    "ca.pem",
    "ca-key.pem",
    "server.pem",
    "server-key.pem",
    "client.pem",
    "client-key.pem",
];

/// Write a development CA, a server certificate for the given host names
/// and a client certificate (for mutual TLS), as PEM files.
#[derive(Debug, Args)]
pub(crate) struct CertsCommand {
    /// Directory to write ca.pem, ca-key.pem, server.pem, server-key.pem,
    /// client.pem and client-key.pem into (created if missing).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,

    /// A host name or IP address the server certificate is valid for
    /// (repeat for several, e.g. --host ingest --host gateway); localhost,
    /// 127.0.0.1 and ::1 are always included.
    #[arg(long = "host", value_name = "NAME")]
    hosts: Vec<String>,

    /// How long the certificates are valid, in days.
    #[arg(long, default_value_t = 365, value_parser = clap::value_parser!(u32).range(1..=3650), value_name = "DAYS")]
    days: u32,

    /// Replace files that already exist.
    #[arg(long)]
    force: bool,

    /// File mode of server-key.pem and client-key.pem, in octal (ca-key.pem
    /// is always 600). A container that runs as another user than the one
    /// who issued them (the compose stack's services run as uid 10001)
    /// needs 644, or the files chowned to it.
    #[arg(long, default_value = "600", value_parser = parse_mode, value_name = "MODE")]
    key_mode: u32,
}

fn parse_mode(text: &str) -> Result<u32, String> {
    u32::from_str_radix(text.trim(), 8)
        .ok()
        .filter(|mode| *mode <= 0o777)
        .ok_or_else(|| format!("expected an octal file mode such as 600 or 644, got {text:?}"))
}

impl CertsCommand {
    pub(crate) async fn run(self) -> anyhow::Result<()> {
        let hosts = self.names()?;
        std::fs::create_dir_all(&self.out)
            .with_context(|| format!("cannot create {}", self.out.display()))?;
        if !self.force {
            let existing: Vec<String> = FILES
                .iter()
                .filter(|name| self.out.join(name).exists())
                .map(|name| self.out.join(name).display().to_string())
                .collect();
            if !existing.is_empty() {
                bail!(
                    "{} already exist; give --force to replace them",
                    existing.join(", ")
                );
            }
        }
        let issued = issue(&hosts, self.days)?;
        for (name, contents) in FILES.iter().zip(issued.files()) {
            let mode = match *name {
                "ca-key.pem" => 0o600,
                "server-key.pem" | "client-key.pem" => self.key_mode,
                _ => 0o644,
            };
            write_file(&self.out.join(name), contents, mode)?;
        }
        let dir = std::path::absolute(&self.out).unwrap_or_else(|_| self.out.clone());
        print_usage(&dir, &hosts)?;
        Ok(())
    }

    /// The server certificate's names: the loopback ones, then the given
    /// ones, without repeats.
    fn names(&self) -> anyhow::Result<Vec<String>> {
        let mut names: Vec<String> = LOOPBACK_NAMES
            .iter()
            .map(|name| (*name).to_owned())
            .collect();
        for host in &self.hosts {
            let host = host.trim();
            let valid = !host.is_empty()
                && (host.parse::<IpAddr>().is_ok()
                    || host
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'*'));
            if !valid {
                bail!(
                    "--host {host:?} is neither a DNS name (letters, digits, '-', '.') nor an IP address"
                );
            }
            if !names.iter().any(|known| known.eq_ignore_ascii_case(host)) {
                names.push(host.to_owned());
            }
        }
        Ok(names)
    }
}

/// The PEM of everything `vesper certs` writes.
struct Issued {
    ca: String,
    ca_key: String,
    server: String,
    server_key: String,
    client: String,
    client_key: String,
}

impl Issued {
    /// In the order of [`FILES`].
    fn files(&self) -> [&str; 6] {
        [
            &self.ca,
            &self.ca_key,
            &self.server,
            &self.server_key,
            &self.client,
            &self.client_key,
        ]
    }
}

fn issue(hosts: &[String], days: u32) -> anyhow::Result<Issued> {
    let now = time::OffsetDateTime::now_utc();
    // A little slack for clocks behind this one.
    let not_before = now - time::Duration::hours(1);
    let not_after = now + time::Duration::days(i64::from(days));

    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.distinguished_name = name("vesper development CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca_params.not_before = not_before;
    ca_params.not_after = not_after;
    let ca_key = KeyPair::generate().context("cannot generate the CA key")?;
    let ca = ca_params
        .self_signed(&ca_key)
        .context("cannot sign the CA certificate")?;
    let ca_pem = ca.pem();
    let ca_key_pem = ca_key.serialize_pem();
    let issuer = Issuer::new(ca_params, ca_key);

    let mut server_params = CertificateParams::new(hosts.to_vec())
        .context("cannot use the host names as certificate names")?;
    server_params.distinguished_name = name(hosts.last().map_or("localhost", String::as_str));
    server_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    server_params.use_authority_key_identifier_extension = true;
    server_params.not_before = not_before;
    server_params.not_after = not_after;
    let server_key = KeyPair::generate().context("cannot generate the server key")?;
    let server = server_params
        .signed_by(&server_key, &issuer)
        .context("cannot sign the server certificate")?;

    let mut client_params = CertificateParams::new(Vec::<String>::new())?;
    client_params.distinguished_name = name("vesper client");
    client_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    client_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    client_params.use_authority_key_identifier_extension = true;
    client_params.not_before = not_before;
    client_params.not_after = not_after;
    let client_key = KeyPair::generate().context("cannot generate the client key")?;
    let client = client_params
        .signed_by(&client_key, &issuer)
        .context("cannot sign the client certificate")?;

    Ok(Issued {
        ca: ca_pem,
        ca_key: ca_key_pem,
        server: server.pem(),
        server_key: server_key.serialize_pem(),
        client: client.pem(),
        client_key: client_key.serialize_pem(),
    })
}

fn name(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::OrganizationName, "vesper");
    name.push(DnType::CommonName, common_name);
    name
}

/// Writes a file with `mode` (keys: readable by their owner only, unless
/// asked otherwise).
fn write_file(path: &Path, contents: &str, mode: u32) -> anyhow::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // Created with the mode: never readable by others, even briefly.
        options.mode(mode & 0o700);
    }
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    // The mode given at creation goes through the umask, and a file
    // replaced with --force keeps its old one.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("cannot set the mode of {}", path.display()))?;
    }
    #[cfg(not(unix))]
    let _ = mode;
    file.write_all(contents.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))
}

fn print_usage(dir: &Path, hosts: &[String]) -> std::io::Result<()> {
    let file = |name: &str| dir.join(name).display().to_string();
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "Wrote a development CA and certificates to {}\n\
         \x20 server certificate for: {}\n\
         \n\
         Servers (every port speaks TLS only):\n\
         \x20 export VESPER_TLS_CERT={}\n\
         \x20 export VESPER_TLS_KEY={}\n\
         Clients of https:// peers (and `vesper up`, which calls itself):\n\
         \x20 export VESPER_TLS_CA={}\n\
         Mutual TLS (servers ask for a client certificate):\n\
         \x20 export VESPER_TLS_CLIENT_CA={}\n\
         \x20 export VESPER_TLS_CLIENT_CERT={}\n\
         \x20 export VESPER_TLS_CLIENT_KEY={}\n\
         \n\
         Then, against `vesper up`:\n\
         \x20 grpcurl -cacert {} 127.0.0.1:50051 list\n\
         \x20 curl --cacert {} https://127.0.0.1:8080/health\n\
         Keep ca-key.pem private: it signs certificates every client above trusts.",
        dir.display(),
        hosts.join(", "),
        file("server.pem"),
        file("server-key.pem"),
        file("ca.pem"),
        file("ca.pem"),
        file("client.pem"),
        file("client-key.pem"),
        file("ca.pem"),
        file("ca.pem"),
    )?;
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_names_come_first_and_repeats_are_dropped() {
        let command = CertsCommand {
            out: PathBuf::from("unused"),
            hosts: vec!["ingest".into(), "LOCALHOST".into(), "10.0.0.7".into()],
            days: 1,
            force: false,
            key_mode: 0o600,
        };
        assert_eq!(
            command.names().expect("names"),
            ["localhost", "127.0.0.1", "::1", "ingest", "10.0.0.7"]
        );
        let bad = CertsCommand {
            hosts: vec!["not a host".into()],
            ..command
        };
        assert!(
            bad.names()
                .expect_err("space")
                .to_string()
                .contains("--host")
        );
    }

    #[test]
    fn issued_certificates_are_pem() {
        let issued = issue(&["localhost".to_owned()], 1).expect("issue");
        for (name, pem) in FILES.iter().zip(issued.files()) {
            let expected = if name.ends_with("-key.pem") {
                "PRIVATE KEY-----"
            } else {
                "-----BEGIN CERTIFICATE-----"
            };
            assert!(pem.contains(expected), "{name}");
        }
    }
}
