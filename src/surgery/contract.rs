// The numbers the Rust launch code and the CUDA kernels must agree on, defined once. build.rs
// includes this file and writes each value into `dgs_contract.cuh`, which every kernel includes;
// the kernels `static_assert` what they were written for (argument sizes, stamped K), and the
// Rust side asserts its argument structs at compile time — so a mismatch fails the build.
// (Plain `pub const` items only: build.rs includes the file as it is.)

/// Elements per work item of the tensor-list kernels, and per chunk of the CPU backend (whose
/// results the kernels reproduce bit for bit).
pub const CHUNK: usize = 65536;

/// Most operands (K) one Gram, combine or PCGrad pass takes.
pub const MAX_OPERANDS: usize = 8;

/// Most directions of the K-direction row projection.
pub const MAX_DIRECTIONS: usize = 8;

/// Codes of the elementwise transforms applied on load.
pub const TRANSFORM_IDENTITY: i32 = 0;
pub const TRANSFORM_RELU: i32 = 1;
pub const TRANSFORM_NEGATIVE_PART: i32 = 2;

/// Bits per operand in a packed word of transform codes (operand 0 in the lowest bits).
pub const TRANSFORM_BITS: u32 = 4;

/// Bytes of the tensor-list table passed by value: four device addresses, then two `i32`.
pub const LIST_TABLE_BYTES: usize = 40;
