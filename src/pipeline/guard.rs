//! Checks that keep a command from destroying or mislabelling a user's files: no output may be
//! one of the command's inputs (by any spelling: `..`, symlinks), and when two recorded
//! configurations differ, the message names each field that does.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::error::PipelineError;

/// The real path `p` has or would have: canonical when it exists, else its canonical parent
/// joined with its name.
fn real_path(p: &Path) -> PathBuf {
    if let Ok(c) = std::fs::canonicalize(p) {
        return c;
    }
    match (p.parent(), p.file_name()) {
        (Some(parent), Some(name)) if !parent.as_os_str().is_empty() => {
            real_path(parent).join(name)
        }
        _ => p.to_path_buf(),
    }
}

/// Refuse when any of `outputs` is one of `inputs` (compared by real path), naming both and the
/// option to change.
pub fn refuse_overwriting_inputs(
    outputs: &[PathBuf],
    inputs: &[PathBuf],
    option: &str,
) -> Result<(), PipelineError> {
    let inputs: Vec<(PathBuf, &PathBuf)> = inputs.iter().map(|p| (real_path(p), p)).collect();
    for out in outputs {
        let real = real_path(out);
        if let Some((_, input)) = inputs.iter().find(|(r, _)| *r == real) {
            return Err(PipelineError::Invalid(format!(
                "{}: this output would write over the input {}; choose another {option}",
                out.display(),
                input.display()
            )));
        }
    }
    Ok(())
}

/// The fields in which `was` and `now` differ, as `name: was → now` (nested fields dotted).
pub fn differences(was: &impl Serialize, now: &impl Serialize) -> Vec<String> {
    let (Ok(a), Ok(b)) = (serde_json::to_value(was), serde_json::to_value(now)) else {
        return vec!["(cannot be compared)".into()];
    };
    let mut out = Vec::new();
    diff_values("", &a, &b, &mut out);
    out
}

fn diff_values(at: &str, a: &serde_json::Value, b: &serde_json::Value, out: &mut Vec<String>) {
    use serde_json::Value::Object;
    match (a, b) {
        (Object(x), Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let null = serde_json::Value::Null;
                let name = match at.is_empty() {
                    true => k.clone(),
                    false => format!("{at}.{k}"),
                };
                diff_values(
                    &name,
                    x.get(k).unwrap_or(&null),
                    y.get(k).unwrap_or(&null),
                    out,
                );
            }
        }
        _ if a != b => out.push(format!("{at}: {a} → {b}")),
        _ => {}
    }
}
