//! agora-workload: a tiny HTTP server used by tests and benchmarks.
//!
//! - `GET /`            → `task=<task id> host=<hostname>`
//! - `GET /env`         → the *names* of its environment variables (JSON array), never values
//! - `GET /health`      → 200 `healthy` or 503 `unhealthy`; `?set=unhealthy|healthy` switches it
//! - `GET /burn?ms=N`   → spins a CPU for N ms (load and autoscaling tests)
//! - `GET /sleep?ms=N`  → answers `task=<task id> slept=N` after N ms (a slow
//!   request without CPU: drain and rollout benchmarks)
//! - `GET /mem?mib=N`   → allocates and touches N MiB and keeps it (memory-limit tests)
//!
//! Port: `--port N`, else `$PORT`, else `$PORT0`, else 8080. On SIGTERM it waits
//! `AGORA_DRAIN_MS` (default 0) and exits 0; with `AGORA_IGNORE_SIGTERM=1` it
//! ignores SIGTERM (to test forced kills). Std only, so it links statically.

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
        _ => respond(&s, 404, "not found\n"),
    }
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
