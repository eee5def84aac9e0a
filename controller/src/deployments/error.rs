//! Why a deployment request cannot be carried out, in categories the HTTP layer maps to status
//! codes.

use crate::engine::targeting::TargetError;

/// What kind of failure, which the HTTP layer maps to a status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeployErrorKind {
    /// Malformed or invalid request (400).
    BadRequest,
    /// Unknown artifact or version (404).
    NotFound,
    /// Well-formed but unusable: empty or unknown target, undeployable type (422).
    Unprocessable,
    /// Database or store failure (500).
    Internal,
}

/// A deployment request that cannot be carried out, with a message naming the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct DeployError {
    /// Category.
    pub kind: DeployErrorKind,
    /// What was wrong.
    pub message: String,
}

impl DeployError {
    pub(crate) fn new(kind: DeployErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
    pub(crate) fn bad(message: impl Into<String>) -> Self {
        Self::new(DeployErrorKind::BadRequest, message)
    }
    pub(crate) fn internal(e: impl std::fmt::Display) -> Self {
        Self::new(DeployErrorKind::Internal, e.to_string())
    }
    /// The same error, saying which application's artifact it is about.
    pub(crate) fn in_application(self, name: &str, version: &str) -> Self {
        Self::new(
            self.kind,
            format!("application {name}@{version}: {}", self.message),
        )
    }
}

impl From<TargetError> for DeployError {
    fn from(e: TargetError) -> Self {
        Self::new(DeployErrorKind::Unprocessable, e.to_string())
    }
}
