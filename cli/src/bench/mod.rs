//! `agora bench …`: benchmark programs (not timed tests). Each prints a
//! human summary and, with `--json`, one JSON object as its last line.

pub mod allocator;
pub mod autoscale;
pub mod deploy;
pub mod discovery;
pub mod launch;
pub mod rollout;
pub mod router;
pub mod scale;
pub mod services;

/// The `q`-quantile (0..=1) of `v` (sorted in place), nearest-rank.
pub fn quantile(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

/// A master (in memory) and a Docker agent in this process, for the
/// container benchmarks.
pub struct LocalCluster {
    pub master: std::net::SocketAddr,
    pub agent: crate::agent_cmd::RunningAgent,
    trigger: agora_master::actor::shutdown::Trigger,
    pub work: std::path::PathBuf,
}

impl LocalCluster {
    pub async fn start(name: &str, resources: String, image: &str) -> anyhow::Result<LocalCluster> {
        let docker = crate::agent_cmd::RuntimeKind::Docker;
        Self::start_with(name, resources, image, docker, "bench").await
    }

    /// The same with another runtime and the agent's host name (what its
    /// offers, and so the endpoint sets and DNS, carry).
    pub async fn start_with(
        name: &str,
        resources: String,
        image: &str,
        runtime: crate::agent_cmd::RuntimeKind,
        hostname: &str,
    ) -> anyhow::Result<LocalCluster> {
        use crate::agent_cmd::AgentArgs;
        use std::time::Duration;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let master = listener.local_addr()?;
        let (trigger, shutdown) = agora_master::actor::shutdown::channel();
        let work = std::env::temp_dir().join(format!(
            "agora-bench-{name}-{}",
            uuid::Uuid::new_v4().simple()
        ));
        // A secret store (in memory, with a fresh key file) so that benches
        // can launch tasks that reference secrets.
        std::fs::create_dir_all(&work)?;
        let key_file = work.join("secrets.key");
        agora_master::secrets::crypto::Kek::create_file(&key_file)?;
        let cfg = agora_master::MasterConfig {
            allocation_interval: Duration::from_millis(100),
            secrets: Some(agora_master::secrets::SecretsConfig {
                key_file,
                versions: agora_master::secrets::DEFAULT_VERSIONS,
            }),
            ..agora_master::MasterConfig::default()
        };
        let registry = Box::new(agora_master::store::MemoryRegistry::default());
        tokio::spawn(agora_master::serve(listener, cfg, registry, shutdown, None));
        let agent_args = AgentArgs {
            master: master.to_string(),
            secrets_dir: None,
            work_dir: Some(work.join("agent")),
            listen: "127.0.0.1:0".into(),
            internal_address: None,
            hostname: Some(hostname.into()),
            resources: Some(resources),
            attributes: String::new(),
            role: "*".into(),
            public: false,
            runtime,
            default_image: image.to_string(),
            gc_delay: Duration::from_secs(3600),
            usage_interval: Duration::from_secs(3600),
            hollow_start_delay: Duration::ZERO,
            status_retry: Duration::from_secs(2),
            log_format: crate::util::LogFormat::Text,
            tls: Default::default(),
            require_tokens: None,
        };
        let agent = crate::agent_cmd::start(&agent_args, runtime).await?;
        Ok(LocalCluster {
            master,
            agent,
            trigger,
            work,
        })
    }

    /// Stops everything and removes the agent's containers.
    pub async fn stop(self) {
        self.agent.handle.control(agora_agent::Control::Stop);
        if let Some(d) = &self.agent.docker {
            d.remove_all().await;
        }
        self.trigger.fire();
        let _ = std::fs::remove_dir_all(&self.work);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn quantiles() {
        let mut v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(super::quantile(&mut v, 0.5), 50.0);
        assert_eq!(super::quantile(&mut v, 0.99), 99.0);
        assert_eq!(super::quantile(&mut v, 1.0), 100.0);
        assert_eq!(super::quantile(&mut [], 0.5), 0.0);
    }
}
