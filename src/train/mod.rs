//! Training: the stage-2 DGS loss with the surgical backward, Adam, the forgetting metric.
//!
//! Status: the stage-2 step and its ablations. Stage 1 (linear probe of the teacher head), the
//! epoch loops, f16/bf16 compute with loss scaling, and checkpoints come next (training issue).

mod adam;
pub mod checkpoint;
mod heads;
mod loss;
mod stage2;

pub use adam::{Adam, AdamConfig};
pub use heads::Head;
pub use loss::{bce_logit_grad, bce_with_logits};
pub use stage2::{
    Batch, Stage2Config, Stage2Trainer, StepStats, Variant, accuracy, forgetting, named_vars,
    stage2_loss,
};
