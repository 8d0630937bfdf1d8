//! The endpoint hub: the framework's [`Publisher`] shared between the actor
//! (which publishes after every burst) and the HTTP API (the endpoint
//! stream, the discovery API), plus the drain participants (routers with an
//! open stream) and their acknowledgements.
//!
//! Versions on the wire are the publisher's plus a base taken from the
//! clock when the framework starts (microseconds since the epoch, so about
//! 1.7 × 10¹⁵, below 2⁵³): they keep growing across restarts, so a
//! router's `since` from before a restart is never mistaken for a version
//! of this run (it is below the base: it gets a snapshot).

use agora_core::endpoints::{EndpointSet, Publisher, Snapshot, Update};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::{Notify, broadcast, watch};

/// Updates a subscriber may fall behind by before it is disconnected.
pub const SUBSCRIBER_QUEUE: usize = 1024;

/// How a subscriber starts: a snapshot, or the updates it missed.
pub enum Start {
    Snapshot(Snapshot),
    Updates(Vec<Update>),
}

/// What the framework knows of one drain participant.
#[derive(Debug, Default, Clone, Copy)]
struct Participant {
    /// Open streams with its id (a reconnect may overlap the old one).
    streams: usize,
    /// Latest versions acknowledged (the publisher's numbering).
    applied: u64,
    drained: u64,
}

pub struct Hub {
    base: u64,
    publisher: Mutex<Publisher>,
    updates: broadcast::Sender<Arc<Update>>,
    version: watch::Sender<u64>,
    routers: Mutex<HashMap<String, Participant>>,
    /// Turns true when the framework stops: open streams end (a graceful
    /// shutdown waits for every connection).
    closing: watch::Sender<bool>,
    /// Woken on acknowledgements and on participants leaving: drains may
    /// be over.
    pub(crate) drains: Notify,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Hub {
    /// A hub whose wire versions start at `base`.
    pub fn new(base: u64) -> Arc<Hub> {
        let (updates, _) = broadcast::channel(SUBSCRIBER_QUEUE);
        let (version, _) = watch::channel(base);
        Arc::new(Hub {
            base,
            publisher: Mutex::new(Publisher::default()),
            updates,
            version,
            routers: Mutex::new(HashMap::new()),
            closing: watch::channel(false).0,
            drains: Notify::new(),
        })
    }

    /// A hub based on the clock (microseconds since the epoch).
    pub fn from_clock() -> Arc<Hub> {
        let us = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        Hub::new(us)
    }

    fn wire(&self, u: &Update) -> Update {
        Update {
            version: u.version + self.base,
            changes: u.changes.clone(),
        }
    }

    /// Runs `f` on the publisher and sends the updates it made to every
    /// subscriber, under the publisher's lock (so that a subscriber's
    /// snapshot and its updates follow each other exactly). Returns the
    /// publisher's version after.
    pub fn publish(&self, f: impl FnOnce(&mut Publisher) -> Vec<Update>) -> u64 {
        let mut p = lock(&self.publisher);
        let made = f(&mut p);
        for u in &made {
            let _ = self.updates.send(Arc::new(self.wire(u)));
        }
        let v = p.version();
        if !made.is_empty() {
            self.version.send_replace(v + self.base);
        }
        v
    }

    /// A new subscriber: how it starts (its missed updates when it gives a
    /// `since` still covered, else a snapshot) and the receiver of what
    /// follows.
    pub fn subscribe(&self, since: Option<u64>) -> (Start, broadcast::Receiver<Arc<Update>>) {
        let p = lock(&self.publisher);
        let rx = self.updates.subscribe();
        let missed = since
            .and_then(|v| v.checked_sub(self.base))
            .and_then(|v| p.since(v));
        let start = match missed {
            Some(us) => Start::Updates(us.iter().map(|u| self.wire(u)).collect()),
            None => Start::Snapshot(self.wire_snapshot(p.snapshot())),
        };
        (start, rx)
    }

    fn wire_snapshot(&self, mut s: Snapshot) -> Snapshot {
        s.version += self.base;
        s
    }

    /// Every set now.
    pub fn snapshot(&self) -> Snapshot {
        self.wire_snapshot(lock(&self.publisher).snapshot())
    }

    /// The sets of one app now, and the (wire) version.
    pub fn app(&self, app_id: &str) -> (u64, Vec<EndpointSet>) {
        let p = lock(&self.publisher);
        (
            p.version() + self.base,
            p.app(app_id).into_iter().cloned().collect(),
        )
    }

    /// The wire version, as it changes.
    pub fn version(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    /// Ends every open stream (the framework stops).
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    /// Turns true when the framework stops.
    pub fn closing(&self) -> watch::Receiver<bool> {
        self.closing.subscribe()
    }

    /// Makes `router` a drain participant while the returned guard lives.
    pub fn join(self: &Arc<Self>, router: &str) -> Joined {
        lock(&self.routers)
            .entry(router.to_string())
            .or_default()
            .streams += 1;
        Joined {
            hub: self.clone(),
            router: router.to_string(),
        }
    }

    /// Records a participant's acknowledgement (wire versions). Ignored
    /// (`false`) when it has no open stream. Versions never go back, and
    /// never beyond what was published.
    pub fn ack(&self, router: &str, applied: Option<u64>, drained: Option<u64>) -> bool {
        let now = lock(&self.publisher).version();
        let mut routers = lock(&self.routers);
        let Some(r) = routers.get_mut(router) else {
            return false;
        };
        let local = |v: u64| v.saturating_sub(self.base).min(now);
        if let Some(a) = applied {
            r.applied = r.applied.max(local(a));
        }
        if let Some(d) = drained {
            r.drained = r.drained.max(local(d));
        }
        drop(routers);
        self.drains.notify_one();
        true
    }

    /// The lowest version every connected participant has drained (the
    /// publisher's numbering); `None` when none is connected.
    pub fn drained(&self) -> Option<u64> {
        lock(&self.routers).values().map(|r| r.drained).min()
    }

    /// Participants connected now: (id, applied, drained) in wire versions.
    pub fn participants(&self) -> Vec<(String, u64, u64)> {
        let mut v: Vec<(String, u64, u64)> = lock(&self.routers)
            .iter()
            .map(|(k, r)| (k.clone(), r.applied + self.base, r.drained + self.base))
            .collect();
        v.sort();
        v
    }
}

/// A drain participant's open stream; it leaves when dropped.
pub struct Joined {
    hub: Arc<Hub>,
    router: String,
}

impl Drop for Joined {
    fn drop(&mut self) {
        let mut routers = lock(&self.hub.routers);
        if let Some(r) = routers.get_mut(&self.router) {
            r.streams -= 1;
            if r.streams == 0 {
                routers.remove(&self.router);
            }
        }
        drop(routers);
        self.hub.drains.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_count_only_for_connected_routers_and_never_go_back() {
        let hub = Hub::new(1000);
        hub.publish(|p| {
            let k = agora_core::endpoints::EndpointKey {
                app_id: "/a".into(),
                port_index: 0,
            };
            let set = EndpointSet::new(k, Default::default(), vec![]);
            p.publish_app("/a", vec![set])
                .cloned()
                .into_iter()
                .collect()
        });
        assert_eq!(*hub.version().borrow(), 1001);
        assert!(!hub.ack("r1", Some(1001), Some(1001)), "no stream: ignored");
        assert_eq!(hub.drained(), None);
        let j = hub.join("r1");
        assert_eq!(hub.drained(), Some(0));
        assert!(hub.ack("r1", Some(1001), Some(1001)));
        assert_eq!(hub.drained(), Some(1));
        hub.ack("r1", None, Some(1000));
        assert_eq!(hub.drained(), Some(1), "never goes back");
        hub.ack("r1", None, Some(5000));
        assert_eq!(hub.drained(), Some(1), "never beyond what was published");
        let j2 = hub.join("r2");
        assert_eq!(hub.drained(), Some(0), "the slowest participant counts");
        drop(j2);
        drop(j);
        assert_eq!(hub.drained(), None);
    }

    #[test]
    fn a_since_from_before_a_restart_gets_a_snapshot() {
        let hub = Hub::new(1_000_000);
        let (start, _rx) = hub.subscribe(Some(5));
        assert!(matches!(start, Start::Snapshot(s) if s.version == 1_000_000));
        let (start, _rx) = hub.subscribe(Some(1_000_000));
        assert!(matches!(start, Start::Updates(u) if u.is_empty()));
    }
}
