use indicatif::{ProgressBar, ProgressStyle};

/// A progress bar over `len` images with throughput and ETA; hidden when `quiet` (tests) and,
/// by indicatif, when stderr is not a terminal.
pub fn bar(len: usize, message: impl Into<String>, quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(len as u64);
    let style = ProgressStyle::with_template(
        "{msg:>22} [{bar:30.cyan/blue}] {pos}/{len} images  {per_sec}  ETA {eta}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ");
    pb.set_style(style);
    pb.set_message(message.into());
    pb
}
