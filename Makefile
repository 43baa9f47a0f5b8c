# parley — top-level build.
#
#   make              libshared.a, the engine library, the six daemons and the tools (CPU only)
#   make asan|ubsan   the same with AddressSanitizer / UndefinedBehaviorSanitizer, in build-asan/ …
#   make test         unit tests (C), integration tests (pytest, real NATS/PostgreSQL/Redis), then
#                     the web app in Debian's headless Chromium (Playwright; screenshots in
#                     $(BUILD)/screenshots)
#   make test-unit    C unit tests only;  make test-integration  pytest only;  make test-browser
#   make run          install what is missing, fetch the model, build, start the local stack
#   make stop|status|logs   manage the local stack started by `make run`
#   make format       clang-format in place;  make format-check  fail on unformatted code
#   make CUDA=1       also build the CUDA backend in kernels/ (needs nvcc; never the default),
#                     into build-cuda/;  make CUDA=1 test-cuda | bench-cuda  GPU tests, benchmark
#
# Every binary is an object list over libshared.a; objects carry -MMD -MP dependencies.

# make CUDA=1 builds into its own folder (the engine library differs: kernels instead of a stub).
ifeq ($(CUDA),1)
BUILD   ?= build-cuda
endif
BUILD   ?= build
CC      ?= cc
PYTHON  ?= python3
V       ?= 0
Q        = $(if $(filter 1,$(V)),,@)

WARN     = -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wformat=2 -Wno-unused-parameter
CSTD     = -std=c11 -D_GNU_SOURCE
OPT     ?= -O2 -g
ARCHFLAGS ?= -mavx2 -mfma -mf16c
CPPFLAGS += -I/usr/include/postgresql -Ilibshared -I$(BUILD)/gen -Iservices/worker/engine
CFLAGS  += $(CSTD) $(OPT) $(WARN) $(SANFLAGS) -pthread -MMD -MP
LDFLAGS += $(SANFLAGS) -pthread
LDLIBS_SHARED = -lnats -lmicrohttpd -lprotobuf-c -lm
LDLIBS_PG     = -lpq -lhiredis
LDLIBS_SODIUM = -lsodium
LDLIBS_JSON   = -lcjson

# --- generated protobuf-c code --------------------------------------------------------------
PROTOS   := $(wildcard proto/*.proto)
GEN_C    := $(patsubst proto/%.proto,$(BUILD)/gen/%.pb-c.c,$(PROTOS))
GEN_H    := $(GEN_C:.c=.h)

$(BUILD)/gen/%.pb-c.c $(BUILD)/gen/%.pb-c.h: proto/%.proto
	@mkdir -p $(@D)
	$(Q)protoc-c --c_out=$(BUILD)/gen -Iproto $<

# --- libshared --------------------------------------------------------------------------------
SHARED_SRC := $(wildcard libshared/*.c)
SHARED_OBJ := $(SHARED_SRC:%.c=$(BUILD)/%.o) $(GEN_C:.c=.o)
LIBSHARED  := $(BUILD)/libshared.a

$(LIBSHARED): $(SHARED_OBJ)
	$(Q)$(AR) rcs $@ $^

# --- CUDA backend (kernels/): `make CUDA=1` compiles the kernels with nvcc for Hopper (sm_90
# machine code) plus compute_80 PTX that newer GPUs JIT-compile; without CUDA=1 the engine links
# kernels/cuda_stub.c, which answers "CUDA support was not built", and nvcc is never needed. ----
ifeq ($(CUDA),1)
CUDA_HOME    ?= /usr/local/cuda
NVCC         ?= $(CUDA_HOME)/bin/nvcc
CUDA_GENCODE ?= -gencode arch=compute_90,code=sm_90 -gencode arch=compute_80,code=compute_80
NVCCFLAGS    ?= -O3 -std=c++17 $(CUDA_GENCODE) -Xcompiler -Wall,-Wextra -Werror all-warnings
KERNEL_OBJ   := $(patsubst %.cu,$(BUILD)/%.cu.o,$(wildcard kernels/*.cu)) \
                $(BUILD)/kernels/backend_cuda.o
CUDA_INC      = -I$(CUDA_HOME)/include
LDLIBS_SHARED += -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -lcublas -lcudart -lstdc++
$(BUILD)/kernels/backend_cuda.o: CPPFLAGS += $(CUDA_INC)
$(BUILD)/kernels/%.cu.o: kernels/%.cu
	@mkdir -p $(@D)
	@echo "  NVCC $<"
	$(Q)$(NVCC) $(NVCCFLAGS) -MMD -MP -MF $(@:.o=.d) -c -o $@ $<
else
KERNEL_OBJ   := $(BUILD)/kernels/cuda_stub.o
endif

# --- inference engine (services/worker/engine) ----------------------------------------------
ENGINE_SRC := $(wildcard services/worker/engine/*.c)
ENGINE_OBJ := $(ENGINE_SRC:%.c=$(BUILD)/%.o)
LIBENGINE  := $(BUILD)/libengine.a
ENGINE_CFLAGS = $(ARCHFLAGS) -O3

$(BUILD)/services/worker/engine/%.o: CFLAGS += $(ENGINE_CFLAGS)
# AVX-512 VNNI products, installed at run time only where the CPU has them (quant.c)
$(BUILD)/services/worker/engine/quant_vnni.o: CFLAGS += -mavx512vnni -mavx512vl
$(LIBENGINE): $(ENGINE_OBJ) $(KERNEL_OBJ)
	$(Q)rm -f $@ && $(AR) rcs $@ $^

# --- daemons ----------------------------------------------------------------------------------
SERVICES := gateway chat infer-gateway worker history safety
BINS     := $(addprefix $(BUILD)/bin/parley-,$(SERVICES))

# One object list per daemon: its folder's *.c files (not the engine's subfolder).
svc_obj = $(patsubst %.c,$(BUILD)/%.o,$(wildcard services/$(1)/*.c))

$(BUILD)/bin/parley-gateway: $(call svc_obj,gateway) $(BUILD)/gen/openapi_json.o $(LIBSHARED)
	@mkdir -p $(@D)
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS_JSON) $(LDLIBS_SODIUM) $(LDLIBS_SHARED)
# docs/openapi.json, embedded in the gateway (served at GET /api/v1/openapi.json) as the bytes
# gw_openapi_json[gw_openapi_json_len] followed by a NUL.
$(BUILD)/gen/openapi_json.c: docs/openapi.json
	@mkdir -p $(@D)
	$(Q){ echo '/* generated from docs/openapi.json by the Makefile: do not edit */'; \
	  echo '#include <stddef.h>'; echo 'extern const char gw_openapi_json[];'; \
	  echo 'extern const size_t gw_openapi_json_len;'; echo 'const char gw_openapi_json[] = {'; \
	  od -An -v -tx1 $< | sed -e 's/\([0-9a-f][0-9a-f]\)/0x\1,/g'; echo '0x00};'; \
	  echo 'const size_t gw_openapi_json_len = sizeof gw_openapi_json - 1;'; } > $@.tmp && mv $@.tmp $@
$(BUILD)/gen/openapi_json.o: $(BUILD)/gen/openapi_json.c
	$(Q)$(CC) $(CSTD) $(OPT) $(SANFLAGS) -Wall -Werror -c -o $@ $<
$(BUILD)/bin/parley-chat: $(call svc_obj,chat) $(LIBSHARED)
	@mkdir -p $(@D)
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS_SHARED)
$(BUILD)/bin/parley-infer-gateway: $(call svc_obj,infer-gateway) $(LIBSHARED)
	@mkdir -p $(@D)
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS_SHARED)
$(BUILD)/bin/parley-worker: $(call svc_obj,worker) $(LIBENGINE) $(LIBSHARED)
	@mkdir -p $(@D)
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS_SHARED)
$(BUILD)/bin/parley-history: $(call svc_obj,history) $(LIBSHARED)
	@mkdir -p $(@D)
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS_PG) $(LDLIBS_SODIUM) $(LDLIBS_SHARED)
$(BUILD)/bin/parley-safety: $(call svc_obj,safety) $(LIBSHARED)
	@mkdir -p $(@D)
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS_SHARED)

# --- tools (engine command-line programs): tools/<name>.c → parley-<name> ---------------------
TOOL_SRC := $(wildcard tools/*.c)
TOOLS    := $(patsubst tools/%.c,$(BUILD)/bin/parley-%,$(TOOL_SRC))

$(BUILD)/bin/parley-%: $(BUILD)/tools/%.o $(LIBENGINE) $(LIBSHARED)
	@mkdir -p $(@D)
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS_SHARED)
# parley-safety-pub (tests and bench-safety drive parley-safety with it) links the rule
# classifier of services/safety.
$(BUILD)/tools/safety-pub.o: CPPFLAGS += -Iservices/safety
$(BUILD)/bin/parley-safety-pub: $(BUILD)/services/safety/rules.o $(BUILD)/services/safety/judge.o

# --- unit tests: every tests/unit/**/*.c in one binary with a registering harness ------------
UNIT_SRC := $(shell find tests/unit -name '*.c' 2>/dev/null | sort)
UNIT_OBJ := $(UNIT_SRC:%.c=$(BUILD)/%.o)
UNIT_BIN := $(BUILD)/bin/unit-tests
# The daemons' modules other than main.c are unit-tested too: tests/unit/<service>/ sees
# services/<service>/ headers (and only those: services never include each other's).
$(foreach s,$(SERVICES),$(eval $(BUILD)/tests/unit/$(s)/%.o: CPPFLAGS += -Iservices/$(s)))
SVC_MOD_OBJ := $(patsubst %.c,$(BUILD)/%.o,$(filter-out %/main.c,$(wildcard services/*/*.c)))

$(UNIT_BIN): $(UNIT_OBJ) $(SVC_MOD_OBJ) $(LIBENGINE) $(LIBSHARED)
	@mkdir -p $(@D)
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS_JSON) $(LDLIBS_PG) $(LDLIBS_SODIUM) $(LDLIBS_SHARED)

# --- GPU tests (make CUDA=1 test-cuda): tests/cuda/ in their own binary over the unit-test
# harness; each test prints "skipped: no GPU: …" where no device is visible. ------------------
CUDA_TEST_BIN := $(BUILD)/bin/cuda-tests
$(BUILD)/tests/cuda/%.o: CPPFLAGS += $(CUDA_INC)
$(CUDA_TEST_BIN): $(BUILD)/tests/cuda/test_cuda.o $(BUILD)/tests/unit/harness.o $(LIBENGINE) \
                  $(LIBSHARED)
	@mkdir -p $(@D)
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS_SHARED)

# --- objects ------------------------------------------------------------------------------------
ALL_OBJ := $(SHARED_OBJ) $(ENGINE_OBJ) $(foreach s,$(SERVICES),$(call svc_obj,$(s))) \
           $(TOOL_SRC:%.c=$(BUILD)/%.o) $(UNIT_OBJ)
$(filter-out $(GEN_C:.c=.o),$(ALL_OBJ)): | $(GEN_H)

$(BUILD)/%.o: %.c
	@mkdir -p $(@D)
	@echo "  CC  $<"
	$(Q)$(CC) $(CPPFLAGS) $(CFLAGS) -c -o $@ $<

# Generated code is not ours to warn about beyond the basics.
$(BUILD)/gen/%.pb-c.o: $(BUILD)/gen/%.pb-c.c
	$(Q)$(CC) $(CPPFLAGS) $(CSTD) $(OPT) $(SANFLAGS) -Wall -Werror -MMD -MP -c -o $@ $<

# --- top-level targets ------------------------------------------------------------------------
.DEFAULT_GOAL := all
.PHONY: all asan ubsan tsan test test-unit test-integration test-browser run stop status logs clean \
        format format-check fuzz bench deps bench-engine bench-serve bench-history \
        test-cuda bench-cuda bench-safety \
        bench-multiturn bench-quant

all: $(LIBSHARED) $(LIBENGINE) $(BINS) $(TOOLS) $(UNIT_BIN)

# Sanitizer variants build the whole tree into their own folder.
asan:
	$(MAKE) BUILD=build-asan OPT="-O1 -g -fno-omit-frame-pointer" SANFLAGS="-fsanitize=address,undefined" all
ubsan:
	$(MAKE) BUILD=build-ubsan OPT="-O1 -g" SANFLAGS="-fsanitize=undefined -fno-sanitize-recover=all" all
tsan:
	$(MAKE) BUILD=build-tsan OPT="-O1 -g" SANFLAGS="-fsanitize=thread" all

# Installs the system packages and Python packages the build and the tests need (root only).
deps:
	$(Q)scripts/deps.sh

test: all
	$(Q)$(MAKE) --no-print-directory test-unit test-integration test-browser

test-unit: $(UNIT_BIN)
	$(Q)$(UNIT_BIN)

test-integration: all
	$(Q)PARLEY_BUILD=$(BUILD) $(PYTHON) -m pytest -q tests/integration tests/deploy

# The web app (web/) in a real browser against the real stack; its own pytest session and stack.
test-browser: all
	$(Q)PARLEY_BUILD=$(BUILD) $(PYTHON) -m pytest -q tests/browser

# Benchmarks (never part of `make test`): figures printed next to the anchor measured in the
# same run. BENCH_THREADS defaults to every core.
BENCH_THREADS ?= $(shell nproc)
bench-engine: all
	$(Q)$(PYTHON) bench/bench_engine.py --threads $(BENCH_THREADS)
# The anchor above concurrency 1 is llama.cpp's own server, built once (~10 min) into
# build/anchor/ from the llama-cpp-python source package (bench/build_llama_server.sh).
bench-serve: all
	$(Q)bash bench/build_llama_server.sh >/dev/null
	$(Q)$(PYTHON) bench/bench_serve.py --threads $(BENCH_THREADS)
bench-history: all
	$(Q)$(PYTHON) bench/bench_history.py
# TTFT of a conversation's tenth turn with and without the worker's prefix cache.
bench-multiturn: all
	$(Q)PARLEY_BUILD=$(BUILD) $(PYTHON) bench/bench_multiturn.py --threads $(BENCH_THREADS)
# Single-thread dot-product speed per tensor type, next to llama.cpp's own kernels when
# llama-cpp-python is installed (bench/quant_bench.c).
$(BUILD)/bin/parley-quant-bench: $(BUILD)/bench/quant_bench.o $(LIBENGINE) $(LIBSHARED)
	@mkdir -p $(@D)
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS_SHARED) -ldl
bench-quant: $(BUILD)/bin/parley-quant-bench
	$(Q)PARLEY_GGML_CPU=$${PARLEY_GGML_CPU:-$$($(PYTHON) -c 'import llama_cpp,os; \
	  print(os.path.join(os.path.dirname(llama_cpp.__file__),"lib","libggml-cpu.so"))' \
	  2>/dev/null)} $<
# Safety events per second of one parley-safety instance pinned to one core (rules only).
bench-safety: all
	$(Q)PARLEY_BUILD=$(BUILD) $(PYTHON) bench/bench_safety.py
# GPU tests and benchmark: need `make CUDA=1 …` (and a GPU to do more than print a skip).
ifeq ($(CUDA),1)
test-cuda: $(CUDA_TEST_BIN) all
	$(Q)$(CUDA_TEST_BIN)
	$(Q)PARLEY_BUILD=$(BUILD) $(PYTHON) -m pytest -q -rs tests/integration/test_cuda_worker.py
bench-cuda: all
	$(Q)$(PYTHON) bench/bench_cuda.py --build $(BUILD)
else
test-cuda bench-cuda:
	@echo "$@: skipped: CUDA support not built (run: make CUDA=1 $@)"
endif
bench: bench-engine bench-serve bench-history bench-safety bench-multiturn

run:
	$(Q)scripts/parleyctl run

stop:
	$(Q)scripts/parleyctl stop

status:
	$(Q)scripts/parleyctl status

logs:
	$(Q)scripts/parleyctl logs

FORMAT_SRC = $(shell git ls-files '*.c' '*.h' 2>/dev/null)
format:
	$(Q)clang-format -i $(FORMAT_SRC)
format-check:
	$(Q)clang-format --dry-run -Werror $(FORMAT_SRC)

clean:
	rm -rf build build-asan build-ubsan build-tsan build-cuda

-include $(ALL_OBJ:.o=.d) $(KERNEL_OBJ:.o=.d)

# --- fuzzing: libFuzzer harness for the GGUF reader, tokenizer and template detection ----------
# Needs clang. Seeds come from parley-mktiny (small vocabularies); see fuzz/README.md.
#   make fuzz-gguf FUZZ_SECONDS=180
FUZZ_SECONDS ?= 60
FUZZ_SRC := fuzz/fuzz_gguf.c services/worker/engine/gguf.c services/worker/engine/tok.c \
            services/worker/engine/tok_spm.c \
            services/worker/engine/tok_pre.c services/worker/engine/uni_tables.c \
            services/worker/engine/tmpl.c libshared/status.c
fuzz-gguf: $(BUILD)/bin/parley-mktiny
	@mkdir -p $(BUILD)/fuzz/corpus-gguf
	$(Q)clang -std=c11 -D_GNU_SOURCE -g -O1 -fsanitize=fuzzer,address,undefined \
	    -Ilibshared -Iservices/worker/engine -o $(BUILD)/fuzz/fuzz_gguf $(FUZZ_SRC)
	$(Q)$(BUILD)/bin/parley-mktiny --out $(BUILD)/fuzz/corpus-gguf/seed-q4_1.gguf --max-vocab 300 \
	    --layers 1 --embd 32 --heads 2 --kv-heads 1 --ff 32 --ctx 64 --type q4_1
	$(Q)$(BUILD)/bin/parley-mktiny --out $(BUILD)/fuzz/corpus-gguf/seed-f16-v2.gguf --max-vocab 280 \
	    --layers 1 --embd 32 --heads 2 --kv-heads 1 --ff 32 --ctx 64 --type f16 --gguf-version 2
	$(Q)$(BUILD)/bin/parley-mktiny --out $(BUILD)/fuzz/corpus-gguf/seed-q8_0-a64.gguf --max-vocab 260 \
	    --layers 1 --embd 32 --heads 2 --kv-heads 1 --ff 32 --ctx 64 --type q8_0 --align 64 --untied
	$(Q)$(BUILD)/fuzz/fuzz_gguf -max_len=65536 -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
	    $(BUILD)/fuzz/corpus-gguf
