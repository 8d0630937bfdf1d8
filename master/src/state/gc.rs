//! Timers and bounded memory: agent timeouts, offer expiry, framework
//! failover timeouts, heartbeats, answers that waited for an agent, and the
//! collection of agents unreachable for too long. Completed frameworks and
//! their tasks are bounded where they are recorded (`remove_framework`,
//! `retire_task`).

use super::{Master, Output};
use agora_core::lifecycle::{AgentState, FrameworkEvent, FrameworkState};
use agora_core::protocol::Event;
use agora_core::{AgentId, FrameworkId, OfferId};
use std::time::Instant;

impl Master {
    /// Periodic work. Call it often (the actor does every tenth of the agent
    /// timeout, at most every allocation interval).
    pub fn tick(&mut self, now: Instant, out: &mut Vec<Output>) {
        let timeout = self.cfg.agent_timeout;
        let reregister = self.cfg.agent_reregister_timeout.max(timeout);
        let silent: Vec<AgentId> = self
            .agents
            .values()
            .filter(|a| {
                let limit = match (a.state, a.conn) {
                    // Known from the registry, not back yet since the restart.
                    (AgentState::Recovered, None) => reregister,
                    (AgentState::Active | AgentState::Disconnected | AgentState::Recovered, _) => {
                        timeout
                    }
                    _ => return false,
                };
                now.saturating_duration_since(a.last_seen) >= limit
            })
            .map(|a| a.id.clone())
            .collect();
        for id in silent {
            self.mark_unreachable(&id, now, out);
        }

        let gc_after = self.cfg.agent_gc_after;
        let expired_agents: Vec<AgentId> = self
            .agents
            .values()
            .filter(|a| {
                a.state == AgentState::Unreachable
                    && a.unreachable_at
                        .is_some_and(|t| now.saturating_duration_since(t) >= gc_after)
            })
            .map(|a| a.id.clone())
            .collect();
        for id in expired_agents {
            self.remove_agent(&id, now, out);
        }

        if let Some(ot) = self.cfg.offer_timeout {
            let expired: Vec<OfferId> = self
                .offers
                .iter()
                .filter(|(_, o)| now.saturating_duration_since(o.created) >= ot)
                .map(|(id, _)| id.clone())
                .collect();
            for oid in expired {
                tracing::debug!(offer_id = %oid, "offer timed out");
                self.rescind(&oid, out);
            }
        }

        let gone: Vec<FrameworkId> = self
            .frameworks
            .values()
            .filter(|f| {
                matches!(
                    f.state,
                    FrameworkState::Disconnected | FrameworkState::Recovered
                ) && f
                    .disconnected_at
                    .is_some_and(|t| now.saturating_duration_since(t) >= f.info.failover_timeout)
            })
            .map(|f| f.id.clone())
            .collect();
        for id in gone {
            self.remove_framework(
                &id,
                FrameworkEvent::FailoverTimeout,
                "failover timeout expired",
                now,
                out,
            );
        }

        let hb = self.cfg.framework_heartbeat_interval;
        for f in self.frameworks.values_mut() {
            if let Some(conn) = f.conn
                && now.saturating_duration_since(f.last_heartbeat) >= hb
            {
                f.last_heartbeat = now;
                out.push(Output::ToFramework(conn, Event::Heartbeat));
            }
        }

        self.answer_deferred(None, now, out);

        if now >= self.next_full_allocation {
            self.full_allocation_due = true;
        }
    }
}
