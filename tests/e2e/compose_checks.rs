//! `scripts/check-compose`, the offline checks of docker-compose.yml, on
//! the real file (it passes) and on copies with one mistake each (each
//! fails, naming the mistake): the checks in the test command can fail.

use std::process::Command;

use vesper_tests::{compose_config, docker_compose, vesper_bin, workspace_root};

/// What a run of the checker said.
struct Verdict {
    code: Option<i32>,
    output: String,
}

/// Runs `scripts/check-compose` on this compose text and env file.
fn check(compose: &str, env_file: &str) -> Verdict {
    let dir = tempfile::tempdir().expect("temp dir");
    let compose_path = dir.path().join("docker-compose.yml");
    let env_path = dir.path().join(".env.example");
    std::fs::write(&compose_path, compose).expect("write the compose file");
    std::fs::write(&env_path, env_file).expect("write the env file");
    let output = Command::new(workspace_root().join("scripts/check-compose"))
        .arg("--compose")
        .arg(&compose_path)
        .arg("--env-file")
        .arg(&env_path)
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
        expected: &[
            "gateway: --ingest-addr=ingest:50054: ingest listens on [9464, 50053], not 50054",
        ],
    },
    Mutation {
        mistake: "a peer address naming no service",
        compose: |c| {
            replace_once(
                c,
                "--datasource-addr=datasource:50052",
                "--datasource-addr=data-source:50052",
            )
        },
        env_file: KEEP,
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
        expected: &["batch: has no health check"],
    },
    Mutation {
        mistake: "a health check probing another port",
        compose: |c| replace_once(c, "--grpc=127.0.0.1:50052", "--grpc=127.0.0.1:50051"),
        env_file: KEEP,
        expected: &[
            "datasource: health check probes 127.0.0.1:50051, but datasource listens on [9464, 50052]",
        ],
    },
    Mutation {
        mistake: "a server listening on loopback only",
        compose: |c| {
            replace_once(
                c,
                "--grpc-addr=0.0.0.0:50053",
                "--grpc-addr=127.0.0.1:50053",
            )
        },
        env_file: KEEP,
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
        expected: &["ingest: --wal-dir=/var/lib/vesper/wal is not on a volume"],
    },
    Mutation {
        mistake: "two services publishing the same host port",
        compose: |c| replace_once(c, ":16686:16686\"", ":8080:16686\""),
        env_file: KEEP,
        expected: &["publishes 127.0.0.1:8080/tcp, which gateway publishes too"],
    },
    Mutation {
        mistake: "a vesper service without an OTLP endpoint",
        compose: |c| replace_once(c, "\n  OTEL_EXPORTER_OTLP_ENDPOINT: http://jaeger:4317", ""),
        env_file: KEEP,
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
        expected: &["OTEL_SERVICE_NAME=vesper-storage is"],
    },
    Mutation {
        mistake: "a ${VAR} that neither .env.example nor a default sets",
        compose: |c| replace_once(c, "RUST_LOG: ${RUST_LOG:-info}", "RUST_LOG: ${LOG_LEVEL}"),
        env_file: KEEP,
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
        expected: &["the default of ${RUST_LOG} ('debug') differs from .env.example ('info')"],
    },
    Mutation {
        mistake: "a setting in .env.example that the file does not use",
        compose: KEEP,
        env_file: |e| format!("{e}VESPER_UNUSED=1\n"),
        expected: &[".env.example: sets VESPER_UNUSED, which the compose file does not use"],
    },
    Mutation {
        mistake: "a key compose does not know",
        compose: |c| replace_once(c, "stop_grace_period: 30s", "stop_grace_periods: 30s"),
        env_file: KEEP,
        expected: &[
            "docker compose config rejects the file",
            "stop_grace_periods",
        ],
    },
    Mutation {
        mistake: "a dbt setting the dbt project does not read",
        compose: |c| replace_once(c, "VESPER_DBT_TARGET: s3", "VESPER_DBT_TARGT: s3"),
        env_file: KEEP,
        expected: &["dbt_pipeline: VESPER_DBT_TARGT is set but the dbt project does not read it"],
    },
    Mutation {
        mistake: "dbt results outside the directory mounted from the host",
        compose: |c| replace_once(c, "- ./results:/app/results", "- ./results:/app/output"),
        env_file: KEEP,
        expected: &[
            "dbt_pipeline: the results file /app/results/dbt.duckdb is not in a directory mounted from the host",
        ],
    },
];

#[test]
fn the_compose_file_passes_every_check() {
    let verdict = check(&real_file("docker-compose.yml"), &real_file(".env.example"));
    assert_eq!(verdict.code, Some(0), "{}", verdict.output);
    assert!(
        verdict
            .output
            .contains("docker-compose.yml is valid; 7 vesper services checked"),
        "{}",
        verdict.output
    );
}

#[test]
fn every_mistake_fails_the_check_and_is_named() {
    let compose = real_file("docker-compose.yml");
    let env_file = real_file(".env.example");
    // Each run is a few processes; two at a time keep the run short.
    let verdicts: Vec<(&Mutation, Verdict)> = std::thread::scope(|scope| {
        MUTATIONS
            .chunks(MUTATIONS.len().div_ceil(2))
            .map(|chunk| {
                let (compose, env_file) = (&compose, &env_file);
                scope.spawn(move || {
                    chunk
                        .iter()
                        .map(|m| (m, check(&(m.compose)(compose), &(m.env_file)(env_file))))
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
fn the_readme_describes_the_compose_file() {
    let readme = real_file("README.md");
    let start = readme
        .find("\n## Docker Compose\n")
        .expect("the README has a Docker Compose section");
    let section = &readme[start + 1..];
    let section = &section[..section[1..]
        .find("\n## ")
        .map_or(section.len(), |end| end + 1)];
    let model = compose_config();
    let services = model["services"].as_object().expect("services");
    let mut missing = Vec::new();
    for (name, service) in services {
        if !section.contains(&format!("`{name}`")) {
            missing.push(format!("the service `{name}`"));
        }
        // The command as the README's table shows it: metrics flags are
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
    assert!(
        missing.is_empty(),
        "the README's Docker Compose section does not show: {missing:#?}"
    );
}
