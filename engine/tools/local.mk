# SPDX-License-Identifier: Apache-2.0
#
# engine/tools: command-line programs on top of the engine.  The offline
# CLI (infer_main.c documents options and output).
bin_PROGRAMS += engine/tools/slimserve-infer
engine_tools_slimserve_infer_SOURCES = engine/tools/infer_main.c
engine_tools_slimserve_infer_LDADD = $(SS_ENGINE_LIBS)

# ONNX's backend node test suite through slimserve-infer, generated at test
# time by python3-onnx (skipped when it is missing): fails on any wrong or
# crashed case, prints the pass rate and the refusals per op (issue 12).
TESTS += tests/engine/test_onnx_node.py
EXTRA_DIST += tests/engine/test_onnx_node.py tests/engine/onnx_node_gen.py
CLEANFILES += onnx-node-summary.json

# torchvision-style blocks (densenet, swin, mobilenet_v3, convnext) with
# random weights, exported by PyTorch at opsets 13 and 17, against
# PyTorch's outputs (skipped without torch).
TESTS += tests/engine/test_torch_blocks.py
EXTRA_DIST += tests/engine/test_torch_blocks.py

# 3-D convolution and pooling (r3d_18-like, a 3-D U-Net block, dilated/
# grouped/ceil_mode cases) at opsets 11/13/17, batch 1 and 3, against
# PyTorch (skipped without torch).
TESTS += tests/engine/test_conv3d.py
TESTS += tests/engine/test_convt.py
EXTRA_DIST += tests/engine/test_convt.py
EXTRA_DIST += tests/engine/test_conv3d.py

# If and Loop as torch.jit.script + torch.onnx.export write them (opsets
# 13 and 17), against PyTorch (skipped without torch).
TESTS += tests/engine/test_control_flow.py
EXTRA_DIST += tests/engine/test_control_flow.py
# Scan: reversed directions, version 8's batch axis, two scan inputs, an
# outer value in the body, against numpy (skipped without python3-onnx).
TESTS += tests/engine/test_scan.py
EXTRA_DIST += tests/engine/test_scan.py

# Einsum against numpy.einsum (implicit output, diagonals, ellipses).
TESTS += tests/engine/test_einsum.py
EXTRA_DIST += tests/engine/test_einsum.py
# RoiAlign against torchvision/ONNX's definition, MaxUnpool against numpy.
TESTS += tests/engine/test_roi.py
EXTRA_DIST += tests/engine/test_roi.py
# MaxPool on int8/uint8/float16, Indices in both storage orders, vs numpy.
TESTS += tests/engine/test_pool_types.py
EXTRA_DIST += tests/engine/test_pool_types.py
# DFT/STFT/MelWeightMatrix against numpy.fft, torch.stft, a log-mel front end.
TESTS += tests/engine/test_spectral.py
EXTRA_DIST += tests/engine/test_spectral.py
# GridSample with grids far outside [-1, 1] (a flow warping off the image).
TESTS += tests/engine/test_gridsample.py
EXTRA_DIST += tests/engine/test_gridsample.py
# MatMulInteger and QLinearMatMul against numpy (per-row/column params).
TESTS += tests/engine/test_int_matmul.py
EXTRA_DIST += tests/engine/test_int_matmul.py
