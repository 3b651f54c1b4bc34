//! `dgs detect`: the probability that each image is AI-generated.

use std::path::PathBuf;

use clap::Args as ClapArgs;
use dgs::data::{Item, find_images};
use dgs::pipeline::{PipelineError, score_items};

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
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

/// Returns how many inputs failed.
pub fn run(a: &Args) -> Result<usize, PipelineError> {
    let (det, device, dtype) = a.trained.load()?;
    let (paths, mut failed) = find_images(&a.inputs);
    let items: Vec<Item> = paths
        .into_iter()
        .map(|path| Item { path, label: 0 })
        .collect();
    let scored = score_items(
        &det,
        &items,
        a.trained.batch_size,
        dtype,
        &device,
        "detecting",
        a.trained.quiet,
    )?;
    failed.extend(scored.failed);
    let mut scores = scored.scores;
    scores.sort_by_key(|&(i, _)| i);
    for (i, p) in scores {
        let path = items[i].path.display().to_string();
        let label = if p > 0.5 { "fake" } else { "real" };
        match a.format {
            Format::Text => println!("{p:.4}  {label}  {path}"),
            Format::Jsonl => println!(
                "{}",
                serde_json::json!({"path": path, "p_fake": p, "label": label})
            ),
        }
    }
    for f in &failed {
        match a.format {
            Format::Text => eprintln!("error: {f}"),
            Format::Jsonl => println!(
                "{}",
                serde_json::json!({"path": f.path.display().to_string(), "error": f.reason})
            ),
        }
    }
    if !failed.is_empty() {
        let found: std::collections::HashSet<&PathBuf> = items.iter().map(|i| &i.path).collect();
        let total = items.len() + failed.iter().filter(|f| !found.contains(&f.path)).count();
        eprintln!("{} of {total} input(s) failed", failed.len());
    }
    Ok(failed.len())
}
