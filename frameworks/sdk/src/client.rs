//! [`Client`]: the scheduler calls, usable from callbacks or any task.

use crate::SdkError;
use crate::types::{Offer, TaskStatus};
use agora_core::{AgentId, FrameworkId, OfferId, TaskId};
use agora_proto::pb;
use agora_proto::pb::scheduler_client::SchedulerClient;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// Adds `authorization: Bearer <token>` to every call (when a token is
/// configured). The header value is marked sensitive, so `Debug` of the
/// request never prints it.
#[derive(Clone, Default)]
pub struct BearerInterceptor(Option<MetadataValue<Ascii>>);

impl BearerInterceptor {
    /// From a token's bytes (trimmed); a token that is not visible ASCII is
    /// refused without echoing it.
    pub fn new(token: Option<&agora_core::secrets::SecretValue>) -> Result<Self, SdkError> {
        let Some(t) = token else {
            return Ok(BearerInterceptor(None));
        };
        let raw = t.expose().trim_ascii();
        if raw.is_empty() || !raw.iter().all(|b| b.is_ascii_graphic()) {
            return Err(SdkError::Invalid(
                "token: it must be printable ASCII without spaces (agora_<id>_<secret>)".into(),
            ));
        }
        // Sized once (no reallocation leaves copies behind); zeroized on drop.
        let mut bytes = zeroize::Zeroizing::new(Vec::with_capacity(7 + raw.len()));
        bytes.extend_from_slice(b"Bearer ");
        bytes.extend_from_slice(raw);
        let mut v = MetadataValue::try_from(bytes.as_slice())
            .map_err(|_| SdkError::Invalid("token: not a valid header value".into()))?;
        v.set_sensitive(true);
        Ok(BearerInterceptor(Some(v)))
    }
}

impl std::fmt::Debug for BearerInterceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "BearerInterceptor(<redacted>)"
        } else {
            "BearerInterceptor(none)"
        })
    }
}

impl tonic::service::Interceptor for BearerInterceptor {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

type Inner = SchedulerClient<InterceptedService<Channel, BearerInterceptor>>;

/// A cheap, cloneable handle for scheduler calls.
#[derive(Clone)]
pub struct Client {
    inner: Inner,
    framework_id: Arc<Mutex<Option<FrameworkId>>>,
    session_ok: Arc<AtomicBool>,
}

fn filters(refuse: Option<Duration>) -> Option<pb::Filters> {
    refuse.map(|d| pb::Filters {
        refuse_seconds: d.as_secs_f64(),
        has_refuse_seconds: true,
    })
}

impl Client {
    pub(crate) fn new(
        channel: Channel,
        token: Option<&agora_core::secrets::SecretValue>,
    ) -> Result<Self, SdkError> {
        let auth = BearerInterceptor::new(token)?;
        Ok(Client {
            inner: SchedulerClient::with_interceptor(channel, auth)
                .max_decoding_message_size(64 << 20),
            framework_id: Arc::new(Mutex::new(None)),
            session_ok: Arc::new(AtomicBool::new(false)),
        })
    }

    pub(crate) fn raw(&self) -> Inner {
        self.inner.clone()
    }

    pub(crate) fn set_framework_id(&self, id: FrameworkId) {
        if let Ok(mut g) = self.framework_id.lock() {
            *g = Some(id);
        }
    }

    pub(crate) fn mark_session_ok(&self) {
        self.session_ok.store(true, Ordering::Relaxed);
    }

    pub(crate) fn take_session_ok(&self) -> bool {
        self.session_ok.swap(false, Ordering::Relaxed)
    }

    /// Our framework id, once subscribed.
    pub fn framework_id(&self) -> Option<FrameworkId> {
        self.framework_id.lock().ok().and_then(|g| g.clone())
    }

    fn fid(&self) -> Result<String, SdkError> {
        self.framework_id()
            .map(|f| f.0)
            .ok_or(SdkError::NotSubscribed)
    }

    /// ACCEPT offers (of one agent) launching `tasks`. Unused resources are
    /// declined with `refuse` (master default 5 s when `None`).
    pub async fn accept(
        &self,
        offer_ids: &[OfferId],
        tasks: Vec<pb::TaskInfo>,
        refuse: Option<Duration>,
    ) -> Result<(), SdkError> {
        let req = pb::AcceptRequest {
            framework_id: self.fid()?,
            offer_ids: offer_ids.iter().map(|o| o.0.clone()).collect(),
            operations: vec![pb::Operation {
                operation: Some(pb::operation::Operation::Launch(pb::Launch { tasks })),
            }],
            filters: filters(refuse),
        };
        self.inner.clone().accept(req).await?;
        Ok(())
    }

    /// Launches `tasks` on one offer (fills in the agent id).
    pub async fn launch(
        &self,
        offer: &Offer,
        mut tasks: Vec<pb::TaskInfo>,
    ) -> Result<(), SdkError> {
        for t in &mut tasks {
            t.agent_id = offer.agent_id.0.clone();
        }
        self.accept(std::slice::from_ref(&offer.id), tasks, None)
            .await
    }

    /// DECLINE with a refuse filter (`None`: the master's default, 5 s).
    pub async fn decline(
        &self,
        offer_ids: &[OfferId],
        refuse: Option<Duration>,
    ) -> Result<(), SdkError> {
        let req = pb::DeclineRequest {
            framework_id: self.fid()?,
            offer_ids: offer_ids.iter().map(|o| o.0.clone()).collect(),
            filters: filters(refuse),
        };
        self.inner.clone().decline(req).await?;
        Ok(())
    }

    /// REVIVE: clear filters and resume offers.
    pub async fn revive(&self) -> Result<(), SdkError> {
        let req = pb::ReviveRequest {
            framework_id: self.fid()?,
        };
        self.inner.clone().revive(req).await?;
        Ok(())
    }

    /// SUPPRESS: no offers until REVIVE.
    pub async fn suppress(&self) -> Result<(), SdkError> {
        let req = pb::SuppressRequest {
            framework_id: self.fid()?,
        };
        self.inner.clone().suppress(req).await?;
        Ok(())
    }

    /// KILL a task.
    pub async fn kill(&self, task: &TaskId, agent: Option<&AgentId>) -> Result<(), SdkError> {
        let req = pb::KillRequest {
            framework_id: self.fid()?,
            task_id: task.0.clone(),
            agent_id: agent.map(|a| a.0.clone()).unwrap_or_default(),
        };
        self.inner.clone().kill(req).await?;
        Ok(())
    }

    /// ACKNOWLEDGE one update (only needed with `auto_acknowledge = false`).
    pub async fn acknowledge(&self, status: &TaskStatus) -> Result<(), SdkError> {
        if status.uuid.is_empty() {
            return Ok(());
        }
        self.acknowledge_many(vec![pb::Acknowledgement {
            agent_id: status.agent_id.0.clone(),
            task_id: status.task_id.0.clone(),
            uuid: status.uuid.clone(),
        }])
        .await
    }

    /// ACKNOWLEDGE several updates in one call (only needed with
    /// `auto_acknowledge = false`); updates without a uuid are skipped.
    pub async fn acknowledge_all(&self, statuses: &[TaskStatus]) -> Result<(), SdkError> {
        let acks: Vec<pb::Acknowledgement> = statuses
            .iter()
            .filter(|s| !s.uuid.is_empty())
            .map(|s| pb::Acknowledgement {
                agent_id: s.agent_id.0.clone(),
                task_id: s.task_id.0.clone(),
                uuid: s.uuid.clone(),
            })
            .collect();
        if acks.is_empty() {
            return Ok(());
        }
        self.acknowledge_many(acks).await
    }

    pub(crate) async fn acknowledge_many(
        &self,
        acks: Vec<pb::Acknowledgement>,
    ) -> Result<(), SdkError> {
        let req = pb::AcknowledgeRequest {
            framework_id: self.fid()?,
            acknowledgements: acks,
        };
        self.inner.clone().acknowledge(req).await?;
        Ok(())
    }

    /// RECONCILE: the listed tasks, or every non-terminal task when empty.
    pub async fn reconcile(&self, tasks: Vec<(TaskId, Option<AgentId>)>) -> Result<(), SdkError> {
        let req = pb::ReconcileRequest {
            framework_id: self.fid()?,
            tasks: tasks
                .into_iter()
                .map(|(t, a)| pb::ReconcileTask {
                    task_id: t.0,
                    agent_id: a.map(|a| a.0).unwrap_or_default(),
                })
                .collect(),
        };
        self.inner.clone().reconcile(req).await?;
        Ok(())
    }

    /// TEARDOWN: kill every task and unregister the framework.
    pub async fn teardown(&self) -> Result<(), SdkError> {
        let req = pb::TeardownRequest {
            framework_id: self.fid()?,
        };
        self.inner.clone().teardown(req).await?;
        Ok(())
    }
}

/// What the master knows of one secret path (never its value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretVersion {
    pub path: String,
    pub exists: bool,
    /// Newest version (0 when it does not exist).
    pub latest: u64,
    /// Newest version put with rollout requested: tasks using the path
    /// should move to it when it grows.
    pub rollout: u64,
}

/// Why [`Client::secret_versions`] has no answer.
#[derive(Debug, thiserror::Error)]
pub enum SecretVersionsError {
    /// The master runs without a secret store (it answers UNIMPLEMENTED or
    /// FAILED_PRECONDITION).
    #[error("the master has no secret store: {0}")]
    NoStore(String),
    /// The master refuses this framework the paths (PERMISSION_DENIED).
    #[error("the master refuses to tell this framework about these secrets: {0}")]
    Denied(String),
    /// The master cannot be reached, or another refusal.
    #[error(transparent)]
    Sdk(#[from] SdkError),
}

impl From<tonic::Status> for SecretVersionsError {
    fn from(s: tonic::Status) -> Self {
        match s.code() {
            tonic::Code::Unimplemented | tonic::Code::FailedPrecondition => {
                SecretVersionsError::NoStore(s.message().to_string())
            }
            tonic::Code::PermissionDenied => SecretVersionsError::Denied(s.message().to_string()),
            _ => SecretVersionsError::Sdk(s.into()),
        }
    }
}

impl Client {
    /// Metadata of the secrets at `paths` (whether each exists, its latest
    /// and rollout versions), in the order asked. Never values.
    pub async fn secret_versions(
        &self,
        paths: &[String],
    ) -> Result<Vec<SecretVersion>, SecretVersionsError> {
        let req = pb::SecretVersionsRequest {
            framework_id: self.fid()?,
            paths: paths.to_vec(),
        };
        let resp = self.inner.clone().secret_versions(req).await?.into_inner();
        Ok(resp
            .secrets
            .into_iter()
            .map(|v| SecretVersion {
                path: v.path,
                exists: v.exists,
                latest: v.latest,
                rollout: v.rollout,
            })
            .collect())
    }
}

/// Sends acknowledgements, batching whatever is queued into one call.
pub(crate) async fn ack_loop(client: Client, mut rx: mpsc::UnboundedReceiver<pb::Acknowledgement>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < 5000 {
            match rx.try_recv() {
                Ok(a) => batch.push(a),
                Err(_) => break,
            }
        }
        if let Err(e) = client.acknowledge_many(batch).await {
            // The agent will re-send; the update is acknowledged then.
            tracing::debug!(error = %e, "acknowledgement failed");
        }
    }
}

#[cfg(test)]
mod auth_tests {
    use super::*;
    use agora_core::secrets::SecretValue;
    use tonic::service::Interceptor;

    #[test]
    fn the_interceptor_sends_the_token_and_never_prints_it() {
        let t = SecretValue::new(b"agora_0123456789ab_secretpart\n".to_vec());
        let mut i = BearerInterceptor::new(Some(&t)).unwrap();
        let req = i.call(tonic::Request::new(())).unwrap();
        let v = req.metadata().get("authorization").unwrap();
        assert_eq!(v.to_str().unwrap(), "Bearer agora_0123456789ab_secretpart");
        assert!(!format!("{i:?}").contains("secretpart"));
        assert!(!format!("{req:?}").contains("secretpart"), "{req:?}");
        let mut none = BearerInterceptor::new(None).unwrap();
        let req = none.call(tonic::Request::new(())).unwrap();
        assert!(req.metadata().get("authorization").is_none());
        let bad = SecretValue::new(b"two words".to_vec());
        let e = BearerInterceptor::new(Some(&bad)).unwrap_err();
        assert!(!e.to_string().contains("words"), "{e}");
    }
}
