//! Solvers on the small K×K Gram matrix. Each returns combine weights, so any parameter-space
//! surgery costs one Gram pass and one combine pass over the gradients.

mod dgs;
mod gram;
mod pcgrad;
mod projection;
pub(crate) mod span;

pub use dgs::{DGS_HARM, DGS_HELP, DGS_TASK, dgs_operands, dgs_param};
pub use gram::Gram;
pub use pcgrad::{PcGradPlan, Reduction, pcgrad, pcgrad_visit_order};
pub use projection::orthogonal_projection;
