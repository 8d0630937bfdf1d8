//! The OpenAPI document, generated from the handlers' annotations and the
//! types they answer with, so it cannot drift from them.

use super::endpoints::{Ack, Service, ServiceDetail, ServiceInstance, ServiceList, ServicePort};
use super::json::*;
use crate::app::{
    AppDefinition, Container, Docker, EnvValue, FieldError, HealthCheck, HealthProtocol,
    KillSelection, Network, NetworkMode, PortDefinitionView, PortMapping, ReadinessCheck,
    SecretSource, SecretVolume, UpgradeStrategy,
};
use crate::autoscale::{
    AutoscalerList, AutoscalerStatus, AutoscalerView, DecisionView, MetricStatus,
};
use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Agora services framework",
        description = "A Marathon v2 compatible subset (apps, tasks, deployments) under /v2, with Marathon's field names only; Agora's own view under /v1."
    ),
    paths(
        super::ping,
        super::info,
        super::agora_info,
        super::list_apps,
        super::create_app,
        super::get_app,
        super::put_app,
        super::delete_app,
        super::restart_app,
        super::app_tasks,
        super::kill::kill_app_tasks,
        super::kill::kill_app_task,
        super::agora_apps,
        super::agora_app_get,
        super::all_tasks,
        super::deployments,
        super::agora_deployments,
        super::cancel_deployment,
        super::events,
        super::endpoints::watch,
        super::endpoints::acks,
        super::endpoints::services,
        super::endpoints::service,
        super::autoscalers::list_autoscalers,
        super::autoscalers::get_autoscaler,
        super::autoscalers::put_autoscaler,
        super::autoscalers::delete_autoscaler,
        super::autoscalers::load,
        super::autoscalers::metrics,
        super::openapi,
    ),
    components(schemas(
        Message,
        Invalid,
        FieldError,
        App,
        AgoraApp,
        AppList,
        AppEnvelope,
        AgoraAppList,
        AgoraAppEnvelope,
        Task,
        AgoraTask,
        TaskList,
        TaskEnvelope,
        TasksKilled,
        TaskKilled,
        HealthCheckResult,
        LastTaskFailure,
        Counts,
        DeploymentRef,
        DeploymentResult,
        DeploymentInfo,
        AgoraDeployment,
        Step,
        StepAction,
        CurrentAction,
        ReadinessCheckResult,
        Info,
        AgoraInfo,
        MarathonConfig,
        AppDefinition,
        Container,
        Docker,
        EnvValue,
        SecretSource,
        SecretVolume,
        Network,
        NetworkMode,
        PortMapping,
        PortDefinitionView,
        HealthCheck,
        HealthProtocol,
        ReadinessCheck,
        UpgradeStrategy,
        KillSelection,
        Ack,
        Service,
        ServicePort,
        ServiceList,
        ServiceDetail,
        ServiceInstance,
        AutoscalerView,
        AutoscalerList,
        AutoscalerStatus,
        MetricStatus,
        DecisionView
    ))
)]
struct Doc;

/// The document served at `/openapi.json`.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut d = Doc::openapi();
    d.info.version = env!("CARGO_PKG_VERSION").into();
    d
}
