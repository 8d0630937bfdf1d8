//! The actor's connections to the outside: [`MasterLink`] (what it asks of
//! the master) and the SDK [`Bridge`] (how scheduler events reach it).

use super::Msg;
use agora_core::{AgentId, FrameworkId, OfferId, TaskId};
use agora_proto::pb;
use agora_sdk::{
    Client, Offer, Scheduler, SdkError, SecretVersion, SecretVersionsError, TaskStatus,
};
use std::time::Duration;
use tokio::sync::mpsc;

/// What the actor needs from the master: the SDK's [`Client`] in
/// production, a recorder in tests.
pub trait MasterLink: Clone + Send + Sync + 'static {
    fn accept(
        &self,
        offer: &OfferId,
        tasks: Vec<pb::TaskInfo>,
        refuse: Duration,
    ) -> impl Future<Output = Result<(), SdkError>> + Send;
    fn decline(
        &self,
        offers: &[OfferId],
        refuse: Duration,
    ) -> impl Future<Output = Result<(), SdkError>> + Send;
    fn kill(
        &self,
        task: &TaskId,
        agent: &AgentId,
    ) -> impl Future<Output = Result<(), SdkError>> + Send;
    fn suppress(&self) -> impl Future<Output = Result<(), SdkError>> + Send;
    fn revive(&self) -> impl Future<Output = Result<(), SdkError>> + Send;
    fn reconcile(
        &self,
        tasks: Vec<(TaskId, Option<AgentId>)>,
    ) -> impl Future<Output = Result<(), SdkError>> + Send;
    /// Acknowledges updates whose effect is stored (those without a uuid
    /// need none). A lost acknowledgement only means the update comes back.
    fn acknowledge(&self, statuses: Vec<TaskStatus>) -> impl Future<Output = ()> + Send;
    /// The master's metadata of these secret paths (never values).
    fn secret_versions(
        &self,
        paths: Vec<String>,
    ) -> impl Future<Output = Result<Vec<SecretVersion>, SecretVersionsError>> + Send;
}

impl MasterLink for Client {
    async fn accept(
        &self,
        offer: &OfferId,
        tasks: Vec<pb::TaskInfo>,
        refuse: Duration,
    ) -> Result<(), SdkError> {
        Client::accept(self, std::slice::from_ref(offer), tasks, Some(refuse)).await
    }
    async fn decline(&self, offers: &[OfferId], refuse: Duration) -> Result<(), SdkError> {
        Client::decline(self, offers, Some(refuse)).await
    }
    async fn kill(&self, task: &TaskId, agent: &AgentId) -> Result<(), SdkError> {
        Client::kill(self, task, Some(agent)).await
    }
    async fn suppress(&self) -> Result<(), SdkError> {
        Client::suppress(self).await
    }
    async fn revive(&self) -> Result<(), SdkError> {
        Client::revive(self).await
    }
    async fn reconcile(&self, tasks: Vec<(TaskId, Option<AgentId>)>) -> Result<(), SdkError> {
        Client::reconcile(self, tasks).await
    }
    async fn secret_versions(
        &self,
        paths: Vec<String>,
    ) -> Result<Vec<SecretVersion>, SecretVersionsError> {
        Client::secret_versions(self, &paths).await
    }
    async fn acknowledge(&self, statuses: Vec<TaskStatus>) {
        // One call per burst, off the actor's path.
        let c = self.clone();
        tokio::spawn(async move {
            if let Err(e) = c.acknowledge_all(&statuses).await {
                tracing::debug!(error = %e, updates = statuses.len(), "acknowledging updates failed; they will be sent again");
            }
        });
    }
}

/// Forwards SDK callbacks to the actor. The driver does not acknowledge
/// (`auto_acknowledge` is off): the actor does, once an update's effect is
/// stored.
pub(super) struct Bridge(pub(super) mpsc::Sender<Msg<Client>>);

impl Scheduler for Bridge {
    async fn subscribed(&mut self, client: &Client, id: &FrameworkId) {
        let _ = self
            .0
            .send(Msg::Subscribed(client.clone(), id.clone()))
            .await;
    }
    async fn offers(&mut self, _c: &Client, offers: Vec<Offer>) {
        let _ = self.0.send(Msg::Offers(offers)).await;
    }
    async fn rescinded(&mut self, _c: &Client, _o: OfferId) {
        let _ = self.0.send(Msg::Rescinded).await;
    }
    async fn update(&mut self, _c: &Client, status: TaskStatus) {
        // Queued, not awaited: the actor stores a burst of updates at once
        // (the bounded queue still pushes back on the driver).
        let _ = self.0.send(Msg::Update(status)).await;
    }
    async fn usage(&mut self, _c: &Client, usage: Vec<agora_core::protocol::TaskUsage>) {
        // Dropped when the actor is busy: the next report comes within a
        // second, and a stale sample is worth nothing.
        let _ = self.0.try_send(Msg::Usage(usage));
    }
    async fn disconnected(&mut self) {
        let _ = self.0.send(Msg::Disconnected).await;
    }
}
