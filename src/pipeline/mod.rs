//! The detector as a tool: training runs over image folders, evaluation reports, detection, and
//! the no-download demo — joining the data pipeline ([`crate::data`]) to the model and trainers
//! ([`crate::train`]). The `dgs` command line is a thin layer over this module.

mod batch;
mod bench;
#[cfg(feature = "cuda")]
mod cuda_pool;
pub mod demo;
mod error;
mod evaluate;
mod guard;
mod import;
mod peak_memory;
mod progress;
mod run;
mod train;
mod train_checks;

pub use batch::to_tensors;
pub use bench::{StepBenchOptions, StepBenchRow, StepPhases, bench_steps};
pub use demo::{DemoOptions, DemoOutcome, run_demo};
pub use error::PipelineError;
pub use evaluate::{Scored, Scorer};
pub use guard::{differences, refuse_overwriting_inputs};
pub use import::{ImportOptions, Imported, import_official};
pub use progress::bar;
pub use run::{EpochRecord, RunRecord, TrainPlan, load_detector, parse_device, parse_dtype};
pub use train::{TrainJob, TrainOutcome, run_outputs, train};
