//! The fast CPU backend: rayon over rows or 65536-element chunks, f32 arithmetic in fixed-order
//! lanes, so results are reproducible bit for bit whatever the thread count.

pub mod adam;
mod block;
mod combine;
mod gram;
mod isa;
mod multi_dir;
mod rowwise;
mod simd;

pub use block::{CHUNK, LANES, SEGMENT};
pub use combine::combine;
pub use gram::gram;
pub use multi_dir::project_rows_multi;
pub use rowwise::dgs_rows;
