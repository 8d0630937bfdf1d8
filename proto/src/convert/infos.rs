//! Frameworks, agents, offers and filters.

use super::{
    Invalid, at, attributes, duration, id_field, own_agent_id, own_framework_id, resources,
};
use crate::pb;
use agora_core::OfferId;
use agora_core::info::{AgentInfo, DEFAULT_ROLE, Filters, FrameworkInfo, OfferInfo, limits};
use std::time::Duration;

// ---------------------------------------------------------- frameworks, agents

/// A role name: empty means `*`; anything else must be `*` or id-like.
fn role(field: &str, role: String) -> Result<String, Invalid> {
    if role.is_empty() {
        return Ok(DEFAULT_ROLE.to_string());
    }
    if role != DEFAULT_ROLE {
        id_field("role", &role).map_err(at(field))?;
    }
    Ok(role)
}

pub fn framework_info(field: &str, f: pb::FrameworkInfo) -> Result<FrameworkInfo, Invalid> {
    let role = role(field, f.role)?;
    if f.name.len() > 1024 {
        return Err(Invalid::new(format!("{field}.name"), "at most 1024 bytes"));
    }
    Ok(FrameworkInfo {
        id: if f.framework_id.is_empty() {
            None
        } else {
            Some(own_framework_id("framework_id", f.framework_id).map_err(at(field))?)
        },
        name: f.name,
        role,
        user: f.user,
        failover_timeout: duration(
            "failover_timeout_seconds",
            f.failover_timeout_seconds,
            limits::FAILOVER_TIMEOUT,
        )
        .map_err(at(field))?,
        partition_aware: f.partition_aware,
        hostname: f.hostname,
        capabilities: f.capabilities,
    })
}

impl From<FrameworkInfo> for pb::FrameworkInfo {
    fn from(f: FrameworkInfo) -> Self {
        pb::FrameworkInfo {
            framework_id: f.id.map(|i| i.0).unwrap_or_default(),
            name: f.name,
            role: f.role,
            user: f.user,
            failover_timeout_seconds: f.failover_timeout.as_secs_f64(),
            partition_aware: f.partition_aware,
            hostname: f.hostname,
            capabilities: f.capabilities,
        }
    }
}

impl From<&FrameworkInfo> for pb::FrameworkInfo {
    fn from(f: &FrameworkInfo) -> Self {
        f.clone().into()
    }
}

pub fn agent_info(field: &str, a: pb::AgentInfo) -> Result<AgentInfo, Invalid> {
    if a.hostname.is_empty() || a.hostname.len() > 255 {
        return Err(Invalid::new(
            format!("{field}.hostname"),
            "must be 1 to 255 bytes",
        ));
    }
    Ok(AgentInfo {
        id: if a.agent_id.is_empty() {
            None
        } else {
            Some(own_agent_id("agent_id", a.agent_id).map_err(at(field))?)
        },
        hostname: a.hostname,
        resources: resources("resources", a.resources.as_ref()).map_err(at(field))?,
        attributes: attributes(&a.attributes)?,
        endpoint: a.endpoint,
        address: address("address", &a.address).map_err(at(field))?,
        role: role(field, a.role)?,
    })
}

/// An agent's internal address on the wire: empty (an agent that sends
/// none) or an IP literal that is not a wildcard.
pub fn address(field: &str, v: &str) -> Result<Option<std::net::IpAddr>, Invalid> {
    if v.is_empty() {
        return Ok(None);
    }
    let ip: std::net::IpAddr = v.parse().map_err(|_| {
        Invalid::new(
            field,
            format!("{v:?} is not an IP address (e.g. 10.0.0.7 or fd00::7)"),
        )
    })?;
    if ip.is_unspecified() {
        return Err(Invalid::new(
            field,
            format!("{v} is a wildcard, not an address tasks can be reached at"),
        ));
    }
    Ok(Some(ip))
}

impl From<AgentInfo> for pb::AgentInfo {
    fn from(a: AgentInfo) -> Self {
        pb::AgentInfo {
            agent_id: a.id.map(|i| i.0).unwrap_or_default(),
            hostname: a.hostname,
            resources: Some((&a.resources).into()),
            attributes: to_attributes(a.attributes),
            endpoint: a.endpoint,
            address: a.address.map(|ip| ip.to_string()).unwrap_or_default(),
            role: a.role,
        }
    }
}

pub(crate) fn to_attributes(list: Vec<(String, String)>) -> Vec<pb::Attribute> {
    list.into_iter()
        .map(|(name, value)| pb::Attribute { name, value })
        .collect()
}

impl From<OfferInfo> for pb::Offer {
    fn from(o: OfferInfo) -> Self {
        pb::Offer {
            offer_id: o.id.0,
            framework_id: o.framework.0,
            agent_id: o.agent.0,
            hostname: o.hostname,
            resources: Some((&o.resources).into()),
            attributes: to_attributes(o.attributes),
            address: o.address.map(|ip| ip.to_string()).unwrap_or_default(),
            role: o.role,
        }
    }
}

pub fn offer_info(field: &str, o: pb::Offer) -> Result<OfferInfo, Invalid> {
    Ok(OfferInfo {
        id: offer_id("offer_id", &o.offer_id).map_err(at(field))?,
        framework: own_framework_id("framework_id", o.framework_id).map_err(at(field))?,
        agent: own_agent_id("agent_id", o.agent_id).map_err(at(field))?,
        hostname: o.hostname,
        resources: resources("resources", o.resources.as_ref()).map_err(at(field))?,
        attributes: attributes(&o.attributes)?,
        address: address("address", &o.address).map_err(at(field))?,
        role: role(field, o.role)?,
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

pub(crate) fn offer_ids(field: &str, ids: Vec<String>) -> Result<Vec<OfferId>, Invalid> {
    ids.into_iter()
        .map(|o| {
            id_field(field, &o)?;
            Ok(OfferId(o))
        })
        .collect()
}
