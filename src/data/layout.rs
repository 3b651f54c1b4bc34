//! Finding the images of a data set and their labels, in the layouts the benchmarks use:
//!
//! - flat: `<root>/{0_real,1_fake}/…` — one subset named after `root`;
//! - subsets: `<root>/<subset>/{0_real,1_fake}/…` (UniversalFakeDetect, AIGCDetectBench,
//!   AIGIBench);
//! - nested classes: `<root>/<subset>/<class>/{0_real,1_fake}/…` (ProGAN's car, cat, …) — the
//!   classes of a subset are pooled into it.
//!
//! Inside `0_real` / `1_fake`, image files are found recursively (sorted, so the order is the same
//! on every machine). Other files, and directories named like images, are listed as skipped.
//! Symbolic links are followed, each folder once: a link back to a folder already searched (a
//! loop) is listed as skipped instead of being searched again.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use super::error::{DataError, FileError};

/// File extensions treated as images (case-insensitive).
pub const IMAGE_EXTENSIONS: &[&str] = &["png", "jpg", "jpeg", "bmp", "gif", "webp", "tif", "tiff"];

const REAL: &str = "0_real";
const FAKE: &str = "1_fake";

/// One image and its label (0 real, 1 fake).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    pub path: PathBuf,
    pub label: u8,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subset {
    pub name: String,
    pub items: Vec<Item>,
}

impl Subset {
    pub fn count(&self, label: u8) -> usize {
        self.items.iter().filter(|i| i.label == label).count()
    }
}

#[derive(Clone, Debug, Default)]
pub struct Discovery {
    pub subsets: Vec<Subset>,
    /// Entries that are not image files, with the reason.
    pub skipped: Vec<FileError>,
}

impl Discovery {
    /// Every image of every subset, in order.
    pub fn all_items(&self) -> Vec<Item> {
        self.subsets.iter().flat_map(|s| s.items.clone()).collect()
    }

    /// Keep only the subsets (class folders) named in `names`, in the order given; a name that
    /// is not a subset of `root` is an error listing those that are.
    pub fn select(mut self, root: &Path, names: &[String]) -> Result<Self, DataError> {
        let available: Vec<String> = self.subsets.iter().map(|s| s.name.clone()).collect();
        let mut chosen = Vec::with_capacity(names.len());
        for name in names {
            let Some(at) = self.subsets.iter().position(|s| &s.name == name) else {
                return Err(DataError::Layout {
                    path: root.to_path_buf(),
                    message: format!(
                        "no class/subset folder `{name}` with images; the folders are: {}",
                        available.join(", ")
                    ),
                });
            };
            chosen.push(self.subsets.swap_remove(at));
        }
        let kept: Vec<&Path> = chosen.iter().map(|s| Path::new(&s.name)).collect();
        self.skipped.retain(|f| {
            kept.iter()
                .any(|k| f.path.strip_prefix(root).is_ok_and(|p| p.starts_with(k)))
        });
        self.subsets = chosen;
        Ok(self)
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> DataError + '_ {
    move |source| DataError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let mut v = std::fs::read_dir(dir)
        .map_err(io_err(dir))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(io_err(dir))?;
    v.sort();
    Ok(v)
}

fn has_split(dir: &Path) -> bool {
    dir.join(REAL).is_dir() || dir.join(FAKE).is_dir()
}

fn is_image_name(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

/// The folders searched so far, by their real path.
#[derive(Default)]
struct Visited(HashSet<PathBuf>);

impl Visited {
    /// False (and the folder listed as skipped) when `dir` was searched already.
    fn first_visit(&mut self, dir: &Path, out: &mut Discovery) -> bool {
        let real = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
        if self.0.insert(real.clone()) {
            return true;
        }
        out.skipped.push(FileError::new(
            dir,
            format!(
                "the folder {}, searched already (a symlink loop, a second link to it, or a \
                 folder given twice); skipped",
                real.display()
            ),
        ));
        false
    }
}

/// Collect images under `dir` (recursively) with `label`.
fn collect(
    dir: &Path,
    label: u8,
    (out, visited): (&mut Discovery, &mut Visited),
    items: &mut Vec<Item>,
) -> Result<(), DataError> {
    if !visited.first_visit(dir, out) {
        return Ok(());
    }
    for p in sorted_entries(dir)? {
        if p.is_dir() {
            if is_image_name(&p) {
                out.skipped.push(FileError::new(
                    &p,
                    "a directory named like an image; skipped",
                ));
            }
            collect(&p, label, (out, visited), items)?;
        } else if is_image_name(&p) {
            items.push(Item { path: p, label });
        } else {
            out.skipped
                .push(FileError::new(&p, "not an image file extension; skipped"));
        }
    }
    Ok(())
}

fn collect_split(
    dir: &Path,
    seen: (&mut Discovery, &mut Visited),
    items: &mut Vec<Item>,
) -> Result<(), DataError> {
    let (out, visited) = seen;
    for (name, label) in [(REAL, 0), (FAKE, 1)] {
        let d = dir.join(name);
        if d.is_dir() {
            collect(&d, label, (&mut *out, &mut *visited), items)?;
        }
    }
    Ok(())
}

fn name_of(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| p.display().to_string())
}

/// Discover the subsets under `root` (see the module docs). Subsets come sorted by name; a root
/// with no `0_real` / `1_fake` folder at any of the three depths is an error.
pub fn discover(root: &Path) -> Result<Discovery, DataError> {
    if !root.is_dir() {
        return Err(DataError::Layout {
            path: root.to_path_buf(),
            message: "not a directory".into(),
        });
    }
    let mut out = Discovery::default();
    let mut visited = Visited::default();
    if has_split(root) {
        let mut items = Vec::new();
        collect_split(root, (&mut out, &mut visited), &mut items)?;
        out.subsets.push(Subset {
            name: name_of(root),
            items,
        });
        return Ok(out);
    }
    for sub in sorted_entries(root)?.into_iter().filter(|p| p.is_dir()) {
        let mut items = Vec::new();
        if has_split(&sub) {
            collect_split(&sub, (&mut out, &mut visited), &mut items)?;
        } else {
            for class in sorted_entries(&sub)?.into_iter().filter(|p| has_split(p)) {
                collect_split(&class, (&mut out, &mut visited), &mut items)?;
            }
        }
        if !items.is_empty() {
            out.subsets.push(Subset {
                name: name_of(&sub),
                items,
            });
        }
    }
    if out.subsets.is_empty() {
        return Err(DataError::Layout {
            path: root.to_path_buf(),
            message: format!(
                "no images found: expected <root>/{{{REAL},{FAKE}}}, <root>/<subset>/{{{REAL},{FAKE}}} or <root>/<subset>/<class>/{{{REAL},{FAKE}}}"
            ),
        });
    }
    Ok(out)
}

/// The inputs of `detect`: files as given (the decoder judges them), folders searched
/// recursively for image files (sorted). Missing paths and folders named like images are
/// reported.
pub fn find_images(paths: &[PathBuf]) -> (Vec<PathBuf>, Vec<FileError>) {
    let mut found = Vec::new();
    let mut out = Discovery::default();
    let mut visited = Visited::default();
    for p in paths {
        if p.is_dir() {
            let mut items = Vec::new();
            if let Err(e) = collect(p, 0, (&mut out, &mut visited), &mut items) {
                out.skipped.push(FileError::new(p, e.to_string()));
            }
            found.extend(items.into_iter().map(|i| i.path));
        } else if p.exists() {
            found.push(p.clone());
        } else {
            out.skipped
                .push(FileError::new(p, "no such file or directory"));
        }
    }
    out.skipped
        .retain(|f| !f.reason.starts_with("not an image file extension"));
    (found, out.skipped)
}
