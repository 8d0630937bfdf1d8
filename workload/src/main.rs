//! agora-workload: a tiny HTTP server used by tests and benchmarks.
//!
//! - `GET /`            → `task=<task id> host=<hostname>`
//! - `GET /env`         → the *names* of its environment variables (JSON array), never values
//! - `GET /health`      → 200 `healthy` or 503 `unhealthy`; `?set=unhealthy|healthy` switches it
//! - `GET /burn?ms=N`   → spins a CPU for N ms (load and autoscaling tests)
//! - `GET /sleep?ms=N`  → answers `task=<task id> slept=N` after N ms (a slow
//!   request without CPU: drain and rollout benchmarks)
//! - `GET /mem?mib=N`   → allocates and touches N MiB and keeps it (memory-limit tests)
//! - `GET /hash?env=NAME` / `GET /hash?file=PATH` → the SHA-256 (hex) of the
//!   variable's value or the file's content, never the value itself: tests
//!   check that a task sees its secret without the value crossing any API
//!   (404 when the variable or file is missing)
//!
//! Port: `--port N`, else `$PORT`, else `$PORT0`, else 8080. On SIGTERM it waits
//! `AGORA_DRAIN_MS` (default 0) and exits 0; with `AGORA_IGNORE_SIGTERM=1` it
//! ignores SIGTERM (to test forced kills). Std, signal-hook and ring's
//! digest only, so it links statically.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

struct State {
    healthy: AtomicBool,
    hoard: Mutex<Vec<Vec<u8>>>,
    task: String,
    host: String,
}

fn port() -> u16 {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--port")
        && let Some(p) = args.get(i + 1).and_then(|p| p.parse().ok())
    {
        return p;
    }
    for var in ["PORT", "PORT0"] {
        if let Some(p) = std::env::var(var).ok().and_then(|p| p.parse().ok()) {
            return p;
        }
    }
    8080
}

fn query(path: &str, key: &str) -> Option<String> {
    let q = path.split_once('?')?.1;
    q.split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v.to_string())
}

fn respond(mut s: &TcpStream, code: u16, body: &str) {
    let reason = match code {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        _ => "Service Unavailable",
    };
    let _ = write!(
        s,
        "HTTP/1.1 {code} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

fn handle(s: TcpStream, st: &State) {
    let mut line = String::new();
    let mut reader = BufReader::new(&s);
    if reader.read_line(&mut line).is_err() {
        return;
    }
    // Drain headers.
    let mut h = String::new();
    while reader.read_line(&mut h).map(|n| n > 2).unwrap_or(false) {
        h.clear();
    }
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let route = path.split('?').next().unwrap_or("/");
    match route {
        "/" => respond(&s, 200, &format!("task={} host={}\n", st.task, st.host)),
        "/env" => {
            let mut names: Vec<String> = std::env::vars_os()
                .map(|(k, _)| format!("{:?}", k.to_string_lossy()))
                .collect();
            names.sort();
            respond(&s, 200, &format!("[{}]\n", names.join(",")));
        }
        "/health" => {
            match query(&path, "set").as_deref() {
                Some("unhealthy") => st.healthy.store(false, Ordering::SeqCst),
                Some("healthy") => st.healthy.store(true, Ordering::SeqCst),
                Some(_) => return respond(&s, 400, "set must be healthy or unhealthy\n"),
                None => {}
            }
            if st.healthy.load(Ordering::SeqCst) {
                respond(&s, 200, "healthy\n")
            } else {
                respond(&s, 503, "unhealthy\n")
            }
        }
        "/burn" => {
            let ms: u64 = query(&path, "ms")
                .and_then(|v| v.parse().ok())
                .unwrap_or(100)
                .min(60_000);
            let t0 = Instant::now();
            let mut x: u64 = 1;
            while t0.elapsed() < Duration::from_millis(ms) {
                for _ in 0..10_000 {
                    x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                }
            }
            respond(&s, 200, &format!("burned {ms} ms ({})\n", x % 7));
        }
        "/sleep" => {
            let ms: u64 = query(&path, "ms")
                .and_then(|v| v.parse().ok())
                .unwrap_or(100)
                .min(60_000);
            std::thread::sleep(Duration::from_millis(ms));
            respond(&s, 200, &format!("task={} slept={ms}\n", st.task));
        }
        "/mem" => {
            let mib: usize = query(&path, "mib")
                .and_then(|v| v.parse().ok())
                .unwrap_or(1)
                .min(65_536);
            let mut block = vec![0u8; mib << 20];
            for i in (0..block.len()).step_by(4096) {
                block[i] = 1;
            }
            if let Ok(mut h) = st.hoard.lock() {
                h.push(block);
            }
            respond(&s, 200, &format!("holding {mib} MiB more\n"));
        }
        "/hash" => match hash(&path) {
            Ok(h) => respond(&s, 200, &format!("{h}\n")),
            Err((code, why)) => respond(&s, code, &format!("{why}\n")),
        },
        _ => respond(&s, 404, "not found\n"),
    }
}

/// Decodes `%XX` escapes (a file path or a name in a query).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (
            b[i],
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `/hash?env=NAME` or `/hash?file=PATH`: the SHA-256 hex of the value.
fn hash(path: &str) -> Result<String, (u16, String)> {
    let bytes = if let Some(name) = query(path, "env") {
        let name = percent_decode(&name);
        std::env::var_os(&name)
            .map(|v| std::os::unix::ffi::OsStrExt::as_bytes(v.as_os_str()).to_vec())
            .ok_or((404, format!("no variable {name}")))?
    } else if let Some(file) = query(path, "file") {
        let file = percent_decode(&file);
        std::fs::read(&file).map_err(|e| (404, format!("cannot read {file}: {e}")))?
    } else {
        return Err((400, "give env=NAME or file=PATH".into()));
    };
    let d = ring::digest::digest(&ring::digest::SHA256, &bytes);
    Ok(d.as_ref().iter().map(|b| format!("{b:02x}")).collect())
}

fn main() {
    // First thing: as PID 1 in a container, a SIGTERM that arrives before a
    // handler exists is silently ignored.
    let term = Arc::new(AtomicBool::new(false));
    let ignore = std::env::var("AGORA_IGNORE_SIGTERM").is_ok_and(|v| v == "1");
    if let Err(e) = signal_hook::flag::register(signal_hook::consts::SIGTERM, term.clone()) {
        eprintln!("cannot handle SIGTERM: {e}");
    }
    let port = port();
    let host = std::fs::read_to_string("/etc/hostname")
        .or_else(|_| std::fs::read_to_string("/proc/sys/kernel/hostname"))
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    let task = std::env::var("AGORA_TASK_ID").unwrap_or_else(|_| "none".into());
    let st = Arc::new(State {
        healthy: AtomicBool::new(true),
        hoard: Mutex::new(Vec::new()),
        task,
        host,
    });

    let drain = Duration::from_millis(
        std::env::var("AGORA_DRAIN_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
    );

    let listener = match TcpListener::bind(("0.0.0.0", port)) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("cannot listen on port {port}: {e}");
            std::process::exit(2);
        }
    };
    println!("agora-workload listening on :{port} (task {})", st.task);
    let _ = std::io::stdout().flush();
    {
        let st = st.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let st = st.clone();
                std::thread::spawn(move || handle(conn, &st));
            }
        });
    }
    loop {
        std::thread::sleep(Duration::from_millis(20));
        if term.load(Ordering::SeqCst) {
            if ignore {
                println!("SIGTERM received and ignored");
                let _ = std::io::stdout().flush();
                term.store(false, Ordering::SeqCst);
                continue;
            }
            println!("SIGTERM received; draining for {drain:?}");
            let _ = std::io::stdout().flush();
            std::thread::sleep(drain);
            std::process::exit(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_answers_the_sha256_of_a_file_or_variable_never_the_value() {
        let f = std::env::temp_dir().join(format!("agora-wl-hash-{}", std::process::id()));
        std::fs::write(&f, "hi").unwrap();
        let p = format!("/hash?file={}", f.display()).replace('/', "%2F");
        let p = p.replacen("%2Fhash", "/hash", 1);
        assert_eq!(
            hash(&p).unwrap(),
            "8f434346648f6b96df89dda901c5176b10a6d83961dd3c1ac88b59b2dc327aa4"
        );
        let _ = std::fs::remove_file(&f);
        // PATH is always set; its hash is not its value.
        let h = hash("/hash?env=PATH").unwrap();
        assert_eq!(h.len(), 64);
        assert_ne!(h, std::env::var("PATH").unwrap());
        assert_eq!(hash("/hash?env=AGORA_NO_SUCH_VARIABLE").unwrap_err().0, 404);
        assert_eq!(hash("/hash").unwrap_err().0, 400);
        assert_eq!(percent_decode("%2Frun%2Fsecrets%2Fdb"), "/run/secrets/db");
    }
}
