#!/usr/bin/env bash
# Installs the CUDA 13.0 compiler set from PyPI into PREFIX (default ./.cuda) and writes
# PREFIX/env.sh. Works on a machine without a GPU or driver; idempotent.
#
#   usage: scripts/install-cuda-toolchain.sh [--stubs] [PREFIX]
#   then:  source PREFIX/env.sh && cargo build --features cuda-kernels
#
# The pin matches the GPU machines (driver 580 = CUDA 13.0; PTX from a newer nvcc would be
# rejected there). --stubs also generates link stubs for the libraries candle's `cuda` feature
# links against (libcuda, cuBLAS, cuBLASLt, cuRAND, NVRTC): same SONAMEs and symbol versions, every
# function returns an error. They let the candle build link here; never copy them to a GPU
# machine. Stub symbol lists come from the cudarc sources in the cargo registry (`cargo fetch`).
set -euo pipefail

STUBS=0
if [ "${1:-}" = "--stubs" ]; then STUBS=1; shift; fi
PREFIX=${1:-./.cuda}
mkdir -p "$PREFIX"; PREFIX=$(cd "$PREFIX" && pwd)
PY=${PYTHON:-python3}
PKGS="nvidia-cuda-nvcc==13.0.88 nvidia-cuda-runtime==13.0.96 nvidia-cuda-crt==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-cccl==13.0.85"

[ -x "$PREFIX/venv/bin/pip" ] || "$PY" -m venv "$PREFIX/venv"
"$PREFIX/venv/bin/pip" install -q --disable-pip-version-check $PKGS
CU=$("$PREFIX/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/nvidia/cu13
"$CU/bin/nvcc" --version | tail -2 >&2

LIB="$PREFIX/lib"
if [ "$STUBS" = 1 ]; then
  CUDARC=${CUDARC_SRC:-$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-0.19.* 2>/dev/null | sort -V | tail -1)}
  [ -d "$CUDARC/src" ] || { echo "cudarc 0.19 sources not found: run 'cargo fetch' first (or set CUDARC_SRC)" >&2; exit 1; }
  rm -rf "$LIB"; mkdir -p "$LIB"
  stub() { # <soname> <cudarc sys module> <symbol prefix> <return value> [versioned]
    local so=$1 base=${1%%.so.*} syms vs=()
    syms=$(grep -oE "^\s+(pub )?fn $3[A-Za-z0-9_]+\(" "$CUDARC/src/$2/sys/mod.rs" | grep -oE "$3[A-Za-z0-9_]+" | sort -u)
    { echo "/* generated stub for $so from $(basename "$CUDARC") */"
      if [ "$3" = cu ]; then
        echo 'static const char *m = "CUDA_ERROR_NO_DEVICE (stub libcuda.so.1: no NVIDIA driver on this machine)";'
        echo 'int cuGetErrorString(int e, const char **p) { (void)e; *p = m; return 0; }'
        echo 'int cuGetErrorName(int e, const char **p) { (void)e; *p = "CUDA_ERROR_NO_DEVICE"; return 0; }'
        syms=$(echo "$syms" | grep -vxE 'cuGetErrorString|cuGetErrorName'); fi
      echo "$syms" | sed "s/.*/int &(void) { return $4; }/"; } > "$LIB/$base.c"
    if [ "${5:-}" = versioned ]; then echo "$so { global: *; };" > "$LIB/$base.map"; vs=(-Wl,--version-script="$LIB/$base.map"); fi
    ${CC:-cc} -O2 -shared -fPIC -Wl,-soname,"$so" "${vs[@]}" -o "$LIB/$so" "$LIB/$base.c"
    ln -sf "$so" "$LIB/$base.so"
  }
  stub libcuda.so.1      driver   cu       100            # the real driver exports unversioned symbols
  stub libcublas.so.13   cublas   cublas   1   versioned  # the pip libraries version symbols by SONAME
  stub libcublasLt.so.13 cublaslt cublasLt 1   versioned
  stub libcurand.so.10   curand   curand   1   versioned
  stub libnvrtc.so.13    nvrtc    nvrtc    1   versioned
  ln -sf "$CU/lib/libcudart.so.13" "$LIB/libcudart.so.13"; ln -sf libcudart.so.13 "$LIB/libcudart.so"
fi

{
  echo "# source me: pip CUDA 13.0 toolchain in $PREFIX"
  echo "export CUDA_HOME=\"$CU\""
  echo "export NVCC=\"$CU/bin/nvcc\""
  echo "export PATH=\"$CU/bin:\$PATH\""
  echo "export CUDARC_CUDA_VERSION=13000"
  echo "export CUDA_COMPUTE_CAP=\${CUDA_COMPUTE_CAP:-90}"
  if [ "$STUBS" = 1 ]; then
    echo "export LIBRARY_PATH=\"$LIB\${LIBRARY_PATH:+:\$LIBRARY_PATH}\""
    echo "export LD_LIBRARY_PATH=\"$LIB\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}\""
  fi
} > "$PREFIX/env.sh"
echo "installed into $PREFIX ($(du -sh "$PREFIX" | cut -f1)); now: source $PREFIX/env.sh" >&2
