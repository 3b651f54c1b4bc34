//! Errors of the CUDA backend.

use cudarc::driver::DriverError;
use thiserror::Error;

use crate::surgery::SurgeryError;

#[derive(Debug, Error)]
pub enum CudaSurgeryError {
    /// No driver, no device, or the ordinal does not exist: the caller can fall back to the CPU.
    #[error("no CUDA device: {0}")]
    NoCudaDevice(String),

    #[error("{op}: CUDA driver error: {source}")]
    Driver {
        op: &'static str,
        #[source]
        source: DriverError,
    },

    /// The same argument errors as every backend (lengths, counts, scalars).
    #[error(transparent)]
    Arguments(#[from] SurgeryError),

    /// A CUDA library the call needs is not installed (cudarc loads them at run time).
    #[error(
        "{op}: the {library} library could not be loaded; install it (it ships with the CUDA toolkit and with PyTorch's CUDA wheels) or put it on LD_LIBRARY_PATH"
    )]
    LibraryMissing {
        op: &'static str,
        library: &'static str,
    },

    /// A cuBLASLt call failed (the layer's matrix products).
    #[error("{op}: cuBLASLt error: {source}")]
    Cublas {
        op: &'static str,
        #[source]
        source: cudarc::cublaslt::result::CublasError,
    },

    #[error("{op}: `{arg}` belongs to another CUDA context than this handle's (device {expected})")]
    WrongContext {
        op: &'static str,
        arg: &'static str,
        expected: usize,
    },

    #[error("{op}: {what} is {got}, beyond the {max} one launch can address")]
    TooLarge {
        op: &'static str,
        what: &'static str,
        got: usize,
        max: usize,
    },
}

pub type CudaResult<T> = Result<T, CudaSurgeryError>;

/// An argument refused before any launch: [`SurgeryError::InvalidValue`] as a CUDA error.
pub(crate) fn invalid(
    op: &'static str,
    arg: &'static str,
    value: String,
    why: &'static str,
) -> CudaSurgeryError {
    crate::surgery::SurgeryError::InvalidValue {
        op,
        arg,
        value,
        why,
    }
    .into()
}

/// `map_err` helper naming the operation a driver call belonged to.
pub(crate) fn driver(op: &'static str) -> impl FnOnce(DriverError) -> CudaSurgeryError {
    move |source| CudaSurgeryError::Driver { op, source }
}
