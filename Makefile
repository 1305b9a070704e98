# Remora build.  `make` builds build/remora; `make test` installs deps, builds
# with ASan+UBSan and runs every test; `make run` starts the quickstart.
CC       ?= gcc
PKGS     := libevent libevent_pthreads libevent_openssl openssl libnghttp2 yaml-0.1 jansson libcares libprotobuf-c libpcre2-8 libxxhash
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   = $(shell pkg-config --libs $(PKGS) 2>/dev/null)
WARN     := -Wall -Wextra -Werror -Wno-unused-parameter -Wshadow -Wstrict-prototypes -Wmissing-prototypes
CFLAGS   ?= -O2 -g
ALL_CFLAGS = -std=gnu11 $(CFLAGS) $(WARN) -D_GNU_SOURCE -pthread -I. -Ibuild/gen $(PKG_CFLAGS) $(EXTRA_CFLAGS)
GEN_CFLAGS = -std=gnu11 $(CFLAGS) -w -D_GNU_SOURCE -pthread -Ibuild/gen $(PKG_CFLAGS) $(EXTRA_CFLAGS)
LDLIBS   = $(PKG_LIBS) -pthread -lm

# BUILD selects the variant directory: build (release), build/asan (tests).
BUILD    ?= build
SAN      := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined

LIB_SRCS  := $(shell find proxy filters stats tls xds -name '*.c' ! -name main.c ! -path 'xds/cp/*' 2>/dev/null | sort)
# The reference control plane (build/remora-cp): its own sources, linked
# against the same library.
CP_SRCS   := $(shell find xds/cp -name '*.c' 2>/dev/null | sort)

# xDS protobuf: the .proto subset under xds/proto (plus the google/protobuf
# well-known types from libprotobuf-dev) compiled by protoc-c into build/gen,
# never committed.  pb_registry.c lists every message descriptor so Any
# type URLs resolve (xds/pb_json.c).
GEN        := build/gen
PROTO_SUB  := $(shell cd xds/proto 2>/dev/null && find . -name '*.proto' | sed 's|^\./||' | sort)
PROTO_WKT  := google/protobuf/any.proto google/protobuf/duration.proto google/protobuf/wrappers.proto \
	      google/protobuf/struct.proto google/protobuf/empty.proto google/protobuf/timestamp.proto
PROTO_ALL  := $(PROTO_SUB) $(PROTO_WKT)
PROTO_GEN_C := $(PROTO_ALL:%.proto=$(GEN)/%.pb-c.c) $(GEN)/pb_registry.c
PROTO_OBJS := $(PROTO_GEN_C:$(GEN)/%.c=$(BUILD)/obj/gen/%.o)
PROTO_INC  ?= /usr/include

$(GEN)/.stamp: $(addprefix xds/proto/,$(PROTO_SUB)) xds/proto/gen_registry.sh
	@rm -rf $(GEN) && mkdir -p $(GEN)
	protoc-c -Ixds/proto -I$(PROTO_INC) --c_out=$(GEN) $(PROTO_ALL)
	sh xds/proto/gen_registry.sh $(GEN) > $(GEN)/pb_registry.c
	@touch $@
$(PROTO_GEN_C): $(GEN)/.stamp

LIB_OBJS  := $(LIB_SRCS:%.c=$(BUILD)/obj/%.o) $(PROTO_OBJS)
MAIN_OBJ  := $(BUILD)/obj/proxy/main.o
CP_OBJS   := $(CP_SRCS:%.c=$(BUILD)/obj/%.o)
UNIT_SRCS := $(shell find tests/unit -name '*_test.c' 2>/dev/null | sort)
UNIT_BINS := $(UNIT_SRCS:tests/unit/%.c=$(BUILD)/tests/%)
UNIT_MAIN := $(BUILD)/obj/tests/unit/test_main.o

.PHONY: fuzz-campaign image k8s-npm test-valgrind soak bench-xds xds-npm xds-proto-subset all remora deps run test test-unit test-integration bench fuzz fuzz-bins unit-bins clean asan format
.DEFAULT_GOAL := all

all: $(BUILD)/remora $(BUILD)/remora-cp

$(BUILD)/obj/gen/%.o: $(GEN)/%.c
	@mkdir -p $(dir $@)
	$(CC) $(GEN_CFLAGS) -c $< -o $@

$(BUILD)/obj/%.o: %.c | $(GEN)/.stamp
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/libremora.a: $(LIB_OBJS)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/remora: $(MAIN_OBJ) $(BUILD)/libremora.a
	$(CC) $(ALL_CFLAGS) -o $@ $(MAIN_OBJ) -Wl,--whole-archive $(BUILD)/libremora.a -Wl,--no-whole-archive $(LDLIBS)

$(BUILD)/remora-cp: $(CP_OBJS) $(BUILD)/libremora.a
	$(CC) $(ALL_CFLAGS) -o $@ $(CP_OBJS) $(BUILD)/libremora.a $(LDLIBS)

$(BUILD)/tests/%: tests/unit/%.c $(UNIT_MAIN) $(BUILD)/libremora.a
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -Itests/unit -o $@ $< $(UNIT_MAIN) $(BUILD)/libremora.a $(LDLIBS)

unit-bins: $(UNIT_BINS)

-include $(shell find $(BUILD)/obj build/fuzz/obj -name '*.d' 2>/dev/null)

# Regenerate the committed .proto subset from the official Envoy protos that
# the test control plane installs (tests/xds/node_modules); by hand.
xds-proto-subset: xds-npm
	sh tests/xds/protos.sh descriptor /tmp/remora-envoy.pb
	/usr/bin/python3 xds/proto/gen_subset.py /tmp/remora-envoy.pb xds/proto

# The Node.js test control plane (tests/xds): npm ci from the lock file.
xds-npm: tests/xds/node_modules/.package-lock.json
tests/xds/node_modules/.package-lock.json: tests/xds/package.json tests/xds/package-lock.json
	cd tests/xds && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

# The Kubernetes schema checker (tests/k8s: kubernetes-models): npm ci from
# the lock file.
k8s-npm: tests/k8s/node_modules/.package-lock.json
tests/k8s/node_modules/.package-lock.json: tests/k8s/package.json tests/k8s/package-lock.json
	cd tests/k8s && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

# The container image: an OCI image layout tarball built offline with umoci
# from the release binary (deploy/image/build-image.sh; deploy/Dockerfile is
# the same for Docker users).  `make test` builds it for tests/integration/test_image.py.
IMAGE_TAG ?= 0.1.0
image: build/remora-image.tar
build/remora-image.tar: build/remora build/remora-cp deploy/image/build-image.sh deploy/image/stage-rootfs.sh deploy/init/remora-init
	sh deploy/image/build-image.sh build/remora $@ $(IMAGE_TAG)

# Install missing Debian packages (root, apt-get).  Idempotent and quick when
# everything is there.
deps:
	@sh deploy/install-deps.sh

# Sanitizer build used by the tests.
asan:
	$(MAKE) BUILD=build/asan EXTRA_CFLAGS="$(SAN)" CFLAGS="-O1 -g" build/asan/remora build/asan/remora-cp unit-bins

run: deps all
	./build/remora -c deploy/examples/quickstart.yaml

test: deps xds-npm k8s-npm
	$(MAKE) asan
	$(MAKE) fuzz-bins
	$(MAKE) image
	@sh tests/run.sh

# The integration subset under valgrind (memcheck) with a non-sanitized debug
# build: any invalid access or definite leak fails the test that started
# that remora (harness.py: REMORA_WRAPPER, valgrind's report in its stderr).
# Deselected: the tests where one Remora originates TLS to another (their 1 s
# connect_timeout is shorter than two handshakes under valgrind).  ~10 min.
VALGRIND_TESTS ?= test_http_basic.py test_keepalive.py test_http2.py test_grpc.py \
	test_tls.py test_retries.py test_tcp_proxy.py test_overload.py
VALGRIND_SKIP ?= not two_sidecars_chained and not upstream_server_identity_mismatch \
	and not large_bodies_both_ways_over_tls and not tcp_proxy_mtls_tunnel
VALGRIND     := valgrind --leak-check=full --errors-for-leak-kinds=definite \
	--show-leak-kinds=definite --error-exitcode=99 --num-callers=30
test-valgrind: deps
	$(MAKE) BUILD=build/debug CFLAGS="-O1 -g" build/debug/remora
	cd tests/integration && REMORA_BIN=$(CURDIR)/build/debug/remora REMORA_WRAPPER="$(VALGRIND)" \
		REMORA_TIME_SCALE=10 TEST_TIMEOUT_S=600 /usr/bin/python3 -m pytest -q -rfEs \
		-p no:cacheprovider -k "$(VALGRIND_SKIP)" $(VALGRIND_TESTS) $(PYTEST_ARGS)

# Soak (tests/soak/soak.py): fixed-rate HTTP/1, HTTP/2, gRPC and TCP traffic
# through the release build for SOAK_SECONDS while xDS pushes and upstream
# restarts happen; fails on unprovoked errors, RSS or fd growth.
SOAK_SECONDS ?= 600
soak: deps xds-npm all
	nice /usr/bin/python3 tests/soak/soak.py --seconds $(SOAK_SECONDS) --bin $(CURDIR)/build/remora

# Only the unit tests / only the integration tests (sanitizer build).
test-unit: asan
	@ONLY=unit sh tests/run.sh
test-integration: asan
	@ONLY=integration sh tests/run.sh

# libFuzzer targets: one per parser (tests/fuzz/*_fuzz.c), each run for
# FUZZ_SECONDS over a copy of its committed seed corpus.  `make test` runs
# each briefly (FUZZ_SECONDS=5 via tests/run.sh); `make fuzz` runs longer.
FUZZ_SECONDS ?= 60
FUZZ_CC      ?= clang-14
FUZZ_SRCS    := $(shell find tests/fuzz -name '*_fuzz.c' 2>/dev/null | sort)
FUZZ_BINS    := $(FUZZ_SRCS:tests/fuzz/%.c=build/fuzz/%)
FUZZ_CFLAGS  := -std=gnu11 -g -O1 -fsanitize=fuzzer-no-link,address,undefined -D_GNU_SOURCE -pthread -I. -Ibuild/gen
FUZZ_OBJS    := $(LIB_SRCS:%.c=build/fuzz/obj/%.o) $(PROTO_GEN_C:$(GEN)/%.c=build/fuzz/obj/gen/%.o)

build/fuzz/obj/gen/%.o: $(GEN)/%.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -w $(PKG_CFLAGS) -c $< -o $@

build/fuzz/obj/%.o: %.c | $(GEN)/.stamp
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) $(PKG_CFLAGS) -MMD -MP -c $< -o $@

build/fuzz/libremora.a: $(FUZZ_OBJS)
	@rm -f $@
	ar rcs $@ $^

build/fuzz/%: tests/fuzz/%.c build/fuzz/libremora.a
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer $(PKG_CFLAGS) -o $@ $< build/fuzz/libremora.a $(LDLIBS)

fuzz-bins: $(FUZZ_BINS)

# The long campaign: each target until it has used FUZZ_CPU_SECONDS of CPU
# (default 600: the 10 CPU-minutes per target of docs/security.md).
FUZZ_CPU_SECONDS ?= 600
fuzz-campaign: deps fuzz-bins
	@bash tests/fuzz/cpu-budget.sh $(FUZZ_CPU_SECONDS)

fuzz: deps fuzz-bins
	@for f in $(FUZZ_BINS); do n=$$(basename $$f _fuzz); \
		sh tests/fuzz/run-one.sh $$f tests/fuzz/corpus/$$n $(FUZZ_SECONDS) || exit 1; done

bench: deps all
	@sh tests/bench/run.sh

# xDS scale: N EDS clusters through the test control plane (tests/bench/xds_scale.py).
XDS_BENCH_N ?= 10000
bench-xds: deps xds-npm all
	REMORA_BIN=$(CURDIR)/build/remora /usr/bin/python3 tests/bench/xds_scale.py $(XDS_BENCH_N)

clean:
	rm -rf build

format:
	clang-format -i $$(find proxy filters stats tls xds tests -name '*.[ch]')
