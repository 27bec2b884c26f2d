# SPDX-License-Identifier: Apache-2.0
"""Makes mlp_v2.onnx: the MLP fixture with other weights, so hot-swap tests
can tell which version answered.  Needs python3-onnx (not needed by CI: the
output is committed).

    /usr/bin/python3 tests/integration/data/make_v2.py
"""
import os

import numpy as np
import onnx
from onnx import numpy_helper

here = os.path.dirname(os.path.abspath(__file__))
src = os.path.join(here, "..", "..", "fixtures", "mlp_op13", "model.onnx")
m = onnx.load(src)
rng = np.random.default_rng(2)
for init in m.graph.initializer:
    w = numpy_helper.to_array(init)
    if w.dtype == np.float32:
        # A different but still sensible model: perturb every weight.
        w2 = (w * (1.0 + 0.5 * rng.standard_normal(w.shape))).astype(
            np.float32)
        init.CopyFrom(numpy_helper.from_array(w2, init.name))
onnx.checker.check_model(m)
onnx.save(m, os.path.join(here, "mlp_v2.onnx"))
print("wrote mlp_v2.onnx")
