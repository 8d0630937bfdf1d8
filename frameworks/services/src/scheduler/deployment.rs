//! Deployment steps: how many instances of the new and old versions an app
//! may have, and converging to it (kills, suppress/revive).

use super::index::AppIndex;
use super::{Action, AppState, Services, now_s};
use crate::app::KillSelection;
use std::collections::BTreeSet;

/// The bounds of a rolling step for `n` instances: at most `max_total`
/// instances in existence (live or stopping), at least `min_healthy` ready.
///
/// `n + floor(maximumOverCapacity × n)` and `ceil(minimumHealthCapacity ×
/// n)`, except when they leave no room at all: when both equal `n` (e.g. 1
/// instance at 0.5/0, 3 at 0.8/0.2) nothing could start and nothing could
/// stop, and the deployment would wait forever. Then one old instance may
/// go at a time (`min_healthy = n - 1`), as Marathon does for resident
/// apps (for others it allows one instance over capacity instead): the
/// over-capacity bound holds, the healthy count dips by one.
pub(super) fn step_bounds(n: usize, us: crate::app::UpgradeStrategy) -> (usize, usize) {
    let max_total = n + (us.maximum_over_capacity * n as f64).floor() as usize;
    let min_healthy = ((us.minimum_health_capacity * n as f64).ceil() as usize).min(n);
    if max_total == min_healthy {
        (max_total, n.saturating_sub(1))
    } else {
        (max_total, min_healthy)
    }
}

impl Services {
    /// Desired count of instances of `version` and of older versions, for
    /// an app in a rolling deployment (or not). O(1): read from the index.
    pub(super) fn targets(&self, st: &AppState) -> (usize, usize) {
        let n = st.app.instances as usize;
        let empty = AppIndex::default();
        let ix = self.index.get(&st.app.id).unwrap_or(&empty);
        let Some(_) = &st.deployment else {
            // Outside a deployment, live instances of older versions count
            // toward `instances`: a deployment stopped with `force=true`
            // leaves its mix of versions as it is (Marathon does the same;
            // replacing them would be an ungated rollout of the version the
            // operator just stopped). Only what is beyond `instances` is
            // surplus, old versions first (see `converge`).
            let old_live = ix.live_old.len().min(n);
            return (n - old_live, old_live);
        };
        let us = st.app.upgrade_strategy;
        let new_live = ix.live_new.len();
        let new_ready = ix.new_ready;
        let old_live = ix.live_old.len();
        // Instances being killed still run until their end is reported:
        // they count against the over-capacity budget.
        let stopping = ix.stopping;
        let (max_total, min_healthy) = step_bounds(n, us);
        // New instances we may have: within the over-capacity budget.
        let new_target = n.min(new_live + max_total.saturating_sub(new_live + old_live + stopping));
        // Old instances we must keep so healthy capacity stays >= minimum.
        let old_keep = min_healthy.saturating_sub(new_ready).min(old_live);
        (new_target.max(new_live.min(n)), old_keep)
    }

    /// Kills surplus (scale down, deployment progress, returned unreachable
    /// instances) and decides suppress/revive. Only apps touched since they
    /// were last converged are looked at, each in O(1) unless it has
    /// instances to kill.
    pub fn converge(&mut self) -> Vec<Action> {
        let mut out = Vec::new();
        let now = now_s();
        for id in std::mem::take(&mut self.touched) {
            let Some(st) = self.apps.get(&id) else {
                self.wanting.remove(&id);
                continue;
            };
            let n = st.app.instances as usize;
            let kill_selection = st.app.kill_selection;
            let policy = super::endpoints::DrainPolicy::of(&st.app);
            let in_deployment = st.deployment.is_some();
            let (new_target, old_keep) = self.targets(st);
            let empty = AppIndex::default();
            let ix = self.index.get(&id).unwrap_or(&empty);
            let (current, old) = (ix.live_new.len(), ix.live_old.len());
            // Surplus goes by killSelection: youngest (highest launch order)
            // or oldest first.
            let pick = |set: &BTreeSet<(u64, String)>, k: usize| -> Vec<String> {
                match kill_selection {
                    KillSelection::YoungestFirst => {
                        set.iter().rev().take(k).map(|(_, t)| t.clone()).collect()
                    }
                    KillSelection::OldestFirst => {
                        set.iter().take(k).map(|(_, t)| t.clone()).collect()
                    }
                }
            };
            let mut kill: Vec<String> = Vec::new();
            if in_deployment {
                if current > n {
                    kill.extend(pick(&ix.live_new, current - n));
                }
                if old > old_keep {
                    kill.extend(pick(&ix.live_old, old - old_keep));
                }
            } else {
                // No deployment: every live instance beyond `instances` is
                // surplus (an old-version one back from UNREACHABLE after its
                // deployment ended, old ones left over capacity by a stopped
                // deployment), and old-version ones go first. Old ones within
                // the count keep serving; one that ends is replaced by the
                // current version.
                let surplus = (current + old).saturating_sub(n);
                let old_kill = surplus.min(old);
                kill.extend(pick(&ix.live_old, old_kill));
                kill.extend(pick(&ix.live_new, surplus - old_kill));
            }
            if current < new_target {
                self.wanting.insert(id.clone());
            } else {
                self.wanting.remove(&id);
            }
            let done = in_deployment
                && old <= old_keep
                && old_keep == 0
                && current >= n
                && ix.new_ready == current;
            let _g = tracing::debug_span!("converge", app_id = %id).entered();
            for t in kill {
                tracing::info!(task_id = %t, "killing a surplus instance");
                out.extend(self.retire(&t, now, policy));
                self.step(&id, format!("kill {t}"));
            }
            if done {
                self.step(&id, "done".into());
                if let Some(s) = self.app_mut(&id) {
                    s.deployment = None;
                }
            }
        }
        let need_offers = !self.wanting.is_empty();
        if need_offers && self.suppressed {
            self.suppressed = false;
            out.push(Action::Revive);
        } else if !need_offers && !self.suppressed {
            self.suppressed = true;
            out.push(Action::Suppress);
        }
        out
    }
}
