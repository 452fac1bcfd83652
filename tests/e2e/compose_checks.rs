//! `scripts/check-compose`, the offline checks of docker-compose.yml, on
//! the real file (it passes) and on copies with one mistake each (each
//! fails, naming the mistake): the checks in the test command can fail.

use std::process::Command;

use vesper_tests::{compose_config_with_profiles, docker_compose, vesper_bin, workspace_root};

/// What a run of the checker said.
struct Verdict {
    code: Option<i32>,
    output: String,
}

/// The files the checker reads, as text.
struct Files<'a> {
    compose: &'a str,
    env_file: &'a str,
    dockerfile: &'a str,
}

/// Runs `scripts/check-compose` on this compose text, env file and Dockerfile.
fn check(files: &Files) -> Verdict {
    let dir = tempfile::tempdir().expect("temp dir");
    let compose_path = dir.path().join("docker-compose.yml");
    let env_path = dir.path().join(".env.example");
    let dockerfile_path = dir.path().join("Dockerfile");
    std::fs::write(&compose_path, files.compose).expect("write the compose file");
    std::fs::write(&env_path, files.env_file).expect("write the env file");
    std::fs::write(&dockerfile_path, files.dockerfile).expect("write the Dockerfile");
    let output = Command::new(workspace_root().join("scripts/check-compose"))
        .arg("--compose")
        .arg(&compose_path)
        .arg("--env-file")
        .arg(&env_path)
        .arg("--dockerfile")
        .arg(&dockerfile_path)
        .arg("--vesper")
        .arg(vesper_bin())
        .arg("--docker-compose")
        .arg(docker_compose())
        .output()
        .expect("cannot run scripts/check-compose (python3 on PATH?)");
    Verdict {
        code: output.status.code(),
        output: format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    }
}

fn real_file(name: &str) -> String {
    std::fs::read_to_string(workspace_root().join(name))
        .unwrap_or_else(|err| panic!("cannot read {name}: {err}"))
}

/// `text` with `from` replaced by `to`; `from` must occur exactly once, so
/// that a mutation can never silently stop applying when the file changes.
fn replace_once(text: &str, from: &str, to: &str) -> String {
    let count = text.matches(from).count();
    assert_eq!(
        count, 1,
        "the mutation expects {from:?} exactly once in the file, found it {count} times"
    );
    text.replacen(from, to, 1)
}

/// One deliberate mistake and what the checker must say about it.
struct Mutation {
    mistake: &'static str,
    compose: fn(&str) -> String,
    env_file: fn(&str) -> String,
    dockerfile: fn(&str) -> String,
    expected: &'static [&'static str],
}

const KEEP: fn(&str) -> String = str::to_owned;

const MUTATIONS: &[Mutation] = &[
    Mutation {
        mistake: "a peer address with a port its service does not listen on",
        compose: |c| {
            replace_once(
                c,
                "--ingest-addr=ingest:50053",
                "--ingest-addr=ingest:50054",
            )
        },
        env_file: KEEP,
        dockerfile: KEEP,
        expected: &[
            "gateway: --ingest-addr=ingest:50054: ingest listens on [9464, 50053], not 50054",
        ],
    },
    Mutation {
        mistake: "a peer address naming no service",
        compose: |c| {
            replace_once(
                c,
                "--datasource-addr=datasource:50052\n      - --ingest-addr=ingest:50053",
                "--datasource-addr=data-source:50052\n      - --ingest-addr=ingest:50053",
            )
        },
        env_file: KEEP,
        dockerfile: KEEP,
        expected: &[
            "gateway: --datasource-addr=data-source:50052: there is no service 'data-source'",
        ],
    },
    Mutation {
        mistake: "a flag the binary does not know",
        compose: |c| {
            replace_once(
                c,
                "      - --grpc-addr=0.0.0.0:50051\n",
                "      - --grpc-addr=0.0.0.0:50051\n      - --frobnicate\n",
            )
        },
        env_file: KEEP,
        dockerfile: KEEP,
        expected: &[
            "storage: `vesper storage",
            "is refused by the binary",
            "--frobnicate",
        ],
    },
    Mutation {
        mistake: "a VESPER_ variable the command does not read",
        compose: |c| {
            replace_once(
                c,
                "      OTEL_SERVICE_NAME: vesper-storage\n",
                "      OTEL_SERVICE_NAME: vesper-storage\n      VESPER_BATCH_SIZE: \"10\"\n",
            )
        },
        env_file: KEEP,
        dockerfile: KEEP,
        expected: &["storage: VESPER_BATCH_SIZE is set but `vesper storage` does not read it"],
    },
    Mutation {
        mistake: "an S3 lake without AWS credentials",
        compose: |c| {
            replace_once(
                c,
                "\n  AWS_SECRET_ACCESS_KEY: ${MINIO_ROOT_PASSWORD:?copy .env.example to .env}",
                "",
            )
        },
        env_file: KEEP,
        dockerfile: KEEP,
        expected: &["storage: the lake is s3://datalake but AWS_SECRET_ACCESS_KEY is not set"],
    },
    Mutation {
        mistake: "service_healthy on a service without a health check",
        compose: |c| {
            replace_once(
                c,
                "        condition: service_completed_successfully\n      jaeger:\n        condition: service_started",
                "        condition: service_completed_successfully\n      jaeger:\n        condition: service_healthy",
            )
        },
        env_file: KEEP,
        dockerfile: KEEP,
        expected: &["storage: waits for jaeger to be healthy, but jaeger has no health check"],
    },
    Mutation {
        mistake: "service_completed_successfully on a service that restarts",
        compose: |c| {
            replace_once(
                c,
                "  minio-setup:\n    <<: *vesper-image\n    restart: \"no\"\n",
                "  minio-setup:\n    <<: *vesper-image\n",
            )
        },
        env_file: KEEP,
        dockerfile: KEEP,
        expected: &["storage: waits for minio-setup to complete, but it restarts (unless-stopped)"],
    },
    Mutation {
        mistake: "a long-running vesper service without a health check",
        compose: |c| {
            replace_once(
                c,
                "    healthcheck:\n      test: [\"CMD\", \"vesper\", \"healthcheck\", \"--grpc=127.0.0.1:50054\", \"--timeout=2s\"]\n      <<: *health-timing\n",
                "",
            )
        },
        env_file: KEEP,
        dockerfile: KEEP,
        expected: &["batch: has no health check"],
    },
    Mutation {
        mistake: "a health check probing another port",
        compose: |c| replace_once(c, "--grpc=127.0.0.1:50052", "--grpc=127.0.0.1:50051"),
        env_file: KEEP,
        dockerfile: KEEP,
        expected: &[
            "datasource: health check probes 127.0.0.1:50051, but datasource listens on [9464, 50052]",
        ],
    },
    Mutation {
        mistake: "a server listening on loopback only",
        compose: |c| {
            replace_once(
                c,
                "--grpc-addr=0.0.0.0:50053\n      - --storage-addr=storage:50051\n      - --wal-dir",
                "--grpc-addr=127.0.0.1:50053\n      - --storage-addr=storage:50051\n      - --wal-dir",
            )
        },
        env_file: KEEP,
        dockerfile: KEEP,
        expected: &["ingest: --grpc-addr=127.0.0.1:50053 listens on 127.0.0.1 only"],
    },
    Mutation {
        mistake: "the write-ahead log outside any volume",
        compose: |c| {
            replace_once(
                c,
                "- ingest-wal:/var/lib/vesper/wal",
                "- ingest-wal:/var/lib/vesper/state",
            )
        },
        env_file: KEEP,
        dockerfile: KEEP,
        expected: &["ingest: --wal-dir=/var/lib/vesper/wal is not on a volume"],
    },
    Mutation {
        mistake: "two services publishing the same host port",
        compose: |c| replace_once(c, ":16686:16686\"", ":8080:16686\""),
        env_file: KEEP,
        dockerfile: KEEP,
        expected: &["publishes 127.0.0.1:8080/tcp, which gateway publishes too"],
    },
    Mutation {
        mistake: "a vesper service without an OTLP endpoint",
        compose: |c| replace_once(c, "\n  OTEL_EXPORTER_OTLP_ENDPOINT: http://jaeger:4317", ""),
        env_file: KEEP,
        dockerfile: KEEP,
        expected: &["gateway: OTEL_EXPORTER_OTLP_ENDPOINT is not set"],
    },
    Mutation {
        mistake: "two services with one OTEL_SERVICE_NAME",
        compose: |c| {
            replace_once(
                c,
                "OTEL_SERVICE_NAME: vesper-batch\n",
                "OTEL_SERVICE_NAME: vesper-storage\n",
            )
        },
        env_file: KEEP,
        dockerfile: KEEP,
        expected: &["OTEL_SERVICE_NAME=vesper-storage is"],
    },
    Mutation {
        mistake: "a ${VAR} that neither .env.example nor a default sets",
        compose: |c| replace_once(c, "RUST_LOG: ${RUST_LOG:-info}", "RUST_LOG: ${LOG_LEVEL}"),
        env_file: KEEP,
        dockerfile: KEEP,
        expected: &["${LOG_LEVEL} has no default and .env.example does not set it"],
    },
    Mutation {
        mistake: "a default that disagrees with .env.example",
        compose: |c| {
            replace_once(
                c,
                "RUST_LOG: ${RUST_LOG:-info}",
                "RUST_LOG: ${RUST_LOG:-debug}",
            )
        },
        env_file: KEEP,
        dockerfile: KEEP,
        expected: &["the default of ${RUST_LOG} ('debug') differs from .env.example ('info')"],
    },
    Mutation {
        mistake: "a setting in .env.example that the file does not use",
        compose: KEEP,
        env_file: |e| format!("{e}VESPER_UNUSED=1\n"),
        dockerfile: KEEP,
        expected: &[".env.example: sets VESPER_UNUSED, which the compose file does not use"],
    },
    Mutation {
        mistake: "a key compose does not know",
        compose: |c| {
            replace_once(
                c,
                "stop_grace_period: 30s\n    healthcheck:\n      test: [\"CMD\", \"vesper\", \"healthcheck\", \"--grpc=",
                "stop_grace_periods: 30s\n    healthcheck:\n      test: [\"CMD\", \"vesper\", \"healthcheck\", \"--grpc=",
            )
        },
        env_file: KEEP,
        dockerfile: KEEP,
        expected: &[
            "docker compose config rejects the file",
            "stop_grace_periods",
        ],
    },
    Mutation {
        mistake: "a dbt setting the dbt project does not read",
        compose: |c| replace_once(c, "VESPER_DBT_TARGET: s3", "VESPER_DBT_TARGT: s3"),
        env_file: KEEP,
        dockerfile: KEEP,
        expected: &["dbt_pipeline: VESPER_DBT_TARGT is set but the dbt project does not read it"],
    },
    Mutation {
        mistake: "dbt results outside the directory mounted from the host",
        compose: |c| replace_once(c, "target: /app/results", "target: /app/output"),
        env_file: KEEP,
        dockerfile: KEEP,
        expected: &[
            "dbt_pipeline: the results file /app/results/dbt.duckdb is not in a directory mounted from the host",
        ],
    },
    Mutation {
        mistake: "a service forced to a platform without a reason",
        compose: |c| {
            replace_once(
                c,
                "      target: dbt\n",
                "      target: dbt\n    platform: linux/amd64\n",
            )
        },
        env_file: KEEP,
        dockerfile: KEEP,
        expected: &["dbt_pipeline: is forced to platform linux/amd64"],
    },
    Mutation {
        mistake: "a Dockerfile stage forced to a platform",
        compose: KEEP,
        env_file: KEEP,
        dockerfile: |d| {
            replace_once(
                d,
                "FROM python:3.11-slim-${DEBIAN} AS dbt",
                "FROM --platform=linux/amd64 python:3.11-slim-${DEBIAN} AS dbt",
            )
        },
        expected: &["Dockerfile: stage dbt is forced to platform linux/amd64"],
    },
    Mutation {
        mistake: "the runtime user's group made by useradd --user-group",
        compose: KEEP,
        env_file: KEEP,
        dockerfile: |d| {
            replace_once(
                d,
                " && groupadd --system --gid 10001 vesper \\\n && useradd --system --uid 10001 --gid 10001 ",
                " && useradd --system --uid 10001 --user-group ",
            )
        },
        expected: &[
            "Dockerfile stage runtime: USER 10001:10001, but no group is created with gid 10001",
            "no user is created with uid 10001 in group 10001",
        ],
    },
    Mutation {
        mistake: "an image without a USER",
        compose: KEEP,
        env_file: KEEP,
        dockerfile: |d| replace_once(d, "USER 10001:10001\n# Kept running", "# Kept running"),
        expected: &["Dockerfile stage dbt: has no USER"],
    },
    Mutation {
        mistake: "the analytics container writing the host's ./results as its image user",
        compose: |c| {
            replace_once(
                c,
                "    user: \"${VESPER_UID:-1000}:${VESPER_GID:-1000}\"\n",
                "",
            )
        },
        env_file: KEEP,
        dockerfile: KEEP,
        expected: &[
            "dbt_pipeline: writes into the host directory",
            "not as the host user",
        ],
    },
    Mutation {
        mistake: "the analytics container running as root",
        compose: |c| {
            replace_once(
                c,
                "user: \"${VESPER_UID:-1000}:${VESPER_GID:-1000}\"",
                "user: \"0:0\"",
            )
        },
        env_file: KEEP,
        dockerfile: KEEP,
        expected: &["dbt_pipeline: runs as root (user 0:0)"],
    },
    Mutation {
        mistake: "the daemon left to create ./results as root",
        compose: |c| replace_once(c, "create_host_path: false", "create_host_path: true"),
        env_file: KEEP,
        dockerfile: KEEP,
        expected: &[
            "dbt_pipeline: the daemon creates the host directory",
            "owned by root",
        ],
    },
    Mutation {
        mistake: "dbt's target directory inside the image, where the host user cannot write",
        compose: KEEP,
        env_file: KEEP,
        dockerfile: |d| {
            replace_once(
                d,
                "DBT_TARGET_PATH=/tmp/dbt/target",
                "DBT_TARGET_PATH=/app/dbt/target",
            )
        },
        expected: &[
            "dbt_pipeline: runs as 1000:1000, but DBT_TARGET_PATH=/app/dbt/target is not under /tmp",
        ],
    },
    Mutation {
        mistake: "a one-shot job without an init",
        compose: |c| replace_once(c, "  init: true\n\n# What every", "\n# What every"),
        env_file: KEEP,
        dockerfile: KEEP,
        expected: &["minio-setup: runs its command as PID 1 without an init"],
    },
    Mutation {
        mistake: "S3 credentials handed to a service that does not use S3",
        compose: |c| {
            replace_once(
                c,
                "      OTEL_SERVICE_NAME: vesper-gateway\n",
                "      OTEL_SERVICE_NAME: vesper-gateway\n      AWS_ACCESS_KEY_ID: ${MINIO_ROOT_USER:?copy .env.example to .env}\n",
            )
        },
        env_file: KEEP,
        dockerfile: KEEP,
        expected: &[
            "gateway: is given AWS_ACCESS_KEY_ID (the value of MINIO_ROOT_USER) but does not use S3",
        ],
    },
    Mutation {
        mistake: "a secret of .env.example under another name",
        compose: |c| {
            replace_once(
                c,
                "      OTEL_SERVICE_NAME: vesper-batch\n",
                "      OTEL_SERVICE_NAME: vesper-batch\n      S3_PASSWORD: ${MINIO_ROOT_PASSWORD:?copy .env.example to .env}\n",
            )
        },
        env_file: KEEP,
        dockerfile: KEEP,
        expected: &["batch: is given S3_PASSWORD (the value of MINIO_ROOT_PASSWORD)"],
    },
    Mutation {
        mistake: "a NATS node in the default `up`, outside profile fleet",
        compose: |c| {
            replace_once(
                c,
                "  profiles: [fleet]\n  restart: unless-stopped\n  configs:",
                "  restart: unless-stopped\n  configs:",
            )
        },
        env_file: KEEP,
        dockerfile: KEEP,
        expected: &["nats-1: is part of the fleet but not only in profile fleet"],
    },
    Mutation {
        mistake: "a NATS node that does not route to one of the others",
        compose: |c| {
            replace_once(
                c,
                "--routes=nats://nats-1:6222,nats://nats-3:6222",
                "--routes=nats://nats-1:6222",
            )
        },
        env_file: KEEP,
        dockerfile: KEEP,
        expected: &["nats-2: does not route to nats-3"],
    },
    Mutation {
        mistake: "a route to a NATS node's client port instead of its cluster port",
        compose: |c| {
            replace_once(
                c,
                "--routes=nats://nats-2:6222,nats://nats-3:6222",
                "--routes=nats://nats-2:4222,nats://nats-3:6222",
            )
        },
        env_file: KEEP,
        dockerfile: KEEP,
        expected: &["nats-1: routes to nats-2:4222, but nats-2's cluster port is 6222"],
    },
    Mutation {
        mistake: "an ingest replica that does not know every NATS node",
        compose: |c| {
            replace_once(
                c,
                "      - *fleet-log\n      - --metrics-addr=0.0.0.0:9464\n    environment:\n      <<: *vesper-env\n      OTEL_SERVICE_NAME: vesper-ingest-2",
                "      - --log=nats://nats-1:4222,nats://nats-2:4222\n      - --metrics-addr=0.0.0.0:9464\n    environment:\n      <<: *vesper-env\n      OTEL_SERVICE_NAME: vesper-ingest-2",
            )
        },
        env_file: KEEP,
        dockerfile: KEEP,
        expected: &["ingest-2: --log does not name nats-3"],
    },
    Mutation {
        mistake: "NATS nodes without a health check",
        compose: |c| {
            replace_once(
                c,
                "    test: [\"CMD\", \"wget\", \"-q\", \"-O\", \"/dev/null\", \"http://127.0.0.1:8222/healthz\"]\n    <<: *health-timing\n",
                "    disable: true\n",
            )
        },
        env_file: KEEP,
        dockerfile: KEEP,
        expected: &["nats-1: has no health check"],
    },
    Mutation {
        mistake: "a NATS health check with a tool its image does not have",
        compose: |c| replace_once(c, "image: nats:2.15.0-alpine3.22", "image: nats:2.15.0"),
        env_file: KEEP,
        dockerfile: KEEP,
        expected: &["nats-1: health check runs wget, which the image nats:2.15.0 does not have"],
    },
    Mutation {
        mistake: "a JetStream store outside the node's volume",
        compose: |c| replace_once(c, "nats-3-data:/data", "nats-3-data:/var/lib/nats"),
        env_file: KEEP,
        dockerfile: KEEP,
        expected: &["nats-3: the JetStream store /data is not on a volume"],
    },
    Mutation {
        mistake: "JetStream acknowledging writes it has not fsynced",
        compose: |c| replace_once(c, "        sync_interval: always\n", ""),
        env_file: KEEP,
        dockerfile: KEEP,
        expected: &["nats-1: JetStream's sync_interval is the default (2m), not always"],
    },
    Mutation {
        mistake: "S3 credentials handed to a lake writer, which writes through storage",
        compose: |c| {
            replace_once(
                c,
                "      OTEL_SERVICE_NAME: vesper-lake-writer-1\n",
                "      OTEL_SERVICE_NAME: vesper-lake-writer-1\n      AWS_SECRET_ACCESS_KEY: ${MINIO_ROOT_PASSWORD:?copy .env.example to .env}\n",
            )
        },
        env_file: KEEP,
        dockerfile: KEEP,
        expected: &[
            "lake-writer-1: is given AWS_SECRET_ACCESS_KEY (the value of MINIO_ROOT_PASSWORD) but does not use S3",
        ],
    },
];

fn real_files() -> (String, String, String) {
    (
        real_file("docker-compose.yml"),
        real_file(".env.example"),
        real_file("Dockerfile"),
    )
}

#[test]
fn the_compose_file_passes_every_check() {
    let (compose, env_file, dockerfile) = real_files();
    let verdict = check(&Files {
        compose: &compose,
        env_file: &env_file,
        dockerfile: &dockerfile,
    });
    assert_eq!(verdict.code, Some(0), "{}", verdict.output);
    assert!(
        verdict.output.contains(
            "docker-compose.yml is valid; 7 vesper services checked against the binary, \
                 and 6 more in profiles"
        ),
        "{}",
        verdict.output
    );
}

#[test]
fn every_mistake_fails_the_check_and_is_named() {
    let (compose, env_file, dockerfile) = real_files();
    // Each run is a few processes; two at a time keep the run short.
    let verdicts: Vec<(&Mutation, Verdict)> = std::thread::scope(|scope| {
        MUTATIONS
            .chunks(MUTATIONS.len().div_ceil(2))
            .map(|chunk| {
                let (compose, env_file, dockerfile) = (&compose, &env_file, &dockerfile);
                scope.spawn(move || {
                    chunk
                        .iter()
                        .map(|m| {
                            let verdict = check(&Files {
                                compose: &(m.compose)(compose),
                                env_file: &(m.env_file)(env_file),
                                dockerfile: &(m.dockerfile)(dockerfile),
                            });
                            (m, verdict)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .flat_map(|handle| handle.join().expect("a checker thread panicked"))
            .collect()
    });
    let mut missed = Vec::new();
    for (mutation, verdict) in &verdicts {
        let named = mutation
            .expected
            .iter()
            .all(|phrase| verdict.output.contains(phrase));
        if verdict.code != Some(1) || !named {
            missed.push(format!(
                "{}: exit {:?}, expected a failure saying {:?}; output:\n{}",
                mutation.mistake, verdict.code, mutation.expected, verdict.output
            ));
        }
    }
    assert!(missed.is_empty(), "{}", missed.join("\n\n"));
}

/// A platform is allowed where the service says why: the check asks for a
/// reason, not for the absence of every platform.
#[test]
fn a_platform_with_its_reason_passes() {
    let (compose, env_file, dockerfile) = real_files();
    let compose = replace_once(
        &compose,
        "      target: dbt\n",
        "      target: dbt\n    platform: linux/amd64\n    labels:\n      vesper.platform-reason: an amd64-only wheel\n",
    );
    let verdict = check(&Files {
        compose: &compose,
        env_file: &env_file,
        dockerfile: &dockerfile,
    });
    assert_eq!(verdict.code, Some(0), "{}", verdict.output);
}

#[test]
fn a_missing_compose_binary_is_an_error_not_a_pass() {
    let output = Command::new(workspace_root().join("scripts/check-compose"))
        .arg("--vesper")
        .arg(vesper_bin())
        .env_remove("VESPER_DOCKER_COMPOSE")
        .output()
        .expect("run scripts/check-compose");
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("no docker compose binary"),
        "{output:?}"
    );
}

#[test]
fn the_compose_docs_describe_the_compose_file() {
    let section = real_file("docs/compose.md");
    // The services of every profile: `config` leaves out inactive ones.
    let model = compose_config_with_profiles(&["*"]);
    let services = model["services"].as_object().expect("services");
    let mut missing = Vec::new();
    for (name, service) in services {
        if !section.contains(&format!("`{name}`")) {
            missing.push(format!("the service `{name}`"));
        }
        // The command as the docs' table shows it: metrics flags are
        // described once, in prose, for every service.
        let words: Vec<&str> = service["command"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|word| word.as_str())
            .filter(|word| !word.starts_with("--metrics-addr="))
            .collect();
        let image = service["image"].as_str().unwrap_or_default();
        let shown = if image.starts_with("vesper:") {
            format!("`vesper {}`", words.join(" "))
        } else {
            format!("`{}`", words.join(" "))
        };
        if !words.is_empty() && !section.contains(&shown) {
            missing.push(format!("{name}'s command {shown}"));
        }
        for port in service["ports"].as_array().into_iter().flatten() {
            let published = port["published"].as_str().unwrap_or_default();
            if !section.contains(&format!("\n| {published} |")) {
                missing.push(format!("{name}'s port {published} in the ports table"));
            }
        }
    }
    for (variable, _) in real_file(".env.example")
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.split_once('='))
    {
        if !section.contains(&format!("`{variable}`")) {
            missing.push(format!("the setting `{variable}`"));
        }
    }
    // What each host needs and what its first build does.
    for host in ["Linux amd64", "Linux arm64", "macOS on Apple silicon"] {
        if !section.contains(&format!("| {host} |")) {
            missing.push(format!("the host {host} in the hosts table"));
        }
    }
    assert!(
        missing.is_empty(),
        "docs/compose.md does not show: {missing:#?}"
    );
}

/// docker-compose.tls.yml on top of docker-compose.yml: valid for the real
/// compose binary, every vesper command and health check (with the
/// environment the override gives) accepted by the vesper binary, every
/// peer reached over https://, and mutual TLS on the gRPC services only.
#[test]
fn the_tls_override_is_valid_and_turns_tls_on_everywhere() {
    let model = vesper_tests::compose_config_with(&["docker-compose.tls.yml"]);
    let services = model["services"].as_object().expect("services");
    let mut checked = 0;
    for (name, service) in services {
        let image = service["image"].as_str().unwrap_or_default();
        if !image.starts_with("vesper:") || name == "minio-setup" {
            continue;
        }
        checked += 1;
        let environment = service["environment"].as_object().expect("environment");
        let env: Vec<(String, String)> = environment
            .iter()
            .map(|(key, value)| (key.clone(), value.as_str().unwrap_or_default().to_owned()))
            .collect();
        assert!(
            environment.contains_key("VESPER_TLS_CA"),
            "{name} does not trust the CA"
        );
        let mounted = service["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|volume| volume["target"] == "/etc/vesper/tls" && volume["read_only"] == true);
        assert!(mounted, "{name} does not mount ./certs read-only");
        let words: Vec<String> = service["command"]
            .as_array()
            .expect("command")
            .iter()
            .map(|word| word.as_str().expect("word").to_owned())
            .collect();
        for word in &words {
            if let Some((flag, value)) = word.split_once('=')
                && (flag.ends_with("-addr")
                    && flag != "--grpc-addr"
                    && flag != "--http-addr"
                    && flag != "--metrics-addr"
                    || flag.ends_with("-url"))
            {
                assert!(value.starts_with("https://"), "{name}: {word} is not https");
            }
        }
        let mut probes = vec![words];
        if let Some(test) = service["healthcheck"]["test"].as_array() {
            let probe: Vec<String> = test
                .iter()
                .skip(2) // "CMD", "vesper"
                .map(|word| word.as_str().expect("word").to_owned())
                .collect();
            assert!(
                probe.iter().any(|word| word.contains("https://127.0.0.1:")),
                "{name}'s health check is not over TLS: {probe:?}"
            );
            probes.push(probe);
        }
        for mut args in probes {
            args.push("--help".to_owned());
            let output = Command::new(vesper_bin())
                .args(&args)
                .env_clear()
                .envs(env.iter().map(|(key, value)| (key, value)))
                .output()
                .expect("run vesper");
            assert!(
                output.status.success(),
                "{name}: vesper {args:?} is refused: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let mutual = environment.contains_key("VESPER_TLS_CLIENT_CA");
        assert_eq!(
            mutual,
            !matches!(name.as_str(), "gateway" | "batch-job"),
            "{name}: mutual TLS is on for the gRPC services only"
        );
    }
    assert_eq!(checked, 6, "the vesper services of the stack");
}

/// The secured stack (docker-compose.secure.yml over docker-compose.yml,
/// with the tokens scripts/make-compose-secrets issues): every vesper
/// server reads a tokens file, every variable the override sets is one its
/// command reads, and every hop's token has the rights that hop needs at
/// its peer and no right it does not.
#[test]
fn the_secure_override_gives_every_hop_its_own_least_token() {
    use vesper::auth::{Right, Right::*, Token, TokenTable};

    let root = workspace_root();
    let project = tempfile::tempdir().expect("project dir");
    let secrets = project.path().join("secrets");
    let made = Command::new(root.join("scripts/make-compose-secrets"))
        .arg(&secrets)
        .env("VESPER", vesper_bin())
        .output()
        .expect("cannot run scripts/make-compose-secrets");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let rendered = Command::new(docker_compose())
        .arg("-f")
        .arg(root.join("docker-compose.yml"))
        .arg("-f")
        .arg(root.join("docker-compose.secure.yml"))
        .arg("--env-file")
        .arg(root.join(".env.example"))
        .arg("--project-directory")
        .arg(project.path())
        .args(["config", "--format", "json"])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .output()
        .expect("cannot run docker compose");
    assert!(
        rendered.status.success(),
        "{}",
        String::from_utf8_lossy(&rendered.stderr)
    );
    let config: serde_json::Value = serde_json::from_slice(&rendered.stdout).expect("json");

    for service in [
        "storage",
        "datasource",
        "ingest",
        "gateway",
        "batch",
        "batch-job",
    ] {
        let spec = &config["services"][service];
        let command: Vec<&str> = spec["command"]
            .as_array()
            .expect("command")
            .iter()
            .filter_map(|word| word.as_str())
            .filter(|word| !word.starts_with('-'))
            .collect();
        let help = Command::new(vesper_bin())
            .args(&command)
            .arg("--help")
            .output()
            .expect("vesper --help");
        // Short help wraps `[env: NAME=]` across lines.
        let help = String::from_utf8_lossy(&help.stdout)
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        let mounted: Vec<&str> = spec["secrets"]
            .as_array()
            .expect("secrets")
            .iter()
            .filter_map(|secret| secret["source"].as_str())
            .collect();
        let environment = spec["environment"].as_object().expect("environment");
        if service != "batch-job" {
            assert!(
                environment.contains_key("VESPER_AUTH_TOKENS"),
                "{service} serves without access control"
            );
        }
        for (name, value) in environment {
            let Some(secret) = value
                .as_str()
                .and_then(|value| value.strip_prefix("/run/secrets/"))
            else {
                continue;
            };
            assert!(
                help.contains(&format!("[env: {name}")),
                "{service}: `vesper {}` does not read {name}",
                command.join(" ")
            );
            assert!(
                mounted.contains(&secret),
                "{service}: {name} names the secret {secret}, which is not mounted"
            );
        }
    }

    let token =
        |name: &str| Token::from_file(&secrets.join(format!("{name}.token"))).expect("token file");
    let tokens = |name: &str| {
        TokenTable::load(&secrets.join(format!("{name}.tokens"))).expect("tokens file")
    };
    let hops: [(&str, &str, &[Right]); 6] = [
        ("ingest", "storage", &[LakeWrite]),
        ("batch", "storage", &[LakeRead, LakeWrite]),
        ("gateway", "ingest", &[EventsWrite, StatusRead]),
        (
            "gateway",
            "datasource",
            &[SourceRead, GeneratorControl, StatusRead],
        ),
        ("datasource", "gateway", &[EventsWrite]),
        ("batch-source", "gateway", &[SourceRead]),
    ];
    for (holder, server, needed) in hops {
        let mut headers = http::HeaderMap::new();
        headers.insert(http::header::AUTHORIZATION, token(holder).authorization());
        let table = tokens(server);
        for right in Right::ALL {
            let allowed = table.authorize(&headers, right).is_ok();
            assert_eq!(
                allowed,
                needed.contains(&right),
                "{holder}'s token at {server}: {right}"
            );
        }
    }
    let operator = token("operator");
    for server in ["storage", "datasource", "ingest", "gateway", "batch"] {
        let mut headers = http::HeaderMap::new();
        headers.insert(http::header::AUTHORIZATION, operator.authorization());
        assert!(
            tokens(server).authenticate(&headers).is_ok(),
            "operator at {server}"
        );
    }
}
