//! Training captions: the official JSON map `image path → caption`. Keys are matched to images by
//! their trailing path components (longest match first), so a map written with another root
//! (`./dataset/train/car/0_real/1.png`) still finds `/data/train/car/0_real/1.png`. A match must
//! cover the image's whole path inside the data folder (its subset, class and label folders):
//! `0_real/1.png` alone could be any subset's image, so for `/data/train/car/0_real/1.png` under
//! the data folder `/data/train` a key must end in `car/0_real/1.png`. A suffix that two keys
//! share with different captions is ambiguous and never used.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};

use super::error::DataError;

/// What to do for an image the map has no caption for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MissingCaption {
    /// Stop with an error naming the image (the default: silently training the text branch on
    /// a constant caption changes the method).
    Error,
    /// Use this caption instead.
    Fallback(String),
}

pub struct Captions {
    /// Every trailing-components suffix of every key → its caption (`None` when ambiguous).
    by_suffix: HashMap<String, Option<String>>,
    missing: MissingCaption,
    source: String,
    /// The data folder the images are under: a key must match an image's whole path inside it.
    data_root: Option<PathBuf>,
}

fn components(p: &str) -> Vec<String> {
    Path::new(p)
        .components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
            _ => None,
        })
        .collect()
}

impl Captions {
    /// Read the JSON map at `path`.
    pub fn from_file(path: &Path, missing: MissingCaption) -> Result<Self, DataError> {
        let fail = |message: String| DataError::Captions {
            path: path.to_path_buf(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
        let map: HashMap<String, String> = serde_json::from_str(&text)
            .map_err(|e| fail(format!("expected a JSON object of path → caption: {e}")))?;
        Ok(Self::from_map(map, missing, path.display().to_string()))
    }

    pub fn from_map(map: HashMap<String, String>, missing: MissingCaption, source: String) -> Self {
        let mut by_suffix: HashMap<String, Option<String>> = HashMap::new();
        for (key, caption) in map {
            let parts = components(&key);
            for start in 0..parts.len() {
                let suffix = parts[start..].join("/");
                by_suffix
                    .entry(suffix)
                    .and_modify(|c| {
                        if c.as_deref() != Some(caption.as_str()) {
                            *c = None;
                        }
                    })
                    .or_insert_with(|| Some(caption.clone()));
            }
        }
        Self {
            by_suffix,
            missing,
            source,
            data_root: None,
        }
    }

    /// Require keys to match each image's whole path inside `root` (see the module docs).
    pub fn with_data_root(mut self, root: &Path) -> Self {
        self.data_root = Some(root.to_path_buf());
        self
    }

    /// Only the fallback, for every image.
    pub fn constant(caption: String) -> Self {
        Self {
            by_suffix: HashMap::new(),
            missing: MissingCaption::Fallback(caption),
            source: "(none)".into(),
            data_root: None,
        }
    }

    /// The caption of `image`.
    pub fn get(&self, image: &Path) -> Result<&str, String> {
        let parts = components(&image.to_string_lossy());
        let inside = self
            .data_root
            .as_deref()
            .and_then(|root| image.strip_prefix(root).ok())
            .map(|rel| components(&rel.to_string_lossy()));
        let shortest = inside.as_ref().map_or(1, Vec::len).max(1);
        for start in 0..=parts.len().saturating_sub(shortest) {
            if let Some(Some(c)) = self.by_suffix.get(&parts[start..].join("/")) {
                return Ok(c);
            }
        }
        match &self.missing {
            MissingCaption::Fallback(c) => Ok(c),
            MissingCaption::Error => Err(format!(
                "no caption in {} for it (a key must end with `{}`, its path inside the data \
                 folder; pass --caption-fallback TEXT to use one caption for such images)",
                self.source,
                inside.unwrap_or(parts).join("/")
            )),
        }
    }

    /// Where the map came from, for messages.
    pub fn source(&self) -> &str {
        &self.source
    }
}

/// Where the official code looks for the captions of `data`: `<parent>_text/<name>.json`.
pub fn official_captions_path(data: &Path) -> Option<PathBuf> {
    let data = std::fs::canonicalize(data).unwrap_or_else(|_| data.to_path_buf());
    let (parent, name) = (data.parent()?, data.file_name()?);
    let mut text_dir = parent.as_os_str().to_owned();
    text_dir.push("_text");
    let mut file = name.to_owned();
    file.push(".json");
    Some(PathBuf::from(text_dir).join(file))
}
