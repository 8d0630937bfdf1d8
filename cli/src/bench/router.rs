//! `agora bench router`: Agora's L7 proxy against nginx and HAProxy, each
//! in front of the same two backends, loaded by `wrk` with the same
//! connections, threads and duration.
//!
//! - Backends: nginx answering a fixed 200 on two local ports (keep-alive,
//!   every core), or, without nginx, an in-process hyper server on its own
//!   threads. `backend_rps` is one backend measured directly in the same
//!   run; the comparison counts (`comparable`) only when it is at least
//!   twice the best proxy's.
//! - Agora: the edge proxy on a single-threaded runtime of its own thread
//!   (one worker, like the others), fed a view built in-process
//!   (Publisher → View → Router), no services framework.
//! - nginx: 1 worker, upstream keepalive; HAProxy: nbthread 1, http-reuse
//!   always. Each runs from its own temp config dir and is killed when the
//!   bench ends (also on error).
//! - Every target gets a 1 s warm-up (backend pools filled) before each
//!   measured run. Every request carries `Host: web.bench.agora`.
//! - `--rounds N` interleaves the targets N times and reports the medians,
//!   so that load from elsewhere on the machine falls on all of them.

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const HOST: &str = "web.bench.agora";
const INSTALL: &str = "apt-get install -y nginx-light haproxy wrk";

#[derive(clap::Args, Debug, Clone)]
pub struct RouterBenchArgs {
    /// wrk connections (the same for every target).
    #[arg(short = 'c', long, default_value_t = 64)]
    pub connections: u32,
    /// wrk threads.
    #[arg(short = 't', long, default_value_t = 2)]
    pub threads: u32,
    /// Measured duration of each run (whole seconds, e.g. 10s).
    #[arg(short = 'd', long, value_parser = crate::util::parse_duration, default_value = "10s")]
    pub duration: Duration,
    /// Rounds: each round measures every target once (interleaved); the
    /// figures are the medians over the rounds.
    #[arg(long, default_value_t = 1)]
    pub rounds: u32,
    /// Backends: nginx (a fixed 200), hyper (in-process), or auto (nginx
    /// when installed).
    #[arg(long, value_enum, default_value = "auto")]
    pub backend: BackendKind,
    /// Print one JSON object as the last line.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    Auto,
    Nginx,
    Hyper,
}

/// One wrk run's figures.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Load {
    pub rps: f64,
    pub p99_ms: f64,
    /// Non-2xx/3xx answers and socket errors.
    pub errors: u64,
}

fn installed(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A daemon in a process group of its own (nginx's master and workers):
/// stopped (SIGTERM to the group, SIGKILL after 3 s) and reaped when
/// dropped, and its temp dir removed. Ctrl-C or SIGTERM of the bench stops
/// the groups still running too (see [`stop_on_signal`]).
struct Daemon {
    name: &'static str,
    child: Child,
    dir: PathBuf,
}

/// Process groups and temp dirs of the daemons running now.
static GROUPS: std::sync::Mutex<Vec<(i32, PathBuf)>> = std::sync::Mutex::new(Vec::new());

fn kill_group(pgid: i32, sig: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(-pgid), sig);
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let pgid = self.child.id() as i32;
        kill_group(pgid, nix::sys::signal::Signal::SIGTERM);
        let deadline = std::time::Instant::now() + Duration::from_secs(3);
        while matches!(self.child.try_wait(), Ok(None)) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        // Whatever is left of the group (workers included).
        kill_group(pgid, nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait();
        GROUPS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(g, _)| *g != pgid);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// On Ctrl-C or SIGTERM: kills the daemons' groups, removes their temp
/// dirs and exits (130).
fn stop_on_signal() {
    tokio::spawn(async {
        crate::util_signal::terminated().await;
        for (g, dir) in GROUPS.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
            kill_group(g, nix::sys::signal::Signal::SIGKILL);
            let _ = std::fs::remove_dir_all(dir);
        }
        eprintln!("interrupted: nginx/haproxy stopped");
        std::process::exit(130);
    });
}

fn temp_dir(name: &str) -> Result<PathBuf> {
    let d = std::env::temp_dir().join(format!(
        "agora-bench-router-{name}-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
    Ok(d)
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Waits until `port` accepts connections (or the daemon died).
fn wait_listening(d: &mut Daemon, port: u16) -> Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        if let Some(st) = d.child.try_wait()? {
            let log = std::fs::read_to_string(d.dir.join("stderr.log")).unwrap_or_default();
            bail!(
                "{} exited ({st}) before listening on {port}:\n{}",
                d.name,
                log.trim_end()
            );
        }
        if std::time::Instant::now() > deadline {
            bail!("{} does not listen on {port} after 10s", d.name);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn spawn(name: &'static str, dir: PathBuf, cmd: &mut Command) -> Result<Daemon> {
    use std::os::unix::process::CommandExt;
    let child = cmd
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(dir.join("stderr.log"))?))
        .spawn()
        .with_context(|| format!("cannot start {name}"))?;
    GROUPS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((child.id() as i32, dir.clone()));
    Ok(Daemon { name, child, dir })
}

/// nginx's main config around `http`, everything under `dir`.
fn nginx_conf(dir: &Path, workers: &str, http: &str) -> String {
    let d = dir.display();
    format!(
        "worker_processes {workers};\ndaemon off;\nmaster_process on;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
         events {{ worker_connections 4096; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
         fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
         keepalive_requests 100000000;\n  keepalive_timeout 60s;\n{http}}}\n"
    )
}

fn start_nginx(name: &'static str, conf: impl Fn(&Path) -> String, port: u16) -> Result<Daemon> {
    let dir = temp_dir(name)?;
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf(&dir))?;
    let mut d = spawn(
        name,
        dir.clone(),
        Command::new("nginx")
            .arg("-e")
            .arg(dir.join("error.log"))
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(&path),
    )?;
    wait_listening(&mut d, port)?;
    Ok(d)
}

/// Two nginx backends (one process, every core) answering a fixed 200.
fn nginx_backends(ports: [u16; 2]) -> Result<Daemon> {
    let servers: String = ports
        .iter()
        .map(|p| {
            format!("  server {{ listen 127.0.0.1:{p} reuseport; location / {{ return 200 \"ok\\n\"; }} }}\n")
        })
        .collect();
    start_nginx("backends", |d| nginx_conf(d, "auto", &servers), ports[1])
}

fn nginx_proxy(port: u16, backends: [u16; 2]) -> Result<Daemon> {
    let http = format!(
        "  upstream app {{ server 127.0.0.1:{}; server 127.0.0.1:{}; keepalive 128; }}\n\
         server {{ listen 127.0.0.1:{port}; location / {{ proxy_pass http://app; proxy_http_version 1.1; \
         proxy_set_header Connection \"\"; proxy_set_header Host $host; }} }}\n",
        backends[0], backends[1]
    );
    start_nginx("nginx", |d| nginx_conf(d, "1", &http), port)
}

fn haproxy_proxy(port: u16, backends: [u16; 2]) -> Result<Daemon> {
    let dir = temp_dir("haproxy")?;
    let path = dir.join("haproxy.cfg");
    std::fs::write(
        &path,
        format!(
            "global\n  nbthread 1\n  maxconn 8000\n\
             defaults\n  mode http\n  timeout connect 1s\n  timeout client 60s\n  timeout server 60s\n  http-reuse always\n\
             frontend fe\n  bind 127.0.0.1:{port}\n  default_backend app\n\
             backend app\n  balance roundrobin\n  server a 127.0.0.1:{}\n  server b 127.0.0.1:{}\n",
            backends[0], backends[1]
        ),
    )?;
    let mut d = spawn(
        "haproxy",
        dir,
        Command::new("haproxy").arg("-db").arg("-f").arg(&path),
    )?;
    wait_listening(&mut d, port)?;
    Ok(d)
}

/// A thread running a tokio runtime until dropped.
struct RuntimeThread {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for RuntimeThread {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Runs `serve` (given the listeners bound on the ports) on a runtime of
/// `workers` threads (0: a current-thread runtime) in its own thread.
fn runtime_thread<F, Fut>(workers: usize, ports: Vec<u16>, serve: F) -> Result<RuntimeThread>
where
    F: FnOnce(Vec<tokio::net::TcpListener>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
    let thread = std::thread::spawn(move || {
        let rt = if workers == 0 {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
        } else {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(workers)
                .enable_all()
                .build()
        };
        let rt = match rt {
            Ok(rt) => rt,
            Err(e) => {
                let _ = ready_tx.send(Err(e.to_string()));
                return;
            }
        };
        let local = tokio::task::LocalSet::new();
        local.block_on(&rt, async move {
            let mut ls = Vec::new();
            for p in ports {
                match tokio::net::TcpListener::bind(("127.0.0.1", p)).await {
                    Ok(l) => ls.push(l),
                    Err(e) => {
                        let _ = ready_tx.send(Err(format!("binding 127.0.0.1:{p}: {e}")));
                        return;
                    }
                }
            }
            let _ = ready_tx.send(Ok(()));
            tokio::select! {
                _ = serve(ls) => {}
                _ = stopped => {}
            }
        });
    });
    let ready = ready_rx
        .recv()
        .map_err(|_| anyhow::anyhow!("the runtime thread died"))?;
    ready.map_err(anyhow::Error::msg)?;
    Ok(RuntimeThread {
        stop: Some(stop),
        thread: Some(thread),
    })
}

/// Two in-process hyper backends (HTTP/1.1 keep-alive, fixed 200) on a
/// runtime of two threads.
fn hyper_backends(ports: [u16; 2]) -> Result<RuntimeThread> {
    runtime_thread(2, ports.to_vec(), |ls| async move {
        let mut tasks = Vec::new();
        for l in ls {
            tasks.push(tokio::spawn(async move {
                loop {
                    let Ok((s, _)) = l.accept().await else { return };
                    let _ = s.set_nodelay(true);
                    tokio::spawn(async move {
                        let svc = hyper::service::service_fn(|_req| async {
                            Ok::<_, std::convert::Infallible>(hyper::Response::new(
                                http_body_util::Full::new(hyper::body::Bytes::from_static(b"ok\n")),
                            ))
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                            .await;
                    });
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
    })
}

/// The view the Agora proxy routes by: app `/bench/web`, port 0 public,
/// the two backends serving.
fn bench_view(backends: [u16; 2]) -> agora_core::endpoints::View {
    use agora_core::endpoints::{
        Endpoint, EndpointKey, EndpointSet, EndpointState, PortMeta, Publisher, View,
    };
    let mut p = Publisher::default();
    let endpoints = backends
        .iter()
        .enumerate()
        .map(|(i, port)| Endpoint {
            task_id: format!("bench-{i}"),
            host: "127.0.0.1".into(),
            port: u32::from(*port),
            state: EndpointState::Serving,
        })
        .collect();
    let meta = PortMeta {
        name: Some("http".into()),
        protocol: "tcp".into(),
        public: true,
        ..PortMeta::default()
    };
    let key = EndpointKey {
        app_id: "/bench/web".into(),
        port_index: 0,
    };
    p.publish_app("/bench/web", vec![EndpointSet::new(key, meta, endpoints)]);
    View::from_snapshot(p.snapshot())
}

/// Agora's edge proxy on one thread (a current-thread runtime).
fn agora_proxy(port: u16, backends: [u16; 2]) -> Result<RuntimeThread> {
    use agora_router::proxy::{Exposure, Proxy, ProxyConfig};
    use agora_router::routes::{Router, RoutesConfig};
    let view = bench_view(backends);
    runtime_thread(0, vec![port], move |mut ls| async move {
        let router = Router::new(RoutesConfig::default());
        router.apply(&view);
        let proxy = Proxy::new(
            router,
            ProxyConfig {
                exposure: Exposure::Edge,
                ..ProxyConfig::default()
            },
        );
        if let Some(l) = ls.pop() {
            proxy.serve(l).await;
        }
    })
}

/// The median of each figure over the runs (errors: their sum).
fn median(runs: &[Load]) -> Option<Load> {
    if runs.is_empty() {
        return None;
    }
    let mut rps: Vec<f64> = runs.iter().map(|l| l.rps).collect();
    let mut p99: Vec<f64> = runs.iter().map(|l| l.p99_ms).collect();
    Some(Load {
        rps: super::quantile(&mut rps, 0.5),
        p99_ms: super::quantile(&mut p99, 0.5),
        errors: runs.iter().map(|l| l.errors).sum(),
    })
}

/// A latency as wrk prints it (`812.00us`, `2.10ms`, `1.02s`) in ms.
fn parse_latency_ms(s: &str) -> Option<f64> {
    let s = s.trim();
    let (num, factor) = if let Some(n) = s.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60_000.0)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1000.0)
    } else {
        return None;
    };
    num.trim().parse::<f64>().ok().map(|v| v * factor)
}

/// Reads wrk's `--latency` report.
pub fn parse_wrk(out: &str) -> Option<Load> {
    let mut load = Load::default();
    let (mut rps, mut p99) = (None, None);
    for line in out.lines() {
        let t = line.trim();
        if let Some(v) = t.strip_prefix("Requests/sec:") {
            rps = v.trim().parse::<f64>().ok();
        } else if let Some(v) = t.strip_prefix("99%") {
            p99 = parse_latency_ms(v);
        } else if let Some(v) = t.strip_prefix("Non-2xx or 3xx responses:") {
            load.errors += v.trim().parse::<u64>().unwrap_or(0);
        } else if let Some(v) = t.strip_prefix("Socket errors:") {
            // connect 0, read 0, write 0, timeout 0
            load.errors += v
                .split(',')
                .filter_map(|kv| kv.split_whitespace().last()?.parse::<u64>().ok())
                .sum::<u64>();
        }
    }
    load.rps = rps?;
    load.p99_ms = p99?;
    Some(load)
}

fn wrk(args: &RouterBenchArgs, port: u16, secs: u64) -> Result<Load> {
    let out = Command::new("wrk")
        .arg("-c")
        .arg(args.connections.to_string())
        .arg("-t")
        .arg(args.threads.to_string())
        .arg("-d")
        .arg(format!("{secs}s"))
        .arg("--latency")
        .arg("-H")
        .arg(format!("Host: {HOST}"))
        .arg(format!("http://127.0.0.1:{port}/"))
        .stdin(Stdio::null())
        .output()
        .context("cannot run wrk")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "wrk failed ({}): {}{}",
            out.status,
            text,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    parse_wrk(&text).with_context(|| format!("cannot read wrk's report:\n{text}"))
}

/// A warm-up run, then the measured one.
fn measure(args: &RouterBenchArgs, what: &str, port: u16) -> Result<Load> {
    wrk(args, port, 1)?;
    let l = wrk(args, port, args.duration.as_secs().max(1))?;
    eprintln!(
        "  {what:<8} {:>9.0} req/s  p99 {:>7.2} ms{}",
        l.rps,
        l.p99_ms,
        if l.errors > 0 {
            format!("  ({} errors: the figure is not valid)", l.errors)
        } else {
            String::new()
        }
    );
    Ok(l)
}

fn num(v: Option<f64>, digits: i32) -> serde_json::Value {
    let f = 10f64.powi(digits);
    v.map(|x| serde_json::json!((x * f).round() / f))
        .unwrap_or(serde_json::Value::Null)
}

pub fn run(args: RouterBenchArgs) -> Result<()> {
    anyhow::ensure!(
        args.connections > 0 && args.threads > 0 && args.threads <= args.connections,
        "connections and threads must be > 0, threads <= connections"
    );
    stop_on_signal();
    let missing: Vec<&str> = ["wrk", "nginx", "haproxy"]
        .into_iter()
        .filter(|t| !installed(t))
        .collect();
    if !missing.is_empty() {
        eprintln!(
            "missing: {} (Debian: {INSTALL}); skipping what needs them",
            missing.join(", ")
        );
    }
    let has = |t: &str| !missing.contains(&t);
    let use_nginx = match args.backend {
        BackendKind::Nginx if !has("nginx") => bail!("--backend nginx: nginx is not installed"),
        BackendKind::Nginx => true,
        BackendKind::Hyper => false,
        BackendKind::Auto => has("nginx"),
    };
    let backend_name = if use_nginx { "nginx" } else { "hyper" };
    let ports = [free_port()?, free_port()?];
    eprintln!(
        "agora bench router: backends {backend_name} on 127.0.0.1:{} and :{}; wrk -c {} -t {} -d {}s (+1s warm-up each)",
        ports[0],
        ports[1],
        args.connections,
        args.threads,
        args.duration.as_secs().max(1)
    );
    let (_nginx_backends, _hyper_backends) = if use_nginx {
        (Some(nginx_backends(ports)?), None)
    } else {
        (None, Some(hyper_backends(ports)?))
    };

    let (mut backend, mut agora, mut nginx, mut haproxy) = (None, None, None, None);
    if has("wrk") {
        // Every proxy runs (idle) for the whole bench; the rounds
        // interleave them so that load from elsewhere on the machine
        // falls on all of them alike.
        let agora_port = free_port()?;
        let _agora = agora_proxy(agora_port, ports)?;
        let nginx_d = match has("nginx") {
            true => {
                let p = free_port()?;
                Some((nginx_proxy(p, ports)?, p))
            }
            false => None,
        };
        let haproxy_d = match has("haproxy") {
            true => {
                let p = free_port()?;
                Some((haproxy_proxy(p, ports)?, p))
            }
            false => None,
        };
        let mut runs: [Vec<Load>; 4] = Default::default();
        for round in 1..=args.rounds.max(1) {
            if args.rounds > 1 {
                eprintln!("  round {round}/{}", args.rounds);
            }
            runs[0].push(measure(&args, "backend", ports[0])?);
            runs[1].push(measure(&args, "agora", agora_port)?);
            if let Some((_, p)) = &nginx_d {
                runs[2].push(measure(&args, "nginx", *p)?);
            }
            if let Some((_, p)) = &haproxy_d {
                runs[3].push(measure(&args, "haproxy", *p)?);
            }
        }
        [backend, agora, nginx, haproxy] = runs.map(|r| median(&r));
    }
    let best_other = [nginx, haproxy]
        .iter()
        .flatten()
        .map(|l| l.rps)
        .fold(None, |m: Option<f64>, r| Some(m.map_or(r, |m| m.max(r))));
    let best_any = [agora, nginx, haproxy]
        .iter()
        .flatten()
        .map(|l| l.rps)
        .fold(None, |m: Option<f64>, r| Some(m.map_or(r, |m| m.max(r))));
    let ratio = match (agora, best_other) {
        (Some(a), Some(b)) if b > 0.0 => Some(a.rps / b),
        _ => None,
    };
    let comparable = match (backend, best_any) {
        (Some(b), Some(p)) => Some(b.rps >= 2.0 * p),
        _ => None,
    };
    if let Some(r) = ratio {
        eprintln!(
            "  ratio    {r:.2} (agora / best of nginx and haproxy){}",
            match comparable {
                Some(false) => "; NOT comparable: backend_rps < 2 x the best proxy",
                _ => "",
            }
        );
    }
    let errors: u64 = [backend, agora, nginx, haproxy]
        .iter()
        .flatten()
        .map(|l| l.errors)
        .sum();
    if args.json {
        let j = serde_json::json!({
            "bench": "router",
            "backend": backend_name,
            "connections": args.connections,
            "threads": args.threads,
            "duration_s": args.duration.as_secs().max(1),
            "rounds": args.rounds.max(1),
            "backend_rps": num(backend.map(|l| l.rps), 0),
            "agora_rps": num(agora.map(|l| l.rps), 0),
            "nginx_rps": num(nginx.map(|l| l.rps), 0),
            "haproxy_rps": num(haproxy.map(|l| l.rps), 0),
            "agora_p99_ms": num(agora.map(|l| l.p99_ms), 3),
            "nginx_p99_ms": num(nginx.map(|l| l.p99_ms), 3),
            "haproxy_p99_ms": num(haproxy.map(|l| l.p99_ms), 3),
            "ratio_rps": num(ratio, 3),
            "comparable": comparable,
            "errors": errors,
            "missing": missing,
        });
        println!("{j}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_wrk_reports() {
        let out = "Running 2s test @ http://127.0.0.1:1/\n  2 threads and 64 connections\n\
  Thread Stats   Avg      Stdev     Max   +/- Stdev\n    Latency     1.10ms  400.00us  12.00ms   90.00%\n\
  Latency Distribution\n     50%    1.00ms\n     75%    1.20ms\n     90%    1.50ms\n     99%  812.00us\n\
  100000 requests in 2.00s, 10.00MB read\n  Socket errors: connect 0, read 2, write 0, timeout 1\n\
  Non-2xx or 3xx responses: 4\nRequests/sec:  50000.50\nTransfer/sec:      5.00MB\n";
        let l = parse_wrk(out).unwrap();
        assert_eq!(l.rps, 50000.5);
        assert!((l.p99_ms - 0.812).abs() < 1e-9);
        assert_eq!(l.errors, 7);
        assert_eq!(parse_latency_ms("1.02s"), Some(1020.0));
        assert!(parse_wrk("Requests/sec: 1\n").is_none());
    }

    #[test]
    fn the_bench_view_routes_the_bench_host_at_the_edge() {
        let router = agora_router::routes::Router::new(Default::default());
        router.apply(&bench_view([1, 2]));
        let routes = router.routes();
        assert!(routes.edge.lookup(HOST, "/").is_some());
    }
}
