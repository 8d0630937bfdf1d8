use super::*;
use agora_core::info::{CommandInfo, TaskInfo};
use tokio::sync::mpsc;

fn work_dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("agora-proc-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn spec(task: &str, cmd: &str) -> LaunchSpec {
    LaunchSpec {
        framework_id: "f".into(),
        task: TaskInfo {
            command: Some(CommandInfo {
                value: cmd.into(),
                shell: true,
                ..Default::default()
            }),
            ..TaskInfo::new(task.into(), Resources::default())
        },
    }
}

/// Waits for `task`'s terminal event.
async fn ended(rx: &mut mpsc::UnboundedReceiver<RuntimeEvent>, task: &str) -> RuntimeEvent {
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(20), rx.recv())
            .await
            .expect("no event within 20 s")
            .expect("sink closed");
        if ev.task_id.as_str() == task && ev.state.is_terminal() {
            return ev;
        }
    }
}

async fn all_logs(rt: &ProcessRuntime, task: &str) -> String {
    use futures::StreamExt;
    let chunks: Vec<_> = rt.logs(&"f".into(), &task.into(), false).collect().await;
    let bytes: Vec<u8> = chunks.into_iter().flat_map(|c| c.unwrap()).collect();
    String::from_utf8(bytes).unwrap()
}

#[tokio::test]
async fn tasks_whose_ids_once_sanitized_alike_keep_their_own_sandboxes() {
    let dir = work_dir();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let rt = ProcessRuntime::new(tx, &dir);
    rt.launch(spec("a/b", "echo from a/b")).await;
    assert_eq!(ended(&mut rx, "a/b").await.state, TaskState::Finished);
    rt.launch(spec("a_b", "echo from a_b")).await;
    assert_eq!(ended(&mut rx, "a_b").await.state, TaskState::Finished);
    assert_eq!(all_logs(&rt, "a/b").await, "from a/b\n");
    assert_eq!(all_logs(&rt, "a_b").await, "from a_b\n");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(start_paused = true)]
async fn sandbox_gc_removes_only_the_sandbox_it_means() {
    let dir = work_dir();
    let (tx, _rx) = mpsc::unbounded_channel();
    let rt = ProcessRuntime::new(tx, &dir).with_gc_delay(Duration::from_secs(1));
    // Sandboxes of other tasks (and of another framework) with their logs.
    let keep = [("f", "keep"), ("f", "a_b"), ("g", "other")];
    for (f, t) in keep {
        let d = rt.sandbox(&(f.into(), t.into()));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("stdout"), "precious").unwrap();
    }
    for id in [".", "..", "a/b", ""] {
        rt.cleanup(&"f".into(), &id.into()).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    for (f, t) in keep {
        let d = rt.sandbox(&(f.into(), t.into()));
        assert!(
            d.join("stdout").exists(),
            "the GC of another task removed {}",
            d.display()
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(start_paused = true)]
async fn sandbox_gc_spares_a_later_run_of_the_same_task_id() {
    let dir = work_dir();
    let (tx, _rx) = mpsc::unbounded_channel();
    let rt = ProcessRuntime::new(tx, &dir).with_gc_delay(Duration::from_secs(10));
    let key: Key = ("f".into(), "t".into());
    let d = rt.sandbox(&key);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("pid"), "100 1").unwrap();
    rt.cleanup(&key.0, &key.1).await;
    // The id is launched again before the first run's sandbox is collected.
    std::fs::write(d.join("pid"), "200 2").unwrap();
    tokio::time::sleep(Duration::from_secs(11)).await;
    assert!(
        d.join("pid").exists(),
        "the second run's sandbox was removed"
    );
    // Its own collection removes it.
    rt.cleanup(&key.0, &key.1).await;
    tokio::time::sleep(Duration::from_secs(11)).await;
    assert!(!d.exists());
    let _ = std::fs::remove_dir_all(&dir);
}

/// Bytes this process has read through read(2) and friends so far.
fn bytes_read() -> u64 {
    let io = std::fs::read_to_string("/proc/self/io").unwrap();
    io.lines()
        .find_map(|l| l.strip_prefix("rchar: "))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn following_a_log_reads_only_what_was_appended() {
    use futures::StreamExt;
    use std::io::Write;
    let dir = work_dir();
    let (tx, _rx) = mpsc::unbounded_channel();
    let rt = ProcessRuntime::new(tx, &dir);
    rt.launch(spec("big", "sleep 30")).await;
    let key: Key = ("f".into(), "big".into());
    // 16 MiB of output already there.
    const SIZE: usize = 16 << 20;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(rt.sandbox(&key).join("stdout"))
        .unwrap();
    f.write_all(&vec![b'x'; SIZE]).unwrap();
    let (got_tx, mut got) = mpsc::unbounded_channel();
    let mut logs = rt.logs(&key.0, &key.1, true);
    let reader = tokio::spawn(async move {
        while let Some(chunk) = logs.next().await {
            let _ = got_tx.send(chunk.unwrap());
        }
    });
    let mut seen = Vec::new();
    while seen.len() < SIZE {
        seen.extend(got.recv().await.unwrap());
    }
    // Several polls with nothing new: they cost (almost) nothing.
    let before = bytes_read();
    tokio::time::sleep(logs::POLL * 5).await;
    let polled = bytes_read() - before;
    eprintln!("5 idle polls of a 16 MiB log read {polled} bytes");
    assert!(
        polled < 1 << 20,
        "5 idle polls of a 16 MiB log read {polled} bytes"
    );
    // New output still arrives, once.
    f.write_all(b"tail\n").unwrap();
    let next = got.recv().await.unwrap();
    assert_eq!(next, b"tail\n");
    rt.kill(&key.0, &key.1, Duration::ZERO).await;
    tokio::time::timeout(Duration::from_secs(20), reader)
        .await
        .expect("following stops once the task ends")
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
