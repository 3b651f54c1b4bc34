// Host emulation: stands in for CUDA's <cuda_bf16.h> (see cuda_host.h).
#pragma once
#include "cuda_host.h"
