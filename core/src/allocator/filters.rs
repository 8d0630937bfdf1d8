//! Decline filters of one agent, and a cached answer to "which frameworks do
//! they cover for the agent's current free resources".
//!
//! Semantics (Mesos' refused-resources filter): a filter `(framework,
//! refused, until)` keeps the framework from being offered any subset of
//! `refused` on this agent until `until`. A framework may hold several
//! filters on one agent; each counts on its own, so a later, shorter or
//! smaller filter never weakens an earlier one. Filters with the same refused
//! resources merge into one that lasts as long as the longest of them (the
//! same set of refusals).
//!
//! Storage is grouped by refused resources: an agent's filters usually refuse
//! one of a few bundles (its free resources at the time of each decline), so
//! whether a group covers the free resources is one comparison for all its
//! frameworks. The [`View`] caches the covered frameworks as a bitset for
//! the free resources it was built for; it is updated in place when filters
//! are added or removed, when the free resources shrink (coverage only
//! grows), and when a filter expires (a time-sorted queue), and rebuilt
//! only when the free resources grow or change shape.

use crate::resources::Resources;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::time::Instant;

/// A growable bitset over framework slots.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Bits(Vec<u64>);

impl Bits {
    pub(super) fn get(&self, i: usize) -> bool {
        self.0.get(i / 64).is_some_and(|w| w & (1 << (i % 64)) != 0)
    }

    pub(super) fn set(&mut self, i: usize) {
        let w = i / 64;
        if self.0.len() <= w {
            self.0.resize(w + 1, 0);
        }
        self.0[w] |= 1 << (i % 64);
    }

    pub(super) fn clear(&mut self, i: usize) {
        if let Some(w) = self.0.get_mut(i / 64) {
            *w &= !(1 << (i % 64));
        }
    }

    fn clear_all(&mut self) {
        self.0.iter_mut().for_each(|w| *w = 0);
    }

    /// Number of bits set in `self` and not in `other`.
    pub(super) fn count_and_not(&self, other: &Bits) -> usize {
        self.0
            .iter()
            .enumerate()
            .map(|(i, w)| (w & !other.0.get(i).copied().unwrap_or(0)).count_ones() as usize)
            .sum()
    }

    /// Indices set in `self` and not in `other`, ascending.
    pub(super) fn iter_and_not<'a>(&'a self, other: &'a Bits) -> impl Iterator<Item = usize> + 'a {
        self.0.iter().enumerate().flat_map(move |(i, w)| {
            let mut w = w & !other.0.get(i).copied().unwrap_or(0);
            std::iter::from_fn(move || {
                if w == 0 {
                    return None;
                }
                let b = w.trailing_zeros() as usize;
                w &= w - 1;
                Some(i * 64 + b)
            })
        })
    }
}

/// Hasher for small dense integer keys (framework slots): one multiply.
#[derive(Default)]
pub(super) struct SlotHasher(u64);

impl Hasher for SlotHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_usize(&mut self, n: usize) {
        self.0 = (n as u64 ^ self.0).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type SlotMap<V> = HashMap<usize, V, BuildHasherDefault<SlotHasher>>;

/// Filters refusing the same resources: framework slot → until.
#[derive(Clone)]
struct Group {
    refused: Resources,
    members: SlotMap<Instant>,
    /// The latest `until` ever added: past it the whole group is dead.
    latest: Instant,
}

/// Which frameworks are covered for `free`, as of the last refresh.
#[derive(Clone, Default)]
struct View {
    free: Resources,
    covered: Bits,
    /// For each covered framework, a time at or before which its coverage
    /// must be checked again (entries may be stale: re-checked when due).
    /// Sorted by time: due entries leave from the front in O(1), and new
    /// ones, usually the latest, go in near the back.
    expiries: VecDeque<(Instant, usize)>,
    /// The earliest entry of `expiries` (kept apart: one compare per visit).
    next_check: Option<Instant>,
}

/// All decline filters on one agent.
#[derive(Clone, Default)]
pub(super) struct AgentFilters {
    groups: Vec<Group>,
    /// No group dies before this (a lower bound of their `latest`).
    first_death: Option<Instant>,
    view: Option<View>,
}

static NONE: Bits = Bits(Vec::new());

impl AgentFilters {
    /// Adds a filter: framework slot `fi` refuses subsets of `refused` until
    /// `until`. Callers skip empty `refused` (it would refuse nothing).
    /// `free` gives the agent's free resources now: the first filter builds
    /// the cached view for them, later ones update it in place.
    pub(super) fn add(
        &mut self,
        fi: usize,
        refused: &Resources,
        until: Instant,
        free: impl FnOnce() -> Resources,
    ) {
        let gi = match self.groups.iter().position(|g| g.refused == *refused) {
            Some(gi) => gi,
            None => {
                self.groups.push(Group {
                    refused: refused.clone(),
                    members: SlotMap::default(),
                    latest: until,
                });
                self.groups.len() - 1
            }
        };
        let g = &mut self.groups[gi];
        let u = g.members.entry(fi).or_insert(until);
        *u = (*u).max(until);
        g.latest = g.latest.max(until);
        self.first_death = Some(self.first_death.map_or(until, |t| t.min(until)));
        let v = self.view.get_or_insert_with(|| View {
            free: free(),
            ..View::default()
        });
        // A framework already covered has an entry due no later than its
        // current coverage ends; re-checked then, it finds this filter too.
        if refused.contains(&v.free) && !v.covered.get(fi) {
            v.covered.set(fi);
            v.schedule(until, fi);
        }
    }

    /// Drops every filter of framework slot `fi` (REVIVE, framework removed).
    pub(super) fn remove_framework(&mut self, fi: usize) {
        for g in &mut self.groups {
            g.members.remove(&fi);
        }
        self.groups.retain(|g| !g.members.is_empty());
        if self.groups.is_empty() {
            self.first_death = None;
        }
        if let Some(v) = self.view.as_mut() {
            v.covered.clear(fi);
        }
    }

    /// Framework slots with at least one filter here (live or not yet pruned).
    pub(super) fn frameworks(&self) -> impl Iterator<Item = usize> + '_ {
        self.groups.iter().flat_map(|g| g.members.keys().copied())
    }

    pub(super) fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// The frameworks whose live filters cover `free` at `now`. Time must not
    /// go backwards between calls (expired filters are pruned).
    pub(super) fn covered(&mut self, free: &Resources, now: Instant) -> &Bits {
        // Fast path, the common one: same free resources, nothing due.
        let fresh = self
            .view
            .as_ref()
            .is_some_and(|v| v.free == *free && v.next_check.is_none_or(|t| now < t))
            && self.first_death.is_none_or(|t| now < t);
        if !fresh {
            self.refresh(free, now);
        }
        match &self.view {
            Some(v) => &v.covered,
            None => &NONE,
        }
    }

    fn refresh(&mut self, free: &Resources, now: Instant) {
        if self.first_death.is_some_and(|t| now >= t) {
            self.groups.retain(|g| g.latest > now);
            self.first_death = self.groups.iter().map(|g| g.latest).min();
        }
        let mut added = false;
        let view = match self.view.take() {
            Some(v) if v.free == *free => v,
            Some(mut v) if v.free.contains(free) => {
                // Fewer free resources: every group that covered the old ones
                // still covers; add the groups that cover only the new ones.
                for g in &mut self.groups {
                    if !g.refused.contains(&v.free) && g.refused.contains(free) {
                        added |= add_members(g, &mut v, now);
                    }
                }
                v.free = free.clone();
                v
            }
            old => {
                // More (or other) free resources: coverage can only have
                // shrunk; recompute it from the groups that still cover.
                let mut v = old.unwrap_or_default();
                v.free = free.clone();
                v.covered.clear_all();
                v.expiries.clear();
                v.next_check = None;
                for g in &mut self.groups {
                    if g.refused.contains(free) {
                        added |= add_members(g, &mut v, now);
                    }
                }
                v
            }
        };
        let view = self.view.insert(view);
        if added {
            view.expiries.make_contiguous().sort_unstable();
        }
        while let Some(&(t, key)) = view.expiries.front() {
            if t > now {
                break;
            }
            view.expiries.pop_front();
            if !view.covered.get(key) {
                continue;
            }
            // The latest live covering filter of this framework, if any.
            let mut best: Option<Instant> = None;
            for g in &mut self.groups {
                if !g.refused.contains(&view.free) {
                    continue;
                }
                if let Some(&u) = g.members.get(&key) {
                    if u > now {
                        best = Some(best.map_or(u, |b| b.max(u)));
                    } else {
                        g.members.remove(&key);
                    }
                }
            }
            match best {
                Some(u) => view.schedule(u, key),
                None => view.covered.clear(key),
            }
        }
        view.next_check = view.expiries.front().map(|(t, _)| *t);
    }

    /// Whether a live filter of `fi` covers `free` at `now`, from the stored
    /// filters alone (no cache): the reference the cache is checked against.
    #[cfg(test)]
    pub(super) fn covers_uncached(&self, fi: usize, free: &Resources, now: Instant) -> bool {
        self.groups
            .iter()
            .any(|g| g.refused.contains(free) && g.members.get(&fi).is_some_and(|u| *u > now))
    }
}

impl View {
    /// Re-checks framework slot `fi` at `t` (kept in time order).
    fn schedule(&mut self, t: Instant, fi: usize) {
        // Usually the latest yet (filters of one length, added in time order).
        if self.expiries.back().is_none_or(|b| *b <= (t, fi)) {
            self.expiries.push_back((t, fi));
        } else {
            let pos = self.expiries.partition_point(|e| *e <= (t, fi));
            self.expiries.insert(pos, (t, fi));
        }
        self.next_check = Some(self.next_check.map_or(t, |n| n.min(t)));
    }
}

/// Marks the live members of `g` covered, each with an entry in
/// `expiries` (appended unsorted: the caller sorts). Returns whether any
/// entry was appended.
fn add_members(g: &mut Group, v: &mut View, now: Instant) -> bool {
    g.members.retain(|_, u| *u > now);
    let mut added = false;
    for (&key, &u) in &g.members {
        if !v.covered.get(key) {
            v.covered.set(key);
            v.expiries.push_back((u, key));
            added = true;
        }
    }
    added
}
