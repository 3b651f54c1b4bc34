//! The one error type of the surgery library. Every variant names the operation and the argument
//! at fault, so a message read in a training log points at the call that caused it.

use std::fmt;
use std::sync::Arc;

use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Error)]
pub enum SurgeryError {
    #[error("{op}: `{arg}` has {got} elements but {expected} were expected ({why})")]
    LengthMismatch {
        op: &'static str,
        arg: &'static str,
        expected: usize,
        got: usize,
        why: String,
    },

    #[error("{op}: dim is 0 but rows is {rows}; each row needs at least one element")]
    ZeroDim { op: &'static str, rows: usize },

    #[error(
        "{op}: tensor list `{list}` is ragged: tensor {tensor} has {got} elements where `{reference}` has {expected}"
    )]
    RaggedTensorList {
        op: &'static str,
        list: String,
        reference: String,
        tensor: usize,
        expected: usize,
        got: usize,
    },

    #[error("{op}: tensor list `{list}` holds {got} tensors where `{reference}` holds {expected}")]
    TensorCountMismatch {
        op: &'static str,
        list: String,
        reference: String,
        expected: usize,
        got: usize,
    },

    #[error("{op}: {got} {what} given; at most {max} are supported")]
    TooMany {
        op: &'static str,
        what: &'static str,
        got: usize,
        max: usize,
    },

    #[error("{op}: `{arg}` = {value} is not allowed: {why}")]
    InvalidValue {
        op: &'static str,
        arg: &'static str,
        value: String,
        why: &'static str,
    },

    /// A device backend failed (driver error, no device, ...) while running an op on host data.
    /// The backend's own error is kept, typed: [`BackendFailure::downcast_ref`] recovers it.
    #[error("{backend} backend: {source}")]
    Backend {
        backend: &'static str,
        source: BackendFailure,
    },

    /// The backend was not compiled into this build.
    #[error("{backend} backend: {why}")]
    BackendMissing {
        backend: &'static str,
        why: &'static str,
    },

    #[error("{op}: index {index} of `{arg}` is out of range for {len} entries")]
    IndexOutOfRange {
        op: &'static str,
        arg: &'static str,
        index: usize,
        len: usize,
    },
}

pub type Result<T> = std::result::Result<T, SurgeryError>;

/// A device backend's own error inside a [`SurgeryError`], shared so the error stays `Clone`.
/// Two failures are equal when they are the same error value.
#[derive(Clone, Debug)]
pub struct BackendFailure(Arc<dyn std::error::Error + Send + Sync + 'static>);

impl BackendFailure {
    pub fn new(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self(Arc::new(e))
    }

    /// The backend's error, if it is an `E` (for example `cuda::CudaSurgeryError`).
    pub fn downcast_ref<E: std::error::Error + 'static>(&self) -> Option<&E> {
        self.0.downcast_ref::<E>()
    }
}

impl PartialEq for BackendFailure {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl fmt::Display for BackendFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Transparent: the chain goes on with the backend error's own source.
impl std::error::Error for BackendFailure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backend_failure_keeps_its_type_and_its_chain() {
        let io = std::io::Error::new(std::io::ErrorKind::TimedOut, "driver timed out");
        let err = SurgeryError::Backend {
            backend: "test",
            source: BackendFailure::new(io),
        };
        let SurgeryError::Backend { source, .. } = &err else {
            unreachable!()
        };
        let inner = source
            .downcast_ref::<std::io::Error>()
            .expect("an io::Error");
        assert_eq!(inner.kind(), std::io::ErrorKind::TimedOut);
        assert_eq!(err.to_string(), "test backend: driver timed out");
        assert_eq!(err.clone(), err, "a clone is the same failure");
    }
}
