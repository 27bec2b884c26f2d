# SPDX-License-Identifier: Apache-2.0
"""Where the committed fixtures the Python tests share are (top_srcdir is
set by the test harness; "." when a test is run by hand from the top)."""

import os

TOP_SRC = os.environ.get("top_srcdir", ".")
FIX = os.path.join(TOP_SRC, "tests", "fixtures")
MLP = os.path.join(FIX, "mlp_op13", "model.onnx")
CALIB = os.path.join(FIX, "digits", "mlp_calib.npz")
HELD = os.path.join(FIX, "digits", "mlp_heldout.npz")
