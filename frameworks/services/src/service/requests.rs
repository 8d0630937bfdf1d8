//! The actor's answers to API requests. A change is stored before anything
//! of it is done: what came before it is stored and acted on first, then
//! the change is applied in memory and stored on its own, and only once it
//! is stored are its kills and revives sent and the client answered. If the
//! write fails, the change is undone in memory too (the app, its
//! deployment and its instances are put back as they were), nothing of it
//! is sent, and the client gets `503`: a "failed" delete kills nothing, and
//! a restart cannot revert a change that was already acted on.

use super::{Actor, ApiError, Killed, MasterLink, Request, View, now_s};
use crate::scheduler::Services;
use crate::store::StateStore;

impl<L: MasterLink, S: StateStore> Actor<L, S> {
    pub(super) async fn api(&mut self, r: Request) {
        match r {
            Request::View { reply } => {
                let _ = reply.send(View {
                    apps: self.services.apps().values().cloned().collect(),
                    instances: self.services.instances().values().cloned().collect(),
                    framework_id: self.framework_id.clone(),
                    connected: self.connected,
                });
            }
            Request::PutApp {
                app,
                create,
                force_restart,
                force,
                reply,
            } => {
                let id = app.id.clone();
                let suspended = if create {
                    None
                } else {
                    match self.manual_scale(&id, app.instances, force) {
                        Ok(s) => s,
                        Err(e) => {
                            let _ = reply.send(Err(e));
                            return;
                        }
                    }
                };
                let r = self
                    .change(&id, |s| {
                        if create && s.apps().contains_key(&app.id) {
                            return Err(ApiError::Exists(app.id.clone()));
                        }
                        let mut app = *app;
                        // The same definition again (e.g. a scale through
                        // a full PUT) keeps the versions its tasks use.
                        if let Some(st) = s.app(&app.id)
                            && st.app.same_definition(&app)
                        {
                            app.secret_versions = st.app.secret_versions.clone();
                        }
                        // Every problem at once: roles and cluster-wide claims.
                        let mut errs = s.check_roles(&app).err().unwrap_or_default();
                        if let Err(more) = s.claim_ports(&mut app) {
                            errs.extend(more);
                        }
                        if !errs.is_empty() {
                            return Err(ApiError::Invalid(errs));
                        }
                        Ok(s.put_app(app, force_restart))
                    })
                    .await;
                if r.is_ok() {
                    self.emit(serde_json::json!({"eventType": "api_post_event", "appId": id, "timestamp": now_s()}));
                } else {
                    self.unsuspend(&id, suspended);
                }
                let _ = reply.send(r);
            }
            Request::SecretVersions { paths, reply } => match self.link.clone() {
                None => {
                    let _ = reply.send(Err(agora_sdk::SecretVersionsError::Sdk(
                        agora_sdk::SdkError::Unavailable(
                            "the services framework is not connected to the master yet".into(),
                        ),
                    )));
                }
                Some(link) => {
                    tokio::spawn(async move {
                        let r = match tokio::time::timeout(
                            std::time::Duration::from_secs(5),
                            link.secret_versions(paths),
                        )
                        .await
                        {
                            Ok(r) => r,
                            Err(_) => Err(agora_sdk::SecretVersionsError::Sdk(
                                agora_sdk::SdkError::Unavailable(
                                    "the master did not answer within 5 s".into(),
                                ),
                            )),
                        };
                        let _ = reply.send(r);
                    });
                }
            },
            Request::Restart {
                id,
                secret_versions,
                reply,
            } => {
                let r = self
                    .change(&id, |s| {
                        let Some(mut app) = s.app(&id).map(|st| st.app.clone()) else {
                            return Err(ApiError::NoApp(id.clone()));
                        };
                        if let Some(pins) = secret_versions {
                            app.secret_versions = pins;
                        }
                        Ok(s.put_app(app, true))
                    })
                    .await;
                if r.is_ok() {
                    self.emit(serde_json::json!({"eventType": "api_post_event", "appId": id, "timestamp": now_s()}));
                }
                let _ = reply.send(r);
            }
            Request::Scale {
                id,
                instances,
                force,
                reply,
            } => {
                let suspended = match self.manual_scale(&id, instances, force) {
                    Ok(s) => s,
                    Err(e) => {
                        let _ = reply.send(Err(e));
                        return;
                    }
                };
                let r = self
                    .change(&id, |s| {
                        let Some(mut app) = s.app(&id).map(|s| s.app.clone()) else {
                            return Err(ApiError::NoApp(id.clone()));
                        };
                        app.instances = instances;
                        s.put_app(app, false);
                        Ok(())
                    })
                    .await;
                if r.is_err() {
                    self.unsuspend(&id, suspended);
                }
                let _ = reply.send(r);
            }
            Request::DeleteApp { id, reply } => {
                let r = self
                    .change(&id, |s| {
                        if !s.apps().contains_key(&id) {
                            return Err(ApiError::NoApp(id.clone()));
                        }
                        Ok(s.delete_app(&id))
                    })
                    .await;
                let r = match r {
                    Ok(kills) => {
                        self.perform(kills).await;
                        self.emit(serde_json::json!({"eventType": "app_terminated_event", "appId": id, "timestamp": now_s()}));
                        self.app_deleted(&id);
                        Ok(())
                    }
                    Err(e) => Err(e),
                };
                let _ = reply.send(r);
            }
            Request::KillTasks {
                app_id,
                task,
                host,
                scale,
                reply,
            } => {
                if scale && self.autoscalers.active(&app_id).is_some() {
                    let _ = reply.send(Err(ApiError::AutoscaledKill { id: app_id }));
                    return;
                }
                let r = self
                    .change(&app_id, |s| kill_tasks(s, &app_id, task, host, scale))
                    .await;
                let r = match r {
                    Ok((killed, kills)) => {
                        self.perform(kills).await;
                        Ok(killed)
                    }
                    Err(e) => Err(e),
                };
                let _ = reply.send(r);
            }
            Request::PutPolicy {
                app_id,
                policy,
                reply,
            } => {
                let _ = reply.send(self.put_policy(&app_id, *policy));
            }
            Request::Policies { app_id, reply } => {
                let _ = reply.send(self.policy_views(app_id.as_deref()));
            }
            Request::DeletePolicy { app_id, reply } => {
                let _ = reply.send(self.delete_policy(&app_id));
            }
            Request::Load { report } => self.load_report(*report).await,
            Request::Metrics { reply } => {
                let _ = reply.send(self.policy_metrics());
            }
            Request::CancelDeployment { id, force, reply } => {
                let app_id = self
                    .services
                    .apps()
                    .values()
                    .find(|s| s.deployment.as_ref().is_some_and(|d| d.id == id))
                    .map(|s| s.app.id.clone());
                let Some(app_id) = app_id else {
                    let _ = reply.send(Err(ApiError::NoDeployment(id)));
                    return;
                };
                let r = self
                    .change(&app_id, |s| {
                        if force {
                            s.stop_deployment(&app_id);
                            Ok(None)
                        } else {
                            Ok(s.roll_back(&app_id))
                        }
                    })
                    .await;
                let _ = reply.send(r);
            }
        }
    }

    /// Applies `f` to `app_id` and stores it before anything of it is done
    /// (see the module's doc). `f` answers the request; when it refuses
    /// (e.g. no such app), nothing is stored and nothing changes.
    pub(super) async fn change<T>(
        &mut self,
        app_id: &str,
        f: impl FnOnce(&mut Services) -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        // What came before this request is stored and acted on first, so
        // that what follows is this change alone.
        let acts = self.services.converge();
        self.pending.actions.extend(acts);
        self.commit().await;
        // A failed write withdraws the burst's launches, which touches their
        // apps: converge them now (kills, suppress/revive: harmless to
        // repeat), so that the actions below are this change's alone.
        let acts = self.services.converge();
        self.perform(acts).await;
        let before = self.services.checkpoint(app_id);
        let answer = match f(&mut self.services) {
            Ok(a) => a,
            Err(e) => {
                self.services.rewind(before);
                return Err(e);
            }
        };
        let actions = self.services.converge();
        let changes = self.services.take_changes();
        if let Err(e) = self
            .store
            .save(self.services.apps(), self.services.instances(), &changes)
        {
            tracing::error!(error = %e, app_id, "cannot persist an API change; it is undone");
            // Rows of earlier bursts that were not stored yet stay to write;
            // this change's rows are rewritten as they were before it.
            self.services.unsaved(changes);
            self.services.rewind(before);
            return Err(ApiError::Store(e.to_string()));
        }
        let mut actions = actions;
        actions.extend(self.publish_and_release());
        self.perform(actions).await;
        Ok(answer)
    }
}

/// Picks and kills the tasks of a task-kill request (`f` of
/// [`Actor::change`]): the kills are returned to be sent once stored.
fn kill_tasks(
    s: &mut Services,
    app_id: &str,
    task: Option<String>,
    host: Option<String>,
    scale: bool,
) -> Result<(Killed, Vec<crate::scheduler::Action>), ApiError> {
    if s.app(app_id).is_none() {
        return Err(ApiError::NoApp(app_id.to_string()));
    }
    let ids: Vec<String> = match task {
        Some(t) => {
            let ours = s
                .instance(&t)
                .is_some_and(|i| i.app_id == app_id && !i.state.is_terminal());
            if !ours {
                return Err(ApiError::NoTask {
                    app: app_id.to_string(),
                    task: t,
                });
            }
            vec![t]
        }
        None => s
            .instances_of(app_id)
            .filter(|i| host.as_deref().is_none_or(|h| i.host == h))
            .map(|i| i.task_id.clone())
            .collect(),
    };
    let (tasks, kills) = s.kill_tasks(app_id, &ids, scale);
    let scaled_version = scale.then(|| {
        s.app(app_id)
            .map(|a| a.app.version.clone())
            .unwrap_or_default()
    });
    Ok((
        Killed {
            tasks,
            scaled_version,
        },
        kills,
    ))
}
