//! What the router measures per app port (an [`EndpointKey`]), and the
//! requests it holds for ports scaled to zero.
//!
//! - Per app port and kind of router (edge, internal L7, L4): requests
//!   completed (a counter), requests in flight (a gauge) and latency, over a
//!   sliding window ([`LoadConfig::window`], [`DEFAULT_WINDOW`] by default) cut into
//!   [`SLOTS`] slots, so `rps` = requests completed in the window ÷ the
//!   window, and p50/p95 come from a log-linear latency histogram of the
//!   window (8 buckets per octave: a percentile is within 9 %, one
//!   bucket, of the true value). The slot that is leaving the window is
//!   counted in proportion to the part of it still inside.
//! - A request counts from the moment it is sent to an instance (after any
//!   hold) until its response body has ended (L4: its connection closed);
//!   its latency is the time to the response head (the same as the
//!   balancer's EWMA). L4 connections report no latency.
//! - Holding ([`PortLoad::hold`]): a port with `scale_to_zero` and no
//!   serving endpoint queues new requests (bounded by
//!   [`LoadConfig::hold_max`], each for at most [`LoadConfig::hold_timeout`])
//!   and wakes the load reporter at once; the router releases the queue in
//!   arrival order as soon as a view gives the port a serving endpoint, and
//!   records the cold start (first held request → released).
//!
//! The hot path takes one short mutex per app port and kind when a request
//! ends (the window's slot and histograms) and two atomic adds; nothing is
//! allocated per request (a held request allocates its wake-up channel).
//!
//! [`report`] posts [`LoadReport`]s to the services framework;
//! [`PortLoad::write_metrics`] writes the Prometheus text of `/metrics`.

pub mod report;

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use agora_core::endpoints::{EndpointKey, SetLoad};
use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;

/// Slots the window is cut into (its resolution is a tenth of it).
pub const SLOTS: u64 = 10;

/// Latency histogram of the window: bucket 0 is below [`LAT_BASE_US`], bucket
/// `i ≥ 1` is `[base·2^((i-1)/8), base·2^(i/8))` µs, the last one open.
const LAT_BASE_US: f64 = 100.0;
const LAT_PER_OCTAVE: f64 = 8.0;
/// 100 µs · 2^(162/8) ≈ 122 s.
const LAT_BUCKETS: usize = 164;

/// Upper bounds (seconds) of `agora_router_request_duration_seconds`.
const PROM_LATENCY: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Upper bounds (seconds) of `agora_router_cold_start_seconds`.
const PROM_COLD: [f64; 10] = [0.5, 1.0, 2.0, 5.0, 10.0, 15.0, 20.0, 30.0, 60.0, 120.0];

/// The default sliding window. Short on purpose: after a load step the
/// windowed rate reaches the step's rate after one window, so the window
/// bounds how fast an autoscaler can react (3 s: a step to three times the
/// target is seen within about 1.5 s). Scale-downs do not follow it: the
/// autoscaler stabilises them over minutes.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(3);

/// How load is measured and requests are held (router-wide).
#[derive(Clone, Copy, Debug)]
pub struct LoadConfig {
    /// The sliding window of rates and latency percentiles.
    pub window: Duration,
    /// Requests (L4: connections) held at once per app port with no
    /// serving endpoint; more get 503 with `Retry-After` (L4: closed).
    pub hold_max: usize,
    /// How long one request is held at most; then 503 with `Retry-After`
    /// (L4: closed).
    pub hold_timeout: Duration,
}

impl Default for LoadConfig {
    fn default() -> Self {
        LoadConfig {
            window: DEFAULT_WINDOW,
            hold_max: 1000,
            hold_timeout: Duration::from_secs(60),
        }
    }
}

/// Which proxy carried a request: the `router_kind` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Edge = 0,
    Internal = 1,
    L4 = 2,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Edge, Kind::Internal, Kind::L4];

    pub fn label(self) -> &'static str {
        match self {
            Kind::Edge => "edge",
            Kind::Internal => "internal",
            Kind::L4 => "l4",
        }
    }
}

/// One slot of the window.
#[derive(Clone)]
struct Slot {
    /// Which slot of time (`elapsed / slot length`) it holds.
    epoch: u64,
    count: u64,
    lat: [u32; LAT_BUCKETS],
}

/// A Prometheus histogram's counts (cumulative buckets are computed when
/// written).
#[derive(Clone, Debug)]
struct PromHist<const N: usize> {
    buckets: [u64; N],
    /// Above the last bound.
    over: u64,
    sum: f64,
    count: u64,
}

impl<const N: usize> Default for PromHist<N> {
    fn default() -> Self {
        PromHist {
            buckets: [0; N],
            over: 0,
            sum: 0.0,
            count: 0,
        }
    }
}

impl<const N: usize> PromHist<N> {
    fn observe(&mut self, bounds: &[f64; N], v: f64) {
        match bounds.iter().position(|b| v <= *b) {
            Some(i) => self.buckets[i] += 1,
            None => self.over += 1,
        }
        self.sum += v;
        self.count += 1;
    }

    fn write(&self, out: &mut String, name: &str, labels: &str, bounds: &[f64; N]) {
        let mut cum = 0;
        for (b, n) in bounds.iter().zip(self.buckets) {
            cum += n;
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{b}\"}} {cum}");
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels},le=\"+Inf\"}} {}",
            cum + self.over
        );
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", self.sum);
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", self.count);
    }
}

#[derive(Default)]
struct KindWindow {
    /// `SLOTS + 1` slots once the first request ended (allocated once).
    ring: Vec<Slot>,
    latency: PromHist<11>,
}

/// One app port's numbers for one kind of router.
#[derive(Default)]
struct KindLoad {
    in_flight: AtomicU64,
    /// Requests completed since the router started (the counter).
    total: AtomicU64,
    window: Mutex<KindWindow>,
}

/// What the window says at one instant.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WindowLoad {
    pub requests: u64,
    pub rps: f64,
    pub in_flight: u64,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
}

/// Held requests of one port, in arrival order.
#[derive(Default)]
struct HoldQueue {
    waiters: VecDeque<oneshot::Sender<()>>,
    /// When the current streak of holding began (the first held request).
    since: Option<Instant>,
    cold: PromHist<10>,
}

/// The measurements and the hold queue of one app port. It lives as long
/// as the port is in the views (across table rebuilds) and is shared by
/// every proxy of the router.
pub struct PortLoad {
    key: EndpointKey,
    epoch: Instant,
    slot: Duration,
    window: Duration,
    kinds: [KindLoad; 3],
    held: AtomicU64,
    queue: Mutex<HoldQueue>,
    /// Wakes the load reporter (a report goes out at once on a new hold).
    wake: Arc<Notify>,
}

impl std::fmt::Debug for PortLoad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PortLoad")
            .field("key", &self.key)
            .field("held", &self.held.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// Why a request was not held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldError {
    /// `hold_max` requests are held for the port already.
    Full,
    /// Held for `hold_timeout` without a serving endpoint.
    TimedOut,
}

/// A request's place in a port's hold queue; dropping it leaves the queue.
pub struct Held {
    port: Arc<PortLoad>,
    rx: oneshot::Receiver<()>,
}

impl Held {
    /// Waits until the router releases the queue (a serving endpoint
    /// appeared) or `deadline`.
    pub async fn released(&mut self, deadline: Instant) -> Result<(), HoldError> {
        match tokio::time::timeout_at(deadline, &mut self.rx).await {
            Ok(_) => Ok(()),
            Err(_) => Err(HoldError::TimedOut),
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.port.held.fetch_sub(1, Ordering::SeqCst);
    }
}

impl PortLoad {
    /// A port measured over `window`, its clock counting from `epoch`.
    pub fn new(key: EndpointKey, window: Duration, epoch: Instant, wake: Arc<Notify>) -> PortLoad {
        let window = window.max(Duration::from_millis(SLOTS));
        PortLoad {
            key,
            epoch,
            slot: window / SLOTS as u32,
            window,
            kinds: Default::default(),
            held: AtomicU64::new(0),
            queue: Mutex::default(),
            wake,
        }
    }

    pub fn key(&self) -> &EndpointKey {
        &self.key
    }

    /// Requests held now.
    pub fn held(&self) -> u64 {
        self.held.load(Ordering::SeqCst)
    }

    /// Requests in flight now through `kind`.
    pub fn in_flight(&self, kind: Kind) -> u64 {
        self.kinds[kind as usize].in_flight.load(Ordering::Relaxed)
    }

    /// Requests completed through `kind` since the router started.
    pub fn total(&self, kind: Kind) -> u64 {
        self.kinds[kind as usize].total.load(Ordering::Relaxed)
    }

    /// (slot epoch, fraction of the slot elapsed) at `now`.
    fn slot_at(&self, now: Instant) -> (u64, f64) {
        let e = now.saturating_duration_since(self.epoch).as_nanos();
        let s = self.slot.as_nanos().max(1);
        ((e / s) as u64, (e % s) as f64 / s as f64)
    }

    /// A request (L4: a connection) ended at `now`; `latency` for L7.
    pub fn record_at(&self, kind: Kind, now: Instant, latency: Option<Duration>) {
        let k = &self.kinds[kind as usize];
        k.total.fetch_add(1, Ordering::Relaxed);
        let (epoch, _) = self.slot_at(now);
        let mut w = k.window.lock().unwrap_or_else(|e| e.into_inner());
        if w.ring.is_empty() {
            w.ring = vec![
                Slot {
                    epoch: u64::MAX,
                    count: 0,
                    lat: [0; LAT_BUCKETS],
                };
                SLOTS as usize + 1
            ];
        }
        let slot = &mut w.ring[(epoch % (SLOTS + 1)) as usize];
        if slot.epoch != epoch {
            slot.epoch = epoch;
            slot.count = 0;
            slot.lat = [0; LAT_BUCKETS];
        }
        slot.count += 1;
        if let Some(l) = latency {
            slot.lat[lat_bucket(l)] = slot.lat[lat_bucket(l)].saturating_add(1);
            w.latency.observe(&PROM_LATENCY, l.as_secs_f64());
        }
    }

    /// The window at `now` for the kinds in `kinds` together.
    pub fn window_at(&self, kinds: &[Kind], now: Instant) -> WindowLoad {
        let (cur, frac) = self.slot_at(now);
        let mut count = 0.0;
        let mut lat = [0f64; LAT_BUCKETS];
        let mut in_flight = 0;
        for &kind in kinds {
            let k = &self.kinds[kind as usize];
            in_flight += k.in_flight.load(Ordering::Relaxed);
            let w = k.window.lock().unwrap_or_else(|e| e.into_inner());
            for s in &w.ring {
                // The current slot and the SLOTS - 1 before it count whole;
                // the one leaving the window in proportion to what is left.
                let weight = if s.epoch == u64::MAX || s.epoch > cur {
                    0.0
                } else if cur - s.epoch < SLOTS {
                    1.0
                } else if cur - s.epoch == SLOTS {
                    1.0 - frac
                } else {
                    0.0
                };
                if weight == 0.0 {
                    continue;
                }
                count += s.count as f64 * weight;
                for (t, &n) in lat.iter_mut().zip(&s.lat) {
                    *t += f64::from(n) * weight;
                }
            }
        }
        let requests = count.round() as u64;
        WindowLoad {
            requests,
            rps: count / self.window.as_secs_f64(),
            in_flight,
            p50_ms: percentile(&lat, 0.50),
            p95_ms: percentile(&lat, 0.95),
        }
    }

    /// This port in a load report, at `now`.
    pub fn set_load_at(&self, now: Instant) -> SetLoad {
        let w = self.window_at(&Kind::ALL, now);
        SetLoad {
            key: self.key.clone(),
            requests: w.requests,
            rps: w.rps,
            in_flight: w.in_flight,
            latency_p50_ms: w.p50_ms,
            latency_p95_ms: w.p95_ms,
            held: self.held(),
        }
    }

    /// Queues a request for a serving endpoint (the port has none). The
    /// caller must look at the routes again after this returns: a view
    /// that gave the port an endpoint just before may have released the
    /// queue already.
    pub fn hold(self: &Arc<Self>, max: usize) -> Result<Held, HoldError> {
        let before = self.held.fetch_add(1, Ordering::SeqCst);
        if before >= max as u64 {
            self.held.fetch_sub(1, Ordering::SeqCst);
            return Err(HoldError::Full);
        }
        let (tx, rx) = oneshot::channel();
        {
            let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
            if before == 0 || q.since.is_none() {
                // A new streak: waiters left over from one that timed out
                // are gone.
                q.waiters.retain(|w| !w.is_closed());
                if q.waiters.is_empty() {
                    q.since = Some(Instant::now());
                }
            }
            // Requests that timed out or whose client left stay in the
            // queue until it is released; while requests keep being held
            // (an app that does not come up under a trickle of requests)
            // that may be never. At most `max` are live, so pruning at
            // `max` entries keeps the queue under 2 × `max`.
            if q.waiters.len() >= max.max(1) {
                q.waiters.retain(|w| !w.is_closed());
            }
            q.waiters.push_back(tx);
        }
        if before == 0 {
            tracing::info!(app = %self.key.app_id, port = self.key.port_index,
                "no serving instance: holding requests until one serves (reporting held to wake the app)");
        }
        self.wake.notify_one();
        Ok(Held {
            port: self.clone(),
            rx,
        })
    }

    /// The port has a serving endpoint (`served`; or it is gone): held
    /// requests go on, in arrival order, and the cold start is recorded.
    pub(crate) fn release(&self, now: Instant, served: bool) {
        let (waiters, since) = {
            let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
            if q.waiters.is_empty() {
                return;
            }
            let waiters = std::mem::take(&mut q.waiters);
            let live = waiters.iter().filter(|w| !w.is_closed()).count();
            let since = q.since.take().filter(|_| live > 0 && served);
            if let Some(s) = since {
                q.cold
                    .observe(&PROM_COLD, now.saturating_duration_since(s).as_secs_f64());
            }
            (waiters, since.map(|s| (s, live)))
        };
        if let Some((s, live)) = since {
            tracing::info!(app = %self.key.app_id, port = self.key.port_index,
                cold_start_s = now.saturating_duration_since(s).as_secs_f64(),
                forwarded = live, "cold start: held requests forwarded to the first serving instance");
        }
        for w in waiters {
            let _ = w.send(());
        }
    }

    /// Writes this port's series of `/metrics` (one family at a time: see
    /// [`write_metrics`]).
    fn write_family(&self, fam: Family, out: &mut String) {
        let app = escape_label(&self.key.app_id);
        let port = self.key.port_index;
        match fam {
            Family::Held => {
                let _ = writeln!(
                    out,
                    "agora_router_held_requests{{app=\"{app}\",port=\"{port}\"}} {}",
                    self.held()
                );
            }
            Family::Cold => {
                let q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
                if q.cold.count > 0 {
                    let labels = format!("app=\"{app}\",port=\"{port}\"");
                    q.cold
                        .write(out, "agora_router_cold_start_seconds", &labels, &PROM_COLD);
                }
            }
            Family::Requests | Family::InFlight | Family::Duration => {
                for kind in Kind::ALL {
                    let k = &self.kinds[kind as usize];
                    let (total, fl) = (
                        k.total.load(Ordering::Relaxed),
                        k.in_flight.load(Ordering::Relaxed),
                    );
                    // A kind that never carried a request has no series.
                    if total == 0 && fl == 0 {
                        continue;
                    }
                    let labels = format!(
                        "app=\"{app}\",port=\"{port}\",router_kind=\"{}\"",
                        kind.label()
                    );
                    match fam {
                        Family::Requests => {
                            let _ =
                                writeln!(out, "agora_router_requests_total{{{labels}}} {total}");
                        }
                        Family::InFlight => {
                            let _ =
                                writeln!(out, "agora_router_requests_in_flight{{{labels}}} {fl}");
                        }
                        _ => {
                            if kind == Kind::L4 {
                                continue;
                            }
                            let w = k.window.lock().unwrap_or_else(|e| e.into_inner());
                            w.latency.write(
                                out,
                                "agora_router_request_duration_seconds",
                                &labels,
                                &PROM_LATENCY,
                            );
                        }
                    }
                }
            }
        }
    }
}

#[derive(Clone, Copy)]
enum Family {
    Requests,
    InFlight,
    Duration,
    Held,
    Cold,
}

/// The Prometheus text (format 0.0.4) of every port in `ports`.
pub fn write_metrics<'a>(ports: impl Iterator<Item = &'a Arc<PortLoad>> + Clone, out: &mut String) {
    let families = [
        (
            Family::Requests,
            "agora_router_requests_total",
            "counter",
            "Requests (L4: connections) completed per app port and kind of router.",
        ),
        (
            Family::InFlight,
            "agora_router_requests_in_flight",
            "gauge",
            "Requests (L4: connections) in flight to an app port's instances.",
        ),
        (
            Family::Duration,
            "agora_router_request_duration_seconds",
            "histogram",
            "Time from sending a request to an instance to its response head (L7 only).",
        ),
        (
            Family::Held,
            "agora_router_held_requests",
            "gauge",
            "Requests (L4: connections) held now for an app port with no serving instance (scale to zero).",
        ),
        (
            Family::Cold,
            "agora_router_cold_start_seconds",
            "histogram",
            "Time from the first held request of an app port to its forwarding to the first serving instance.",
        ),
    ];
    for (fam, name, kind, help) in families {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for p in ports.clone() {
            p.write_family(fam, out);
        }
    }
}

/// One request (L4: connection) in flight to an app port through one kind
/// of router; dropping it records it as completed.
pub struct RequestLoad {
    port: Arc<PortLoad>,
    kind: Kind,
    started: Instant,
    latency: Option<Duration>,
}

impl std::fmt::Debug for RequestLoad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestLoad")
            .field("key", &self.port.key)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl RequestLoad {
    /// Counts a request in flight now.
    pub fn begin(port: &Arc<PortLoad>, kind: Kind) -> RequestLoad {
        port.kinds[kind as usize]
            .in_flight
            .fetch_add(1, Ordering::Relaxed);
        RequestLoad {
            port: port.clone(),
            kind,
            started: Instant::now(),
            latency: None,
        }
    }

    /// The response head arrived: its latency is now.
    pub fn head(&mut self, now: Instant) {
        self.latency = Some(now.saturating_duration_since(self.started));
    }
}

impl Drop for RequestLoad {
    fn drop(&mut self) {
        self.port.kinds[self.kind as usize]
            .in_flight
            .fetch_sub(1, Ordering::Relaxed);
        let now = Instant::now();
        let latency = match self.kind {
            Kind::L4 => None,
            // An answer without a head (an error of the router's own):
            // the time until it gave up.
            _ => Some(
                self.latency
                    .unwrap_or_else(|| now.saturating_duration_since(self.started)),
            ),
        };
        self.port.record_at(self.kind, now, latency);
    }
}

fn lat_bucket(l: Duration) -> usize {
    let us = l.as_secs_f64() * 1e6;
    if us < LAT_BASE_US {
        return 0;
    }
    let i = ((us / LAT_BASE_US).log2() * LAT_PER_OCTAVE).floor() as usize + 1;
    i.min(LAT_BUCKETS - 1)
}

/// Bucket `i`'s bounds in milliseconds.
fn lat_bounds(i: usize) -> (f64, f64) {
    let at = |j: usize| LAT_BASE_US * 2f64.powf(j as f64 / LAT_PER_OCTAVE) / 1000.0;
    if i == 0 {
        (0.0, LAT_BASE_US / 1000.0)
    } else {
        (at(i - 1), at(i))
    }
}

/// The `q` quantile in milliseconds, interpolated inside its bucket;
/// `None` without samples.
fn percentile(lat: &[f64; LAT_BUCKETS], q: f64) -> Option<f64> {
    let total: f64 = lat.iter().sum();
    if total < 0.5 {
        return None;
    }
    let rank = q * total;
    let mut cum = 0.0;
    for (i, &n) in lat.iter().enumerate() {
        if n <= 0.0 {
            continue;
        }
        if cum + n >= rank {
            let (lo, hi) = lat_bounds(i);
            let within = ((rank - cum) / n).clamp(0.0, 1.0);
            return Some(lo + (hi - lo) * within);
        }
        cum += n;
    }
    let last = lat.iter().rposition(|n| *n > 0.0)?;
    Some(lat_bounds(last).1)
}

/// A Prometheus label value: `\`, `"` and newlines escaped.
pub fn escape_label(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => o.push_str("\\\\"),
            '"' => o.push_str("\\\""),
            '\n' => o.push_str("\\n"),
            c => o.push(c),
        }
    }
    o
}

#[cfg(test)]
mod tests;
