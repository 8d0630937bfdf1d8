//! Status updates: runtime events become updates, queued per task, the
//! head of each queue in flight until acknowledged.

use super::master::start_checks;
use super::*;

impl Agent {
    pub(super) fn earliest_retry(&self) -> Option<Instant> {
        self.tasks.values().filter_map(|t| t.next_retry).min()
    }

    /// Queues a runtime event as a status update.
    pub(super) fn record(&mut self, ev: RuntimeEvent) {
        // Debug level: one per update, and updates are the hot path.
        let span = tracing::debug_span!(
            "status_update",
            framework_id = %ev.framework_id,
            task_id = %ev.task_id,
            state = %ev.state
        );
        let _in_span = span.enter();
        let key = (ev.framework_id.clone(), ev.task_id.clone());
        let Some(t) = self.tasks.get_mut(&key) else {
            tracing::debug!("event for unknown task ignored");
            return;
        };
        if !t.state.can_transition(ev.state) {
            tracing::debug!(from = %t.state, "ignoring impossible transition");
            return;
        }
        if ev.state == TaskState::Running
            && t.state == TaskState::Running
            && ev.healthy.is_none()
            && ev.ready.is_none()
        {
            // A re-attached task said RUNNING again: the framework knows.
            tracing::debug!("already running");
            return;
        }
        let mut ev = ev;
        if let (Some(i), Some(h)) = (ev.check, ev.healthy) {
            // One check's verdict: the framework hears the task's health,
            // and only when it changes.
            match t.health.record(i, h) {
                Some(now) => {
                    ev.healthy = Some(now);
                    if now && t.info.health_checks.len() > 1 {
                        ev.message =
                            format!("all {} health checks passed", t.info.health_checks.len());
                    }
                }
                None => return,
            }
        }
        t.state = ev.state;
        let status = pb::TaskStatus {
            task_id: ev.task_id.0.clone(),
            state: pb::TaskState::from(ev.state) as i32,
            agent_id: self
                .agent_id
                .as_ref()
                .map(|a| a.0.clone())
                .unwrap_or_default(),
            message: ev.message,
            reason: ev.reason,
            source: pb::TaskSource::SourceAgent as i32,
            uuid: uuid::Uuid::new_v4().as_bytes().to_vec(),
            timestamp: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0),
            exit_code: ev.exit_code.unwrap_or(0),
            has_exit_code: ev.exit_code.is_some(),
            healthy: ev.healthy.unwrap_or(false),
            has_health: ev.healthy.is_some(),
            ready: ev.ready.unwrap_or(false),
            has_ready: ev.ready.is_some(),
        };
        let drop_files = ev.state.is_terminal()
            && t.info
                .secrets
                .iter()
                .any(|u| matches!(u.target, agora_core::secrets::SecretTarget::File(_)));
        if ev.state.is_terminal() {
            t.alive.store(false, std::sync::atomic::Ordering::Relaxed);
        }
        if ev.state == TaskState::Running && t.kill_requested {
            t.kill_requested = false;
            self.deferred_kills.push(key.clone());
        }
        if ev.state == TaskState::Running && ev.healthy.is_none() && ev.ready.is_none() {
            start_checks(
                t,
                &self.runtime,
                &self.health_sink,
                &ev.framework_id,
                &ev.task_id,
            );
        }
        self.dirty = true;
        let was_empty = t.queue.is_empty();
        t.queue.push_back(Pending {
            update: pb::StatusUpdate {
                framework_id: ev.framework_id.0,
                status: Some(status),
            },
            terminal: ev.state.is_terminal(),
        });
        if was_empty {
            t.next_retry = Some(Instant::now());
            t.backoff = self.cfg.status_retry_min;
        }
        if drop_files {
            self.drop_secret_files(&key.0, &key.1);
        }
    }

    /// Sends every due queue head (batched in one message), once the
    /// checkpoint holds it: an update sent and then lost to a crash would
    /// be derived again after the restart under a new uuid, and the
    /// framework would hear the same terminal state twice.
    pub(super) async fn flush_due(&mut self, out: &mpsc::Sender<pb::AgentMessage>, now: Instant) {
        self.persist();
        let mut batch = Vec::new();
        let max = self.cfg.status_retry_max;
        for t in self.tasks.values_mut() {
            let Some(due) = t.next_retry else { continue };
            if due > now {
                continue;
            }
            let Some(head) = t.queue.front() else {
                t.next_retry = None;
                continue;
            };
            batch.push(head.update.clone());
            t.next_retry = Some(now + t.backoff);
            t.backoff = (t.backoff * 2).min(max);
        }
        for chunk in batch.chunks(1000) {
            let m = msg(pb::agent_message::Message::Updates(pb::StatusUpdates {
                updates: chunk.to_vec(),
            }));
            if out.send(m).await.is_err() {
                return;
            }
        }
    }
}
