//! The actor's autoscaling: every second each active policy is evaluated
//! (`agora_core::autoscale` decides) and a changed count is applied as a
//! scale through [`Actor::change`], the path an API scale takes (stored
//! first, then converged: launches wait for offers, deployments and health
//! gating apply, kills drain through the routers). A router holding a
//! request for an app at zero instances gets it evaluated at once, not at
//! the next tick. Policies are stored before they are answered, like every
//! API change.

use super::{Actor, ApiError, MasterLink, now_s};
use crate::autoscale::{AutoscalerView, StoredPolicy, event};
use crate::store::StateStore;
use agora_core::autoscale::Policy;
use agora_core::endpoints::LoadReport;
use std::time::Duration;

/// The cluster-wide limit on a policy's `max`: the largest instance count
/// an app may have at all.
pub const MAX_INSTANCES: u32 = crate::app::MAX_INSTANCES as u32;

impl<L: MasterLink, S: StateStore> Actor<L, S> {
    /// The autoscalers' clock (tokio's, so tests can pause it).
    pub(super) fn clock(&self) -> Duration {
        tokio::time::Instant::now().saturating_duration_since(self.epoch)
    }

    pub(super) fn restore_policies(&mut self, policies: Vec<(String, StoredPolicy)>) {
        for (id, p) in &policies {
            // A suspended policy wakes nothing: routers do not hold
            // requests for its app.
            self.services
                .set_scale_to_zero(id, p.policy.min == 0 && p.suspended.is_none());
        }
        let ids: Vec<String> = policies.iter().map(|(id, _)| id.clone()).collect();
        self.autoscalers = crate::autoscale::Autoscalers::restore(policies);
        let now = self.clock();
        for id in ids {
            self.autoscalers.seed(&id, &self.services, now);
        }
    }

    /// Once a second: forget what is stale, retry deleting the policies of
    /// deleted apps, evaluate every active policy.
    pub(super) async fn autoscale_tick(&mut self) {
        let now = self.clock();
        self.autoscalers.prune(&self.services, now);
        for id in self.autoscalers.take_orphans() {
            if let Err(e) = self.store.put_policy(&id, None) {
                tracing::warn!(app_id = %id, error = %e, "cannot delete the autoscaling policy of a deleted app; trying again");
                self.autoscalers.orphaned(&id);
            }
        }
        for id in self.autoscalers.ids() {
            self.autoscale(&id).await;
        }
    }

    /// Evaluates one app's policy and applies a changed count.
    pub(super) async fn autoscale(&mut self, id: &str) {
        let now = self.clock();
        let Some(ev) = self.autoscalers.evaluate(id, &self.services, now, now_s()) else {
            return;
        };
        let d = ev.decision;
        if !d.changes() {
            if ev.report_limited {
                self.emit(event(id, &d, false, now_s()));
            }
            return;
        }
        let n = d.desired;
        let r = self
            .change(id, |s| {
                let Some(mut app) = s.app(id).map(|st| st.app.clone()) else {
                    return Err(ApiError::NoApp(id.to_string()));
                };
                app.instances = n;
                s.put_app(app, false);
                Ok(())
            })
            .await;
        match r {
            Ok(()) => {
                tracing::info!(app_id = %id, from = d.current, to = d.desired, reason = %d.reason, "autoscaling");
                self.autoscalers.applied(id, &d, self.clock());
                self.emit(event(id, &d, true, now_s()));
            }
            Err(e) => {
                tracing::warn!(app_id = %id, from = d.current, to = d.desired, error = %e, "cannot apply an autoscaling decision; deciding again at the next evaluation");
                self.emit(event(id, &d, false, now_s()));
            }
        }
    }

    /// Woken apps whose first instance serves: their cold start is over.
    pub(super) fn cold_starts(&mut self) {
        let now = self.clock();
        for (id, secs) in self.autoscalers.note_serving(&self.services, now) {
            tracing::info!(app_id = %id, seconds = secs, "cold start: the woken app's first instance serves");
        }
    }

    /// A router's load report; an app at zero it holds requests for is
    /// evaluated (and woken) at once.
    pub(super) async fn load_report(&mut self, report: LoadReport) {
        let now = self.clock();
        let wake = self.autoscalers.record_load(report, now, &self.services);
        for id in wake {
            self.autoscale(&id).await;
        }
    }

    /// `PUT /v1/autoscalers/{appId}` (the policy is valid): stored, then
    /// in effect. A suspended policy acts again.
    pub(super) fn put_policy(
        &mut self,
        app_id: &str,
        policy: Policy,
    ) -> Result<AutoscalerView, ApiError> {
        let Some(app) = self.services.app(app_id) else {
            return Err(no_app_field(app_id));
        };
        // At zero an app is woken by a request a router holds for one of
        // its ports: without a port nothing could ever wake it.
        if policy.min == 0 && app.app.ports().is_empty() {
            return Err(ApiError::Invalid(vec![crate::app::FieldError {
                path: "/min".into(),
                errors: vec![format!(
                    "min 0 scales {app_id} to zero, but it has no port a router could hold a request for to wake it: give it a port (portDefinitions or portMappings) or use min 1 or more"
                )],
            }]));
        }
        let row = StoredPolicy {
            policy,
            suspended: None,
        };
        self.store
            .put_policy(app_id, Some(&row))
            .map_err(|e| ApiError::Store(e.to_string()))?;
        self.services.set_scale_to_zero(app_id, row.policy.min == 0);
        self.autoscalers.put(app_id, row);
        let now = self.clock();
        self.autoscalers.seed(app_id, &self.services, now);
        self.autoscalers
            .view(app_id, &self.services, now, now_s())
            .ok_or_else(|| ApiError::NoApp(app_id.to_string()))
    }

    pub(super) fn delete_policy(&mut self, app_id: &str) -> Result<(), ApiError> {
        if self.autoscalers.get(app_id).is_none() {
            return Err(ApiError::NoPolicy(app_id.to_string()));
        }
        self.store
            .put_policy(app_id, None)
            .map_err(|e| ApiError::Store(e.to_string()))?;
        self.autoscalers.remove(app_id);
        self.services.set_scale_to_zero(app_id, false);
        Ok(())
    }

    /// The app was deleted: so is its policy (a row that cannot be deleted
    /// now is retried every second, and dropped at the next start anyway).
    pub(super) fn app_deleted(&mut self, app_id: &str) {
        if self.autoscalers.remove(app_id).is_none() {
            return;
        }
        self.services.set_scale_to_zero(app_id, false);
        if let Err(e) = self.store.put_policy(app_id, None) {
            tracing::warn!(app_id, error = %e, "cannot delete the autoscaling policy of a deleted app; trying again");
            self.autoscalers.orphaned(app_id);
        }
    }

    /// A manual change of an app's instance count to `instances`: refused
    /// when an active policy sets it, unless forced, which suspends the
    /// policy (stored before the scale is made). Returns the policy as it
    /// was when it suspended it, for [`Actor::unsuspend`] should the scale
    /// fail.
    pub(super) fn manual_scale(
        &mut self,
        app_id: &str,
        instances: u32,
        force: bool,
    ) -> Result<Option<StoredPolicy>, ApiError> {
        let Some(current) = self.services.app(app_id).map(|a| a.app.instances) else {
            return Ok(None);
        };
        if current == instances {
            return Ok(None);
        }
        let Some(policy) = self.autoscalers.active(app_id) else {
            return Ok(None);
        };
        if !force {
            return Err(ApiError::Autoscaled {
                id: app_id.to_string(),
                min: policy.min,
                max: policy.max,
            });
        }
        let row = StoredPolicy {
            policy: policy.clone(),
            suspended: Some(format!(
                "a manual scale from {current} to {instances} was forced at {}; PUT the policy again (agora app autoscale {app_id} ...) to resume",
                crate::api::json_iso8601(now_s())
            )),
        };
        self.store
            .put_policy(app_id, Some(&row))
            .map_err(|e| ApiError::Store(e.to_string()))?;
        tracing::info!(
            app_id,
            from = current,
            to = instances,
            "forced manual scale: the autoscaling policy is suspended"
        );
        let before = self.autoscalers.get(app_id).cloned();
        self.autoscalers.put(app_id, row);
        // Suspended, the policy wakes nothing: routers answer at once
        // instead of holding requests for `--hold-timeout` in vain.
        self.services.set_scale_to_zero(app_id, false);
        Ok(before)
    }

    /// The forced scale that suspended a policy failed: the policy acts
    /// again as it did.
    pub(super) fn unsuspend(&mut self, app_id: &str, before: Option<StoredPolicy>) {
        let Some(row) = before else { return };
        match self.store.put_policy(app_id, Some(&row)) {
            Ok(()) => {
                self.services.set_scale_to_zero(app_id, row.policy.min == 0);
                self.autoscalers.put(app_id, row);
                let now = self.clock();
                self.autoscalers.seed(app_id, &self.services, now);
            }
            Err(e) => {
                tracing::warn!(app_id, error = %e, "a forced scale failed and its policy cannot be resumed; it stays suspended (PUT it again)")
            }
        }
    }

    pub(super) fn policy_views(&self, app_id: Option<&str>) -> Vec<AutoscalerView> {
        let now = self.clock();
        let wall = now_s();
        let ids = match app_id {
            Some(id) => vec![id.to_string()],
            None => self.autoscalers.ids(),
        };
        ids.iter()
            .filter_map(|id| self.autoscalers.view(id, &self.services, now, wall))
            .collect()
    }

    pub(super) fn policy_metrics(&self) -> String {
        self.autoscalers.prometheus(&self.services, self.clock())
    }
}

/// A policy for an app that does not exist: 422 naming `appId`.
fn no_app_field(app_id: &str) -> ApiError {
    ApiError::Invalid(vec![crate::app::FieldError {
        path: "appId".into(),
        errors: vec![format!(
            "app {app_id} does not exist: deploy it first (agora app deploy), then give it a policy"
        )],
    }])
}
