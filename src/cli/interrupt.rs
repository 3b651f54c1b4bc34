//! Ctrl-C during `dgs train`: say where the last checkpoint is (and how to resume), then stop
//! with exit code 130. Checkpoints are written atomically, so the one named is whole.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// What a SIGINT reports: the last checkpoint written and what it holds.
pub type LastCheckpoint = Arc<Mutex<Option<(PathBuf, String)>>>;

/// Install the Ctrl-C handler; `last` is updated as each checkpoint is written.
pub fn on_interrupt(last: LastCheckpoint) {
    let handler = move || {
        let held = last.lock().map(|l| l.clone()).unwrap_or(None);
        match held {
            Some((path, what)) => eprintln!(
                "interrupted: the last checkpoint is {} ({what}); continue with --resume {}",
                path.display(),
                path.display()
            ),
            None => eprintln!("interrupted before the first epoch ended: no checkpoint written"),
        }
        std::process::exit(130);
    };
    if let Err(e) = ctrlc::set_handler(handler) {
        eprintln!("warning: Ctrl-C will not report the last checkpoint ({e})");
    }
}
