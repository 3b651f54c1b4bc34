// Many tensors per launch, Apex style: a device table of tensor pointers (operand-major,
// [k][n_tensors]), their lengths, and a work-item map block -> (tensor, start of its kListItem
// elements). Built once
// on the host side (TensorLists) and reused, so a launch needs no host-side copies.
#pragma once
#include <stdint.h>

#include "dgs_contract.cuh"  // kListItem, kListTableBytes (generated from src/surgery/contract.rs)

namespace dgs {

struct ListTable {
    const unsigned long long* ptrs;  // [k][n_tensors] device addresses
    const long long* lens;           // [n_tensors]
    const int* item_tensor;          // [n_items]
    const long long* item_start;     // [n_items]
    int n_tensors;
    int n_items;
};
static_assert(sizeof(ListTable) == kListTableBytes, "ListTable must match ListTableArg in Rust");
static_assert(alignof(ListTable) == kArgsAlign, "ListTable must match ListTableArg in Rust");

template <typename T>
__device__ __forceinline__ T* tensor_ptr(const ListTable& t, int operand, int tensor) {
    return reinterpret_cast<T*>(t.ptrs[(long long)operand * t.n_tensors + tensor]);
}

}  // namespace dgs
