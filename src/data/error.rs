use std::path::PathBuf;

/// Why a data set could not be used at all (as opposed to one bad file: [`FileError`]).
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Layout { path: PathBuf, message: String },
    #[error("{path}: {message}")]
    Captions { path: PathBuf, message: String },
}

/// One file that could not be used, and why; the run goes on without it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct FileError {
    pub path: PathBuf,
    pub reason: String,
}

impl FileError {
    pub fn new(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            reason: reason.into(),
        }
    }
}
