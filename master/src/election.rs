//! Leader election seam. Multi-master HA (ZooKeeper) comes later; the
//! standalone contender is elected at once and names itself as leader.

use std::future::Future;
use std::pin::Pin;

#[derive(Debug, thiserror::Error)]
#[error("leader election failed: {0}")]
pub struct ElectionError(pub String);

pub trait Contender: Send + Sync + 'static {
    /// Resolves once this master is the leader.
    fn elect(&self) -> Pin<Box<dyn Future<Output = Result<(), ElectionError>> + Send + '_>>;
    /// The current leader's address, if known.
    fn leader(&self) -> Option<String>;
}

/// A lone master: always the leader.
pub struct Standalone {
    pub address: String,
}

impl Contender for Standalone {
    fn elect(&self) -> Pin<Box<dyn Future<Output = Result<(), ElectionError>> + Send + '_>> {
        Box::pin(async { Ok(()) })
    }
    fn leader(&self) -> Option<String> {
        Some(self.address.clone())
    }
}
