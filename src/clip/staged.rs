//! Writing a folder's files so that no final name ever holds a half-written file: each file is
//! written under a temporary name in the same folder, and all are renamed at the end (a failure
//! on the way leaves the previous files, if any, untouched).

use std::path::{Path, PathBuf};

pub(crate) struct StagedFolder {
    dir: PathBuf,
    names: Vec<String>,
}

impl StagedFolder {
    /// Create `dir` if needed.
    pub fn create(dir: &Path) -> Result<Self, (PathBuf, std::io::Error)> {
        std::fs::create_dir_all(dir).map_err(|e| (dir.to_path_buf(), e))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            names: Vec::new(),
        })
    }

    /// Where to write the file that becomes `name` at [`commit`](Self::commit).
    pub fn path(&mut self, name: &str) -> PathBuf {
        self.names.push(name.to_string());
        self.temp(name)
    }

    fn temp(&self, name: &str) -> PathBuf {
        self.dir.join(format!(".{name}.dgs-tmp"))
    }

    /// Rename every staged file to its final name.
    pub fn commit(self) -> Result<(), (PathBuf, std::io::Error)> {
        for name in &self.names {
            let to = self.dir.join(name);
            std::fs::rename(self.temp(name), &to).map_err(|e| (to, e))?;
        }
        Ok(())
    }
}
