//! A deterministic simulator for the master's state machine.
//!
//! The real [`Master`] runs against modelled agents and frameworks that
//! behave like Agora's (at-least-once status updates kept until
//! acknowledged, checkpointed tasks that survive disconnections, schedulers
//! that keep N instances, reconcile, suppress when satisfied and kill tasks
//! they do not know). Messages from the master travel through per-stream
//! FIFO queues delivered in a random order; the registry write that admits
//! an agent completes at a random later step. A seeded RNG picks the events:
//! agents joining, disconnecting, being partitioned, restarting, reporting
//! tasks that ended or vanished while they were away; frameworks failing
//! over (with valid and invalid resubscriptions), reconciling, killing,
//! suppressing, reviving, scaling, tearing down; the master restarting from
//! its registry; the clock advancing past filters, offer, agent and failover
//! timeouts. After every step the invariants of [`check`] must hold; at the
//! end the cluster is healed and must settle into the state every party
//! agrees on.
//!
//! A failing run prints its seed; `AGORA_SIM_SEED=<seed>` replays exactly
//! that run (the master's maps use a fixed hash seed, and nothing here
//! depends on the wall clock).

pub mod agent;
pub mod check;
pub mod framework;

use agent::SimAgent;
use agora_core::protocol::{Event, MasterMessage};
use agora_core::{FrameworkId, OfferId, Resources, TaskId};
use agora_master::MasterConfig;
use agora_master::state::{ConnId, Master, Output, Pending};
use agora_master::store::{MemoryRegistry, Registry};
use framework::SimFramework;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

/// splitmix64: small, fast, and the same everywhere.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

/// The wall-clock time the simulation starts at (seconds since the epoch).
pub const EPOCH: f64 = 1_800_000_000.0;

/// Roles of frameworks (in turn) and of agents' reservations (at random):
/// `*` is unreserved.
pub const ROLES: [&str; 3] = ["*", "web", "public"];

/// The size of every task the simulated frameworks launch.
pub fn task_resources() -> Resources {
    Resources::new(0.5, 64, 0).expect("valid")
}

/// A message in flight from the master.
#[derive(Debug)]
pub enum Msg {
    Fw(Event),
    Ag(MasterMessage),
}

/// One stream from the master: queued messages, and whether the master
/// closed it (the other end sees the end once the queue is drained).
#[derive(Default)]
pub struct Stream {
    pub queue: VecDeque<Msg>,
    pub closing: bool,
}

pub struct Sim {
    pub rng: Rng,
    pub m: Master,
    pub cfg: MasterConfig,
    pub registry: MemoryRegistry,
    /// Admissions whose registry write has not completed yet.
    pub pending_writes: Vec<Pending>,
    pub now: Instant,
    /// When the simulation started, and the wall-clock time it stands for.
    pub start: Instant,
    /// Offers sent on each framework stream (every outstanding offer of a
    /// framework must have been sent on its current stream).
    pub sent_offers: BTreeMap<ConnId, BTreeSet<OfferId>>,
    /// The agent (host name) of every offer sent.
    pub offer_hosts: BTreeMap<OfferId, String>,
    /// Tasks the current master told their framework ended (terminal or
    /// unknown): it must never report them adopted afterwards.
    pub told_ended: BTreeMap<(FrameworkId, TaskId), String>,
    pub next_conn: ConnId,
    pub streams: BTreeMap<ConnId, Stream>,
    pub agents: Vec<SimAgent>,
    pub fws: Vec<SimFramework>,
    /// What happened, for the report of a failing run.
    pub log: Vec<String>,
    pub master_restarts: u32,
}

impl Sim {
    pub fn new(seed: u64) -> Self {
        assert!(
            agora_master::state::use_fixed_hash_seed(0),
            "the master's hash seed must be fixed for replayable runs"
        );
        let now = Instant::now();
        let cfg = MasterConfig {
            master_id: "m0".into(),
            agent_heartbeat_interval: Duration::from_secs(1),
            agent_timeout: Duration::from_secs(5),
            framework_heartbeat_interval: Duration::from_secs(15),
            offer_timeout: Some(Duration::from_secs(8)),
            allocation_interval: Duration::from_secs(1),
            completed_tasks_per_framework: 50,
            max_completed_frameworks: 3,
            agent_gc_after: Duration::from_secs(60),
            agent_reregister_timeout: Duration::from_secs(20),
            ..MasterConfig::default()
        };
        Sim {
            rng: Rng::new(seed),
            m: Master::with_clock(cfg.clone(), vec![], now, EPOCH),
            cfg,
            registry: MemoryRegistry::default(),
            pending_writes: Vec::new(),
            now,
            start: now,
            sent_offers: BTreeMap::new(),
            offer_hosts: BTreeMap::new(),
            told_ended: BTreeMap::new(),
            next_conn: 0,
            streams: BTreeMap::new(),
            agents: Vec::new(),
            fws: Vec::new(),
            log: Vec::new(),
            master_restarts: 0,
        }
    }

    pub fn note(&mut self, s: impl Into<String>) {
        self.log.push(s.into());
    }

    pub fn conn(&mut self) -> ConnId {
        self.next_conn += 1;
        self.streams.insert(self.next_conn, Stream::default());
        self.next_conn
    }

    /// Performs the master's outputs the way the actor does, then checks the
    /// invariants.
    pub fn absorb(&mut self, out: Vec<Output>) -> Result<(), String> {
        for o in out {
            {
                match o {
                    Output::ToFramework(c, ev) => {
                        check::truthful_update(self, &ev)?;
                        check::never_revived(self, c, &ev)?;
                        if let Event::Offers(list) = &ev {
                            check::offers_respect_reservations(self, c, list)?;
                            let sent = self.sent_offers.entry(c).or_default();
                            sent.extend(list.iter().map(|o| o.id.clone()));
                            for o in list {
                                self.offer_hosts.insert(o.id.clone(), o.hostname.clone());
                            }
                        }
                        if let Some(s) = self.streams.get_mut(&c)
                            && !s.closing
                        {
                            s.queue.push_back(Msg::Fw(ev));
                        }
                    }
                    Output::ToAgent(c, msg) => {
                        if let Some(s) = self.streams.get_mut(&c)
                            && !s.closing
                        {
                            s.queue.push_back(Msg::Ag(msg));
                        }
                    }
                    Output::CloseFramework(c) | Output::CloseAgent(c) => {
                        if let Some(s) = self.streams.get_mut(&c) {
                            s.closing = true;
                        }
                    }
                    Output::Persist(op, pending) => {
                        self.registry
                            .apply(std::slice::from_ref(&op))
                            .map_err(|e| e.to_string())?;
                        self.pending_writes.extend(pending);
                    }
                }
            }
        }
        // Registry writes complete later (`complete_write`); nothing else
        // feeds back synchronously.
        check::after_step(self)
    }

    /// Delivers up to `n` messages of stream `c` (and its end, if closed).
    pub fn deliver(&mut self, c: ConnId, n: usize) -> Result<(), String> {
        for k in 0..n {
            if k == 100_000 {
                let s = self
                    .streams
                    .get(&c)
                    .map(|s| format!("{:?}", s.queue.front()));
                return Err(format!("stream {c} never drains; next: {s:?}"));
            }
            let Some(s) = self.streams.get_mut(&c) else {
                return Ok(());
            };
            match s.queue.pop_front() {
                Some(Msg::Fw(ev)) => {
                    if let Some(i) = self.fws.iter().position(|f| f.conn == Some(c)) {
                        framework::on_event(self, i, ev)?;
                    }
                }
                Some(Msg::Ag(msg)) => {
                    if let Some(i) = self.agents.iter().position(|a| a.conn == Some(c)) {
                        agent::on_message(self, i, msg)?;
                    }
                }
                None => {
                    if s.closing {
                        self.streams.remove(&c);
                        self.stream_ended(c);
                    }
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// The other end sees its stream end.
    fn stream_ended(&mut self, c: ConnId) {
        for f in &mut self.fws {
            if f.conn == Some(c) {
                f.lost_stream();
            }
        }
        for a in &mut self.agents {
            if a.conn == Some(c) {
                a.conn = None;
            }
        }
    }

    pub fn deliver_all(&mut self) -> Result<(), String> {
        for _ in 0..1000 {
            let conns: Vec<ConnId> = self.streams.keys().copied().collect();
            if conns.is_empty() {
                return Ok(());
            }
            let busy = self
                .streams
                .values()
                .any(|s| !s.queue.is_empty() || s.closing);
            if !busy {
                return Ok(());
            }
            for c in conns {
                self.deliver(c, usize::MAX)?;
            }
        }
        Err("messages keep flowing: the cluster never settles".into())
    }

    /// Advances the clock: live agents heartbeat, the master ticks and allocates.
    pub fn tick(&mut self, ms: u64) -> Result<(), String> {
        self.now += Duration::from_millis(ms);
        let mut out = Vec::new();
        for a in &self.agents {
            if let Some(c) = a.conn
                && !a.partitioned
                && a.id.is_some()
            {
                self.m.agent_heartbeat(c, self.now, &mut out);
            }
        }
        self.m.tick(self.now, &mut out);
        self.m.allocate(self.now, &mut out);
        self.absorb(out)?;
        // Agents retry unacknowledged updates; schedulers reconcile now and then.
        for i in 0..self.agents.len() {
            agent::resend_if_due(self, i)?;
        }
        Ok(())
    }

    /// Runs allocation and absorbs its offers (after any input).
    pub fn allocate(&mut self) -> Result<(), String> {
        let mut out = Vec::new();
        self.m.allocate(self.now, &mut out);
        self.absorb(out)
    }

    /// The master process restarts: every stream breaks, offers are gone,
    /// and a new master starts from the registry.
    pub fn restart_master(&mut self) -> Result<(), String> {
        self.master_restarts += 1;
        self.note(format!("master restart #{}", self.master_restarts));
        let registry = self.registry.load().map_err(|e| e.to_string())?;
        self.cfg.master_id = format!("m{}", self.master_restarts);
        let epoch = EPOCH + self.now.duration_since(self.start).as_secs_f64();
        self.m = Master::with_clock(self.cfg.clone(), registry, self.now, epoch);
        self.told_ended.clear();
        self.sent_offers.clear();
        self.pending_writes.clear();
        let conns: Vec<ConnId> = self.streams.keys().copied().collect();
        self.streams.clear();
        for c in conns {
            self.stream_ended(c);
        }
        check::after_step(self)
    }

    /// Completes one queued registry write.
    pub fn complete_write(&mut self) -> Result<(), String> {
        if self.pending_writes.is_empty() {
            return Ok(());
        }
        let i = self.rng.below(self.pending_writes.len());
        let p = self.pending_writes.remove(i);
        let mut out = Vec::new();
        self.m.persisted(p, self.now, &mut out);
        self.absorb(out)
    }
}
