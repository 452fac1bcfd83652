//! Reading a Prometheus text exposition (what `/metrics` serves), for
//! tests that check counters moved by the right amounts.

use std::collections::BTreeMap;

/// One sample line: `name{label="value",...} number`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The series name (`vesper_grpc_requests_total`,
    /// `vesper_http_request_duration_seconds_count`, ...).
    pub name: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its value.
    pub value: f64,
}

/// A parsed exposition: the samples and the declared metric types.
#[derive(Debug, Clone, Default)]
pub struct Scrape {
    samples: Vec<Sample>,
    types: BTreeMap<String, String>,
}

impl Scrape {
    /// Parses Prometheus text format 0.0.4; panics on a line it cannot
    /// read (a test wants to know).
    pub fn parse(text: &str) -> Self {
        let mut scrape = Self::default();
        for line in text.lines().map(str::trim).filter(|line| !line.is_empty()) {
            if let Some(declaration) = line.strip_prefix("# TYPE ") {
                let (name, kind) = declaration
                    .split_once(' ')
                    .unwrap_or_else(|| panic!("bad TYPE line: {line}"));
                scrape.types.insert(name.to_owned(), kind.trim().to_owned());
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            scrape.samples.push(parse_sample(line));
        }
        scrape
    }

    /// Every sample.
    pub fn samples(&self) -> &[Sample] {
        &self.samples
    }

    /// Each declared metric with its type (`counter`, `gauge`,
    /// `histogram`, ...).
    pub fn types(&self) -> &BTreeMap<String, String> {
        &self.types
    }

    /// The sum of the samples named `name` whose labels include every
    /// pair of `labels` (0 when there is none: a counter never touched is
    /// not rendered).
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|sample| sample.name == name)
            .filter(|sample| {
                labels
                    .iter()
                    .all(|(key, value)| sample.labels.get(*key).map(String::as_str) == Some(*value))
            })
            .map(|sample| sample.value)
            .sum()
    }

    /// Whether any sample is named `name`.
    pub fn has(&self, name: &str) -> bool {
        self.samples.iter().any(|sample| sample.name == name)
    }
}

fn parse_sample(line: &str) -> Sample {
    let (series, value) = line
        .rsplit_once(' ')
        .unwrap_or_else(|| panic!("no value in: {line}"));
    let value: f64 = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        number => number
            .parse()
            .unwrap_or_else(|_| panic!("bad value in: {line}")),
    };
    let (name, labels) = match series.split_once('{') {
        Some((name, rest)) => {
            let inner = rest
                .strip_suffix('}')
                .unwrap_or_else(|| panic!("unclosed labels in: {line}"));
            (name, parse_labels(inner, line))
        }
        None => (series, BTreeMap::new()),
    };
    Sample {
        name: name.to_owned(),
        labels,
        value,
    }
}

/// `key="value",key="value"` with `\"`, `\\` and `\n` escapes in values.
fn parse_labels(text: &str, line: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return labels;
        }
        let key: String = std::iter::from_fn(|| chars.next_if(|c| *c != '=')).collect();
        assert_eq!(chars.next(), Some('='), "bad labels in: {line}");
        assert_eq!(chars.next(), Some('"'), "bad labels in: {line}");
        let mut value = String::new();
        loop {
            match chars.next() {
                Some('"') => break,
                Some('\\') => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(other) => value.push(other),
                    None => panic!("bad labels in: {line}"),
                },
                Some(c) => value.push(c),
                None => panic!("bad labels in: {line}"),
            }
        }
        labels.insert(key.trim().to_owned(), value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_types_and_escaped_labels_are_read() {
        let scrape = Scrape::parse(
            "# HELP x_total things\n\
             # TYPE x_total counter\n\
             x_total{rpc=\"a/B\",code=\"OK\"} 3\n\
             x_total{rpc=\"a/C\",code=\"OK\"} 2\n\
             x_total{rpc=\"q\\\"\\\\\",code=\"NOT_FOUND\"} 1\n\
             # TYPE y_seconds histogram\n\
             y_seconds_bucket{le=\"+Inf\"} 4\n\
             y_seconds_count 4\n\
             z 1.5e3\n",
        );
        assert_eq!(scrape.value("x_total", &[("code", "OK")]), 5.0);
        assert_eq!(scrape.value("x_total", &[("rpc", "q\"\\")]), 1.0);
        assert_eq!(scrape.value("x_total", &[("code", "INTERNAL")]), 0.0);
        assert_eq!(scrape.value("y_seconds_count", &[]), 4.0);
        assert_eq!(scrape.value("z", &[]), 1500.0);
        assert_eq!(scrape.types()["y_seconds"], "histogram");
        assert!(scrape.has("y_seconds_bucket") && !scrape.has("y_seconds"));
    }
}
