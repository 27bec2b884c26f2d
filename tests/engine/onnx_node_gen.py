#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Generate ONNX's backend node test data into DIR (node/, real/, simple/).

    onnx_node_gen.py DIR

Debian's python3-onnx 1.12 was written for numpy < 1.24: its test case
generators still use the aliases np.float, np.int, np.bool and np.object,
which numpy 1.24 removed.  They are set back here, before onnx is imported,
to the builtins they always meant.
"""

import sys
import warnings

import numpy as np

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    for _name, _type in (("float", float), ("int", int), ("bool", bool),
                         ("object", object)):
        if not hasattr(np, _name):
            setattr(np, _name, _type)


def main():
    if len(sys.argv) != 2:
        sys.stderr.write("usage: onnx_node_gen.py DIR\n")
        return 2
    warnings.simplefilter("ignore")
    from onnx.backend.test import cmd_tools
    sys.argv = [sys.argv[0], "generate-data", "-o", sys.argv[1]]
    cmd_tools.main()
    return 0


if __name__ == "__main__":
    sys.exit(main())
