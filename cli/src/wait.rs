//! `--wait` for the services commands: polls the REST API until what was
//! asked is done, shows progress (an indicatif bar on a terminal, a line per
//! change otherwise), and gives up after `--timeout` with a message saying
//! what is still missing and why, and exit code [`TIMED_OUT`].

use anyhow::Result;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;
use std::io::IsTerminal;
use std::time::Duration;
use tokio::time::Instant;

/// Exit code when `--wait` gave up (the operation itself goes on).
pub const TIMED_OUT: u8 = 5;

/// `--wait` ran out of time.
#[derive(Debug)]
pub struct TimedOut(pub String);
impl std::fmt::Display for TimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for TimedOut {}

/// How often the API is polled.
const POLL: Duration = Duration::from_millis(500);

/// Progress shown on stderr: a bar on a terminal, else a line per change.
pub struct Progress {
    bar: Option<ProgressBar>,
    last: String,
}

impl Progress {
    pub fn new(what: &str) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = ProgressBar::new(0);
            let style = ProgressStyle::with_template(
                "{spinner} {prefix} [{bar:30}] {pos}/{len} {msg} ({elapsed})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("#>-");
            b.set_style(style);
            b.set_prefix(what.to_string());
            b.enable_steady_tick(Duration::from_millis(120));
            b
        });
        Progress {
            bar,
            last: String::new(),
        }
    }

    /// `done` of `total`, and what is happening.
    pub fn update(&mut self, done: u64, total: u64, msg: &str) {
        match &self.bar {
            Some(b) => {
                b.set_length(total);
                b.set_position(done.min(total));
                b.set_message(msg.to_string());
            }
            None => {
                let line = format!("{done}/{total} {msg}");
                if line != self.last {
                    eprintln!("{line}");
                    self.last = line;
                }
            }
        }
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

/// What an app looks like while it is being waited for.
#[derive(Debug, Clone, PartialEq)]
pub struct AppProgress {
    pub want: u64,
    /// Healthy instances if the app has health checks, else running ones.
    pub ready: u64,
    /// Live instances, ready or not (including those being replaced or killed).
    pub live: u64,
    pub deploying: bool,
    pub checks: bool,
    /// Why instances are missing, if the framework says.
    pub waiting: String,
}

impl AppProgress {
    /// From `GET /v2/apps/{id}`'s `app`.
    pub fn of(app: &Value) -> Self {
        let n = |k: &str| app[k].as_u64().unwrap_or(0);
        let checks = app["healthChecks"]
            .as_array()
            .is_some_and(|a| !a.is_empty());
        AppProgress {
            want: n("instances"),
            ready: if checks {
                n("tasksHealthy")
            } else {
                n("tasksRunning")
            },
            live: n("tasksRunning") + n("tasksStaged"),
            deploying: app["deployments"].as_array().is_some_and(|d| !d.is_empty()),
            checks,
            waiting: app["waiting"].as_str().unwrap_or("").to_string(),
        }
    }

    /// Done: as many ready instances as wanted, no more live ones (scaling
    /// down and replacements are over), no deployment in progress.
    pub fn done(&self) -> bool {
        self.ready >= self.want && self.live <= self.want && !self.deploying
    }

    pub fn message(&self) -> String {
        let mut m = String::from(if self.checks { "healthy" } else { "running" });
        if self.live > self.want {
            m.push_str(&format!(", {} to stop", self.live - self.want));
        }
        if !self.waiting.is_empty() {
            m.push_str(" — ");
            m.push_str(&self.waiting);
        }
        m
    }
}

/// Calls `step` every 500 ms until it says [`Step::Done`], showing its
/// progress for `what`, for at most `timeout`; then fails with
/// [`TimedOut`] saying what is still missing.
pub async fn until<T>(
    what: &str,
    timeout: Duration,
    mut step: impl AsyncFnMut() -> Result<Step<T>>,
) -> Result<T> {
    let mut progress = Progress::new(what);
    let t0 = Instant::now();
    loop {
        match step().await {
            Ok(Step::Done(t)) => {
                progress.finish();
                return Ok(t);
            }
            Ok(Step::Pending {
                done,
                total,
                message,
            }) => {
                progress.update(done, total, &message);
                if t0.elapsed() >= timeout {
                    progress.finish();
                    return Err(TimedOut(format!(
                        "{what}: gave up waiting after {}: {done}/{total} {message} (this goes on in the background; --timeout waits longer)",
                        humanize(timeout)
                    ))
                    .into());
                }
            }
            Err(e) => {
                progress.finish();
                return Err(e);
            }
        }
        tokio::time::sleep(POLL.min(timeout)).await;
    }
}

/// One poll's outcome.
pub enum Step<T> {
    Done(T),
    Pending {
        done: u64,
        total: u64,
        message: String,
    },
}

fn humanize(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0 => format!("{} ms", d.as_millis()),
        s if s % 60 == 0 && s >= 60 => format!("{} min", s / 60),
        s => format!("{s} s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_app_is_done_when_ready_and_nothing_more_runs() {
        let app = |running: u64, staged: u64, healthy: u64, deploying: bool| {
            json!({
                "instances": 3, "tasksRunning": running, "tasksStaged": staged,
                "tasksHealthy": healthy, "healthChecks": [{"protocol": "HTTP"}],
                "deployments": if deploying { json!([{"id": "d"}]) } else { json!([]) },
                "waiting": "",
            })
        };
        assert!(AppProgress::of(&app(3, 0, 3, false)).done());
        assert!(
            !AppProgress::of(&app(3, 0, 2, false)).done(),
            "one not healthy yet"
        );
        assert!(
            !AppProgress::of(&app(3, 0, 3, true)).done(),
            "deployment still running"
        );
        let down = AppProgress::of(&app(5, 0, 5, false));
        assert!(!down.done(), "scaling down: two still to stop");
        assert_eq!(down.message(), "healthy, 2 to stop");
        assert!(
            !AppProgress::of(&app(3, 1, 3, false)).done(),
            "a replacement starting"
        );
        let no_checks =
            json!({"instances": 2, "tasksRunning": 2, "tasksStaged": 0, "tasksHealthy": 0});
        assert!(AppProgress::of(&no_checks).done());
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_times_out_with_what_is_missing() {
        let mut polls = 0;
        let r: Result<()> = until("/web", Duration::from_secs(3), async || {
            polls += 1;
            Ok(Step::Pending {
                done: 1,
                total: 3,
                message: "running — no offer fits".into(),
            })
        })
        .await;
        let e = r.unwrap_err();
        assert!(e.downcast_ref::<TimedOut>().is_some());
        assert!(
            e.to_string()
                .contains("/web: gave up waiting after 3 s: 1/3 running — no offer fits"),
            "{e}"
        );
        assert_eq!(polls, 7, "every 500 ms for 3 s");
        let mut n = 0;
        let r = until("/web", Duration::from_secs(3), async || {
            n += 1;
            Ok(if n < 3 {
                Step::Pending {
                    done: n,
                    total: 3,
                    message: String::new(),
                }
            } else {
                Step::Done(n)
            })
        })
        .await;
        assert_eq!(r.unwrap(), 3);
    }
}
