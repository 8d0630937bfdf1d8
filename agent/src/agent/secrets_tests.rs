//! Issue 10: a task's secrets on the agent, with a fake master
//! (resolver): resolved before launch, delivered as env and tmpfs files,
//! failures reported TASK_FAILED naming the path, nothing in the
//! checkpoint.

use super::tests::{run_tasks, temp_dir};
use super::*;
use crate::secrets::{Resolved, SecretResolver, SecretsDir};
use agora_core::secrets::SecretValue;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

const CANARY: &str = "canary-5f1d2c9a-never-shown";

/// A master that answers from a table, or fails `fail_first` times with
/// `code` first.
struct FakeMaster {
    values: Vec<(String, u64, Vec<u8>)>,
    code: tonic::Code,
    fail_first: usize,
    calls: AtomicUsize,
}

impl SecretResolver for FakeMaster {
    fn resolve(
        &self,
        _agent: &AgentId,
        _framework: &FrameworkId,
        _task: &TaskId,
    ) -> crate::runtime::BoxFuture<'_, Result<Vec<Resolved>, tonic::Status>> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            if n < self.fail_first {
                return Err(tonic::Status::new(
                    self.code,
                    if self.code == tonic::Code::PermissionDenied {
                        "secret /prod/db/password: permission denied: framework f may not read /prod"
                    } else {
                        "connection refused"
                    },
                ));
            }
            Ok(self
                .values
                .iter()
                .map(|(p, v, bytes)| Resolved {
                    path: p.clone(),
                    requested_version: *v,
                    version: *v,
                    value: SecretValue::new(bytes.clone()),
                })
                .collect())
        })
    }
}

fn master(code: tonic::Code, fail_first: usize) -> Arc<FakeMaster> {
    Arc::new(FakeMaster {
        values: vec![
            ("/prod/db/password".into(), 3, CANARY.as_bytes().to_vec()),
            ("/prod/tls".into(), 1, b"tls-bytes".to_vec()),
        ],
        code,
        fail_first,
        calls: AtomicUsize::new(0),
    })
}

/// Keeps every spec it is asked to launch; reports RUNNING.
struct Keeper {
    specs: Mutex<Vec<LaunchSpec>>,
    sink: crate::runtime::EventSink,
}

impl ContainerRuntime for Keeper {
    fn name(&self) -> &'static str {
        "keeper"
    }
    fn launch(&self, spec: LaunchSpec) -> crate::runtime::BoxFuture<'_, ()> {
        let _ = self.sink.send(RuntimeEvent::new(
            &spec.framework_id,
            &spec.task.id,
            TaskState::Running,
        ));
        self.specs.lock().unwrap().push(spec);
        Box::pin(async {})
    }
    fn kill(&self, _: &FrameworkId, _: &TaskId, _: Duration) -> crate::runtime::BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

struct H {
    agent: Agent,
    rt: Arc<Keeper>,
    events: mpsc::UnboundedReceiver<RuntimeEvent>,
    out: mpsc::Sender<pb::AgentMessage>,
    _out_rx: mpsc::Receiver<pb::AgentMessage>,
    work: std::path::PathBuf,
    shm: std::path::PathBuf,
}

fn harness(resolver: Arc<FakeMaster>) -> H {
    let (tx, events) = mpsc::unbounded_channel();
    let rt = Arc::new(Keeper {
        specs: Mutex::new(Vec::new()),
        sink: tx.clone(),
    });
    let work = temp_dir();
    let shm = temp_dir();
    let cfg = AgentConfig {
        work_dir: Some(work.clone()),
        ..AgentConfig::default()
    };
    let mut agent = Agent::new(
        cfg,
        rt.clone(),
        tx,
        mpsc::unbounded_channel().0,
        watch::channel(None).0,
        watch::channel(Vec::new()).0,
    );
    agent.agent_id = Some(AgentId::new("ag1"));
    agent.resolver = Some(resolver);
    agent.secrets_root = Some(SecretsDir::unchecked(&shm));
    let (out, _out_rx) = mpsc::channel(1024);
    H {
        agent,
        rt,
        events,
        out,
        _out_rx,
        work,
        shm,
    }
}

impl H {
    /// Feeds runtime events to the agent until `task` reaches `state`.
    async fn until(&mut self, task: &str, state: TaskState) -> TaskRecord {
        loop {
            let ev = tokio::time::timeout(Duration::from_secs(20), self.events.recv())
                .await
                .expect("no event")
                .unwrap();
            self.agent.record(ev);
            self.agent.persist();
            let key = (FrameworkId::new("f"), TaskId::new(task));
            if self.agent.tasks[&key].state == state {
                let t = &self.agent.tasks[&key];
                return TaskRecord {
                    queue: t
                        .queue
                        .iter()
                        .map(|p| Pending {
                            update: p.update.clone(),
                            terminal: p.terminal,
                        })
                        .collect(),
                    ..TaskRecord::new(t.info.clone(), t.state, Duration::ZERO)
                };
            }
        }
    }
}

impl Drop for H {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.work);
        let _ = std::fs::remove_dir_all(&self.shm);
    }
}

fn task_with_secrets(id: &str) -> pb::TaskInfo {
    pb::TaskInfo {
        task_id: id.into(),
        command: Some(pb::CommandInfo {
            value: "serve".into(),
            ..Default::default()
        }),
        secrets: vec![
            pb::SecretUse {
                target: Some(pb::secret_use::Target::Env("DB_PASSWORD".into())),
                path: "/prod/db/password".into(),
                version: 3,
            },
            pb::SecretUse {
                target: Some(pb::secret_use::Target::File("/run/secrets/tls".into())),
                path: "/prod/tls".into(),
                version: 1,
            },
        ],
        ..Default::default()
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn secrets_reach_the_runtime_as_env_and_tmpfs_files_and_nothing_else() {
    use std::os::unix::fs::PermissionsExt;
    let mut h = harness(master(tonic::Code::Ok, 0));
    h.agent
        .on_master(run_tasks("f", vec![task_with_secrets("t1")]), &h.out)
        .await;
    h.until("t1", TaskState::Running).await;
    let spec = h.rt.specs.lock().unwrap().pop().expect("launched");
    assert_eq!(spec.secrets.env.len(), 1);
    assert_eq!(spec.secrets.env[0].0, "DB_PASSWORD");
    assert_eq!(spec.secrets.env[0].1.expose(), CANARY.as_bytes());
    // Never in the task's plain environment or arguments.
    let cmd = spec.task.command.clone().unwrap();
    assert!(cmd.env.iter().all(|(_, v)| !v.contains(CANARY)));
    assert!(!cmd.value.contains(CANARY) && cmd.args.iter().all(|a| !a.contains(CANARY)));
    // The spec's Debug (what a log line could show) holds no value.
    let dbg = format!("{spec:?}");
    assert!(!dbg.contains(CANARY) && !dbg.contains("tls-bytes"), "{dbg}");
    // The file: on the agent's secrets dir, 0400, in a 0700 task dir.
    assert_eq!(spec.secrets.files.len(), 1);
    let f = &spec.secrets.files[0];
    assert_eq!(f.target, "/run/secrets/tls");
    assert!(f.host_path.starts_with(h.shm.join("ag1")), "{f:?}");
    assert_eq!(std::fs::read(&f.host_path).unwrap(), b"tls-bytes");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&f.host_path), 0o400);
    assert_eq!(mode(f.host_path.parent().unwrap()), 0o700);
    // The checkpoint and everything in the work dir: references only.
    h.agent.dirty = true;
    h.agent.persist();
    let cp = std::fs::read(h.work.join("checkpoint.pb")).unwrap();
    assert!(contains(&cp, b"/prod/db/password"), "the reference is kept");
    for e in std::fs::read_dir(&h.work).unwrap().flatten() {
        let bytes = std::fs::read(e.path()).unwrap_or_default();
        assert!(!contains(&bytes, CANARY.as_bytes()), "{:?}", e.path());
        assert!(!contains(&bytes, b"tls-bytes"), "{:?}", e.path());
    }
    // The task ends: its secret files go.
    h.agent.record(RuntimeEvent::new(
        &FrameworkId::new("f"),
        &TaskId::new("t1"),
        TaskState::Finished,
    ));
    assert!(!f.host_path.exists());
    assert!(!f.host_path.parent().unwrap().exists());
}

#[tokio::test]
async fn a_refused_secret_fails_the_task_naming_the_path_and_launches_nothing() {
    let m = master(tonic::Code::PermissionDenied, usize::MAX);
    let mut h = harness(m.clone());
    h.agent
        .on_master(run_tasks("f", vec![task_with_secrets("t1")]), &h.out)
        .await;
    let t = h.until("t1", TaskState::Failed).await;
    let (_, reason, message) = t
        .queue
        .iter()
        .filter_map(|p| p.update.status.as_ref())
        .map(|s| (s.task_state().unwrap(), s.reason.clone(), s.message.clone()))
        .next_back()
        .unwrap();
    assert_eq!(reason, crate::secrets::REASON_SECRET_FAILED);
    assert!(message.contains("/prod/db/password"), "{message}");
    assert!(message.contains("permission denied"), "{message}");
    assert!(!message.contains(CANARY));
    assert!(h.rt.specs.lock().unwrap().is_empty(), "nothing launched");
    assert_eq!(m.calls.load(Ordering::SeqCst), 1, "not retried");
}

#[tokio::test(start_paused = true)]
async fn an_unreachable_master_is_asked_again_for_a_bounded_time() {
    // Unavailable twice, then an answer: the task launches.
    let m = master(tonic::Code::Unavailable, 2);
    let mut h = harness(m.clone());
    h.agent
        .on_master(run_tasks("f", vec![task_with_secrets("t1")]), &h.out)
        .await;
    h.until("t1", TaskState::Running).await;
    assert_eq!(m.calls.load(Ordering::SeqCst), 3);

    // Unavailable for good: the task fails after about 10 s, not never.
    let m = master(tonic::Code::Unavailable, usize::MAX);
    let mut h = harness(m.clone());
    let start = tokio::time::Instant::now();
    h.agent
        .on_master(run_tasks("f", vec![task_with_secrets("t2")]), &h.out)
        .await;
    let t = h.until("t2", TaskState::Failed).await;
    let waited = start.elapsed();
    assert!(
        waited <= Duration::from_secs(12) && waited >= Duration::from_secs(5),
        "{waited:?}"
    );
    assert!(m.calls.load(Ordering::SeqCst) > 3);
    let msg = &t
        .queue
        .back()
        .unwrap()
        .update
        .status
        .as_ref()
        .unwrap()
        .message;
    assert!(msg.contains("cannot be reached"), "{msg}");
}

#[tokio::test]
async fn an_answer_without_the_pinned_version_fails_the_task() {
    let m = Arc::new(FakeMaster {
        values: vec![("/prod/db/password".into(), 2, b"old".to_vec())],
        code: tonic::Code::Ok,
        fail_first: 0,
        calls: AtomicUsize::new(0),
    });
    let mut h = harness(m);
    h.agent
        .on_master(run_tasks("f", vec![task_with_secrets("t1")]), &h.out)
        .await;
    let t = h.until("t1", TaskState::Failed).await;
    let msg = &t
        .queue
        .back()
        .unwrap()
        .update
        .status
        .as_ref()
        .unwrap()
        .message;
    assert!(
        msg.contains("/prod/db/password") && msg.contains("version 3"),
        "{msg}"
    );
    assert!(h.rt.specs.lock().unwrap().is_empty());
}

#[tokio::test]
async fn agent_start_removes_the_secret_files_of_tasks_that_are_not_live() {
    let mut h = harness(master(tonic::Code::Ok, 0));
    h.agent
        .on_master(
            run_tasks(
                "f",
                vec![task_with_secrets("live"), task_with_secrets("gone")],
            ),
            &h.out,
        )
        .await;
    h.until("live", TaskState::Running).await;
    h.until("gone", TaskState::Running).await;
    let dir = h.agent.secrets_dir().unwrap();
    let live = dir.task_dir(&FrameworkId::new("f"), &TaskId::new("live"));
    let gone = dir.task_dir(&FrameworkId::new("f"), &TaskId::new("gone"));
    assert!(live.exists() && gone.exists());
    // As after a restart where only `live` is still known.
    h.agent
        .tasks
        .remove(&(FrameworkId::new("f"), TaskId::new("gone")));
    h.agent.sweep_secrets();
    assert!(live.exists(), "a live task keeps its files");
    assert!(
        !gone.exists(),
        "files of a task that is not live are removed"
    );
}

#[test]
fn the_secrets_dir_must_be_tmpfs() {
    // A directory on a disk is refused, saying what to do.
    let disk = std::env::current_dir()
        .unwrap()
        .join("target-secrets-check");
    let e = SecretsDir::open(&disk).unwrap_err();
    let _ = std::fs::remove_dir_all(&disk);
    assert!(
        e.contains("not on a tmpfs") && e.contains("--secrets-dir"),
        "{e}"
    );
    // /dev/shm is tmpfs on Linux.
    if std::path::Path::new("/dev/shm").exists() {
        let d = std::path::Path::new("/dev/shm").join(format!(
            "agora-secrets-test-{}",
            uuid::Uuid::new_v4().simple()
        ));
        let ok = SecretsDir::open(&d);
        let _ = std::fs::remove_dir_all(&d);
        ok.unwrap();
    }
}

/// A master that answers like the real one: each (path, requested
/// version) once, `requested_version` as asked, `version` as resolved.
struct ByVersion;

impl SecretResolver for ByVersion {
    fn resolve(
        &self,
        _agent: &AgentId,
        _framework: &FrameworkId,
        _task: &TaskId,
    ) -> crate::runtime::BoxFuture<'_, Result<Vec<Resolved>, tonic::Status>> {
        Box::pin(async move {
            // The pinned version first, then the latest (version 5).
            Ok(vec![
                Resolved {
                    path: "/prod/db/password".into(),
                    requested_version: 3,
                    version: 3,
                    value: SecretValue::new(b"value-3".to_vec()),
                },
                Resolved {
                    path: "/prod/db/password".into(),
                    requested_version: 0,
                    version: 5,
                    value: SecretValue::new(b"value-5".to_vec()),
                },
            ])
        })
    }
}

/// Review: a task referencing the same path pinned (version 3) and as
/// "latest" (0) gets each reference its own value; the latest used to
/// take whichever entry of the path came first (the pinned one).
#[tokio::test]
async fn latest_and_pinned_references_of_one_path_get_their_own_values() {
    let use_ = |name: &str, version: u64| pb::SecretUse {
        target: Some(pb::secret_use::Target::Env(name.into())),
        path: "/prod/db/password".into(),
        version,
    };
    let task = agora_proto::convert::task_info(
        "task",
        pb::TaskInfo {
            task_id: "t1".into(),
            command: Some(pb::CommandInfo {
                value: "serve".into(),
                ..Default::default()
            }),
            secrets: vec![use_("PINNED", 3), use_("LATEST", 0)],
            ..Default::default()
        },
    )
    .unwrap();
    let s = crate::secrets::prepare(
        Some(Arc::new(ByVersion)),
        None,
        &AgentId::new("ag1"),
        &FrameworkId::new("f"),
        &task,
        Duration::from_secs(1),
    )
    .await
    .unwrap();
    let env: Vec<(&str, &[u8])> = s
        .env
        .iter()
        .map(|(n, v)| (n.as_str(), v.expose()))
        .collect();
    assert_eq!(
        env,
        [("PINNED", &b"value-3"[..]), ("LATEST", &b"value-5"[..])]
    );
}
