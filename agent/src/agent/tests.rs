//! The agent's task handling, driven directly (no master): what it accepts
//! from the master and from its checkpoint.

use super::*;
use crate::HollowRuntime;

struct Harness {
    agent: Agent,
    out: mpsc::Sender<pb::AgentMessage>,
    _out_rx: mpsc::Receiver<pb::AgentMessage>,
    runtime: HollowRuntime,
    events: mpsc::UnboundedReceiver<RuntimeEvent>,
}

fn harness(work_dir: Option<std::path::PathBuf>) -> Harness {
    let (tx, events) = mpsc::unbounded_channel();
    let runtime = HollowRuntime::new(tx.clone(), Duration::ZERO);
    let (control, _) = mpsc::unbounded_channel();
    let (id_tx, _) = watch::channel(None);
    let (tasks_tx, _) = watch::channel(Vec::new());
    let cfg = AgentConfig {
        work_dir,
        ..AgentConfig::default()
    };
    let agent = Agent::new(cfg, Arc::new(runtime.clone()), tx, control, id_tx, tasks_tx);
    let (out, _out_rx) = mpsc::channel(1024);
    Harness {
        agent,
        out,
        _out_rx,
        runtime,
        events,
    }
}

impl Harness {
    /// Feeds the runtime's events so far to the agent.
    fn drain(&mut self) {
        while let Ok(ev) = self.events.try_recv() {
            self.agent.record(ev);
        }
    }

    fn task_ids(&self) -> Vec<String> {
        let mut v: Vec<String> = self.agent.tasks.keys().map(|(_, t)| t.0.clone()).collect();
        v.sort();
        v
    }
}

fn task(id: &str) -> pb::TaskInfo {
    pb::TaskInfo {
        task_id: id.into(),
        command: Some(pb::CommandInfo {
            value: "serve".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn run_tasks(fw: &str, tasks: Vec<pb::TaskInfo>) -> pb::MasterMessage {
    pb::MasterMessage {
        message: Some(pb::master_message::Message::RunTasks(pb::RunTasks {
            framework: Some(pb::FrameworkInfo {
                framework_id: fw.into(),
                name: "test".into(),
                ..Default::default()
            }),
            tasks,
        })),
    }
}

fn temp_dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("agora-agent-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[tokio::test]
async fn launches_with_invalid_ids_are_refused() {
    let mut h = harness(None);
    let tasks = vec![task(".."), task("."), task(""), task("a b"), task("ok")];
    h.agent.on_master(run_tasks("f", tasks), &h.out).await;
    assert_eq!(h.task_ids(), ["ok"]);
    assert_eq!(
        h.runtime.live_tasks(),
        1,
        "only the valid task was launched"
    );
    // A framework id that would name a directory outside the sandboxes.
    h.agent
        .on_master(run_tasks("..", vec![task("x")]), &h.out)
        .await;
    assert_eq!(h.task_ids(), ["ok"]);
    assert_eq!(h.runtime.live_tasks(), 1);
    h.drain();
}

#[tokio::test]
async fn checkpointed_tasks_with_invalid_ids_are_not_recovered() {
    use prost::Message;
    let dir = temp_dir();
    let entry = |fw: &str, id: &str| pb::CheckpointTask {
        framework_id: fw.into(),
        task: Some(task(id)),
        state: pb::TaskState::TaskRunning as i32,
        pending: vec![],
        handle: String::new(),
    };
    let cp = pb::AgentCheckpoint {
        agent_id: "a1".into(),
        frameworks: vec![],
        tasks: vec![
            entry("f", "ok"),
            entry("f", ".."),
            entry("..", "t"),
            entry("f", "a/../b c"),
        ],
    };
    std::fs::write(dir.join("checkpoint.pb"), cp.encode_to_vec()).unwrap();
    let mut h = harness(Some(dir.clone()));
    h.agent.recover().await.unwrap();
    assert_eq!(h.task_ids(), ["ok"]);
    let _ = std::fs::remove_dir_all(&dir);
}
