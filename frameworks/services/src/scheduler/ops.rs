//! Changes the API asks for besides creating, replacing and deleting an
//! app: rolling a deployment back or stopping it, killing tasks, and
//! checkpoints to undo a change that could not be stored.

use super::{Action, Deployment, Instance, Services, now_s};
use crate::scheduler::AppState;

/// One app as it was (see [`Services::checkpoint`]).
#[derive(Debug, Clone)]
pub struct Checkpoint {
    pub(super) app_id: String,
    app: Option<AppState>,
    instances: Vec<Instance>,
    wanting: bool,
    suppressed: bool,
}

impl Services {
    /// Rolls an app's deployment back: the definition before it becomes
    /// current again under its own version, so instances that still run it
    /// count as current and stay, and only the ones the deployment started
    /// are replaced (a rolling deployment of its own, which can be rolled
    /// back in turn). The current instance count is kept: scales made
    /// during the deployment are not undone. `None`: no deployment.
    pub fn roll_back(&mut self, app_id: &str) -> Option<Deployment> {
        let now = now_s();
        let st = self.app_mut(app_id)?;
        let d = st.deployment.take()?;
        let mut app = *d.previous;
        app.instances = st.app.instances;
        let rollback = Deployment {
            id: uuid::Uuid::new_v4().to_string(),
            app_id: app_id.to_string(),
            version: app.version.clone(),
            previous: Box::new(st.app.clone()),
            started_at: now,
            steps: vec![format!(
                "roll back from version {} to version {}",
                st.app.version, app.version
            )],
        };
        st.app = app;
        st.delay = 0.0;
        st.next_launch_at = 0.0;
        st.deployment = Some(rollback.clone());
        self.reindex(app_id);
        let _g = tracing::info_span!("deployment", app_id = %app_id, deployment_id = %rollback.id)
            .entered();
        tracing::info!(version = %rollback.version, cancelled = %d.id, "rolling back");
        Some(rollback)
    }

    /// Kills instances of an app (Marathon's task kill): the named ones, or
    /// every one not ended yet. They are replaced, unless `scale`: then
    /// `instances` is lowered by the number of live ones among them.
    /// Returns the instances killed, as they were.
    pub fn kill_tasks(
        &mut self,
        app_id: &str,
        task_ids: &[String],
        scale: bool,
    ) -> (Vec<Instance>, Vec<Action>) {
        let now = now_s();
        let victims: Vec<Instance> = task_ids
            .iter()
            .filter_map(|t| self.instances.get(t))
            .filter(|i| i.app_id == app_id && !i.state.is_terminal())
            .cloned()
            .collect();
        let live = victims.iter().filter(|i| i.is_live()).count() as u32;
        let policy = self
            .apps
            .get(app_id)
            .and_then(|st| super::endpoints::DrainPolicy::of(&st.app));
        let actions: Vec<Action> = victims
            .iter()
            .filter_map(|i| self.retire(&i.task_id, now, policy))
            .collect();
        if scale
            && live > 0
            && let Some(st) = self.app_mut(app_id)
        {
            st.app.instances = st.app.instances.saturating_sub(live);
        }
        (victims, actions)
    }

    /// Where an app stands now, to put back with [`Services::rewind`] if
    /// a change to it cannot be stored.
    pub fn checkpoint(&self, app_id: &str) -> Checkpoint {
        Checkpoint {
            app_id: app_id.to_string(),
            app: self.apps.get(app_id).cloned(),
            instances: self.instances_of(app_id).cloned().collect(),
            wanting: self.wanting.contains(app_id),
            suppressed: self.suppressed,
        }
    }

    /// Puts an app (its definition, deployment, instances and whether it
    /// wants offers) back as it was at `c`.
    pub fn rewind(&mut self, c: Checkpoint) {
        let ids: Vec<String> = self
            .index
            .get(&c.app_id)
            .map(|ix| ix.all.iter().cloned().collect())
            .unwrap_or_default();
        for id in ids {
            self.remove_instance(&id);
        }
        match c.app {
            Some(a) => self.apps.insert(c.app_id.clone(), a),
            None => self.apps.remove(&c.app_id),
        };
        self.changes.apps.insert(c.app_id.clone());
        for i in c.instances {
            self.insert_instance(i);
        }
        if c.wanting {
            self.wanting.insert(c.app_id.clone());
        } else {
            self.wanting.remove(&c.app_id);
        }
        self.suppressed = c.suppressed;
        self.published.insert(c.app_id.clone());
        self.touched.insert(c.app_id);
    }

    /// Stops an app's deployment where it is (`DELETE
    /// /v2/deployments/{id}?force=true`).
    pub fn stop_deployment(&mut self, app_id: &str) {
        if let Some(s) = self.app_mut(app_id) {
            s.deployment = None;
        }
    }
}
