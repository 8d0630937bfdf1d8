//! gRPC handlers: the edge. Wire messages are converted to domain types
//! here (a malformed call is refused with INVALID_ARGUMENT naming the field
//! and never reaches the state machine), calls become actor commands, and
//! refused calls get their status code. Outbound events travel as domain
//! values and are encoded by the stream that sends them.

use crate::actor::{AGENT_QUEUE, Call, Command, FRAMEWORK_QUEUE, MasterHandle};
use crate::auth::{Caller, Gate, acl::Permission};
use crate::state::{CallError, ConnId};
use agora_core::protocol::{Event, MasterMessage, Register, StatusUpdate, TaskUsage};
use agora_proto::convert::{self, Invalid};
use agora_proto::pb;
use futures::{Stream, StreamExt};
use std::marker::PhantomData;
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
        CallError::PermissionDenied(_) => Status::permission_denied(e.to_string()),
    }
}

fn invalid(e: Invalid) -> Status {
    Status::invalid_argument(e.to_string())
}

/// Most paths one `SecretVersions` call may ask about.
pub const MAX_SECRET_VERSION_PATHS: usize = 10_000;

fn no_store() -> Status {
    Status::failed_precondition(crate::secrets::NO_STORE)
}

fn stopped() -> Status {
    Status::unavailable("the master is shutting down; retry against the new leader")
}

/// A stream of domain values `D` sent as protobuf `P`, that tells the actor
/// when the client goes away.
pub struct GuardedStream<D, P> {
    inner: ReceiverStream<D>,
    on_drop: Option<(MasterHandle, Command)>,
    _wire: PhantomData<fn() -> P>,
}

impl<D, P> Stream for GuardedStream<D, P>
where
    P: From<D>,
{
    type Item = Result<P, Status>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.inner)
            .poll_next(cx)
            .map(|o| o.map(|d| Ok(P::from(d))))
    }
}

impl<D, P> Drop for GuardedStream<D, P> {
    fn drop(&mut self) {
        if let Some((h, cmd)) = self.on_drop.take() {
            h.send_later(cmd);
        }
    }
}

#[derive(Clone)]
pub struct SchedulerService {
    pub master: MasterHandle,
    /// Every call is authenticated from its `authorization` metadata when on.
    pub gate: Gate,
    pub secrets: crate::secrets::Secrets,
}

impl SchedulerService {
    async fn call(&self, caller: Caller, call: Call) -> Result<Response<pb::CallResponse>, Status> {
        match self.master.call_as(call, caller).await {
            Ok(Ok(())) => Ok(Response::new(pb::CallResponse {})),
            Ok(Err(e)) => Err(status_of(e)),
            Err(_) => Err(stopped()),
        }
    }
}

#[tonic::async_trait]
impl pb::scheduler_server::Scheduler for SchedulerService {
    type SubscribeStream = GuardedStream<Event, pb::Event>;

    async fn subscribe(
        &self,
        req: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let caller = self.gate.grpc_caller(&req)?;
        let wire = req
            .into_inner()
            .framework
            .ok_or_else(|| Status::invalid_argument("invalid framework: is missing"))?;
        let info = convert::framework_info("framework", wire).map_err(invalid)?;
        caller
            .check(&Permission::RegisterFramework { role: &info.role })
            .map_err(|d| {
                tracing::info!(denied = %d, "refusing a subscription");
                Status::permission_denied(d.to_string())
            })?;
        if let Some(id) = &info.id {
            self.gate.check_recorded_owner(&caller, id).map_err(|d| {
                tracing::info!(denied = %d, "refusing a resubscription");
                Status::permission_denied(d.to_string())
            })?;
        }
        let recorder = caller.clone();
        let (tx, rx) = mpsc::channel(FRAMEWORK_QUEUE);
        let conn: ConnId = self.master.next_conn();
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.master
            .send(Command::Subscribe {
                conn,
                info,
                events: tx,
                reply,
                caller,
            })
            .await
            .map_err(|_| stopped())?;
        match answer.await {
            Ok(Ok(id)) => {
                // The guard first: if the client goes away during the write
                // below, dropping it tells the actor.
                let stream = GuardedStream {
                    inner: ReceiverStream::new(rx),
                    on_drop: Some((self.master.clone(), Command::FrameworkClosed(conn))),
                    _wire: PhantomData,
                };
                self.gate.record_owner(&recorder, &id).await;
                Ok(Response::new(stream))
            }
            Ok(Err(e)) => Err(status_of(e)),
            Err(_) => Err(stopped()),
        }
    }

    async fn accept(
        &self,
        r: Request<pb::AcceptRequest>,
    ) -> Result<Response<pb::CallResponse>, Status> {
        let caller = self.gate.grpc_caller(&r)?;
        let call = r.into_inner().try_into().map_err(invalid)?;
        self.call(caller, Call::Accept(call)).await
    }
    async fn decline(
        &self,
        r: Request<pb::DeclineRequest>,
    ) -> Result<Response<pb::CallResponse>, Status> {
        let caller = self.gate.grpc_caller(&r)?;
        let call = r.into_inner().try_into().map_err(invalid)?;
        self.call(caller, Call::Decline(call)).await
    }
    async fn revive(
        &self,
        r: Request<pb::ReviveRequest>,
    ) -> Result<Response<pb::CallResponse>, Status> {
        let caller = self.gate.grpc_caller(&r)?;
        let id =
            convert::framework_id("framework_id", &r.into_inner().framework_id).map_err(invalid)?;
        self.call(caller, Call::Revive(id)).await
    }
    async fn suppress(
        &self,
        r: Request<pb::SuppressRequest>,
    ) -> Result<Response<pb::CallResponse>, Status> {
        let caller = self.gate.grpc_caller(&r)?;
        let id =
            convert::framework_id("framework_id", &r.into_inner().framework_id).map_err(invalid)?;
        self.call(caller, Call::Suppress(id)).await
    }
    async fn kill(
        &self,
        r: Request<pb::KillRequest>,
    ) -> Result<Response<pb::CallResponse>, Status> {
        let caller = self.gate.grpc_caller(&r)?;
        let call = r.into_inner().try_into().map_err(invalid)?;
        self.call(caller, Call::Kill(call)).await
    }
    async fn acknowledge(
        &self,
        r: Request<pb::AcknowledgeRequest>,
    ) -> Result<Response<pb::CallResponse>, Status> {
        let caller = self.gate.grpc_caller(&r)?;
        let call = r.into_inner().try_into().map_err(invalid)?;
        self.call(caller, Call::Acknowledge(call)).await
    }
    async fn reconcile(
        &self,
        r: Request<pb::ReconcileRequest>,
    ) -> Result<Response<pb::CallResponse>, Status> {
        let caller = self.gate.grpc_caller(&r)?;
        let call = r.into_inner().try_into().map_err(invalid)?;
        self.call(caller, Call::Reconcile(call)).await
    }
    async fn teardown(
        &self,
        r: Request<pb::TeardownRequest>,
    ) -> Result<Response<pb::CallResponse>, Status> {
        let caller = self.gate.grpc_caller(&r)?;
        let id =
            convert::framework_id("framework_id", &r.into_inner().framework_id).map_err(invalid)?;
        self.call(caller, Call::Teardown(id)).await
    }
    async fn secret_versions(
        &self,
        r: Request<pb::SecretVersionsRequest>,
    ) -> Result<Response<pb::SecretVersionsResponse>, Status> {
        let caller = self.gate.grpc_caller(&r)?;
        let r = r.into_inner();
        let fid = convert::framework_id("framework_id", &r.framework_id).map_err(invalid)?;
        // Only the framework's own principal (or an admin) asks about the
        // secrets it uses.
        self.gate
            .check_recorded_owner(&caller, &fid)
            .map_err(|d| Status::permission_denied(d.to_string()))?;
        if r.paths.len() > MAX_SECRET_VERSION_PATHS {
            return Err(Status::invalid_argument(format!(
                "paths: at most {MAX_SECRET_VERSION_PATHS} per call ({} given)",
                r.paths.len()
            )));
        }
        let paths = r
            .paths
            .iter()
            .enumerate()
            .map(|(i, p)| {
                agora_core::secrets::SecretPath::parse(p)
                    .map_err(|e| Status::invalid_argument(format!("paths[{i}]: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        // Paths the framework may not read are refused before the store
        // is asked: the answer must not tell whether they exist.
        for (i, p) in paths.iter().enumerate() {
            self.gate
                .may_framework_read_secret(&caller, &fid, p)
                .map_err(|e| Status::permission_denied(format!("paths[{i}]: {e}")))?;
        }
        let store = self.secrets.store.clone().ok_or_else(no_store)?;
        self.master
            .secrets_query(|reply| crate::actor::SecretsQuery::FrameworkKnown(fid, reply))
            .await
            .map_err(|_| stopped())?
            .map_err(status_of)?;
        let secrets = paths
            .iter()
            .map(|p| {
                let v = store.version_info(p);
                pb::SecretVersion {
                    path: p.to_string(),
                    exists: v.exists,
                    latest: v.latest,
                    rollout: v.rollout,
                }
            })
            .collect();
        Ok(Response::new(pb::SecretVersionsResponse { secrets }))
    }
}

/// One agent message, converted. Malformed status updates and usage
/// entries are dropped (and logged): the agent re-sends unacknowledged
/// updates, and one bad entry must not hold up the others.
fn agent_command(conn: ConnId, m: pb::AgentMessage) -> Option<Command> {
    use pb::agent_message::Message as M;
    Some(match m.message? {
        M::Register(r) => Command::AgentRegister(conn, Register::try_from(r)),
        M::Heartbeat(_) => Command::AgentHeartbeat(conn),
        M::Updates(u) => Command::AgentUpdates(
            conn,
            u.updates
                .into_iter()
                .filter_map(|u| match StatusUpdate::try_from(u) {
                    Ok(u) => Some(u),
                    Err(e) => {
                        tracing::warn!(conn, error = %e, "dropping a malformed status update");
                        None
                    }
                })
                .collect(),
        ),
        M::Usage(u) => Command::AgentUsage(
            conn,
            u.tasks
                .into_iter()
                .filter_map(|t| TaskUsage::try_from(t).ok())
                .collect(),
        ),
    })
}

/// The agent link. With `tls`, every call must come from an agent: a
/// client certificate of the cluster CA with the agent usages, and (Attach)
/// naming the hostname the agent registers with.
#[derive(Clone)]
pub struct AgentLinkService {
    pub master: MasterHandle,
    pub secrets: crate::secrets::Secrets,
    pub tls: Option<agora_tls::ServerTls>,
}

/// How long an agent has to send REGISTER on a new stream.
const FIRST_MESSAGE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

fn refuse(peer: Option<std::net::SocketAddr>, e: agora_tls::PeerError) -> Status {
    tracing::warn!(peer = ?peer, reason = %e, "agent refused");
    match e {
        agora_tls::PeerError::NameMismatch { .. } => Status::permission_denied(e.to_string()),
        _ => Status::unauthenticated(e.to_string()),
    }
}

impl AgentLinkService {
    /// The caller's agent identity when the master runs TLS (`None`
    /// without TLS); refuses a caller without an agent certificate.
    pub fn authenticate<T>(
        &self,
        req: &Request<T>,
    ) -> Result<Option<agora_tls::AgentIdentity>, Status> {
        let Some(tls) = &self.tls else {
            return Ok(None);
        };
        let conn = req.extensions().get::<agora_tls::ConnInfo>();
        agora_tls::AgentIdentity::verify(tls, conn)
            .map(Some)
            .map_err(|e| refuse(conn.and_then(|c| c.remote_addr), e))
    }
}

impl AgentLinkService {
    /// For calls naming an agent (`ResolveSecrets`): with TLS, the caller
    /// must hold an agent certificate for the hostname `agent_id`
    /// registered with, so one agent cannot act as another.
    pub async fn authorize_agent<T>(&self, req: &Request<T>, agent_id: &str) -> Result<(), Status> {
        let Some(identity) = self.authenticate(req)? else {
            return Ok(());
        };
        let peer = req
            .extensions()
            .get::<agora_tls::ConnInfo>()
            .and_then(|c| c.remote_addr);
        // One agent's host name from the actor (not a whole /state
        // snapshot: this runs once per task launch with secrets).
        let hostname = self
            .master
            .secrets_query(|reply| {
                crate::actor::SecretsQuery::AgentHostname(agora_core::AgentId::new(agent_id), reply)
            })
            .await
            .map_err(|_| stopped())?;
        let Some(hostname) = hostname else {
            tracing::warn!(peer = ?peer, agent_id, "agent refused: unknown agent id");
            return Err(Status::permission_denied(format!(
                "agent {agent_id:?} is not registered with this master"
            )));
        };
        identity
            .check_hostname(&hostname)
            .map_err(|e| refuse(peer, e))
    }
}

/// Refuses a REGISTER whose hostname the agent's certificate does not name.
fn check_register(
    id: &agora_tls::AgentIdentity,
    peer: Option<std::net::SocketAddr>,
    m: &pb::AgentMessage,
) -> Result<(), Status> {
    if let Some(pb::agent_message::Message::Register(r)) = &m.message {
        let hostname = r.agent.as_ref().map(|a| a.hostname.as_str()).unwrap_or("");
        id.check_hostname(hostname).map_err(|e| refuse(peer, e))?;
    }
    Ok(())
}

/// Refuses a REGISTER naming a known agent id unless the certificate also
/// names the hostname that agent is known by: otherwise an agent with a
/// certificate for its own name could take over another agent's id (its
/// tasks, and `ResolveSecrets` for them).
async fn check_known_id(
    master: &MasterHandle,
    id: &agora_tls::AgentIdentity,
    peer: Option<std::net::SocketAddr>,
    m: &pb::AgentMessage,
) -> Result<(), Status> {
    let Some(pb::agent_message::Message::Register(r)) = &m.message else {
        return Ok(());
    };
    let Some(agent_id) = r
        .agent
        .as_ref()
        .map(|a| a.agent_id.as_str())
        .filter(|i| !i.is_empty())
    else {
        return Ok(());
    };
    let known = master
        .secrets_query(|reply| {
            crate::actor::SecretsQuery::AgentHostname(agora_core::AgentId::new(agent_id), reply)
        })
        .await
        .map_err(|_| stopped())?;
    let Some(known) = known else {
        return Ok(());
    };
    id.check_hostname(&known).map_err(|e| {
        refuse(
            peer,
            agora_tls::PeerError::NameMismatch {
                hostname: known.clone(),
                reason: format!(
                    "agent {agent_id} is registered as {:?}; a certificate not naming that host \
                     cannot re-register it (start the agent with a fresh work dir to register \
                     as a new agent): {e}",
                    known
                ),
            },
        )
    })
}

#[tonic::async_trait]
impl pb::agent_link_server::AgentLink for AgentLinkService {
    type AttachStream = GuardedStream<MasterMessage, pb::MasterMessage>;

    async fn attach(
        &self,
        req: Request<Streaming<pb::AgentMessage>>,
    ) -> Result<Response<Self::AttachStream>, Status> {
        let identity = self.authenticate(&req)?;
        let peer = req
            .extensions()
            .get::<agora_tls::ConnInfo>()
            .and_then(|c| c.remote_addr);
        let mut inbound = req.into_inner();
        // With TLS, the first message (REGISTER) is checked before the
        // stream is accepted, so a wrong name gets PERMISSION_DENIED.
        let mut first = None;
        if let Some(id) = &identity {
            let m = match tokio::time::timeout(FIRST_MESSAGE_TIMEOUT, inbound.next()).await {
                Ok(Some(Ok(m))) => m,
                Ok(Some(Err(e))) => return Err(e),
                Ok(None) => return Err(Status::cancelled("the agent closed the stream")),
                Err(_) => {
                    return Err(Status::deadline_exceeded(
                        "no REGISTER within 15 s of opening the agent stream",
                    ));
                }
            };
            check_register(id, peer, &m)?;
            check_known_id(&self.master, id, peer, &m).await?;
            first = Some(m);
        }
        let (tx, rx) = mpsc::channel(AGENT_QUEUE);
        let conn = self.master.next_conn();
        self.master
            .send(Command::AgentAttach { conn, tx })
            .await
            .map_err(|_| stopped())?;
        let master = self.master.clone();
        tokio::spawn(async move {
            loop {
                let msg = match first.take() {
                    Some(m) => Ok(m),
                    None => match inbound.next().await {
                        Some(m) => m,
                        None => break,
                    },
                };
                match msg {
                    Ok(m) => {
                        if let Some(id) = &identity
                            && (check_register(id, peer, &m).is_err()
                                || check_known_id(&master, id, peer, &m).await.is_err())
                        {
                            break;
                        }
                        let Some(cmd) = agent_command(conn, m) else {
                            continue;
                        };
                        if master.send(cmd).await.is_err() {
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
            _wire: PhantomData,
        }))
    }

    async fn resolve_secrets(
        &self,
        r: Request<pb::ResolveSecretsRequest>,
    ) -> Result<Response<pb::ResolveSecretsResponse>, Status> {
        // With TLS only the agent `agent_id` itself gets past this.
        self.authorize_agent(&r, &r.get_ref().agent_id).await?;
        let r = r.into_inner();
        let agent = convert::agent_id("agent_id", &r.agent_id).map_err(invalid)?;
        let framework = convert::framework_id("framework_id", &r.framework_id).map_err(invalid)?;
        let task = convert::task_id("task_id", &r.task_id).map_err(invalid)?;
        let store = self.secrets.store.clone().ok_or_else(no_store)?;
        let (tid, fid) = (task.clone(), framework.clone());
        let refs = self
            .master
            .secrets_query(|reply| crate::actor::SecretsQuery::TaskSecrets {
                agent,
                framework,
                task,
                reply,
            })
            .await
            .map_err(|_| stopped())?
            .map_err(|m| Status::permission_denied(format!("refusing to resolve secrets: {m}")))?;
        let policy = self.secrets.policy.0.clone();
        let f = fid.clone();
        // Off the runtime: the store's lock may be held by a durable write.
        let secrets = tokio::task::spawn_blocking(move || {
            let mut seen = std::collections::HashSet::new();
            let mut secrets = Vec::new();
            for u in &refs.secrets {
                let s = &u.secret;
                if !seen.insert((s.path.clone(), s.version)) {
                    continue;
                }
                policy
                    .may_read(&f, refs.principal.as_deref(), &s.path)
                    .map_err(|m| {
                        Status::permission_denied(format!(
                            "secret {}: permission denied: {m}",
                            s.path
                        ))
                    })?;
                let (version, value) = store.resolve(&s.path, s.version).map_err(|e| match e {
                    crate::secrets::SecretError::Unknown(_) => Status::not_found(format!(
                        "{e} (the task references {}); create it with `agora secret put {}`",
                        if s.version == 0 {
                            "its latest version".to_string()
                        } else {
                            format!("version {}", s.version)
                        },
                        s.path
                    )),
                    crate::secrets::SecretError::VersionNotKept { .. } => {
                        Status::not_found(e.to_string())
                    }
                    e => {
                        tracing::error!(path = %s.path, error = %e, "cannot open a secret");
                        Status::internal(format!("secret {}: {e}", s.path))
                    }
                })?;
                secrets.push(pb::ResolvedSecret {
                    path: s.path.to_string(),
                    requested_version: s.version,
                    version,
                    // The one copy that leaves the store: the agent needs the bytes.
                    value: value.expose().to_vec(),
                });
            }
            Ok::<_, Status>(secrets)
        })
        .await
        .map_err(|_| {
            Status::internal("resolving secrets failed unexpectedly; see the master's log")
        })??;
        tracing::debug!(task = %tid, framework = %fid, secrets = secrets.len(), "resolved a task's secrets");
        Ok(Response::new(pb::ResolveSecretsResponse { secrets }))
    }
}
