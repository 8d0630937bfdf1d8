//! Reserved resources: which roles of resources an app's instances may use
//! (`acceptedResourceRoles`, Marathon semantics), checked against the
//! framework's own role.
//!
//! The master offers a framework of role R unreserved resources (`*`) and
//! resources reserved for R, nothing else; an offer carries its role. An
//! app accepts an offer when the offer's role is in its
//! `acceptedResourceRoles` (default `["*"]`: unreserved only). A role that
//! is neither `*` nor the framework's could never be offered, so an app
//! naming one is refused (422), as Marathon does.

use super::Services;
use crate::app::{App, FieldError};
use agora_core::info::{DEFAULT_ROLE, PUBLIC_ROLE};

impl Services {
    /// Sets the framework's role (`--role`; `*` when empty).
    pub fn set_role(&mut self, role: &str) {
        self.role = role.to_string();
    }

    /// The framework's role (`*` when unset).
    pub fn role(&self) -> &str {
        if self.role.is_empty() {
            DEFAULT_ROLE
        } else {
            &self.role
        }
    }

    /// `Err` names every role of `app.acceptedResourceRoles` the framework
    /// can never be offered, and says what is possible.
    pub fn check_roles(&self, app: &App) -> Result<(), Vec<FieldError>> {
        let mine = self.role();
        let bad: Vec<&str> = app
            .accepted_resource_roles
            .iter()
            .map(String::as_str)
            .filter(|r| *r != DEFAULT_ROLE && *r != mine)
            .collect();
        if bad.is_empty() {
            return Ok(());
        }
        let possible = if mine == DEFAULT_ROLE {
            format!("[\"{DEFAULT_ROLE}\"]")
        } else {
            format!("\"{DEFAULT_ROLE}\" and \"{mine}\"")
        };
        let how = match bad.as_slice() {
            [one] => format!(
                "to place apps on resources reserved for \"{one}\" (e.g. public agents, role \"{PUBLIC_ROLE}\"), start the services framework with --role {one}"
            ),
            _ => "a framework has one role: start the services framework with --role <role> for the reserved resources it should use".to_string(),
        };
        let quoted: Vec<String> = bad.iter().map(|r| format!("\"{r}\"")).collect();
        Err(vec![FieldError {
            path: "/acceptedResourceRoles".into(),
            errors: vec![format!(
                "role(s) {} can never be offered to this framework: it runs in role \"{mine}\", so the possible roles are {possible}; {how}",
                quoted.join(", ")
            )],
        }])
    }
}
