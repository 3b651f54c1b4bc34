use crate::clip::LoadError;
use crate::data::DataError;
use crate::train::checkpoint::CheckpointError;

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("{context}: {source}")]
    Compute {
        context: String,
        #[source]
        source: candle_core::Error,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Attach what was being done to a candle error.
pub(crate) trait Context<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T, PipelineError>;
}

impl<T> Context<T> for candle_core::Result<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T, PipelineError> {
        self.map_err(|source| PipelineError::Compute {
            context: what(),
            source,
        })
    }
}
