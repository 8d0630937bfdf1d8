//! Frameworks, agents, offers and filters.

use super::{Invalid, agent_id, attributes, duration, framework_id, id_field, opt_id, resources};
use crate::pb;
use agora_core::OfferId;
use agora_core::info::{AgentInfo, DEFAULT_ROLE, Filters, FrameworkInfo, OfferInfo, limits};
use std::time::Duration;

// ---------------------------------------------------------- frameworks, agents

pub fn framework_info(field: &str, f: &pb::FrameworkInfo) -> Result<FrameworkInfo, Invalid> {
    let role = if f.role.is_empty() {
        DEFAULT_ROLE.to_string()
    } else {
        if f.role != DEFAULT_ROLE {
            id_field(&format!("{field}.role"), &f.role)?;
        }
        f.role.clone()
    };
    if f.name.len() > 1024 {
        return Err(Invalid::new(format!("{field}.name"), "at most 1024 bytes"));
    }
    Ok(FrameworkInfo {
        id: opt_id(
            &format!("{field}.framework_id"),
            &f.framework_id,
            framework_id,
        )?,
        name: f.name.clone(),
        role,
        user: f.user.clone(),
        failover_timeout: duration(
            &format!("{field}.failover_timeout_seconds"),
            f.failover_timeout_seconds,
            limits::FAILOVER_TIMEOUT,
        )?,
        partition_aware: f.partition_aware,
        hostname: f.hostname.clone(),
        capabilities: f.capabilities.clone(),
    })
}

impl From<&FrameworkInfo> for pb::FrameworkInfo {
    fn from(f: &FrameworkInfo) -> Self {
        pb::FrameworkInfo {
            framework_id: f.id.as_ref().map(|i| i.0.clone()).unwrap_or_default(),
            name: f.name.clone(),
            role: f.role.clone(),
            user: f.user.clone(),
            failover_timeout_seconds: f.failover_timeout.as_secs_f64(),
            partition_aware: f.partition_aware,
            hostname: f.hostname.clone(),
            capabilities: f.capabilities.clone(),
        }
    }
}

pub fn agent_info(field: &str, a: &pb::AgentInfo) -> Result<AgentInfo, Invalid> {
    if a.hostname.is_empty() || a.hostname.len() > 255 {
        return Err(Invalid::new(
            format!("{field}.hostname"),
            "must be 1 to 255 bytes",
        ));
    }
    Ok(AgentInfo {
        id: opt_id(&format!("{field}.agent_id"), &a.agent_id, agent_id)?,
        hostname: a.hostname.clone(),
        resources: resources(&format!("{field}.resources"), a.resources.as_ref())?,
        attributes: attributes(&a.attributes)?,
        endpoint: a.endpoint.clone(),
    })
}

impl From<&AgentInfo> for pb::AgentInfo {
    fn from(a: &AgentInfo) -> Self {
        pb::AgentInfo {
            agent_id: a.id.as_ref().map(|i| i.0.clone()).unwrap_or_default(),
            hostname: a.hostname.clone(),
            resources: Some((&a.resources).into()),
            attributes: to_attributes(&a.attributes),
            endpoint: a.endpoint.clone(),
        }
    }
}

pub(crate) fn to_attributes(list: &[(String, String)]) -> Vec<pb::Attribute> {
    list.iter()
        .map(|(n, v)| pb::Attribute {
            name: n.clone(),
            value: v.clone(),
        })
        .collect()
}

impl From<&OfferInfo> for pb::Offer {
    fn from(o: &OfferInfo) -> Self {
        pb::Offer {
            offer_id: o.id.0.clone(),
            framework_id: o.framework.0.clone(),
            agent_id: o.agent.0.clone(),
            hostname: o.hostname.clone(),
            resources: Some((&o.resources).into()),
            attributes: to_attributes(&o.attributes),
        }
    }
}

pub fn offer_info(field: &str, o: &pb::Offer) -> Result<OfferInfo, Invalid> {
    Ok(OfferInfo {
        id: offer_id(&format!("{field}.offer_id"), &o.offer_id)?,
        framework: framework_id(&format!("{field}.framework_id"), &o.framework_id)?,
        agent: agent_id(&format!("{field}.agent_id"), &o.agent_id)?,
        hostname: o.hostname.clone(),
        resources: resources(&format!("{field}.resources"), o.resources.as_ref())?,
        attributes: attributes(&o.attributes)?,
    })
}

pub fn offer_id(field: &str, v: &str) -> Result<OfferId, Invalid> {
    id_field(field, v)?;
    Ok(OfferId::new(v))
}

pub fn filters(f: Option<&pb::Filters>) -> Result<Filters, Invalid> {
    match f {
        Some(f) if f.has_refuse_seconds => {
            let s = f.refuse_seconds;
            if s.is_nan() {
                return Err(Invalid::new("filters.refuse_seconds", "is not a number"));
            }
            // Negative means "the default" (as in Mesos); absurdly long is capped.
            Ok(Filters {
                refuse: (s >= 0.0)
                    .then(|| Duration::from_secs_f64(s.min(limits::REFUSE.as_secs_f64()))),
            })
        }
        _ => Ok(Filters::default()),
    }
}

pub(crate) fn offer_ids(field: &str, ids: &[String]) -> Result<Vec<OfferId>, Invalid> {
    ids.iter().map(|o| offer_id(field, o)).collect()
}
