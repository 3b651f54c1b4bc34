// `ListTableArg` as src/surgery/cuda/tensor_list.rs lays it out (repr(C), device addresses as
// u64), not the list kernels' own declaration: the two layouts must agree for a launch to work.
// The harnesses of the list kernels (surgery, adam) build their tables with it. Include after
// dgs_contract.cuh.
#pragma once

struct ListTableArg {
    const unsigned long long* ptrs;  // [operands][tensors] tensor addresses
    const long long* lens;           // [tensors] lengths in elements
    const int* item_tensor;          // [items] the tensor each work item covers
    const long long* item_start;     // [items] its first element
    int n_tensors;
    int n_items;
};
static_assert(sizeof(ListTableArg) == dgs::kListTableBytes, "LIST_TABLE_BYTES");
static_assert(alignof(ListTableArg) == dgs::kArgsAlign, "ARGS_ALIGN");
