// The numbers the Rust launch code and the CUDA kernels (all of `kernels/`, the surgery ops' and
// the transformer layer's) must agree on, defined once. build.rs
// includes this file and writes each value into `dgs_contract.cuh`, which every kernel includes;
// the kernels `static_assert` what they were written for (argument sizes, stamped K), and the
// Rust side asserts its argument structs at compile time — so a mismatch fails the build.
// (Plain `pub const` items only: build.rs includes the file as it is.)

/// Elements per chunk of the CPU backend's tensor-list passes (its results do not depend on the
/// thread count because the chunks, not the threads, fix the summation order).
pub const CHUNK: usize = 65536;

/// Elements per work item (one block) of the tensor-list kernels. Small enough that a pass over a
/// model's gradients is many waves of blocks on the largest GPUs (a 100 M-element list is 6104
/// items, ≈ 6 waves of 256-thread blocks on 132 SMs), so the last, partly filled wave costs little.
pub const LIST_ITEM: usize = 16384;

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

/// Bytes of the row kernel's argument struct (`RowwiseArgs`): five device addresses, the row
/// count, then two `i32` and two `f32`.
pub const ROWWISE_ARGS_BYTES: usize = 64;

/// Bytes of the K-direction kernel's argument struct (`MultiDirArgs`): x, `MAX_DIRECTIONS`
/// direction addresses, workspace and kept-count addresses, the row count, then three `i32` and
/// one `f32`.
pub const MULTI_DIR_ARGS_BYTES: usize = 8 * (MAX_DIRECTIONS + 4) + 16;

/// Alignment of every argument struct (they hold 8-byte addresses).
pub const ARGS_ALIGN: usize = 8;

/// Bytes of the dropout kernel's argument struct (`DropoutArgs`): two device addresses, the
/// element count and the stream start, then five `u32`, one `f32`, the accumulate flag and a
/// reserved `u32`.
pub const DROPOUT_ARGS_BYTES: usize = 64;

/// Bytes of the attention kernels' argument struct (`AttentionArgs`): ten device addresses, four
/// stride triples of `i64`, then five `i32`-sized fields and one reserved.
pub const ATTENTION_ARGS_BYTES: usize = 10 * 8 + 4 * 24 + 6 * 4;

/// Bytes of the layer's row kernels' argument struct (`RowsArgs`): six device addresses, the
/// row count, then three `i32`-sized fields and one reserved.
pub const ROWS_ARGS_BYTES: usize = 6 * 8 + 8 + 4 * 4;

/// Widest row the layer-norm kernels hold in registers (128 threads × four 16-byte vectors of
/// f32; CLIP's widths are 512 to 1280).
pub const LAYER_NORM_MAX_COLS: usize = 2048;

/// Codes of the MLP activations (`ops::block::Activation`).
pub const ACTIVATION_QUICK_GELU: i32 = 0;
pub const ACTIVATION_GELU: i32 = 1;
pub const ACTIVATION_GELU_TANH: i32 = 2;
pub const ACTIVATION_RELU: i32 = 3;

/// `AdamArgs` (kernels/adam.cu): eight f32 step constants.
pub const ADAM_ARGS_BYTES: usize = 8 * 4;
