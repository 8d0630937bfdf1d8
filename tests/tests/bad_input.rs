//! Bad input never panics the master, never leaks resources, and always gets
//! an answer naming the problem.

use agora_core::TaskState;
use agora_proto::pb;
use agora_tests::{Cluster, Ev, Fw, fw_config, task, test_config};
use std::time::Duration;
use tonic::Code;

async fn task_error(f: &mut Fw, id: &str) -> String {
    f.update(id, TaskState::Error)
        .await
        .expect("TASK_ERROR")
        .message
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_accepts_are_refused_and_resources_return() {
    let c = Cluster::start(test_config()).await.unwrap();
    let mut f1 = Fw::start(fw_config(&c, "good")).await.unwrap();
    let mut f2 = Fw::start(fw_config(&c, "other")).await.unwrap();
    c.agent("a1", "cpus:2;mem:512;ports:[31000-31001]", &[])
        .await
        .unwrap();
    c.agent("a2", "cpus:2;mem:512", &[]).await.unwrap();
    let o1 = f1.offers().await.unwrap();
    let o2 = f2.offers().await.unwrap();

    // Unknown offer.
    let e = f1
        .client
        .accept(
            &["no-such-offer".into()],
            vec![task("u", "cpus:1;mem:10", "serve")],
            None,
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("not outstanding"), "{e}");
    assert!(task_error(&mut f1, "u").await.contains("not outstanding"));

    // A foreign offer: refused, and it stays usable by its owner.
    let e = f1
        .client
        .accept(
            &[o2[0].id.clone()],
            vec![task("x", "cpus:1;mem:10", "serve")],
            None,
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("another framework"), "{e}");
    f2.client
        .launch(&o2[0], vec![task("owner", "cpus:1;mem:10", "serve")])
        .await
        .unwrap();
    f2.update("owner", TaskState::Running).await.unwrap();

    // A malformed call (a value no task can have) is refused at the edge,
    // naming the field, and changes nothing: the offer stays usable.
    let mut bad_cpus = task("nan", "cpus:1;mem:10", "serve");
    bad_cpus.resources.as_mut().unwrap().cpus = f64::NAN;
    let mut bad_grace = task("grace", "cpus:1;mem:10", "serve");
    bad_grace.kill_grace_seconds = -1.0;
    for (bad, field) in [
        (bad_cpus, "tasks[1].resources.cpus"),
        (bad_grace, "tasks[1].kill_grace_seconds"),
        (
            task("bad id", "cpus:0.1;mem:10", "serve"),
            "tasks[1].task_id",
        ),
        (task("..", "cpus:0.1;mem:10", "serve"), "tasks[1].task_id"),
    ] {
        let e = f1
            .client
            .launch(&o1[0], vec![task("fine", "cpus:0.1;mem:10", "serve"), bad])
            .await
            .unwrap_err();
        assert!(e.to_string().contains(field), "{field}: {e}");
    }

    // Over-commit, duplicate ids, nothing asked, ports not offered:
    // per-task TASK_ERROR, the valid task still launches.
    let mut bad_port = task("port", "cpus:0.1;mem:10", "serve");
    bad_port.resources.as_mut().unwrap().ports = vec![pb::Range {
        begin: 40000,
        end: 40000,
    }];
    let tasks = vec![
        task("ok", "cpus:1;mem:100", "serve"),
        task("ok", "cpus:0.1;mem:10", "serve"),
        task("huge", "cpus:64;mem:10", "serve"),
        task("empty", "cpus:0;mem:0", "serve"),
        bad_port,
    ];
    f1.client.launch(&o1[0], tasks).await.unwrap();
    f1.update("ok", TaskState::Running).await.unwrap();
    let dup = f1
        .wait(Duration::from_secs(5), |e| match e {
            Ev::Update(s) if s.task_id.as_str() == "ok" && s.state == TaskState::Error => {
                Some(s.message.clone())
            }
            _ => None,
        })
        .await
        .unwrap();
    assert!(dup.contains("used twice"), "{dup}");
    assert!(task_error(&mut f1, "huge").await.contains("only"));
    assert!(task_error(&mut f1, "empty").await.contains("no cpus"));
    assert!(task_error(&mut f1, "port").await.contains("only"));

    // A used offer cannot be accepted again.
    let e = f1
        .client
        .accept(
            &[o1[0].id.clone()],
            vec![task("again", "cpus:0.1;mem:10", "serve")],
            None,
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("not outstanding"), "{e}");
    // A live task id cannot be reused.
    let next = f1.offers().await.unwrap();
    f1.client
        .launch(&next[0], vec![task("ok", "cpus:0.1;mem:10", "serve")])
        .await
        .unwrap();
    let reused = f1
        .wait(Duration::from_secs(5), |e| match e {
            Ev::Update(s) if s.task_id.as_str() == "ok" && s.state == TaskState::Error => {
                Some(s.message.clone())
            }
            _ => None,
        })
        .await
        .unwrap();
    assert!(reused.contains("already in use"), "{reused}");

    // Nothing leaked: exactly the two running tasks hold resources.
    let st = c.state().await.unwrap();
    let live: usize = st.frameworks.iter().map(|f| f.tasks.len()).sum();
    assert_eq!(live, 2);
    assert!(
        (st.resources.used.cpus - 2.0).abs() < 1e-9,
        "{:?}",
        st.resources.used
    );
    for a in &st.agents {
        assert!(a.used_resources.cpus + a.offered_resources.cpus <= a.resources.cpus + 1e-9);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_calls_get_clear_errors_and_the_master_keeps_serving() {
    let c = Cluster::start(test_config()).await.unwrap();
    let mut raw = pb::scheduler_client::SchedulerClient::connect(c.url())
        .await
        .unwrap();

    // No framework info at all.
    let e = raw
        .subscribe(pb::SubscribeRequest { framework: None })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    // Absurd failover timeout.
    let info = pb::FrameworkInfo {
        name: "x".into(),
        failover_timeout_seconds: f64::NAN,
        ..Default::default()
    };
    let e = raw
        .subscribe(pb::SubscribeRequest {
            framework: Some(info),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("failover_timeout"), "{}", e.message());
    // Calls from nobody.
    let e = raw.accept(pb::AcceptRequest::default()).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("framework_id"), "{}", e.message());
    let e = raw
        .revive(pb::ReviveRequest {
            framework_id: "ghost".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(e.message().contains("not subscribed"), "{}", e.message());
    let e = raw
        .decline(pb::DeclineRequest {
            framework_id: "ghost".into(),
            offer_ids: vec!["o".into()],
            filters: Some(pb::Filters {
                refuse_seconds: f64::INFINITY,
                has_refuse_seconds: true,
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);

    // A subscribed framework sending nonsense.
    let f = Fw::start(fw_config(&c, "noisy")).await.unwrap();
    let fid = f.id.0.clone();
    let e = raw
        .acknowledge(pb::AcknowledgeRequest {
            framework_id: fid.clone(),
            acknowledgements: vec![pb::Acknowledgement {
                agent_id: "a".into(),
                task_id: "t".into(),
                uuid: vec![],
            }],
        })
        .await
        .unwrap_err();
    assert!(e.message().contains("uuid"), "{}", e.message());
    let e = raw
        .decline(pb::DeclineRequest {
            framework_id: fid.clone(),
            offer_ids: vec!["nope".into()],
            filters: Some(pb::Filters {
                refuse_seconds: f64::NAN,
                has_refuse_seconds: true,
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    // Huge refuse_seconds is capped, not a panic.
    raw.decline(pb::DeclineRequest {
        framework_id: fid.clone(),
        offer_ids: vec![],
        filters: Some(pb::Filters {
            refuse_seconds: 1e300,
            has_refuse_seconds: true,
        }),
    })
    .await
    .unwrap();
    raw.kill(pb::KillRequest {
        framework_id: fid.clone(),
        task_id: "never-launched".into(),
        agent_id: String::new(),
    })
    .await
    .unwrap();

    // An agent that registers without saying who it is is refused, not crashed on.
    let mut link = pb::agent_link_client::AgentLinkClient::connect(c.url())
        .await
        .unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(pb::AgentMessage {
        message: Some(pb::agent_message::Message::Register(pb::Register {
            agent: None,
            tasks: vec![],
            frameworks: vec![],
        })),
    })
    .await
    .unwrap();
    let mut inbound = link
        .attach(tokio_stream_wrapper(rx))
        .await
        .unwrap()
        .into_inner();
    let m = inbound.message().await.unwrap().unwrap();
    match m.message {
        Some(pb::master_message::Message::Refused(r)) => {
            assert!(r.message.contains("agent"), "{}", r.message)
        }
        other => panic!("expected REFUSED, got {other:?}"),
    }
    // An agent claiming negative... (resources travel unsigned) NaN cpus.
    let (tx2, rx2) = tokio::sync::mpsc::channel(4);
    tx2.send(pb::AgentMessage {
        message: Some(pb::agent_message::Message::Register(pb::Register {
            agent: Some(pb::AgentInfo {
                hostname: "h".into(),
                resources: Some(pb::Resources {
                    cpus: f64::NAN,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            tasks: vec![],
            frameworks: vec![],
        })),
    })
    .await
    .unwrap();
    let mut inbound = link
        .attach(tokio_stream_wrapper(rx2))
        .await
        .unwrap()
        .into_inner();
    let m = inbound.message().await.unwrap().unwrap();
    assert!(
        matches!(m.message, Some(pb::master_message::Message::Refused(_))),
        "{m:?}"
    );

    // Raw garbage on the gRPC port.
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(c.addr).await.unwrap();
        s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x04\x99\xff\xff\xff\xff\xffgarbage")
            .await
            .unwrap();
        let mut buf = [0u8; 256];
        let _ = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await;
    }

    // Still serving.
    let (code, _) = c.get("/health").await.unwrap();
    assert_eq!(code, 200);
    let st = c.state().await.unwrap();
    assert_eq!(st.frameworks.len(), 1);
    assert!(
        st.agents.is_empty(),
        "refused agents must not be admitted: {:?}",
        st.agents
    );
    let (code, _) = c.get("/no/such/page").await.unwrap();
    assert_eq!(code, 404);
    drop(f);
}

fn tokio_stream_wrapper(
    rx: tokio::sync::mpsc::Receiver<pb::AgentMessage>,
) -> impl futures_like::Stream<Item = pb::AgentMessage> {
    futures_like::ReceiverStream(rx)
}

/// A minimal `Stream` over an mpsc receiver (keeps this crate's deps small).
mod futures_like {
    use std::pin::Pin;
    use std::task::{Context, Poll};
    pub use tonic::codegen::tokio_stream::Stream;

    pub struct ReceiverStream<T>(pub tokio::sync::mpsc::Receiver<T>);

    impl<T> Stream for ReceiverStream<T> {
        type Item = T;
        fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
            self.0.poll_recv(cx)
        }
    }
}
