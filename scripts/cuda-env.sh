# Source this to build mica with `--features cuda` on a machine without a GPU or a CUDA
# install: `. scripts/cuda-env.sh && cargo build --release --features cuda`.
#
# nvcc, its headers and the CUDA libraries come from NVIDIA's pip packages, pinned to
# CUDA 13.0: candle's kernels are shipped as PTX and JIT-compiled by the driver, so the PTX
# version must not be newer than what the target driver accepts (driver 580 = CUDA 13.0).
# cudarc links the driver library dynamically; with no driver here, a stub libcuda.so
# exporting the functions cudarc declares satisfies the linker (soname libcuda.so.1, so the
# real driver is loaded at run time). Everything lives in ~/.cache/mica/cuda (about 1.2 GB),
# installed once. At run time on a GPU machine, LD_LIBRARY_PATH must reach libcublas.so.13,
# libcublasLt.so.13, libcurand.so.10 and libnvrtc.so.13 (a CUDA 13 toolkit or the same pip
# packages).
#
# CUDA_COMPUTE_CAP (default 90, Hopper) selects the GPU generation the kernels target.

_mica_cuda_setup() {
    local root="${MICA_CUDA_DIR:-$HOME/.cache/mica/cuda}"
    local cu="$root/py/nvidia/cu13"
    if [ ! -x "$cu/bin/nvcc" ] || [ ! -e "$cu/lib/libcuda.so" ]; then
        echo "cuda-env: installing nvcc 13.0 and the CUDA 13.0 libraries into $root" >&2
        rm -rf "$root/py"
        mkdir -p "$root"
        python3 -m pip install -q --disable-pip-version-check --target "$root/py" \
            "nvidia-cuda-nvcc==13.0.*" "nvidia-nvvm==13.0.*" "nvidia-cuda-crt==13.0.*" \
            "nvidia-cuda-cccl==13.0.*" "nvidia-cuda-runtime==13.0.*" "nvidia-cublas==13.0.*" \
            "nvidia-cuda-nvrtc==13.0.*" "nvidia-curand==10.4.*" || return 1
        local cudarc
        # `|| true`: callers source this under `set -euo pipefail`, where a failed `ls` (no
        # cudarc sources yet on a fresh machine) would end them before the fetch below.
        cudarc=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-0.19.* 2>/dev/null | tail -n1 || true)
        if [ -z "$cudarc" ]; then
            (cd "$(dirname "${BASH_SOURCE[0]}")/.." && cargo fetch -q) || return 1
            cudarc=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-0.19.* | tail -n1)
        fi
        grep -ohE "pub unsafe fn cu[A-Za-z0-9_]+" "$cudarc/src/driver/sys/mod.rs" |
            awk '{print "void " $4 "(void){}"}' | sort -u >"$root/cuda_stub.c"
        cc -shared -fPIC -o "$cu/lib/libcuda.so" -Wl,-soname,libcuda.so.1 "$root/cuda_stub.c" || return 1
        local l
        for l in cublas cublasLt cudart nvrtc; do ln -sf "lib$l.so.13" "$cu/lib/lib$l.so"; done
        ln -sf libcurand.so.10 "$cu/lib/libcurand.so"
    fi
    export PATH="$cu/bin:$PATH" CUDA_ROOT="$cu" CUDA_PATH="$cu" CUDA_HOME="$cu"
    export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"
    export NVCC_PREPEND_FLAGS="-I$cu/include/cccl"
    export LIBRARY_PATH="$cu/lib${LIBRARY_PATH:+:$LIBRARY_PATH}"
}
_mica_cuda_setup
