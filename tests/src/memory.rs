//! Memory figures for the benchmarks and the bounds tests: what the kernel
//! says a process holds (Linux `/proc/<pid>/status`).

/// The process's peak resident set so far (`VmHWM`), in bytes; `None` where
/// the kernel does not say.
pub fn peak_rss_bytes() -> Option<u64> {
    status_kib("self", "VmHWM:").map(|kib| kib * 1024)
}

/// The peak resident set so far (`VmHWM`) of process `pid`, in bytes.
pub fn peak_rss_bytes_of(pid: u32) -> Option<u64> {
    status_kib(&pid.to_string(), "VmHWM:").map(|kib| kib * 1024)
}

/// The process's resident set now (`VmRSS`), in bytes.
pub fn rss_bytes() -> Option<u64> {
    status_kib("self", "VmRSS:").map(|kib| kib * 1024)
}

/// A line for a benchmark's output: "peak RSS 42.1 MiB" (or why not).
pub fn peak_rss_line() -> String {
    match peak_rss_bytes() {
        Some(bytes) => format!("peak RSS {:.1} MiB", bytes as f64 / (1024.0 * 1024.0)),
        None => "peak RSS not available on this system".to_owned(),
    }
}

fn status_kib(process: &str, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{process}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_peak_is_at_least_what_is_resident_now() {
        let now = rss_bytes().expect("VmRSS on Linux");
        let peak = peak_rss_bytes().expect("VmHWM on Linux");
        assert!(peak >= now && now > 0, "peak {peak} now {now}");
        assert!(peak_rss_line().starts_with("peak RSS "));
    }
}
