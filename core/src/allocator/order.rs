//! Sort keys: roles by weighted dominant share, frameworks within a role by
//! dominant share, each kept in a `BTreeSet` and re-keyed in O(log n) when
//! its allocation changes.

use super::Allocator;
use crate::resources::Scalars;
use std::cmp::Ordering;

/// Sort key: weighted share, then a stable tie-break (the slot index).
#[derive(Clone, Copy, Debug)]
pub(super) struct Key(pub(super) f64, pub(super) usize);

impl PartialEq for Key {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for Key {}
impl PartialOrd for Key {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Key {
    fn cmp(&self, o: &Self) -> Ordering {
        self.0.total_cmp(&o.0).then(self.1.cmp(&o.1))
    }
}

impl Allocator {
    /// Adds (`grow`) or removes scalars from a framework and its role, and
    /// re-sorts both.
    pub(super) fn charge(&mut self, fi: usize, s: Scalars, grow: bool) {
        let Some(f) = self.frameworks[fi].as_mut() else {
            return;
        };
        f.allocated = if grow {
            f.allocated.plus(s)
        } else {
            f.allocated.minus(s)
        };
        let role = &mut self.roles[f.role];
        role.allocated = if grow {
            role.allocated.plus(s)
        } else {
            role.allocated.minus(s)
        };
        self.rekey_framework(fi);
    }

    /// The key a framework should have now: its dominant share, when it is
    /// eligible for offers (active, not suppressed).
    pub(super) fn framework_key(&self, fi: usize) -> Option<Key> {
        let f = self.frameworks[fi].as_ref()?;
        (f.active && !f.suppressed).then(|| Key(f.allocated.dominant_share(self.total), fi))
    }

    /// The key a role should have now, given the frameworks in its order.
    pub(super) fn role_key(&self, r: usize) -> Option<Key> {
        let role = &self.roles[r];
        (!role.order.is_empty())
            .then(|| Key(role.allocated.dominant_share(self.total) / role.weight, r))
    }

    /// Puts a framework at its place in its role's order (or takes it out),
    /// without re-sorting the role. Returns its role.
    fn place_framework(&mut self, fi: usize) -> Option<usize> {
        let want = self.framework_key(fi);
        let f = self.frameworks[fi].as_mut()?;
        let r = f.role;
        if f.key != want {
            let order = &mut self.roles[r].order;
            if let Some(k) = f.key.take() {
                order.remove(&k);
            }
            if let Some(k) = want {
                order.insert(k);
            }
            f.key = want;
        }
        if want.is_some() {
            self.eligible.set(fi);
        } else {
            self.eligible.clear(fi);
        }
        Some(r)
    }

    pub(super) fn rekey_framework(&mut self, fi: usize) {
        if let Some(r) = self.place_framework(fi) {
            self.rekey_role(r);
        }
    }

    /// Takes a framework out of its role's order (it is being removed).
    pub(super) fn unkey_framework(&mut self, fi: usize) {
        let Some(f) = self.frameworks[fi].as_mut() else {
            return;
        };
        self.eligible.clear(fi);
        if let Some(k) = f.key.take() {
            let r = f.role;
            self.roles[r].order.remove(&k);
            self.rekey_role(r);
        }
    }

    pub(super) fn rekey_role(&mut self, r: usize) {
        let want = self.role_key(r);
        let role = &mut self.roles[r];
        let single = match role.order.len() {
            1 => role.order.first().map(|k| k.1),
            _ => None,
        };
        if role.key != want {
            if let Some(k) = role.key.take() {
                self.role_order.remove(&k);
            }
            if let Some(k) = want {
                self.role_order.insert(k, single);
            }
            role.key = want;
        } else if let Some(k) = want
            && let Some(v) = self.role_order.get_mut(&k)
        {
            *v = single;
        }
    }

    /// The cluster total changed: every share may change. Keys that come out
    /// equal (e.g. frameworks holding nothing) are left in place.
    pub(super) fn rekey_all(&mut self) {
        for fi in 0..self.frameworks.len() {
            self.place_framework(fi);
        }
        for r in 0..self.roles.len() {
            self.rekey_role(r);
        }
    }
}
