#!/usr/bin/env bash
# The GPU check: build here, run on a GPU machine that has the NVIDIA driver and PyTorch (CUDA's
# libraries inside its wheels) but no Rust toolchain and no network.
#
#     tools/gpu_check.sh build            # here: CUDA build into target/gpu-check/ (~15 min cold)
#     tools/gpu_check.sh run [cuda:0]     # there, from the repository root with target/gpu-check
#     tools/gpu_check.sh dry-run          # here: the run half on the CPU, small sizes (~3 min)
#
# `build` compiles the `mrsampler` tool and the `device_check` example with `--features cuda`
# against the CUDA 13.2 wheels (tools/cuda_env.sh --link; CUDA_COMPUTE_CAP, default 90, picks the
# PTX target) and packs them, stripped, into target/gpu-check/bundle.tar.gz (carry that folder;
# the inputs it reads are tracked files). `run` prints one report:
#   (a) the conformance vectors replayed with the candle backend on the device, f64 and f32;
#   (b) each released architecture (random weights, the same on both sides) and the shipped
#       network on the device against the CPU, tolerance 1e-4 of the output's magnitude;
#   (c) restores at 10 NFE of 512² and 1024² images: each released architecture through the
#       library (network and sampler timed apart), and the shipped network through
#       `mrsampler restore --device DEVICE` on PNG mosaics of the test crops (its own timing line);
#   (d) the sampler's own time per step on the device (the restore table's last columns).
# `dry-run` builds the same two programs without CUDA (target/release) and runs `run cpu` with
# 64² and 128² images, so the script's logic is checked where no GPU is.
set -euo pipefail
cd "$(dirname "$0")/.."

BUNDLE=target/gpu-check
mode="${1:-}"

build() {
    # shellcheck source=tools/cuda_env.sh
    source tools/cuda_env.sh --link
    export CARGO_TARGET_DIR=target/cuda
    cargo build --release -p mrsampler-cli --features cuda
    cargo build --release -p mrsampler-models --features cuda --example device_check
    # Stripped, the two binaries are ~60 MiB each (mostly candle's PTX, which compresses ~8×).
    local stage=target/gpu-check-stage
    rm -rf "$stage" "$BUNDLE" && mkdir -p "$stage" "$BUNDLE"
    strip -o "$stage/mrsampler" target/cuda/release/mrsampler
    strip -o "$stage/device_check" target/cuda/release/examples/device_check
    echo "$CUDA_COMPUTE_CAP" > "$stage/compute_cap"
    tar -czf "$BUNDLE/bundle.tar.gz" -C "$stage" mrsampler device_check compute_cap
    du -sh "$BUNDLE/bundle.tar.gz"
}

# The CUDA 13 libraries of the machine's PyTorch (cuBLAS, cuRAND, NVRTC, the runtime).
torch_cuda_libs() {
    python3 - <<'EOF' 2>/dev/null || true
import glob, os
import nvidia
dirs = sorted({os.path.dirname(p) for base in nvidia.__path__
               for p in glob.glob(os.path.join(base, "**", "lib*.so*"), recursive=True)})
print(":".join(dirs))
EOF
}

run() {
    local device="$1" sizes="$2" bin="$3"
    local out=target/gpu-check-run
    mkdir -p "$out"
    if [ "$device" != cpu ]; then
        local libs
        libs="$(torch_cuda_libs)"
        [ -n "$libs" ] || { echo "no CUDA libraries found in python3's nvidia wheels (PyTorch)"; exit 1; }
        export LD_LIBRARY_PATH="$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
        nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
        echo "PTX target: compute capability $(cat "$bin/compute_cap")"
    fi
    echo "# GPU check on $device ($(date -u +%Y-%m-%dT%H:%MZ))"
    echo
    echo "## (a, b, c, d) library: parity, restores, conformance"
    echo
    local status=0
    "$bin/device_check" --device "$device" --sizes "$sizes" --nfe 10 \
        --shipped assets/restore/model.safetensors --cases tests/data/*.json || status=$?
    echo
    echo "## (c) mrsampler restore, shipped network, 10 NFE"
    echo
    local side
    for side in ${sizes//,/ }; do
        "$bin/device_check" mosaic "$side" "$out/mosaic_$side.png" assets/eval/test/degraded/*.png
        "$bin/mrsampler" restore --device "$device" --nfe 10 --seed 1 --overwrite \
            --out "$out/restored" "$out/mosaic_$side.png" || status=$?
    done
    echo
    [ "$status" = 0 ] && echo "GPU check: all passed" || echo "GPU check: FAILED (status $status)"
    return "$status"
}

case "$mode" in
    build) build ;;
    run)
        mkdir -p target/gpu-check-bin
        tar -xzf "$BUNDLE/bundle.tar.gz" -C target/gpu-check-bin
        run "${2:-cuda:0}" 512,1024 target/gpu-check-bin
        ;;
    dry-run)
        cargo build --release -p mrsampler-cli
        cargo build --release -p mrsampler-models --example device_check
        mkdir -p target/gpu-check-cpu
        cp target/release/mrsampler target/release/examples/device_check target/gpu-check-cpu/
        run cpu 64,128 target/gpu-check-cpu
        ;;
    *)
        echo "usage: tools/gpu_check.sh build | run [cuda:N] | dry-run" >&2
        exit 2
        ;;
esac
