//! Small helpers shared by the subcommands: durations, data dirs, logging,
//! a minimal HTTP/1.1 GET for talking to daemons on loopback.

use anyhow::{Context, Result, bail};
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
    #[default]
    Text,
    Json,
}

pub fn init_logging(format: LogFormat, default_filter: &str) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_env("AGORA_LOG").unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// GET `http://{addr}{path}` and return the body (status must be 2xx).
pub async fn http_get(addr: &str, path: &str) -> Result<String> {
    http_request("GET", addr, path).await
}

async fn connect(addr: &str) -> Result<tokio::net::TcpStream> {
    tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
        .await
        .with_context(|| format!("connecting to {addr} timed out"))?
        .with_context(|| format!("cannot reach {addr}"))
}

/// Streams the body of `GET http://{addr}{path}` into `out` as it arrives
/// (for `--follow`). Fails unless the status is 2xx.
pub async fn http_stream(addr: &str, path: &str, out: &mut impl std::io::Write) -> Result<()> {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    let addr = addr.trim_start_matches("http://").trim_end_matches('/');
    let mut s = connect(addr).await?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut r = BufReader::new(s);
    let mut status = String::new();
    r.read_line(&mut status).await?;
    let code: u16 = status
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("malformed HTTP status line")?;
    let mut chunked = false;
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).await? == 0 || h == "\r\n" {
            break;
        }
        let lower = h.to_ascii_lowercase();
        if lower.starts_with("transfer-encoding:") && lower.contains("chunked") {
            chunked = true;
        }
    }
    if !(200..300).contains(&code) {
        let mut body = String::new();
        let _ = r.read_to_string(&mut body).await;
        let body = if chunked {
            dechunk(&body).unwrap_or(body)
        } else {
            body
        };
        bail!("GET {path} answered {code}: {}", body.trim());
    }
    if !chunked {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = r.read(&mut buf).await?;
            if n == 0 {
                return Ok(());
            }
            out.write_all(&buf[..n])?;
            out.flush()?;
        }
    }
    loop {
        let mut size = String::new();
        if r.read_line(&mut size).await? == 0 {
            return Ok(());
        }
        let n = usize::from_str_radix(size.trim(), 16).context("malformed chunk size")?;
        if n == 0 {
            return Ok(());
        }
        let mut chunk = vec![0u8; n + 2];
        r.read_exact(&mut chunk).await?;
        out.write_all(&chunk[..n])?;
        out.flush()?;
    }
}

/// `METHOD http://{addr}{path}` with an optional JSON body; returns (status, body).
pub async fn http_send(
    method: &str,
    addr: &str,
    path: &str,
    body: Option<&str>,
) -> Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = addr.trim_start_matches("http://").trim_end_matches('/');
    let mut s = connect(addr).await?;
    let body = body.unwrap_or("");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAccept: application/json\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), s.read_to_end(&mut buf))
        .await
        .context("reading the answer timed out")??;
    let text = String::from_utf8_lossy(&buf);
    let (head, rest) = text
        .split_once("\r\n\r\n")
        .context("malformed HTTP answer")?;
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("malformed HTTP status line")?;
    let rest = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(rest)?
    } else {
        rest.to_string()
    };
    Ok((status, rest))
}

/// `METHOD http://{addr}{path}` with an empty body; returns the body (2xx only).
pub async fn http_request(method: &str, addr: &str, path: &str) -> Result<String> {
    let (status, body) = http_send(method, addr, path, None).await?;
    if !(200..300).contains(&status) {
        bail!("{method} {path} answered {status}: {}", body.trim());
    }
    Ok(body)
}

fn dechunk(mut body: &str) -> Result<String> {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").context("malformed chunk")?;
        let n = usize::from_str_radix(size.trim(), 16).context("malformed chunk size")?;
        if n == 0 {
            return Ok(out);
        }
        out.push_str(rest.get(..n).context("truncated chunk")?);
        body = rest.get(n + 2..).unwrap_or("");
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

    #[test]
    fn dechunks() {
        assert_eq!(
            dechunk("3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n").unwrap(),
            "abcde"
        );
    }
}
