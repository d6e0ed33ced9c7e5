#!/usr/bin/env python3
"""Writes `models/tests/data/views.pth`: a state dict of tensors that are views of shared
storages, as `torch.save` stores them (the whole storage once, each tensor as an offset, shape
and strides into it), for `models/tests/checkpoint.rs`.

    python3 tools/checkpoint_fixtures.py [--out models/tests/data/views.pth]

Every value is an `arange`, so the test checks the loaded tensors against closed forms:

* `base`: arange(24) as float32, shape [24];
* `slice`: base[5:17] viewed as [3, 4] (storage offset 5);
* `alias`: base[5:17] viewed as [3, 4] again (a second name for `slice`'s elements);
* `transposed`: arange(12) as float32 of shape [3, 4], transposed to [4, 3] (column-major);
* `double`: arange(6) as float64, shape [2, 3], its own storage.
"""
import argparse
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("models/tests/data/views.pth"))
    a = ap.parse_args()
    base = torch.arange(24, dtype=torch.float32)
    view = base[5:17].view(3, 4)
    sd = {
        "base": base,
        "slice": view,
        "alias": base[5:17].view(3, 4),
        "transposed": torch.arange(12, dtype=torch.float32).reshape(3, 4).t(),
        "double": torch.arange(6, dtype=torch.float64).reshape(2, 3),
    }
    assert view.storage_offset() == 5 and not sd["transposed"].is_contiguous()
    torch.save(sd, a.out)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
