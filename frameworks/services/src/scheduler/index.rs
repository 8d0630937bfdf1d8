//! Change tracking: per-app indexes of instances and the rows to store.

use super::{Instance, ready};
use crate::app::App;
use std::collections::BTreeSet;

/// What changed since the last [`Services::take_changes`]: the rows the
/// store must write (or delete, when the key is gone from memory).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Changes {
    pub apps: BTreeSet<String>,
    pub instances: BTreeSet<String>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.apps.is_empty() && self.instances.is_empty()
    }

    /// Rows to write or delete.
    pub fn len(&self) -> usize {
        self.apps.len() + self.instances.len()
    }
}

/// Per-app index of its instances, kept up to date on every change so that
/// deciding about an app costs O(1), not O(instances).
#[derive(Debug, Default, Clone, PartialEq)]
pub(super) struct AppIndex {
    /// Every instance of the app (any state).
    pub(super) all: BTreeSet<String>,
    /// Live instances of the app's current version, by launch order.
    pub(super) live_new: BTreeSet<(u64, String)>,
    /// Live instances of older versions, by launch order.
    pub(super) live_old: BTreeSet<(u64, String)>,
    /// Of `live_new`, those ready for a deployment step.
    pub(super) new_ready: usize,
    /// Being killed and not ended yet.
    pub(super) stopping: usize,
}

/// Where one instance counts in its app's index.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub(super) struct Class {
    pub(super) live_new: bool,
    pub(super) live_old: bool,
    pub(super) ready: bool,
    pub(super) stopping: bool,
}

pub(super) fn classify(i: &Instance, app: Option<&App>) -> Class {
    let live = i.is_live();
    let new = app.is_some_and(|a| a.version == i.version);
    Class {
        live_new: live && new,
        live_old: live && !new,
        ready: live && new && app.is_some_and(|a| ready(i, a)),
        stopping: i.killing && !i.state.is_terminal(),
    }
}

impl AppIndex {
    pub(super) fn add(&mut self, i: &Instance, c: Class) {
        if c.live_new {
            self.live_new.insert((i.seq, i.task_id.clone()));
        }
        if c.live_old {
            self.live_old.insert((i.seq, i.task_id.clone()));
        }
        self.new_ready += usize::from(c.ready);
        self.stopping += usize::from(c.stopping);
    }

    pub(super) fn remove(&mut self, i: &Instance, c: Class) {
        if c.live_new {
            self.live_new.remove(&(i.seq, i.task_id.clone()));
        }
        if c.live_old {
            self.live_old.remove(&(i.seq, i.task_id.clone()));
        }
        self.new_ready -= usize::from(c.ready);
        self.stopping -= usize::from(c.stopping);
    }
}
