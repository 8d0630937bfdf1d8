//! gRPC handlers: translate calls into actor commands and choose status codes.

use crate::actor::{AGENT_QUEUE, Call, Command, FRAMEWORK_QUEUE, MasterHandle};
use crate::state::{CallError, ConnId};
use agora_proto::pb;
use futures::{Stream, StreamExt};
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

/// Maps a refused call to a gRPC status (the one place this is decided).
pub fn status_of(e: CallError) -> Status {
    match &e {
        CallError::Invalid(_) => Status::invalid_argument(e.to_string()),
        CallError::UnknownFramework(_) => Status::failed_precondition(e.to_string()),
        CallError::FrameworkCompleted(_) => Status::failed_precondition(e.to_string()),
        CallError::InvalidOffers(_) => Status::invalid_argument(e.to_string()),
        CallError::NotFound(_) => Status::not_found(e.to_string()),
    }
}

fn stopped() -> Status {
    Status::unavailable("the master is shutting down; retry against the new leader")
}

/// A stream that tells the actor when the client goes away.
pub struct GuardedStream<T> {
    inner: ReceiverStream<Result<T, Status>>,
    on_drop: Option<(MasterHandle, Command)>,
}

impl<T> Stream for GuardedStream<T> {
    type Item = Result<T, Status>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.inner).poll_next(cx)
    }
}

impl<T> Drop for GuardedStream<T> {
    fn drop(&mut self) {
        if let Some((h, cmd)) = self.on_drop.take() {
            h.send_later(cmd);
        }
    }
}

#[derive(Clone)]
pub struct SchedulerService {
    pub master: MasterHandle,
}

impl SchedulerService {
    async fn call(&self, call: Call) -> Result<Response<pb::CallResponse>, Status> {
        match self.master.call(call).await {
            Ok(Ok(())) => Ok(Response::new(pb::CallResponse {})),
            Ok(Err(e)) => Err(status_of(e)),
            Err(_) => Err(stopped()),
        }
    }
}

#[tonic::async_trait]
impl pb::scheduler_server::Scheduler for SchedulerService {
    type SubscribeStream = GuardedStream<pb::Event>;

    async fn subscribe(
        &self,
        req: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let info = req
            .into_inner()
            .framework
            .ok_or_else(|| Status::invalid_argument("invalid framework: is missing"))?;
        let (tx, rx) = mpsc::channel(FRAMEWORK_QUEUE);
        let conn: ConnId = self.master.next_conn();
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.master
            .send(Command::Subscribe {
                conn,
                info,
                events: tx,
                reply,
            })
            .await
            .map_err(|_| stopped())?;
        match answer.await {
            Ok(Ok(_)) => Ok(Response::new(GuardedStream {
                inner: ReceiverStream::new(rx),
                on_drop: Some((self.master.clone(), Command::FrameworkClosed(conn))),
            })),
            Ok(Err(e)) => Err(status_of(e)),
            Err(_) => Err(stopped()),
        }
    }

    async fn accept(
        &self,
        r: Request<pb::AcceptRequest>,
    ) -> Result<Response<pb::CallResponse>, Status> {
        self.call(Call::Accept(r.into_inner())).await
    }
    async fn decline(
        &self,
        r: Request<pb::DeclineRequest>,
    ) -> Result<Response<pb::CallResponse>, Status> {
        self.call(Call::Decline(r.into_inner())).await
    }
    async fn revive(
        &self,
        r: Request<pb::ReviveRequest>,
    ) -> Result<Response<pb::CallResponse>, Status> {
        self.call(Call::Revive(r.into_inner())).await
    }
    async fn suppress(
        &self,
        r: Request<pb::SuppressRequest>,
    ) -> Result<Response<pb::CallResponse>, Status> {
        self.call(Call::Suppress(r.into_inner())).await
    }
    async fn kill(
        &self,
        r: Request<pb::KillRequest>,
    ) -> Result<Response<pb::CallResponse>, Status> {
        self.call(Call::Kill(r.into_inner())).await
    }
    async fn acknowledge(
        &self,
        r: Request<pb::AcknowledgeRequest>,
    ) -> Result<Response<pb::CallResponse>, Status> {
        self.call(Call::Acknowledge(r.into_inner())).await
    }
    async fn reconcile(
        &self,
        r: Request<pb::ReconcileRequest>,
    ) -> Result<Response<pb::CallResponse>, Status> {
        self.call(Call::Reconcile(r.into_inner())).await
    }
    async fn teardown(
        &self,
        r: Request<pb::TeardownRequest>,
    ) -> Result<Response<pb::CallResponse>, Status> {
        self.call(Call::Teardown(r.into_inner())).await
    }
}

#[derive(Clone)]
pub struct AgentLinkService {
    pub master: MasterHandle,
}

#[tonic::async_trait]
impl pb::agent_link_server::AgentLink for AgentLinkService {
    type AttachStream = GuardedStream<pb::MasterMessage>;

    async fn attach(
        &self,
        req: Request<Streaming<pb::AgentMessage>>,
    ) -> Result<Response<Self::AttachStream>, Status> {
        let mut inbound = req.into_inner();
        let (tx, rx) = mpsc::channel(AGENT_QUEUE);
        let conn = self.master.next_conn();
        self.master
            .send(Command::AgentAttach { conn, tx })
            .await
            .map_err(|_| stopped())?;
        let master = self.master.clone();
        tokio::spawn(async move {
            while let Some(msg) = inbound.next().await {
                match msg {
                    Ok(m) => {
                        if master.send(Command::AgentMessage(conn, m)).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        tracing::debug!(conn, error = %e, "agent stream error");
                        break;
                    }
                }
            }
            tracing::debug!(conn, "agent request stream ended");
            let _ = master.send(Command::AgentClosed(conn)).await;
        });
        Ok(Response::new(GuardedStream {
            inner: ReceiverStream::new(rx),
            on_drop: Some((self.master.clone(), Command::AgentClosed(conn))),
        }))
    }
}
