//! Identifiers. Newtypes so an agent id can never be passed where a task id is
//! expected. Ids that arrive from the network are validated with [`validate_id`].

use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub String);

        impl $name {
            pub fn new(s: impl Into<String>) -> Self {
                $name(s.into())
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }
        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                $name(s.to_string())
            }
        }
    };
}

id_type!(
    /// An agent, assigned by the master on first registration.
    AgentId
);
id_type!(
    /// A framework, assigned by the master on first subscription.
    FrameworkId
);
id_type!(
    /// A task, chosen by its framework; unique within the framework.
    TaskId
);
id_type!(
    /// An offer, assigned by the master.
    OfferId
);

/// A value from the network (or a user) that does not make a valid domain
/// value: names the field and says what is wrong.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid {field}: {message}")]
pub struct Invalid {
    pub field: String,
    pub message: String,
}

impl Invalid {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Invalid {
            field: field.into(),
            message: message.into(),
        }
    }

    /// The same problem, with its field named inside `outer`
    /// (`tasks[1]` + `kill_grace_seconds` → `tasks[1].kill_grace_seconds`).
    pub fn within(mut self, outer: &str) -> Self {
        self.field = format!("{outer}.{}", self.field);
        self
    }
}

/// Longest id accepted from the network.
pub const MAX_ID_LEN: usize = 255;

/// Checks an id coming from a client: non-empty, at most 255 bytes, made of
/// ASCII letters, digits and `-_.:/@`. Returns a message naming the problem.
pub fn validate_id(kind: &str, id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err(format!("{kind} must not be empty"));
    }
    if id.len() > MAX_ID_LEN {
        return Err(format!(
            "{kind} is {} bytes long; at most {MAX_ID_LEN} are allowed",
            id.len()
        ));
    }
    if id.chars().all(|c| c == '.') {
        return Err(format!(
            "{kind} {id:?} is only dots; such ids name directories (\".\", \"..\") and are reserved"
        ));
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "-_.:/@".contains(*c)))
    {
        return Err(format!(
            "{kind} {id:?} contains {c:?}; use letters, digits and - _ . : / @"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_ids() {
        assert!(validate_id("task id", "web.1-abc_2:x/y@z").is_ok());
        assert!(validate_id("task id", "").unwrap_err().contains("empty"));
        assert!(validate_id("task id", "a b").unwrap_err().contains("' '"));
        assert!(validate_id("task id", &"a".repeat(300)).is_err());
        for dots in [".", "..", "..."] {
            assert!(
                validate_id("task id", dots)
                    .unwrap_err()
                    .contains("only dots")
            );
        }
        assert!(validate_id("task id", ".a").is_ok());
    }
}
