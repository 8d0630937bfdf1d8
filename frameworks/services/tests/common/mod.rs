//! Helpers shared by the services framework's in-process HTTP tests: the
//! framework serving on a loopback port with no master (the driver keeps
//! retrying in the background), and raw HTTP/1.1 requests.

#![allow(dead_code)]

use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub struct Api {
    pub addr: String,
    dir: std::path::PathBuf,
    stop: tokio::sync::watch::Sender<bool>,
    /// Leave the data dir when dropped (a restart test starts again on it).
    keep: bool,
}

impl Api {
    /// Stops the framework (as Ctrl-C would).
    pub fn stop(&self) {
        self.stop.send_replace(true);
    }
}

impl Drop for Api {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The framework on `dir` (the data dir is left when the `Api` is
/// dropped): a restart is stopping it and calling this again. Waits for
/// the previous run to let go of the store.
pub async fn api_in(dir: std::path::PathBuf) -> Api {
    for _ in 0..100 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let cfg = agora_services::ServicesConfig {
            master: "http://127.0.0.1:9".into(),
            data_dir: dir.clone(),
            name: "services-test".into(),
            role: "*".into(),
            failover_timeout: Duration::from_secs(60),
            service_ports: (10_000, 20_000),
            master_tls: None,
            master_token: None,
            api_tokens: false,
            drain_principals: Vec::new(),
        };
        let (stop, rx) = tokio::sync::watch::channel(false);
        let run = tokio::spawn(agora_services::serve(listener, cfg, rx));
        for _ in 0..50 {
            if tokio::net::TcpStream::connect(&addr).await.is_ok() {
                return Api {
                    addr,
                    dir,
                    stop,
                    keep: true,
                };
            }
            if run.is_finished() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the framework did not start on {}", dir.display());
}

/// The framework on a free loopback port, with `service_ports` as its
/// range; answers once it accepts connections.
pub async fn api(service_ports: (u32, u32)) -> Api {
    api_with_role(service_ports, "*").await
}

/// [`api`] with the framework in `role` (`--role`).
pub async fn api_with_role(service_ports: (u32, u32), role: &str) -> Api {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let dir =
        std::env::temp_dir().join(format!("agora-svc-test-{}", uuid::Uuid::new_v4().simple()));
    let cfg = agora_services::ServicesConfig {
        // Nothing listens there: the driver retries in the background.
        master: "http://127.0.0.1:9".into(),
        data_dir: dir.clone(),
        name: "services-test".into(),
        role: role.into(),
        failover_timeout: Duration::from_secs(60),
        service_ports,
        master_tls: None,
        master_token: None,
        api_tokens: false,
        drain_principals: Vec::new(),
    };
    let (stop, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(agora_services::serve(listener, cfg, rx));
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(&addr).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Api {
        addr,
        dir,
        stop,
        keep: false,
    }
}

/// (status, headers in lowercase, body) of one HTTP/1.1 request.
pub async fn send(
    addr: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> (u16, String, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let b = body.unwrap_or("");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{b}",
        b.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf))
        .await
        .expect("an answer within 10 s")
        .unwrap();
    let text = String::from_utf8_lossy(&buf).to_string();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap();
    let code = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut out = String::new();
        let mut r = rest;
        while let Some((size, after)) = r.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            if n == 0 {
                break;
            }
            out.push_str(&after[..n]);
            r = &after[n + 2..];
        }
        out
    } else {
        rest.to_string()
    };
    (code, head.to_ascii_lowercase(), body)
}
