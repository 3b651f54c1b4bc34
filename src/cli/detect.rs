//! `dgs detect`: the probability that each image is AI-generated.

use std::io::Write;
use std::path::PathBuf;

use clap::Args as ClapArgs;
use dgs::data::{Item, find_images};
use dgs::pipeline::PipelineError;

use super::common::TrainedArgs;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// `0.9731  fake  path` per image; failures on stderr.
    Text,
    /// One JSON object per line: {"path", "p_fake", "label"} or {"path", "error"}.
    Jsonl,
}

#[derive(Debug, ClapArgs)]
pub struct Args {
    /// Image files, or folders searched recursively for images.
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    #[command(flatten)]
    pub trained: TrainedArgs,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

/// Returns how many inputs failed.
pub fn run(a: &Args) -> Result<usize, PipelineError> {
    let (paths, mut failed) = find_images(&a.inputs);
    if paths.is_empty() && failed.is_empty() {
        let inputs: Vec<String> = a.inputs.iter().map(|p| p.display().to_string()).collect();
        return Err(PipelineError::Invalid(format!(
            "no images found in {} (searched for {})",
            inputs.join(", "),
            dgs::data::IMAGE_EXTENSIONS.join(", ")
        )));
    }
    let (det, device, dtype) = a.trained.load()?;
    let items: Vec<Item> = paths
        .into_iter()
        .map(|path| Item { path, label: 0 })
        .collect();
    let scored = a
        .trained
        .scorer(&det, &device, dtype)
        .score(&items, "detecting")?;
    failed.extend(scored.failed);
    let mut scores = scored.scores;
    scores.sort_by_key(|&(i, _)| i);
    let mut out = std::io::stdout().lock();
    for (i, p) in scores {
        let path = items[i].path.display().to_string();
        let label = if p > 0.5 { "fake" } else { "real" };
        let line = match a.format {
            Format::Text => format!("{p:.4}  {label}  {path}"),
            Format::Jsonl => {
                serde_json::json!({"path": path, "p_fake": p, "label": label}).to_string()
            }
        };
        if !print_line(&mut out, &line)? {
            return Ok(0);
        }
    }
    for f in &failed {
        match a.format {
            Format::Text => eprintln!("error: {f}"),
            Format::Jsonl => {
                let json =
                    serde_json::json!({"path": f.path.display().to_string(), "error": f.reason});
                if !print_line(&mut out, &json.to_string())? {
                    return Ok(0);
                }
            }
        }
    }
    if !failed.is_empty() {
        let found: std::collections::HashSet<&PathBuf> = items.iter().map(|i| &i.path).collect();
        let total = items.len() + failed.iter().filter(|f| !found.contains(&f.path)).count();
        eprintln!("{} of {total} input(s) failed", failed.len());
    }
    Ok(failed.len())
}

/// Write one line of results; `false` when the reader has gone (e.g. `| head -1`): the command
/// then stops quietly, as Unix tools do.
fn print_line(out: &mut impl Write, line: &str) -> Result<bool, PipelineError> {
    match writeln!(out, "{line}") {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(source) => Err(PipelineError::Io {
            path: "<standard output>".into(),
            source,
        }),
    }
}
