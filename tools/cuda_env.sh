# Source this file to build mrsampler's `cuda` feature without a system CUDA toolkit:
#
#     source tools/cuda_env.sh            # compiler and headers: enough for cargo check/clippy
#     source tools/cuda_env.sh --link     # also the libraries, to link binaries (cargo build)
#
# It installs NVIDIA's CUDA wheels (pinned below) into a virtual environment under
# target/cuda-toolkit/ (once; later runs reuse it) and exports what candle's build scripts read:
# CUDA_HOME (cudarc's link search), PATH (nvcc), CUDA_COMPUTE_CAP (the PTX target; default 90,
# Hopper: `export CUDA_COMPUTE_CAP=80` before sourcing for an A100, 89 for L4/RTX 40xx; a
# `VAR=value source ...` prefix does not last beyond the `source`).
#
# With --link it also gives the wheel's libraries the unversioned names the linker looks for
# (libcublas.so -> libcublas.so.13, ...) and writes a link-time stub of the driver library
# libcuda.so (one empty function per entry point declared in cuda.h, with the soname
# libcuda.so.1), the same thing the toolkit's lib64/stubs/libcuda.so is: the binary then loads
# the real driver at run time. Run such binaries with LD_LIBRARY_PATH holding the CUDA 13
# libraries (PyTorch's `nvidia/cu13/lib` does; see tools/gpu_check.sh).
#
# Needs python3 with venv and pip (PyPI reachable on first use), and gcc for the stub.

_cuda_env_main() {
    local root link=0
    [ "${1:-}" = "--link" ] && link=1
    root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/target/cuda-toolkit"
    local venv="$root/venv"
    # CUDA 13.2: the toolkit of the PyTorch 2.15 (cu132) wheels this project measures against.
    local wheels=(
        "nvidia-cuda-nvcc==13.2.86" "nvidia-cuda-crt==13.2.86" "nvidia-nvvm==13.2.86"
        "nvidia-cuda-runtime==13.2.86" "nvidia-cuda-cccl==13.2.86"
    )
    if [ "$link" = 1 ]; then
        wheels+=("nvidia-cublas==13.4.1.3" "nvidia-curand==10.4.5.25" "nvidia-cuda-nvrtc==13.2.86")
    fi
    if [ ! -x "$venv/bin/pip" ]; then
        python3 -m venv "$venv" || return 1
    fi
    "$venv/bin/pip" install --quiet --disable-pip-version-check "${wheels[@]}" || return 1
    local home
    home="$("$venv/bin/python" -c 'import nvidia, os; print(os.path.join(nvidia.__path__[0], "cu13"))')" || return 1
    if [ "$link" = 1 ]; then
        local lib="$home/lib" name
        for name in cublas cublasLt curand nvrtc cudart; do
            local versioned
            versioned="$(ls "$lib"/lib"$name".so.[0-9]* 2>/dev/null | head -n 1)"
            [ -n "$versioned" ] && ln -sf "$(basename "$versioned")" "$lib/lib$name.so"
        done
        if [ ! -f "$lib/libcuda.so" ]; then
            echo '#include <cuda.h>' | gcc -E -P -I"$home/include" - \
                | grep -oE '\bcu[A-Z][A-Za-z0-9_]*[[:space:]]*\(' | tr -d '( ' | sort -u \
                | sed 's/.*/int &(void) { return 0; }/' > "$root/libcuda_stub.c" || return 1
            gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$lib/libcuda.so" "$root/libcuda_stub.c" \
                || return 1
        fi
    fi
    export CUDA_HOME="$home"
    export PATH="$home/bin:$PATH"
    export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"
    echo "CUDA $(nvcc --version | sed -n 's/.*release \([0-9.]*\).*/\1/p') from wheels at $CUDA_HOME (compute capability $CUDA_COMPUTE_CAP)"
}

_cuda_env_main "$@"
