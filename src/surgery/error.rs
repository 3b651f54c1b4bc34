//! The one error type of the surgery library. Every variant names the operation and the argument
//! at fault, so a message read in a training log points at the call that caused it.

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
    #[error("{backend} backend: {message}")]
    Backend {
        backend: &'static str,
        message: String,
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
