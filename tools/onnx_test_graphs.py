#!/usr/bin/env python3
"""Small ONNX graphs for `models/tests/onnx.rs`: the exported test network and the bad models.

    python3 tools/onnx_test_graphs.py IRSDE_CHECKOUT [--out models/tests/data/onnx]

Writes
* `nafnet_w8_e11.onnx`: the parity case `models/tests/data/nafnet_w8_e11.pth` exported by
  `tools/export_onnx.py` (its PyTorch outputs are `nafnet_w8_e11.io.safetensors` beside it);
* `difference_fixed16.onnx`: `noise = x_t - mu`, every axis fixed at [1, 3, 16, 16], `t` [1]
  (the fixed-size and fixed-batch paths, with a closed-form output);
* `two_inputs.onnx` (inputs `a`, `b`), `rank3_state.onnx` (`x_t` [3, H, W]): refused models.

Needs: onnx, and what tools/export_onnx.py needs.
"""
import argparse
import subprocess
import sys
from pathlib import Path

import onnx
from onnx import TensorProto, helper


def graph(name, inputs, node, out_dims):
    outputs = [helper.make_tensor_value_info("noise", TensorProto.FLOAT, out_dims)]
    g = helper.make_graph([node], name, inputs, outputs)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("irsde", type=Path)
    ap.add_argument("--out", type=Path, default=Path("models/tests/data/onnx"))
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    here = Path(__file__).resolve().parent
    subprocess.run([sys.executable, str(here / "export_onnx.py"), str(args.irsde),
                    "models/tests/data/nafnet_w8_e11.pth", str(args.out / "nafnet_w8_e11.onnx"),
                    "--setting", '{"img_channel": 3, "width": 8, "enc_blk_nums": [1, 1], '
                    '"middle_blk_num": 1, "dec_blk_nums": [1, 1]}'], check=True)
    f = TensorProto.FLOAT
    fixed = [1, 3, 16, 16]
    onnx.save(graph("difference_fixed16",
                    [helper.make_tensor_value_info("x_t", f, fixed),
                     helper.make_tensor_value_info("mu", f, fixed),
                     helper.make_tensor_value_info("t", f, [1])],
                    helper.make_node("Sub", ["x_t", "mu"], ["noise"]), fixed),
              args.out / "difference_fixed16.onnx")
    dyn = ["B", 3, "H", "W"]
    onnx.save(graph("two_inputs",
                    [helper.make_tensor_value_info("a", f, dyn),
                     helper.make_tensor_value_info("b", f, dyn)],
                    helper.make_node("Sub", ["a", "b"], ["noise"]), dyn),
              args.out / "two_inputs.onnx")
    onnx.save(graph("rank3_state",
                    [helper.make_tensor_value_info("x_t", f, [3, "H", "W"]),
                     helper.make_tensor_value_info("mu", f, [3, "H", "W"]),
                     helper.make_tensor_value_info("t", f, [1])],
                    helper.make_node("Sub", ["x_t", "mu"], ["noise"]), [3, "H", "W"]),
              args.out / "rank3_state.onnx")
    for p in sorted(args.out.glob("*.onnx")):
        print(p, p.stat().st_size, "bytes")


if __name__ == "__main__":
    main()
