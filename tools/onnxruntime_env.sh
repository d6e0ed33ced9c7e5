# Source this file to get ONNX Runtime for `--model NET.onnx` and the ONNX tests:
#
#     source tools/onnxruntime_env.sh
#
# It installs the `onnxruntime` wheel (pinned below; PyPI reachable on first use) into a virtual
# environment under target/onnxruntime/ and exports ORT_DYLIB_PATH, the library inside the wheel,
# which mrsampler loads at run time. It also sets MRSAMPLER_ONNX_TESTS=1, which turns the ONNX
# tests' "no runtime, skipped" into a failure (CI sources this file). The other two ways to get
# the library (a system package, ONNX Runtime's release archive) are in docs/models.md.
#
# Needs python3 with venv and pip.

_onnxruntime_env_main() {
    local venv
    venv="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/target/onnxruntime/venv"
    if [ ! -x "$venv/bin/pip" ]; then
        python3 -m venv "$venv" || return 1
    fi
    "$venv/bin/pip" install --quiet --disable-pip-version-check "onnxruntime==1.32.0" || return 1
    local lib
    lib="$(ls "$venv"/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.* 2>/dev/null | head -n 1)"
    if [ -z "$lib" ]; then
        echo "tools/onnxruntime_env.sh: the onnxruntime wheel holds no libonnxruntime.so.*" >&2
        return 1
    fi
    export ORT_DYLIB_PATH="$lib"
    export MRSAMPLER_ONNX_TESTS=1
    echo "ONNX Runtime: ORT_DYLIB_PATH=$ORT_DYLIB_PATH"
}

_onnxruntime_env_main "$@"
