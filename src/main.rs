//! The `dgs` binary.

mod cli;

use std::process::ExitCode;

use clap::Parser;

/// Exit codes (also in `dgs --help`): 0 success; 1 finished, but `detect` had inputs that
/// failed, or `self-check` found a mismatch; 2 an error stopped the command (bad arguments, an
/// unusable model or data set, training stopped on a non-finite loss); 130 `train` interrupted.
/// `train` and `eval` list skipped files and still exit 0.
fn main() -> ExitCode {
    let args = cli::Cli::parse();
    let done = |r: Result<usize, dgs::pipeline::PipelineError>, fail_on_skips: bool| match r {
        Ok(n) if n > 0 && fail_on_skips => ExitCode::from(1),
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    };
    match args.command {
        cli::Command::Demo(a) => done(cli::demo::run(&a).map(|()| 0), false),
        cli::Command::Train(a) => done(cli::train::run(&a), false),
        cli::Command::Eval(a) => done(cli::eval::run(&a), false),
        cli::Command::Detect(a) => done(cli::detect::run(&a), true),
        cli::Command::Export(a) => done(cli::export::run(&a).map(|()| 0), false),
        cli::Command::Import(a) => done(cli::import::run(&a).map(|()| 0), false),
        cli::Command::Bench(b) => done(cli::bench::run(&b).map(|()| 0), false),
        cli::Command::SelfCheck(a) => match cli::self_check::run(&a) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::from(1),
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        },
    }
}
