//! Checkpoint and recovery: the agent's id, frameworks, tasks and
//! unacknowledged updates, written atomically to `work_dir/checkpoint.pb`;
//! the kills ordered for tasks not yet ended, to `work_dir/kills.json`.

use super::master::start_checks;
use super::*;
use agora_proto::convert;
use tracing::Instrument;

impl Agent {
    // ------------------------------------------------------------ checkpoint

    pub(super) fn checkpoint_path(&self) -> Option<std::path::PathBuf> {
        self.cfg.work_dir.as_ref().map(|d| d.join("checkpoint.pb"))
    }

    fn kills_path(&self) -> Option<std::path::PathBuf> {
        self.cfg.work_dir.as_ref().map(|d| d.join("kills.json"))
    }

    /// The tasks, not yet ended, that a kill was ordered for.
    fn kill_orders(&self) -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = self
            .tasks
            .iter()
            .filter(|(_, t)| t.kill_ordered && !t.state.is_terminal())
            .map(|((f, t), _)| (f.0.clone(), t.0.clone()))
            .collect();
        v.sort();
        v
    }

    pub(super) fn checkpoint(&self) -> pb::AgentCheckpoint {
        pb::AgentCheckpoint {
            agent_id: self
                .agent_id
                .as_ref()
                .map(|a| a.0.clone())
                .unwrap_or_default(),
            frameworks: self.frameworks.values().cloned().collect(),
            tasks: self
                .tasks
                .iter()
                .map(|((fid, _), t)| pb::CheckpointTask {
                    framework_id: fid.0.clone(),
                    task: Some((&t.info).into()),
                    state: pb::TaskState::from(t.state) as i32,
                    pending: t.queue.iter().map(|p| p.update.clone()).collect(),
                    handle: String::new(),
                })
                .collect(),
        }
    }

    /// Writes the checkpoint (atomically: temp file + rename) and publishes
    /// the task list, if anything changed.
    pub(super) fn persist(&mut self) {
        if !self.dirty {
            return;
        }
        self.dirty = false;
        let summary: Vec<TaskSummary> = self
            .tasks
            .iter()
            .map(|((fid, tid), t)| TaskSummary {
                framework_id: fid.0.clone(),
                task_id: tid.0.clone(),
                name: t.info.name.clone(),
                state: t.state,
                unacknowledged_updates: t.queue.len(),
            })
            .collect();
        let _ = self.tasks_tx.send(summary);
        let (Some(path), Some(kills_path)) = (self.checkpoint_path(), self.kills_path()) else {
            return;
        };
        // Kill orders first: one for a task the checkpoint does not hold
        // (yet) is ignored at recovery, never the other way round.
        let kills = self.kill_orders();
        if kills != self.kills_written {
            let bytes = serde_json::to_vec(&kills).unwrap_or_default();
            match write_atomically(&kills_path, &bytes) {
                Ok(()) => self.kills_written = kills,
                Err(e) => {
                    tracing::error!(path = %kills_path.display(), error = %e, "cannot write the kill orders")
                }
            }
        }
        use prost::Message;
        let bytes = self.checkpoint().encode_to_vec();
        if let Err(e) = write_atomically(&path, &bytes) {
            tracing::error!(path = %path.display(), error = %e, "cannot write the agent checkpoint");
        }
    }

    /// The kill orders of the last run (none if there is no file; a
    /// corrupt one is reported and ignored).
    fn read_kill_orders(&self) -> Vec<(String, String)> {
        let Some(path) = self.kills_path() else {
            return Vec::new();
        };
        match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).unwrap_or_else(|e| {
                tracing::error!(path = %path.display(), error = %e, "corrupt kill orders ignored");
                Vec::new()
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "cannot read the kill orders");
                Vec::new()
            }
        }
    }

    /// Loads the checkpoint (if any) and re-attaches to the runtime's tasks.
    pub(super) async fn recover(&mut self) -> Result<(), AgentError> {
        let span = tracing::info_span!("recover", runtime = self.runtime.name());
        self.recover_in_span().instrument(span).await
    }

    async fn recover_in_span(&mut self) -> Result<(), AgentError> {
        let Some(path) = self.checkpoint_path() else {
            return Ok(());
        };
        // What kills.json holds now: persist() rewrites it whenever the
        // live orders differ, so orders for tasks that ended while the
        // agent was down are dropped (they would kill a relaunch of the
        // same id after the next restart).
        let kill_orders = self.read_kill_orders();
        self.kills_written = kill_orders.clone();
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // A fresh work dir: remove containers a previous agent with no
                // checkpoint may have left (orphans).
                if let Err(e) = self.runtime.recover(Vec::new()).await {
                    tracing::warn!(error = %e, "orphans of an earlier agent, if any, are left");
                }
                self.dirty = true;
                self.persist();
                return Ok(());
            }
            Err(e) => {
                return Err(AgentError::Checkpoint {
                    path: path.display().to_string(),
                    message: e.to_string(),
                });
            }
        };
        use prost::Message;
        let cp =
            pb::AgentCheckpoint::decode(bytes.as_slice()).map_err(|e| AgentError::Checkpoint {
                path: path.display().to_string(),
                message: format!("corrupt ({e}); move it away to start this agent afresh"),
            })?;
        if !cp.agent_id.is_empty() {
            self.agent_id = Some(AgentId::new(cp.agent_id.as_str()));
        }
        for f in cp.frameworks {
            match convert::framework_id("framework_id", &f.framework_id) {
                Ok(fid) => {
                    self.frameworks.insert(fid, f);
                }
                Err(e) => tracing::error!(error = %e, "checkpointed framework ignored"),
            }
        }
        let mut specs = Vec::new();
        let mut invalid = Vec::new();
        for t in cp.tasks {
            let Some(info) = t.task else { continue };
            // A checkpoint written by an older agent may hold ids that are
            // refused today (`..`, `a b`): such a task is not recovered
            // (docker removes its container as an orphan).
            let ids = convert::framework_id("framework_id", &t.framework_id)
                .and_then(|f| Ok((f, convert::task_id("task_id", &info.task_id)?)));
            let (fid, tid) = match ids {
                Ok(ids) => ids,
                Err(e) => {
                    tracing::error!(error = %e, "checkpointed task with an invalid id not recovered");
                    continue;
                }
            };
            let state =
                agora_proto::convert::task_state("state", t.state).unwrap_or(TaskState::Staging);
            let now = Instant::now();
            let queue: VecDeque<Pending> = t
                .pending
                .into_iter()
                .map(|u| {
                    let terminal = u
                        .status
                        .as_ref()
                        .and_then(|s| s.task_state().ok())
                        .is_some_and(|s| s.is_terminal());
                    Pending {
                        update: u,
                        terminal,
                    }
                })
                .collect();
            // The task as validated; a checkpoint from an older agent may
            // hold what is refused today (a NaN check interval): such a
            // task is re-attached only to be stopped, reported FAILED with
            // the field named.
            let info = match convert::task_info("task", info.clone()) {
                Ok(i) => i,
                Err(e) => {
                    if !state.is_terminal() {
                        invalid.push((fid.clone(), tid.clone(), e.to_string()));
                    }
                    TaskInfo {
                        name: info.name.clone(),
                        ..TaskInfo::new(tid.clone(), Default::default())
                    }
                }
            };
            if !state.is_terminal() {
                specs.push(LaunchSpec::new(fid.clone(), info.clone()));
            }
            let mut record = TaskRecord::new(info, state, self.cfg.status_retry_min);
            record.next_retry = (!queue.is_empty()).then_some(now);
            record.queue = queue;
            self.tasks.insert((fid, tid), record);
        }
        // Kills ordered before the restart: marked before the runtime
        // re-attaches, so a task that ended meanwhile is reported KILLED.
        for (f, t) in &kill_orders {
            let key = (FrameworkId::new(f.as_str()), TaskId::new(t.as_str()));
            if let Some(t) = self.tasks.get_mut(&key)
                && !t.state.is_terminal()
            {
                t.kill_ordered = true;
            }
        }
        let n = specs.len();
        // An error here stops the agent: reporting tasks gone whose
        // containers may still run would let their resources be offered twice.
        let gone = self.runtime.recover(specs).await?;
        tracing::info!(tasks = n, gone = gone.len(), "recovered from checkpoint");
        for (fid, tid) in gone {
            let killed = self
                .tasks
                .get(&(fid.clone(), tid.clone()))
                .is_some_and(|t| t.kill_ordered);
            let ev = if killed {
                RuntimeEvent::new(&fid, &tid, TaskState::Killed)
                    .message("killed as ordered; it ended while the agent was down")
            } else {
                RuntimeEvent::new(&fid, &tid, TaskState::Failed)
                    .reason(crate::runtime::REASON_CONTAINER_GONE)
                    .message("the task's container disappeared while the agent was down")
            };
            self.record(ev);
        }
        for (fid, tid, why) in invalid {
            let live = self
                .tasks
                .get(&(fid.clone(), tid.clone()))
                .is_some_and(|t| !t.state.is_terminal());
            if live {
                tracing::warn!(framework_id = %fid, task_id = %tid, error = %why, "stopping a recovered task whose description is invalid");
                self.record(
                    RuntimeEvent::new(&fid, &tid, TaskState::Failed)
                        .reason(crate::runtime::REASON_TASK_INVALID)
                        .message(format!("stopped after agent recovery: {why}")),
                );
                self.runtime.kill(&fid, &tid, DEFAULT_KILL_GRACE).await;
            }
        }
        // Kills ordered before the restart are carried out (again).
        for (f, t) in kill_orders {
            let (fid, tid) = (FrameworkId::new(f.as_str()), TaskId::new(t.as_str()));
            let live = self
                .tasks
                .get(&(fid.clone(), tid.clone()))
                .is_some_and(|t| !t.state.is_terminal());
            if live {
                tracing::info!(framework_id = %fid, task_id = %tid, "a kill ordered before the restart: killing");
                self.kill(&fid, &tid).await;
            }
        }
        // Checks of tasks still running start again.
        for ((fid, tid), t) in self.tasks.iter_mut() {
            if t.state == TaskState::Running {
                start_checks(t, &self.runtime, &self.health_sink, fid, tid);
            }
        }
        self.dirty = true;
        self.persist();
        Ok(())
    }
}

/// Writes `bytes` to `path` atomically: temp file, fsync, rename. The file
/// is readable by its owner only (mode 0600): the checkpoint holds the
/// tasks' environment, secrets included.
fn write_atomically(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let tmp = path.with_extension("tmp");
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    // A temp file left by an older agent keeps its mode: set it.
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    std::io::Write::write_all(&mut f, bytes)?;
    f.sync_data()?;
    std::fs::rename(&tmp, path)
}
