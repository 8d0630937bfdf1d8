//! Small helpers shared by the subcommands: durations, data dirs, logging.
//! HTTP calls to the daemons are in [`crate::http`] (re-exported here).

pub use crate::http::{http_get, http_request, http_send};
use std::path::PathBuf;
use std::time::Duration;

/// Parses `500ms`, `10s`, `2m`, `1h`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (try 500ms, 10s, 2m)"))?;
    if !v.is_finite() || v < 0.0 {
        return Err(format!("{s:?}: a duration must be a non-negative number"));
    }
    let secs = match unit {
        "ms" => v / 1000.0,
        "s" => v,
        "m" => v * 60.0,
        "h" => v * 3600.0,
        "d" => v * 86400.0,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use ms, s, m, h, d)")),
    };
    if secs > 1e9 {
        return Err(format!("{s:?} is too long"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// `$AGORA_HOME`, else `$XDG_DATA_HOME/agora`, else `~/.local/share/agora`.
pub fn default_data_root() -> PathBuf {
    if let Ok(h) = std::env::var("AGORA_HOME") {
        return PathBuf::from(h);
    }
    if let Ok(x) = std::env::var("XDG_DATA_HOME")
        && !x.is_empty()
    {
        return PathBuf::from(x).join("agora");
    }
    match std::env::var("HOME") {
        Ok(h) => PathBuf::from(h).join(".local/share/agora"),
        Err(_) => PathBuf::from("/var/lib/agora"),
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line (for log collectors).
    Json,
}

pub fn init_logging(format: LogFormat, default_filter: &str) {
    use tracing_subscriber::EnvFilter;
    let mut filter =
        EnvFilter::try_from_env("AGORA_LOG").unwrap_or_else(|_| EnvFilter::new(default_filter));
    // Never below warn for the Docker client, whatever AGORA_LOG says: at
    // debug it logs request and response bodies, and a container's body
    // holds its environment (secret variables included).
    if let Ok(d) = "bollard=warn".parse() {
        filter = filter.add_directive(d);
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// Resident set (current, peak) of a process in MiB, from /proc.
pub fn rss_mib(pid: u32) -> Option<(f64, f64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb = |key: &str| -> Option<f64> {
        s.lines()
            .find(|l| l.starts_with(key))?
            .split_whitespace()
            .nth(1)?
            .parse::<f64>()
            .ok()
    };
    Some((kb("VmRSS:")? / 1024.0, kb("VmHWM:")? / 1024.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("soon").is_err());
    }
}
