//! Load balancing over the serving endpoints of one app port.
//!
//! Power of two choices: two endpoints drawn at random, the one with fewer
//! requests outstanding wins, ties go to the lower EWMA of latency. Passive
//! outlier ejection: an endpoint that fails `consecutive_failures` times in
//! a row is left out for a back-off that doubles with every ejection (capped)
//! and comes back on its own when it runs out. Only serving endpoints are in
//! a [`Balancer`]; draining ones are never chosen.
//!
//! The hot path is lock-free: a pick reads a few atomics and bumps the
//! chosen endpoint's in-flight count; the [`InFlight`] guard it returns
//! gives the count back when dropped.

use std::cell::Cell;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::proxy::pool::Idle;

/// Identity of an endpoint: a task's host port. Balancer state (in-flight
/// count, latency, ejection) follows it from one view to the next.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct EndpointId {
    pub task_id: Box<str>,
    pub host: Box<str>,
    pub port: u16,
}

/// When passive outlier ejection takes an endpoint out, and for how long.
#[derive(Clone, Copy, Debug)]
pub struct OutlierPolicy {
    /// Failures in a row (connect errors, timeouts, 502/503/504 answers)
    /// that eject an endpoint.
    pub consecutive_failures: u32,
    /// The first ejection's length; each further one doubles it.
    pub base_ejection: Duration,
    /// The longest ejection. An endpoint that has worked for this long
    /// since its last ejection starts again from `base_ejection`.
    pub max_ejection: Duration,
}

impl Default for OutlierPolicy {
    fn default() -> Self {
        OutlierPolicy {
            consecutive_failures: 5,
            base_ejection: Duration::from_secs(1),
            max_ejection: Duration::from_secs(30),
        }
    }
}

/// One endpoint and what the balancer knows about it.
#[derive(Debug)]
pub struct Backend {
    id: EndpointId,
    /// The address when the host is an IP literal (no resolution needed).
    addr: Option<SocketAddr>,
    in_flight: AtomicUsize,
    /// EWMA of latency in nanoseconds (0: no sample yet).
    ewma_ns: AtomicU64,
    failures: AtomicU32,
    /// Ejected until this many nanoseconds after the clock's epoch (0: never).
    ejected_until: AtomicU64,
    ejections: AtomicU32,
    /// No longer serving in the current routes; the router waits for its
    /// in-flight count to reach zero before acknowledging the drain.
    retired: AtomicBool,
    drain: Arc<Notify>,
    epoch: Instant,
    policy: OutlierPolicy,
    /// Idle keep-alive connections of the L7 proxy to this endpoint.
    pub(crate) idle: Idle,
}

impl Backend {
    /// A backend whose clock counts from `epoch`; `drain` is notified when
    /// the backend is retired and its last in-flight request ends.
    pub fn new(id: EndpointId, epoch: Instant, policy: OutlierPolicy, drain: Arc<Notify>) -> Self {
        let addr = id
            .host
            .parse::<std::net::IpAddr>()
            .ok()
            .map(|ip| SocketAddr::new(ip, id.port));
        Backend {
            id,
            addr,
            in_flight: AtomicUsize::new(0),
            ewma_ns: AtomicU64::new(0),
            failures: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            ejections: AtomicU32::new(0),
            retired: AtomicBool::new(false),
            drain,
            epoch,
            policy,
            idle: Idle::default(),
        }
    }

    pub fn id(&self) -> &EndpointId {
        &self.id
    }

    /// The socket address, when the host is an IP literal.
    pub fn addr(&self) -> Option<SocketAddr> {
        self.addr
    }

    /// Requests (or L4 connections) in flight to this endpoint.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// The latency EWMA (zero before the first sample).
    pub fn ewma(&self) -> Duration {
        Duration::from_nanos(self.ewma_ns.load(Ordering::Relaxed))
    }

    pub fn is_retired(&self) -> bool {
        self.retired.load(Ordering::SeqCst)
    }

    pub(crate) fn retire(&self) {
        self.retired.store(true, Ordering::SeqCst);
    }

    fn nanos(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_nanos() as u64
    }

    /// Whether passive ejection keeps it out at `now`.
    pub fn is_ejected(&self, now: Instant) -> bool {
        self.ejected_until.load(Ordering::Relaxed) > self.nanos(now)
    }

    /// A request (or connection) to it worked; `latency` feeds the EWMA.
    pub fn success(&self, latency: Duration, now: Instant) {
        let sample = latency.as_nanos().max(1) as u64;
        let old = self.ewma_ns.load(Ordering::Relaxed);
        let new = if old == 0 {
            sample
        } else {
            // alpha = 1/4
            (old as i64 + (sample as i64 - old as i64) / 4) as u64
        };
        self.ewma_ns.store(new.max(1), Ordering::Relaxed);
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
        }
        if self.ejections.load(Ordering::Relaxed) != 0 {
            let until = self.ejected_until.load(Ordering::Relaxed);
            if self.nanos(now) > until.saturating_add(self.policy.max_ejection.as_nanos() as u64) {
                self.ejections.store(0, Ordering::Relaxed);
            }
        }
    }

    /// A request (or connection) to it failed. Returns true when this
    /// failure ejected it.
    pub fn failure(&self, now: Instant) -> bool {
        // A failure counts as a very slow answer: the EWMA doubles, to at
        // least 100 ms (at most 10 s), so a failing endpoint loses ties
        // before it is ejected, and successes bring it back down.
        let old = self.ewma_ns.load(Ordering::Relaxed);
        let penalty = old.saturating_mul(2).clamp(100_000_000, 10_000_000_000);
        self.ewma_ns.store(penalty, Ordering::Relaxed);
        if self.is_ejected(now) {
            return false;
        }
        let n = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if n < self.policy.consecutive_failures.max(1) {
            return false;
        }
        self.failures.store(0, Ordering::Relaxed);
        let k = self.ejections.fetch_add(1, Ordering::Relaxed).min(20);
        let length = self
            .policy
            .base_ejection
            .saturating_mul(1 << k)
            .min(self.policy.max_ejection);
        let until = self.nanos(now).saturating_add(length.as_nanos() as u64);
        self.ejected_until.store(until.max(1), Ordering::Relaxed);
        tracing::warn!(
            task = %self.id.task_id, host = %self.id.host, port = self.id.port,
            seconds = length.as_secs_f64(),
            "endpoint ejected after {n} consecutive failures"
        );
        true
    }
}

/// One request (or L4 connection) in flight to a backend; dropping it ends it.
#[derive(Debug)]
pub struct InFlight {
    backend: Arc<Backend>,
}

impl InFlight {
    /// Counts a request in flight to `backend`, unless the backend has been
    /// retired (the routes changed under the caller): then `None`.
    ///
    /// The increment and the check are both sequentially consistent, and
    /// the router retires first and reads the count after: either the
    /// request sees the retirement and backs off, or the router sees the
    /// request and waits for it before acknowledging the drain.
    pub fn begin(backend: &Arc<Backend>) -> Option<InFlight> {
        backend.in_flight.fetch_add(1, Ordering::SeqCst);
        let guard = InFlight {
            backend: backend.clone(),
        };
        if backend.retired.load(Ordering::SeqCst) {
            return None; // the guard's drop gives the count back
        }
        Some(guard)
    }

    pub fn backend(&self) -> &Arc<Backend> {
        &self.backend
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let before = self.backend.in_flight.fetch_sub(1, Ordering::SeqCst);
        if before == 1 && self.backend.retired.load(Ordering::SeqCst) {
            self.backend.drain.notify_one();
        }
    }
}

/// The serving endpoints of one app port.
#[derive(Debug, Default)]
pub struct Balancer {
    backends: Box<[Arc<Backend>]>,
}

impl Balancer {
    pub fn new(backends: Vec<Arc<Backend>>) -> Balancer {
        Balancer {
            backends: backends.into_boxed_slice(),
        }
    }

    pub fn backends(&self) -> &[Arc<Backend>] {
        &self.backends
    }

    pub fn is_empty(&self) -> bool {
        self.backends.is_empty()
    }

    /// Picks an endpoint for a new request now, skipping those in `tried`.
    pub fn pick(&self, tried: &[Arc<Backend>]) -> Option<InFlight> {
        self.pick_at(Instant::now(), tried)
    }

    /// Picks an endpoint at `now`: the better of two random candidates
    /// among the endpoints not in `tried` and not ejected (or, when every
    /// one left is ejected, among all of them: ejection never empties a
    /// set). `None` when no endpoint is left.
    pub fn pick_at(&self, now: Instant, tried: &[Arc<Backend>]) -> Option<InFlight> {
        let n = self.backends.len();
        if n == 0 {
            return None;
        }
        let skip = |b: &Arc<Backend>| tried.iter().any(|t| Arc::ptr_eq(t, b));
        let mut best = None;
        for honour_ejection in [true, false] {
            let ok = |b: &Arc<Backend>| !(skip(b) || honour_ejection && b.is_ejected(now));
            let (r1, r2) = two_random(n);
            let Some(a) = scan(&self.backends, r1, usize::MAX, &ok) else {
                continue;
            };
            let b = if n > 1 {
                scan(&self.backends, r2, a, &ok)
            } else {
                None
            };
            best = Some(match b {
                Some(b) if better(&self.backends[b], &self.backends[a]) => b,
                _ => a,
            });
            break;
        }
        let first = best?;
        if let Some(g) = InFlight::begin(&self.backends[first]) {
            return Some(g);
        }
        // Retired under us (stale routes): any other one that is not.
        self.backends
            .iter()
            .filter(|b| !skip(b) && !Arc::ptr_eq(b, &self.backends[first]))
            .find_map(InFlight::begin)
    }
}

/// The first index from `start` (wrapping) that is not `not` and passes `ok`.
fn scan(
    backends: &[Arc<Backend>],
    start: usize,
    not: usize,
    ok: &impl Fn(&Arc<Backend>) -> bool,
) -> Option<usize> {
    let n = backends.len();
    (0..n)
        .map(|i| (start + i) % n)
        .find(|&i| i != not && ok(&backends[i]))
}

/// Fewer requests outstanding wins; on a tie, the lower latency EWMA.
fn better(x: &Backend, y: &Backend) -> bool {
    let (xi, yi) = (
        x.in_flight.load(Ordering::Relaxed),
        y.in_flight.load(Ordering::Relaxed),
    );
    xi < yi || (xi == yi && x.ewma_ns.load(Ordering::Relaxed) < y.ewma_ns.load(Ordering::Relaxed))
}

thread_local! {
    static RNG: Cell<u64> = Cell::new(RandomState::new().hash_one(0u64) | 1);
}

/// Two random indices below `n` (xorshift64*, per thread).
fn two_random(n: usize) -> (usize, usize) {
    RNG.with(|c| {
        let mut x = c.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        c.set(x);
        let r = x.wrapping_mul(0x2545_F491_4F6C_DD1D);
        let a = (r >> 32) as usize % n;
        let b = (r & 0xffff_ffff) as usize % n;
        (a, b)
    })
}

#[cfg(test)]
mod tests;
