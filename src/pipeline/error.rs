use crate::clip::LoadError;
use crate::data::DataError;
use crate::train::checkpoint::CheckpointError;

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Load(Box<LoadError>),
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    Peft(#[from] crate::clip::peft::PeftError),
    #[error("{context}: {source}")]
    Compute {
        context: String,
        #[source]
        source: Box<candle_core::Error>,
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

impl From<LoadError> for PipelineError {
    fn from(e: LoadError) -> Self {
        Self::Load(Box::new(e))
    }
}

impl PipelineError {
    pub fn compute(context: impl Into<String>, source: candle_core::Error) -> Self {
        Self::Compute {
            context: context.into(),
            source: Box::new(source),
        }
    }
}

/// Attach what was being done to a candle error.
pub(crate) trait Context<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T, PipelineError>;
}

impl<T> Context<T> for candle_core::Result<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T, PipelineError> {
        self.map_err(|source| PipelineError::compute(what(), source))
    }
}
