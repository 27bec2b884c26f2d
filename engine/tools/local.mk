# SPDX-License-Identifier: Apache-2.0
#
# engine/tools: command-line programs on top of the engine.  The offline
# CLI (infer_main.c documents options and output).
bin_PROGRAMS += engine/tools/slimserve-infer
engine_tools_slimserve_infer_SOURCES = engine/tools/infer_main.c
engine_tools_slimserve_infer_LDADD = $(SS_ENGINE_LIBS)
