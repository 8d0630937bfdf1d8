//! The endpoint hub: the framework's [`Publisher`] shared between the actor
//! (which publishes after every burst) and the HTTP API (the endpoint
//! stream, the discovery API), plus the drain participants (routers with an
//! open stream, or whose stream ended less than [`FORGET_DEPARTED`] ago)
//! and their acknowledgements.
//!
//! A router keeps routing by its last view while its stream is down, so a
//! participant whose stream ends still holds the drains it has not
//! acknowledged, until it reconnects (same id: its acks count again), the
//! drain's deadline passes, or it is forgotten. After the framework starts
//! the routers are unknown until they reconnect: for [`START_WINDOW`], a
//! drain ends only at its deadline.
//!
//! Versions on the wire are the publisher's plus a base taken from the
//! clock when the framework starts (microseconds since the epoch, so about
//! 1.7 × 10¹⁵, below 2⁵³): they keep growing across restarts, so a
//! router's `since` from before a restart is never mistaken for a version
//! of this run (it is below the base: it gets a snapshot).
//!
//! With tokens required on the API, a participant is bound to the
//! principal whose stream joined it first: a stream or an ack for its id
//! from another principal is refused ([`Bound`]) until it is forgotten, so
//! a client with some other token can neither claim a router drained nor
//! take its id over.

use agora_core::endpoints::{EndpointSet, Publisher, Snapshot, Update};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, broadcast, watch};

/// Updates a subscriber may fall behind by before it is disconnected.
pub const SUBSCRIBER_QUEUE: usize = 1024;

/// How long after the framework starts drains end only at their deadline:
/// routers reconnect with a back-off of at most 5 s plus a connect timeout
/// of 3 s (`router/src/feed`), so every live router has reconnected (at
/// least two attempts) well within it.
pub const START_WINDOW: Duration = Duration::from_secs(20);

/// How long a participant whose stream ended still holds drains (each at
/// most until its own `drainSeconds` deadline): a router removed for good
/// stops counting after this.
pub const FORGET_DEPARTED: Duration = Duration::from_secs(600);

/// Most drain participants kept. A new id beyond it makes room by
/// forgetting the departed participant that left first (the one that would
/// be forgotten first anyway); connected ones are never dropped (they are
/// bounded by the open streams). Without it, opening and closing streams
/// with fresh ids grows the map for [`FORGET_DEPARTED`] at the request rate.
pub const MAX_PARTICIPANTS: usize = 4096;

/// What the drain participants have drained, for `release_drains`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drained {
    /// No participant (after the start window): drains end once published.
    Nobody,
    /// The lowest version every participant (connected or departed, not
    /// forgotten) has drained, in the publisher's numbering.
    Upto(u64),
    /// The routers are not known yet (start window): drains end only at
    /// their deadline.
    Unknown,
}

/// How a subscriber starts: a snapshot, or the updates it missed.
pub enum Start {
    Snapshot(Snapshot),
    Updates(Vec<Update>),
}

/// What the framework knows of one drain participant.
#[derive(Debug, Default, Clone)]
struct Participant {
    /// The principal whose stream joined it (`None`: an API without
    /// tokens); only this one may ack for it or join it again.
    principal: Option<String>,
    /// Open streams with its id (a reconnect may overlap the old one).
    streams: usize,
    /// When its last stream ended (none open now).
    left: Option<Instant>,
    /// Latest versions acknowledged (the publisher's numbering).
    applied: u64,
    drained: u64,
}

pub struct Hub {
    base: u64,
    /// Until then, drains end only at their deadline.
    settled: Instant,
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
    /// A hub whose wire versions start at `base`, whose drains end only at
    /// their deadline for `start_window` (see [`START_WINDOW`]).
    pub fn new(base: u64, start_window: Duration) -> Arc<Hub> {
        let (updates, _) = broadcast::channel(SUBSCRIBER_QUEUE);
        let (version, _) = watch::channel(base);
        Arc::new(Hub {
            base,
            settled: Instant::now() + start_window,
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
        Hub::new(us, START_WINDOW)
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

    /// Makes `router` a drain participant (connected while the returned
    /// guard lives; departed after, see [`FORGET_DEPARTED`]), with no
    /// principal (an API without tokens).
    pub fn join(self: &Arc<Self>, router: &str) -> Joined {
        let mut routers = lock(&self.routers);
        self.make_room(&mut routers, router);
        self.enter(&mut routers, router)
    }

    /// Before `router` is added: at [`MAX_PARTICIPANTS`], forgets the
    /// departed participant that left first (drains may be over then).
    fn make_room(&self, routers: &mut HashMap<String, Participant>, router: &str) {
        if routers.len() < MAX_PARTICIPANTS || routers.contains_key(router) {
            return;
        }
        let oldest = routers
            .iter()
            .filter_map(|(k, r)| r.left.map(|l| (l, k)))
            .min()
            .map(|(_, k)| k.clone());
        if let Some(k) = oldest {
            routers.remove(&k);
            tracing::info!(forgotten = %k, max = MAX_PARTICIPANTS,
                "too many drain participants: forgot the one that left first");
            self.drains.notify_one();
        }
    }

    /// [`Hub::join`] by `principal` (the authenticated caller; `None`
    /// without tokens): it binds the participant to that principal, and is
    /// refused when the participant is bound to another one (connected, or
    /// departed and not forgotten).
    pub fn join_as(
        self: &Arc<Self>,
        router: &str,
        principal: Option<&str>,
    ) -> Result<Joined, Bound> {
        let mut routers = lock(&self.routers);
        if let Some(r) = routers.get(router) {
            check_owner(router, r, principal)?;
        }
        self.make_room(&mut routers, router);
        let r = routers.entry(router.to_string()).or_default();
        if let Some(p) = principal {
            r.principal = Some(p.to_string());
        }
        Ok(self.enter(&mut routers, router))
    }

    fn enter(self: &Arc<Self>, routers: &mut HashMap<String, Participant>, router: &str) -> Joined {
        let r = routers.entry(router.to_string()).or_default();
        r.streams += 1;
        r.left = None;
        Joined {
            hub: self.clone(),
            router: router.to_string(),
        }
    }

    /// Records a participant's acknowledgement (wire versions). Ignored
    /// (`false`) when the router is no participant (it never opened a
    /// stream, or was forgotten). Versions never go back; one above what
    /// was published is ignored (an ack from a previous run whose versions
    /// were higher, e.g. the clock stepped back: it says nothing of this
    /// run's versions).
    pub fn ack(&self, router: &str, applied: Option<u64>, drained: Option<u64>) -> bool {
        matches!(self.ack_as(router, None, applied, drained), Ok(true))
    }

    /// [`Hub::ack`] by `principal` (the authenticated caller; `None`
    /// without tokens): refused when the participant is bound to another
    /// principal (see [`Hub::join_as`]).
    pub fn ack_as(
        &self,
        router: &str,
        principal: Option<&str>,
        applied: Option<u64>,
        drained: Option<u64>,
    ) -> Result<bool, Bound> {
        let now = lock(&self.publisher).version();
        let mut routers = lock(&self.routers);
        let Some(r) = routers.get_mut(router) else {
            return Ok(false);
        };
        check_owner(router, r, principal)?;
        let local = |v: u64| Some(v.saturating_sub(self.base)).filter(|v| *v <= now);
        if let Some(a) = applied.and_then(local) {
            r.applied = r.applied.max(a);
        }
        if let Some(d) = drained.and_then(local) {
            r.drained = r.drained.max(d);
        }
        drop(routers);
        self.drains.notify_one();
        Ok(true)
    }

    /// What the participants have drained now (see [`Drained`]).
    pub fn drained(&self) -> Drained {
        self.drained_at(Instant::now())
    }

    /// What the participants have drained at `now`: departed participants
    /// older than [`FORGET_DEPARTED`] are forgotten first.
    pub fn drained_at(&self, now: Instant) -> Drained {
        let mut routers = lock(&self.routers);
        routers.retain(|_, r| r.left.is_none_or(|l| now < l + FORGET_DEPARTED));
        if now < self.settled {
            return Drained::Unknown;
        }
        match routers.values().map(|r| r.drained).min() {
            Some(d) => Drained::Upto(d),
            None => Drained::Nobody,
        }
    }

    /// When what [`Hub::drained`] says may change without an ack or a
    /// participant joining or leaving: the start window's end, or the next
    /// departed participant forgotten.
    pub fn next_change(&self) -> Option<Instant> {
        let now = Instant::now();
        let forget = lock(&self.routers)
            .values()
            .filter_map(|r| r.left.map(|l| l + FORGET_DEPARTED))
            .min();
        let settle = (now < self.settled).then_some(self.settled);
        settle.into_iter().chain(forget).min()
    }

    /// Participants, connected or departed and not forgotten: (id, applied,
    /// drained) in wire versions.
    pub fn participants(&self) -> Vec<(String, u64, u64)> {
        let mut v: Vec<(String, u64, u64)> = lock(&self.routers)
            .iter()
            .map(|(k, r)| (k.clone(), r.applied + self.base, r.drained + self.base))
            .collect();
        v.sort();
        v
    }
}

/// A participant's id is bound to another principal than the caller's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bound {
    pub router: String,
    /// The caller's principal.
    pub principal: String,
}

impl std::fmt::Display for Bound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "router id {:?} is bound to the principal whose endpoint stream joined it as a drain participant, not to yours ({:?}): only that principal may join or ack as this router (give this router its own --router-id, or the token it joined with; an id is released {} min after its last stream ended)",
            self.router,
            self.principal,
            FORGET_DEPARTED.as_secs() / 60
        )
    }
}

impl std::error::Error for Bound {}

/// Refuses `principal` for a participant bound to another one.
fn check_owner(router: &str, r: &Participant, principal: Option<&str>) -> Result<(), Bound> {
    match (principal, r.principal.as_deref()) {
        (Some(p), Some(owner)) if p != owner => Err(Bound {
            router: router.to_string(),
            principal: p.to_string(),
        }),
        _ => Ok(()),
    }
}

/// A drain participant's open stream; when the last one with its id is
/// dropped, it is departed (still waited for, see [`FORGET_DEPARTED`]).
pub struct Joined {
    hub: Arc<Hub>,
    router: String,
}

impl Drop for Joined {
    fn drop(&mut self) {
        let mut routers = lock(&self.hub.routers);
        if let Some(r) = routers.get_mut(&self.router) {
            r.streams = r.streams.saturating_sub(1);
            if r.streams == 0 {
                r.left = Some(Instant::now());
            }
        }
        drop(routers);
        self.hub.drains.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publish_one(hub: &Hub) {
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
    }

    #[test]
    fn acks_count_only_for_participants_and_never_go_back() {
        let hub = Hub::new(1000, Duration::ZERO);
        publish_one(&hub);
        assert_eq!(*hub.version().borrow(), 1001);
        assert!(!hub.ack("r1", Some(1001), Some(1001)), "no stream: ignored");
        assert_eq!(hub.drained(), Drained::Nobody);
        let j = hub.join("r1");
        assert_eq!(hub.drained(), Drained::Upto(0));
        assert!(hub.ack("r1", Some(1001), Some(1001)));
        assert_eq!(hub.drained(), Drained::Upto(1));
        hub.ack("r1", None, Some(1000));
        assert_eq!(hub.drained(), Drained::Upto(1), "never goes back");
        let j2 = hub.join("r2");
        assert_eq!(hub.drained(), Drained::Upto(0), "the slowest counts");
        drop(j2);
        assert_eq!(
            hub.drained(),
            Drained::Upto(0),
            "departed: still waited for"
        );
        let later = Instant::now() + FORGET_DEPARTED + Duration::from_secs(1);
        assert_eq!(hub.drained_at(later), Drained::Upto(1), "forgotten");
        drop(j);
        assert_eq!(hub.drained_at(later + FORGET_DEPARTED), Drained::Nobody);
    }

    /// An ack above what this run published (e.g. from a previous run with
    /// a higher version base: the clock stepped back) is ignored, not taken
    /// as "drained everything".
    #[test]
    fn acks_above_the_published_version_are_ignored() {
        let hub = Hub::new(1000, Duration::ZERO);
        publish_one(&hub);
        let _j = hub.join("r1");
        assert!(hub.ack("r1", Some(5000), Some(5000)));
        assert_eq!(hub.drained(), Drained::Upto(0));
        assert_eq!(hub.participants(), vec![("r1".to_string(), 1000, 1000)]);
        publish_one(&hub);
        assert!(hub.ack("r1", None, Some(1001)));
        assert_eq!(hub.drained(), Drained::Upto(1));
    }

    /// A participant is bound to the principal whose stream joined it:
    /// another principal can neither ack for it nor join with its id
    /// (connected or departed) until it is forgotten.
    #[test]
    fn a_participant_is_bound_to_the_principal_that_joined_it() {
        let hub = Hub::new(1000, Duration::ZERO);
        publish_one(&hub);
        let j = hub.join_as("r1", Some("router")).unwrap();
        let bound = hub.ack_as("r1", Some("dev"), Some(1001), Some(1001));
        assert_eq!(
            bound,
            Err(Bound {
                router: "r1".into(),
                principal: "dev".into()
            })
        );
        let msg = bound.unwrap_err().to_string();
        assert!(
            msg.contains("\"r1\"") && msg.contains("--router-id"),
            "{msg}"
        );
        assert_eq!(
            hub.drained(),
            Drained::Upto(0),
            "the refused ack is not counted"
        );
        assert!(hub.join_as("r1", Some("dev")).is_err(), "no take-over");
        assert_eq!(
            hub.ack_as("r1", Some("router"), Some(1001), Some(1001)),
            Ok(true)
        );
        assert_eq!(hub.drained(), Drained::Upto(1));
        // The same principal reconnects (overlapping streams too).
        let j2 = hub.join_as("r1", Some("router")).unwrap();
        drop(j);
        drop(j2);
        assert!(
            hub.join_as("r1", Some("dev")).is_err(),
            "departed: still bound"
        );
        let later = Instant::now() + FORGET_DEPARTED + Duration::from_secs(1);
        assert_eq!(hub.drained_at(later), Drained::Nobody, "forgotten");
        let _j = hub
            .join_as("r1", Some("dev"))
            .expect("released once forgotten");
        // Without tokens (no principal) nothing is bound.
        let _n = hub.join("r2");
        assert_eq!(hub.ack_as("r2", None, Some(1001), Some(1001)), Ok(true));
    }

    /// Fresh ids opened and closed in a loop do not grow the participants
    /// past [`MAX_PARTICIPANTS`]: the one that left first is forgotten,
    /// connected ones never are.
    #[test]
    fn participants_are_bounded() {
        let hub = Hub::new(1000, Duration::ZERO);
        let live = hub.join_as("live", Some("router")).unwrap();
        for i in 0..MAX_PARTICIPANTS + 100 {
            let j = hub.join_as(&format!("fake-{i}"), Some("dev")).unwrap();
            drop(j);
        }
        let ps = hub.participants();
        assert_eq!(ps.len(), MAX_PARTICIPANTS);
        assert!(ps.iter().any(|p| p.0 == "live"), "connected: kept");
        assert!(
            !ps.iter().any(|p| p.0 == "fake-0"),
            "the first to leave is forgotten first"
        );
        let last = format!("fake-{}", MAX_PARTICIPANTS + 99);
        assert!(ps.iter().any(|p| p.0 == last), "the newest is kept");
        // Still bound: making room never frees a connected id.
        assert!(hub.join_as("live", Some("dev")).is_err());
        // All connected: nothing to forget, the newcomer still joins.
        let hub = Hub::new(1000, Duration::ZERO);
        let held: Vec<Joined> = (0..MAX_PARTICIPANTS)
            .map(|i| hub.join(&format!("r{i}")))
            .collect();
        let _extra = hub.join("one-more");
        assert_eq!(hub.participants().len(), MAX_PARTICIPANTS + 1);
        drop(held);
        drop(live);
    }

    #[test]
    fn the_start_window_hides_the_participants() {
        let hub = Hub::new(0, START_WINDOW);
        assert_eq!(hub.drained(), Drained::Unknown);
        let _j = hub.join("r1");
        assert_eq!(hub.drained(), Drained::Unknown);
        let end = hub.next_change().unwrap();
        assert_eq!(hub.drained_at(end), Drained::Upto(0));
    }

    #[test]
    fn a_since_from_before_a_restart_gets_a_snapshot() {
        let hub = Hub::new(1_000_000, Duration::ZERO);
        let (start, _rx) = hub.subscribe(Some(5));
        assert!(matches!(start, Start::Snapshot(s) if s.version == 1_000_000));
        let (start, _rx) = hub.subscribe(Some(1_000_000));
        assert!(matches!(start, Start::Updates(u) if u.is_empty()));
    }
}
