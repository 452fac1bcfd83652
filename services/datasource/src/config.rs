//! DataSource's settings and their command-line form.

use std::time::Duration;

use reqwest::Url;
use vesper::{
    config::{Range, parse_duration},
    signature::WebhookSecret,
};

use crate::DEFAULT_SEED;

/// The webhook the generator pushes to when none is given: the local
/// gateway's.
pub const DEFAULT_WEBHOOK_URL: &str = "http://127.0.0.1:8080/webhook/events";

/// How the DataSource service runs.
#[derive(Debug, Clone)]
pub struct DataSourceConfig {
    /// Seed of the users and content.
    pub seed: u64,
    /// The deliberate unreliability of unfiltered event calls.
    pub faults: FaultPolicy,
    /// The event generator.
    pub generator: GeneratorConfig,
}

impl Default for DataSourceConfig {
    fn default() -> Self {
        Self {
            seed: DEFAULT_SEED,
            faults: FaultPolicy::UPSTREAM,
            generator: GeneratorConfig::default(),
        }
    }
}

/// The upstream's unreliability on `GenerateEvents` without a source: a
/// share of calls fails with UNAVAILABLE, another share stalls first. One
/// draw per call decides, so the rates are exact shares of all calls (when
/// they add up to more than 1, failures take their share first).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FaultPolicy {
    /// Share of calls that fail, 0.0..=1.0.
    pub fault_rate: f64,
    /// Share of calls that stall before answering, 0.0..=1.0.
    pub stall_rate: f64,
    /// How long a stall lasts.
    pub stall: Duration,
}

impl FaultPolicy {
    /// The old server's behaviour: 10% fail, 5% stall 10 s.
    pub const UPSTREAM: Self = Self {
        fault_rate: 0.10,
        stall_rate: 0.05,
        stall: Duration::from_secs(10),
    };

    /// A reliable service.
    pub const NONE: Self = Self {
        fault_rate: 0.0,
        stall_rate: 0.0,
        stall: Duration::ZERO,
    };
}

/// The event generator: what it pushes, where, and how often.
#[derive(Debug, Clone)]
pub struct GeneratorConfig {
    /// Where it POSTs `{"events":[...]}`.
    pub webhook_url: Url,
    /// Distinct events per push (duplicates come on top).
    pub batch: Range<u32>,
    /// Pause between two pushes.
    pub interval: Range<Duration>,
    /// Pause between the start and the first push.
    pub delay: Duration,
    /// Whether the service starts the generator by itself.
    pub autostart: bool,
    /// Signs every push (`X-Vesper-Signature`) when set, for a gateway
    /// that requires signed webhooks.
    pub signing: Option<WebhookSecret>,
}

impl Default for GeneratorConfig {
    fn default() -> Self {
        Self {
            webhook_url: Url::parse(DEFAULT_WEBHOOK_URL).expect("the default webhook URL is valid"),
            batch: Range { min: 1, max: 10 },
            interval: Range {
                min: Duration::from_secs(2),
                max: Duration::from_secs(6),
            },
            delay: Duration::from_secs(5),
            autostart: true,
            signing: None,
        }
    }
}

/// Command-line options of the DataSource service (everything but its
/// address, which the command that serves it owns).
#[derive(Debug, Clone, clap::Args)]
pub struct DataSourceArgs {
    /// Seed of the users and content; the same seed always serves the same
    /// data.
    #[arg(long, env = "VESPER_SEED", default_value_t = DEFAULT_SEED, value_name = "N")]
    pub seed: u64,

    /// Share of /api/events calls (GenerateEvents without a source) that
    /// fail with UNAVAILABLE, like the old server's 503s.
    #[arg(
        long,
        env = "VESPER_FAULT_RATE",
        default_value_t = FaultPolicy::UPSTREAM.fault_rate,
        value_parser = parse_rate,
        value_name = "0..1"
    )]
    pub fault_rate: f64,

    /// Share of /api/events calls that stall for --stall before answering.
    #[arg(
        long,
        env = "VESPER_STALL_RATE",
        default_value_t = FaultPolicy::UPSTREAM.stall_rate,
        value_parser = parse_rate,
        value_name = "0..1"
    )]
    pub stall_rate: f64,

    /// How long a stalled call waits (e.g. 10s, 500ms).
    #[arg(
        long,
        env = "VESPER_STALL",
        default_value = "10s",
        value_parser = parse_duration,
        value_name = "DURATION"
    )]
    pub stall: Duration,

    /// Make /api/events reliable: no failures, no stalls (overrides the
    /// rates).
    #[arg(long, env = "VESPER_NO_FAULTS")]
    pub no_faults: bool,

    /// Distinct events per push, MIN-MAX (about 3% more are duplicates).
    #[arg(
        long,
        env = "VESPER_GENERATOR_BATCH",
        default_value = "1-10",
        value_parser = parse_batch,
        value_name = "MIN-MAX"
    )]
    pub generator_batch: Range<u32>,

    /// Pause between two pushes, MIN-MAX (e.g. 2s-6s).
    #[arg(
        long,
        env = "VESPER_GENERATOR_INTERVAL",
        default_value = "2s-6s",
        value_name = "MIN-MAX"
    )]
    pub generator_interval: Range<Duration>,

    /// Pause between the start of the service and the first push.
    #[arg(
        long,
        env = "VESPER_GENERATOR_DELAY",
        default_value = "5s",
        value_parser = parse_duration,
        value_name = "DURATION"
    )]
    pub generator_delay: Duration,

    /// Do not start the generator at boot (POST /start-generator or the
    /// StartGenerator RPC still starts it).
    #[arg(long, env = "VESPER_NO_GENERATOR")]
    pub no_generator: bool,
}

/// Where the generator pushes: its own option, because `vesper up` points
/// it at its own gateway instead.
#[derive(Debug, Clone, clap::Args)]
pub struct WebhookArgs {
    /// Where the event generator POSTs {"events":[...]}. Each push is signed
    /// (X-Vesper-Signature) when the environment variable
    /// VESPER_WEBHOOK_SECRET is set, as a gateway with signing on requires.
    #[arg(
        long,
        env = "WEBHOOK_URL",
        default_value = DEFAULT_WEBHOOK_URL,
        value_parser = parse_webhook_url,
        value_name = "URL"
    )]
    pub webhook_url: Url,
}

impl DataSourceArgs {
    /// The configuration these options describe, pushing to `webhook_url`.
    pub fn config(&self, webhook_url: Url) -> DataSourceConfig {
        DataSourceConfig {
            seed: self.seed,
            faults: if self.no_faults {
                FaultPolicy::NONE
            } else {
                FaultPolicy {
                    fault_rate: self.fault_rate,
                    stall_rate: self.stall_rate,
                    stall: self.stall,
                }
            },
            generator: GeneratorConfig {
                webhook_url,
                batch: self.generator_batch,
                interval: self.generator_interval,
                delay: self.generator_delay,
                autostart: !self.no_generator,
                // The same variable the gateway reads, so a platform with
                // signing on still takes its own generator's pushes.
                signing: WebhookSecret::from_env(),
            },
        }
    }
}

/// The largest push the generator may be asked to make.
const MAX_BATCH: u32 = 10_000;

fn parse_rate(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(rate) if (0.0..=1.0).contains(&rate) => Ok(rate),
        _ => Err(format!(
            "expected a share from 0 to 1 (e.g. 0.1), got {text:?}"
        )),
    }
}

fn parse_webhook_url(text: &str) -> Result<Url, String> {
    let url = Url::parse(text.trim()).map_err(|err| format!("invalid URL {text:?}: {err}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(format!("expected an http:// or https:// URL, got {text:?}"));
    }
    Ok(url)
}

fn parse_batch(text: &str) -> Result<Range<u32>, String> {
    let range: Range<u32> = text.parse().map_err(|err| format!("{err}"))?;
    if range.min < 1 || range.max > MAX_BATCH {
        return Err(format!("a batch is 1 to {MAX_BATCH} events, got {text:?}"));
    }
    Ok(range)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: DataSourceArgs,
        #[command(flatten)]
        webhook: WebhookArgs,
    }

    fn parse(args: &[&str]) -> Result<DataSourceConfig, clap::Error> {
        Cli::try_parse_from(std::iter::once("datasource").chain(args.iter().copied()))
            .map(|cli| cli.args.config(cli.webhook.webhook_url))
    }

    #[test]
    fn defaults_are_the_old_servers() {
        let config = parse(&[]).expect("defaults");
        assert_eq!(config.seed, DEFAULT_SEED);
        assert_eq!(config.faults, FaultPolicy::UPSTREAM);
        assert_eq!(config.generator.webhook_url.as_str(), DEFAULT_WEBHOOK_URL);
        assert_eq!(config.generator.batch, Range { min: 1, max: 10 });
        assert_eq!(config.generator.delay, Duration::from_secs(5));
        assert!(config.generator.autostart);
    }

    #[test]
    fn flags_tune_and_switch_off() {
        let config = parse(&[
            "--fault-rate",
            "1",
            "--stall",
            "250ms",
            "--generator-batch",
            "50",
            "--generator-interval",
            "10ms-20ms",
            "--no-generator",
        ])
        .expect("flags");
        assert_eq!(config.faults.fault_rate, 1.0);
        assert_eq!(config.faults.stall, Duration::from_millis(250));
        assert_eq!(config.generator.batch, Range { min: 50, max: 50 });
        assert!(!config.generator.autostart);
        let quiet = parse(&["--fault-rate", "0.5", "--no-faults"]).expect("no faults");
        assert_eq!(quiet.faults, FaultPolicy::NONE);
    }

    #[test]
    fn bad_values_are_refused_with_a_reason() {
        for args in [
            &["--fault-rate", "1.5"][..],
            &["--stall-rate=-0.1"],
            &["--webhook-url", "ftp://host/x"],
            &["--webhook-url", "not a url"],
            &["--generator-batch", "0-5"],
            &["--generator-interval", "6s-2s"],
        ] {
            let err = parse(args).expect_err("refused");
            assert!(err.to_string().contains("invalid value"), "{args:?}: {err}");
        }
    }
}
