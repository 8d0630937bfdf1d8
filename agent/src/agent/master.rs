//! What the master asks of the agent: launches, kills, framework
//! shutdowns, acknowledgements.

use super::*;
use agora_proto::convert;
use tracing::Instrument;

/// How long a launch keeps asking the master for its secrets when it
/// cannot be reached (then the task fails).
pub const SECRET_RESOLVE_BUDGET: Duration = Duration::from_secs(10);

impl Agent {
    pub(super) async fn on_master(
        &mut self,
        m: pb::MasterMessage,
        out: &mpsc::Sender<pb::AgentMessage>,
    ) {
        use pb::master_message::Message;
        match m.message {
            Some(Message::RunTasks(run)) => self.run_tasks(run).await,
            Some(Message::KillTask(k)) => {
                let ids = convert::framework_id("kill.framework_id", &k.framework_id)
                    .and_then(|f| Ok((f, convert::task_id("kill.task_id", &k.task_id)?)));
                match ids {
                    Ok((fid, tid)) => self.kill(&fid, &tid).await,
                    Err(e) => tracing::warn!(error = %e, "kill with an invalid id ignored"),
                }
            }
            Some(Message::ShutdownFramework(s)) => {
                let fid = match convert::framework_id("framework_id", &s.framework_id) {
                    Ok(f) => f,
                    Err(e) => {
                        tracing::warn!(error = %e, "framework shutdown with an invalid id ignored");
                        return;
                    }
                };
                let ids: Vec<TaskId> = self
                    .tasks
                    .iter()
                    .filter(|((f, _), t)| f == &fid && !t.state.is_terminal())
                    .map(|((_, t), _)| t.clone())
                    .collect();
                tracing::info!(framework_id = %fid, tasks = ids.len(), "framework shut down: killing its tasks");
                for tid in ids {
                    self.kill(&fid, &tid).await;
                }
            }
            Some(Message::Acks(acks)) => {
                let mut resend = false;
                for a in acks.acks {
                    let key = (
                        FrameworkId::new(a.framework_id.as_str()),
                        TaskId::new(a.task_id.as_str()),
                    );
                    let Some(t) = self.tasks.get_mut(&key) else {
                        continue;
                    };
                    let matches = t
                        .queue
                        .front()
                        .and_then(|h| h.update.status.as_ref())
                        .is_some_and(|s| s.uuid == a.uuid);
                    if !matches {
                        continue; // stale or duplicate acknowledgement
                    }
                    let head = t.queue.pop_front();
                    self.dirty = true;
                    if t.queue.is_empty() {
                        t.next_retry = None;
                        if head.is_some_and(|h| h.terminal) {
                            tracing::debug!(framework_id = %key.0, task_id = %key.1, "terminal update acknowledged: task released");
                            self.tasks.remove(&key);
                            self.to_cleanup.push(key);
                        }
                    } else {
                        t.next_retry = Some(Instant::now());
                        t.backoff = self.cfg.status_retry_min;
                        resend = true;
                    }
                }
                if resend {
                    self.flush_due(out, Instant::now()).await;
                }
            }
            Some(Message::Registered(_))
            | Some(Message::Pong(_))
            | Some(Message::Refused(_))
            | None => {}
        }
    }

    /// A launch from the master. Everything in it is checked again here
    /// (the master validates too, but the agent does not rely on it): ids
    /// name directories and containers, durations become timers.
    async fn run_tasks(&mut self, run: pb::RunTasks) {
        let Some(fi) = run.framework else { return };
        let fid = match convert::framework_id("framework.framework_id", &fi.framework_id) {
            Ok(f) => f,
            Err(e) => {
                tracing::error!(error = %e, tasks = run.tasks.len(), "launch refused: invalid framework id");
                return;
            }
        };
        self.frameworks.insert(fid.clone(), fi);
        let mut launch: Vec<TaskInfo> = Vec::new();
        let mut invalid: Vec<(TaskId, String)> = Vec::new();
        for task in run.tasks {
            let tid = match convert::task_id("task.task_id", &task.task_id) {
                Ok(t) => t,
                Err(e) => {
                    // No status update can name such a task: the master
                    // would refuse it. Logged, not launched.
                    tracing::error!(framework_id = %fid, error = %e, "launch refused: invalid task id");
                    continue;
                }
            };
            let key = (fid.clone(), tid.clone());
            if self.tasks.contains_key(&key) {
                tracing::warn!(framework_id = %fid, task_id = %tid, "duplicate launch ignored");
                continue;
            }
            let name = task.name.clone();
            let info = match convert::task_info("task", task) {
                Ok(info) => {
                    launch.push(info.clone());
                    info
                }
                Err(e) => {
                    // Bad numbers (a NaN interval, a port above 65535...):
                    // the task ends TASK_ERROR naming the field; nothing runs.
                    tracing::warn!(framework_id = %fid, task_id = %tid, error = %e, "launch refused: invalid task");
                    invalid.push((tid.clone(), e.to_string()));
                    TaskInfo {
                        name,
                        ..TaskInfo::new(tid.clone(), Default::default())
                    }
                }
            };
            self.tasks.insert(
                key,
                TaskRecord::new(info, TaskState::Staging, self.cfg.status_retry_min),
            );
        }
        for (tid, why) in invalid {
            self.record(
                RuntimeEvent::new(&fid, &tid, TaskState::Error)
                    .reason(crate::runtime::REASON_TASK_INVALID)
                    .message(why),
            );
        }
        // Checkpoint before launching: a crash in between leaves an
        // orphan that the next recovery removes, never an unknown task.
        self.dirty = true;
        self.persist();
        for task in launch {
            // The runtime's own work for the task (container or process,
            // its watcher) runs inside this span: its logs carry the ids.
            let span = tracing::info_span!("launch", framework_id = %fid, task_id = %task.id);
            tracing::debug!(parent: &span, "launching");
            if task.secrets.is_empty() {
                self.runtime
                    .launch(LaunchSpec::new(fid.clone(), task))
                    .instrument(span)
                    .await;
            } else {
                self.launch_with_secrets(fid.clone(), task, span);
            }
        }
    }

    /// A task with secrets: resolved from the master first (retrying for
    /// at most [`SECRET_RESOLVE_BUDGET`]), off the agent's loop; then
    /// launched with them. If they cannot be had, the task fails naming
    /// the paths and the reason (never a value) and nothing runs.
    fn launch_with_secrets(&self, fid: FrameworkId, task: TaskInfo, span: tracing::Span) {
        let resolver = self.resolver.clone();
        let dir = self.secrets_dir();
        let agent = self.agent_id.clone().unwrap_or_else(|| AgentId::new(""));
        let runtime = self.runtime.clone();
        let sink = self.health_sink.clone();
        tokio::spawn(
            async move {
                let r = crate::secrets::prepare(
                    resolver,
                    dir.as_ref(),
                    &agent,
                    &fid,
                    &task,
                    SECRET_RESOLVE_BUDGET,
                )
                .await;
                match r {
                    Ok(secrets) => {
                        tracing::debug!(
                            env = secrets.env.len(),
                            files = secrets.files.len(),
                            "secrets resolved"
                        );
                        runtime
                            .launch(LaunchSpec {
                                framework_id: fid,
                                task,
                                secrets: Arc::new(secrets),
                            })
                            .await;
                    }
                    Err(why) => {
                        tracing::warn!(error = %why, "task failed: its secrets could not be delivered");
                        if let Some(d) = &dir {
                            d.remove(&fid, &task.id);
                        }
                        let _ = sink.send(
                            RuntimeEvent::new(&fid, &task.id, TaskState::Failed)
                                .reason(crate::secrets::REASON_SECRET_FAILED)
                                .message(why),
                        );
                    }
                }
            }
            .instrument(span),
        );
    }

    pub(super) async fn kill(&mut self, fid: &FrameworkId, tid: &TaskId) {
        let span = tracing::info_span!("kill", framework_id = %fid, task_id = %tid);
        self.kill_in_span(fid, tid).instrument(span).await
    }

    async fn kill_in_span(&mut self, fid: &FrameworkId, tid: &TaskId) {
        let Some(t) = self.tasks.get_mut(&(fid.clone(), tid.clone())) else {
            tracing::info!("kill for a task this agent does not have: ignored");
            return;
        };
        if t.state.is_terminal() {
            return;
        }
        if !t.kill_ordered {
            // Checkpointed: a restart does not forget it.
            t.kill_ordered = true;
            self.dirty = true;
        }
        if matches!(t.state, TaskState::Staging | TaskState::Starting) {
            // The runtime may not have a container or process yet; the
            // kill is repeated as soon as the task reports RUNNING.
            t.kill_requested = true;
        }
        // Grace between SIGTERM and SIGKILL; unset (0) means the default 5 s.
        let grace = if t.info.kill_grace.is_zero() {
            DEFAULT_KILL_GRACE
        } else {
            t.info.kill_grace
        };
        self.runtime.kill(fid, tid, grace).await;
    }
}

/// Starts the task's readiness and health checkers, once.
pub(super) fn start_checks(
    t: &mut TaskRecord,
    runtime: &Arc<dyn ContainerRuntime>,
    sink: &crate::runtime::EventSink,
    fw: &FrameworkId,
    tid: &TaskId,
) {
    if t.checking {
        return;
    }
    t.checking = true;
    let live = |alive: Arc<std::sync::atomic::AtomicBool>| {
        move || alive.load(std::sync::atomic::Ordering::Relaxed)
    };
    if let Some(check) = t.info.readiness_checks.first().cloned() {
        crate::health::spawn_readiness(
            check,
            runtime.clone(),
            sink.clone(),
            fw.clone(),
            tid.clone(),
            live(t.alive.clone()),
        );
    }
    for (i, check) in t.info.health_checks.iter().enumerate() {
        crate::health::spawn_checker(
            i,
            check.clone(),
            runtime.clone(),
            sink.clone(),
            fw.clone(),
            tid.clone(),
            live(t.alive.clone()),
        );
    }
}
