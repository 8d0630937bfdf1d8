//! Watching containers: waits that survive broken streams (only the
//! engine's inspect says a container ended), and the container listing at
//! recovery, retried while the engine does not answer.

use super::*;

/// How a watched container ended, as the engine's inspect says.
enum Exit {
    Code {
        code: i32,
        oom: bool,
    },
    /// Created but never started (the agent stopped in between).
    NeverStarted,
    /// Removed behind the agent's back.
    Gone,
}

/// First and longest pause between two waits on a container whose wait
/// stream broke.
const REWAIT_MIN: Duration = Duration::from_millis(200);
const REWAIT_MAX: Duration = Duration::from_secs(10);

impl DockerRuntime {
    /// Waits for the container to exit and reports how it ended.
    pub(super) fn watch(&self, key: Key, id: String) {
        let me = self.clone();
        let span = tracing::info_span!(
            "container",
            framework_id = %key.0,
            task_id = %key.1,
            container = id.get(..12).unwrap_or(&id)
        );
        tokio::spawn(
            async move {
                let exit = me.wait_exit(&id).await;
                if matches!(exit, Exit::NeverStarted) {
                    // Nothing ran and nothing logged: nothing to keep.
                    if let Err(e) = me.force_remove(&id).await {
                        tracing::warn!(error = %e, "removing the never-started container failed");
                    }
                }
                let c = me.container(&key);
                let killing = c.as_ref().is_some_and(|c| c.killing);
                let (fw, tid) = &key;
                let ev = match exit {
                    Exit::Code { code, oom } => {
                        let oom = oom.then(|| {
                            let limit = c.map(|c| c.mem_mib).unwrap_or(0);
                            format!("OOM: the container exceeded its memory limit of {limit} MiB")
                        });
                        exit_event(fw, tid, code, killing, oom)
                    }
                    Exit::NeverStarted => RuntimeEvent::new(fw, tid, TaskState::Failed).message(
                        "the container was created but never started (the agent stopped in between)",
                    ),
                    Exit::Gone => RuntimeEvent::new(fw, tid, TaskState::Failed)
                        .reason(crate::runtime::REASON_CONTAINER_GONE)
                        .message("the task's container was removed behind the agent's back"),
                };
                me.emit(ev);
            }
            .instrument(span),
        );
    }

    /// Waits until the engine says the container no longer runs. A wait
    /// stream that ends or breaks (the engine restarted, the connection
    /// dropped) is not an exit: only inspect decides, and while it says
    /// running, or cannot answer, the wait starts again after a back-off.
    async fn wait_exit(&self, id: &str) -> Exit {
        use bollard::models::ContainerStateStatusEnum as S;
        let docker = &self.inner.docker;
        let mut backoff = REWAIT_MIN;
        loop {
            let began = tokio::time::Instant::now();
            let waited = if self.inner.fail.at("docker.wait") == FailAction::Error {
                Some(Err(injected("docker.wait")))
            } else {
                docker.wait_container(id, None).next().await
            };
            match &waited {
                Some(Ok(_))
                | Some(Err(bollard::errors::Error::DockerContainerWaitError { .. })) => {}
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "the wait for the container broke; asking the engine")
                }
                None => tracing::warn!(
                    "the wait for the container ended without an answer; asking the engine"
                ),
            }
            if began.elapsed() > REWAIT_MAX {
                backoff = REWAIT_MIN; // a wait that held a while: not a failing loop
            }
            match docker.inspect_container(id, None).await {
                Ok(i) => {
                    let st = i.state.unwrap_or_default();
                    match st.status {
                        Some(S::RUNNING | S::PAUSED | S::RESTARTING | S::STOPPING) => {
                            tracing::info!(status = ?st.status, "the container still runs; waiting again");
                        }
                        Some(S::CREATED) => return Exit::NeverStarted,
                        Some(_) => {
                            let code = st.exit_code.unwrap_or(-1);
                            return Exit::Code {
                                code: i32::try_from(code).unwrap_or(-1),
                                oom: st.oom_killed.unwrap_or(false),
                            };
                        }
                        None => {
                            tracing::warn!("the engine gave no container status; waiting again")
                        }
                    }
                }
                Err(e) if is_not_found(&e) => return Exit::Gone,
                Err(e) => tracing::warn!(error = %e, "cannot inspect the container; waiting again"),
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(REWAIT_MAX);
        }
    }

    /// Lists this agent's containers, retrying with back-off while the
    /// engine does not answer.
    pub(super) async fn list_for_recovery(
        &self,
    ) -> Result<Vec<bollard::models::ContainerSummary>, RecoverError> {
        let mut delay = self.inner.list_retry;
        let mut attempt = 1;
        loop {
            match self.list_scoped().await {
                Ok(v) => return Ok(v),
                Err(e) if attempt >= self.inner.list_attempts => {
                    return Err(RecoverError {
                        runtime: "docker",
                        message: format!(
                            "cannot list containers after {attempt} attempts: {e} (their tasks may still run; refusing to report them gone)"
                        ),
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, attempt, retry_in = ?delay, "cannot list containers to recover; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(REWAIT_MAX);
                    attempt += 1;
                }
            }
        }
    }
}

/// The error a fail point injects (as a broken connection would).
pub(super) fn injected(point: &str) -> bollard::errors::Error {
    bollard::errors::Error::IOError {
        err: std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            format!("injected at fail point {point}"),
        ),
    }
}
