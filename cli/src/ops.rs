//! Operator commands: `agora agent list`, `agora framework list`,
//! `agora task list|show|kill|logs`. They talk to the master's HTTP API.
//!
//! Exit codes: 0 success, 1 error (e.g. master unreachable), 2 bad usage,
//! 4 not found, 5 `--wait` timed out.

use crate::util::http_request;
use agora_master::view::{State, TaskView};
use anyhow::{Context, Result, anyhow};
use std::io::Write;

/// Exit code for "not found".
pub const NOT_FOUND: u8 = 4;

#[derive(Debug)]
pub struct NotFound(pub String);
impl std::fmt::Display for NotFound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for NotFound {}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Output {
    #[default]
    Table,
    Json,
}

#[derive(clap::Args, Debug, Clone)]
pub struct Common {
    /// The master (host:port or URL).
    #[arg(
        long,
        env = "AGORA_MASTER",
        default_value = "127.0.0.1:5050",
        global = true
    )]
    pub master: String,
    /// Output format.
    #[arg(
        short = 'o',
        long = "output",
        value_enum,
        default_value = "table",
        global = true
    )]
    pub output: Output,
}

impl Common {
    /// The master's `host:port`: `--master`/`AGORA_MASTER`, else the client
    /// context's, else the default.
    pub fn master_addr(&self) -> String {
        addr(&crate::context::master_or(&self.master))
    }
}

pub fn addr(master: &str) -> String {
    master
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string()
}

async fn state(c: &Common) -> Result<State> {
    let a = c.master_addr();
    let body = http_request("GET", &a, "/state")
        .await
        .map_err(|e| anyhow!("cannot reach master at {a}: {e:#}\nis `agora dev` (or `agora master`) running? set --master or AGORA_MASTER"))?;
    serde_json::from_str(&body)
        .context("the master's /state answer is not what this CLI expects (version mismatch?)")
}

/// Rows as aligned columns under a header (comfy-table, no borders; two
/// spaces between columns; no trailing blanks).
pub fn render(headers: &[&str], rows: Vec<Vec<String>>) -> String {
    use comfy_table::{ContentArrangement, Table, presets};
    let mut t = Table::new();
    t.load_preset(presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(headers.to_vec());
    for r in rows {
        t.add_row(r);
    }
    for c in t.column_iter_mut() {
        c.set_padding((0, 2));
    }
    t.lines()
        .map(|l| l.trim_end().to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Prints rows as aligned columns.
pub fn table(headers: &[&str], rows: Vec<Vec<String>>) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", render(headers, rows));
}

fn json<T: serde::Serialize>(v: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn res(r: &agora_master::view::ResourcesView) -> String {
    format!("{} cpu, {} MiB", r.cpus, r.mem)
}

pub async fn agent_list(c: &Common) -> Result<()> {
    let st = state(c).await?;
    if c.output == Output::Json {
        return json(&st.agents);
    }
    table(
        &[
            "ID",
            "HOSTNAME",
            "ADDRESS",
            "STATE",
            "ROLE",
            "TASKS",
            "RESOURCES",
            "USED",
            "ATTRIBUTES",
        ],
        st.agents
            .iter()
            .map(|a| {
                vec![
                    a.id.clone(),
                    a.hostname.clone(),
                    a.address.clone().unwrap_or_else(|| "-".into()),
                    format!("{:?}", a.state).to_lowercase(),
                    a.role.clone(),
                    a.task_count.to_string(),
                    res(&a.resources),
                    res(&a.used_resources),
                    a.attributes
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(","),
                ]
            })
            .collect(),
    );
    Ok(())
}

pub async fn framework_list(c: &Common) -> Result<()> {
    let st = state(c).await?;
    if c.output == Output::Json {
        return json(&st.frameworks);
    }
    table(
        &["ID", "NAME", "ROLE", "STATE", "TASKS", "SHARE", "USED"],
        st.frameworks
            .iter()
            .map(|f| {
                vec![
                    f.id.clone(),
                    f.name.clone(),
                    f.role.clone(),
                    format!("{:?}", f.state).to_lowercase(),
                    f.tasks.len().to_string(),
                    format!("{:.3}", f.dominant_share),
                    res(&f.used_resources),
                ]
            })
            .collect(),
    );
    Ok(())
}

fn all_tasks(st: &State, include_done: bool) -> Vec<TaskView> {
    let mut v: Vec<TaskView> = st
        .frameworks
        .iter()
        .flat_map(|f| {
            let done = if include_done {
                f.completed_tasks.clone()
            } else {
                vec![]
            };
            f.tasks.iter().cloned().chain(done)
        })
        .collect();
    v.sort_by(|a, b| (&a.framework_id, &a.id).cmp(&(&b.framework_id, &b.id)));
    v
}

pub async fn task_list(c: &Common, all: bool) -> Result<()> {
    let st = state(c).await?;
    let tasks = all_tasks(&st, all);
    if c.output == Output::Json {
        return json(&tasks);
    }
    table(
        &[
            "ID",
            "FRAMEWORK",
            "AGENT",
            "STATE",
            "CPUS",
            "MEM",
            "MESSAGE",
        ],
        tasks
            .iter()
            .map(|t| {
                vec![
                    t.id.clone(),
                    t.framework_id.clone(),
                    t.agent_id.clone(),
                    t.state.as_str().to_string(),
                    t.resources.cpus.to_string(),
                    t.resources.mem.to_string(),
                    t.message.clone(),
                ]
            })
            .collect(),
    );
    Ok(())
}

fn find(st: &State, task: &str) -> Result<TaskView> {
    let found: Vec<TaskView> = all_tasks(st, true)
        .into_iter()
        .filter(|t| t.id == task)
        .collect();
    match found.len() {
        0 => Err(NotFound(format!("no task {task} (see `agora task list --all`)")).into()),
        1 => Ok(found.into_iter().next().unwrap_or_else(|| unreachable!())),
        _ => {
            // Prefer the live one.
            found
                .iter()
                .find(|t| !t.state.is_terminal())
                .cloned()
                .ok_or_else(|| anyhow!("several tasks are called {task}"))
        }
    }
}

pub async fn task_show(c: &Common, task: &str) -> Result<()> {
    let st = state(c).await?;
    let t = find(&st, task)?;
    if c.output == Output::Json {
        return json(&t);
    }
    let agent = st.agents.iter().find(|a| a.id == t.agent_id);
    let rows = vec![
        vec!["id".into(), t.id.clone()],
        vec!["name".into(), t.name.clone()],
        vec!["framework".into(), t.framework_id.clone()],
        vec![
            "agent".into(),
            format!(
                "{} ({})",
                t.agent_id,
                agent.map(|a| a.hostname.as_str()).unwrap_or("?")
            ),
        ],
        vec!["state".into(), t.state.as_str().into()],
        vec!["reason".into(), t.reason.clone()],
        vec!["message".into(), t.message.clone()],
        vec![
            "resources".into(),
            format!(
                "{} cpu, {} MiB mem, {} MiB disk, ports {}",
                t.resources.cpus, t.resources.mem, t.resources.disk, t.resources.ports
            ),
        ],
        vec![
            "usage".into(),
            t.usage
                .as_ref()
                .map(|u| {
                    format!(
                        "{:.2} cpu-seconds, {} MiB resident",
                        u.cpu_seconds,
                        u.mem_rss_bytes >> 20
                    )
                })
                .unwrap_or_else(|| "not reported yet".into()),
        ],
    ];
    table(&["FIELD", "VALUE"], rows);
    Ok(())
}

pub async fn task_kill(c: &Common, task: &str, framework: Option<&str>) -> Result<()> {
    let a = c.master_addr();
    let path = match framework {
        Some(f) => format!("/tasks/{task}/kill?framework={f}"),
        None => format!("/tasks/{task}/kill"),
    };
    match http_request("POST", &a, &path).await {
        Ok(body) => {
            if c.output == Output::Json {
                print!("{body}");
            } else {
                println!("killing {task}");
            }
            Ok(())
        }
        Err(e) if e.to_string().contains(" 404") => Err(NotFound(format!("{e:#}")).into()),
        Err(e) => Err(e),
    }
}

pub async fn task_logs(c: &Common, task: &str, follow: bool) -> Result<()> {
    let st = state(c).await?;
    let t = find(&st, task)?;
    let agent = st
        .agents
        .iter()
        .find(|a| a.id == t.agent_id)
        .ok_or_else(|| {
            anyhow!(
                "task {task} is on agent {}, which the master no longer knows",
                t.agent_id
            )
        })?;
    if agent.endpoint.is_empty() {
        anyhow::bail!(
            "agent {} does not serve an HTTP API, so its logs cannot be read",
            agent.id
        );
    }
    let path = format!(
        "/tasks/{}/logs?follow={follow}&framework={}",
        t.id, t.framework_id
    );
    // The agent checks the CLI's token with the master (`view_state`).
    let master = c.master_addr();
    let endpoint = addr(&agent.endpoint);
    let read = crate::http::agent_stream(&master, &endpoint, &path, &mut std::io::stdout()).await;
    let hint = match &read {
        Err(e)
            if format!("{e:#}").contains("answered 401")
                && !crate::http::agent_may_get_token(&master, &endpoint).unwrap_or(true) =>
        {
            " (the CLI sends its token to agents only over https, and this agent's API is plain http while the master is https: serve the agent's API with TLS, --tls-cert)"
        }
        _ => "",
    };
    read.with_context(|| {
        format!(
            "reading logs from agent {} at {}{hint}",
            agent.id, agent.endpoint
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns_without_trailing_blanks() {
        let t = render(
            &["ID", "STATE", "HEALTHY"],
            vec![
                vec!["web.1".into(), "TASK_RUNNING".into(), "-".into()],
                vec![
                    "a-much-longer-id".into(),
                    "TASK_STAGING".into(),
                    "healthy".into(),
                ],
            ],
        );
        assert_eq!(
            t,
            "ID                STATE         HEALTHY\n\
             web.1             TASK_RUNNING  -\n\
             a-much-longer-id  TASK_STAGING  healthy"
        );
    }
}
