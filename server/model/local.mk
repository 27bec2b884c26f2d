# SPDX-License-Identifier: Apache-2.0
#
# server/model: the model registry and hot swap (registry*.c; internal.h
# is shared by them), per-model config.json, the traffic sampler.
noinst_LIBRARIES += server/model/libssmodel.a
server_model_libssmodel_a_SOURCES = \
	server/model/registry.c server/model/registry_load.c \
	server/model/registry_life.c \
	server/model/registry.h \
	server/model/internal.h server/model/registry_json.c \
	server/model/registry_ops.c \
	server/model/modelcfg.c server/model/modelcfg.h \
	server/model/sampler.c server/model/sampler.h \
	server/model/adapter.c server/model/adapter.h \
	server/model/lora_rows.c server/model/lora_rows.h \
	server/model/adapter_admin.c server/model/adapter_int.h \
	server/model/adapter_read.c server/model/adapter_cache.c
server_model_libssmodel_a_CFLAGS = $(AM_CFLAGS) $(JANSSON_CFLAGS) \
	$(UV_CFLAGS)

# The LoRA residency budget (adapter_cache.c): LRU, pins, read-backs.
check_PROGRAMS += tests/unit/test_adapter_cache
TESTS += tests/unit/test_adapter_cache
tests_unit_test_adapter_cache_SOURCES = tests/unit/test_adapter_cache.c
tests_unit_test_adapter_cache_CFLAGS = $(AM_CFLAGS) $(JANSSON_CFLAGS) \
	$(UV_CFLAGS)
tests_unit_test_adapter_cache_LDADD = $(SS_SERVER_LIBS)
