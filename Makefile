# Remora build.  `make` builds build/remora; `make test` installs deps, builds
# with ASan+UBSan and runs every test; `make run` starts the quickstart.
CC       ?= gcc
PKGS     := libevent libevent_pthreads libevent_openssl openssl libnghttp2 yaml-0.1 jansson libcares libprotobuf-c libpcre2-8 libxxhash
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   = $(shell pkg-config --libs $(PKGS) 2>/dev/null)
WARN     := -Wall -Wextra -Werror -Wno-unused-parameter -Wshadow -Wstrict-prototypes -Wmissing-prototypes
CFLAGS   ?= -O2 -g
ALL_CFLAGS = -std=gnu11 $(CFLAGS) $(WARN) -D_GNU_SOURCE -pthread -I. $(PKG_CFLAGS) $(EXTRA_CFLAGS)
LDLIBS   = $(PKG_LIBS) -pthread -lm

# BUILD selects the variant directory: build (release), build/asan (tests).
BUILD    ?= build
SAN      := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined

LIB_SRCS  := $(shell find proxy filters stats tls xds -name '*.c' ! -name main.c 2>/dev/null | sort)
LIB_OBJS  := $(LIB_SRCS:%.c=$(BUILD)/obj/%.o)
MAIN_OBJ  := $(BUILD)/obj/proxy/main.o
UNIT_SRCS := $(shell find tests/unit -name '*_test.c' 2>/dev/null | sort)
UNIT_BINS := $(UNIT_SRCS:tests/unit/%.c=$(BUILD)/tests/%)
UNIT_MAIN := $(BUILD)/obj/tests/unit/test_main.o

.PHONY: all remora deps run test test-unit test-integration bench fuzz fuzz-bins unit-bins clean asan format
.DEFAULT_GOAL := all

all: $(BUILD)/remora

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/libremora.a: $(LIB_OBJS)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/remora: $(MAIN_OBJ) $(BUILD)/libremora.a
	$(CC) $(ALL_CFLAGS) -o $@ $(MAIN_OBJ) -Wl,--whole-archive $(BUILD)/libremora.a -Wl,--no-whole-archive $(LDLIBS)

$(BUILD)/tests/%: tests/unit/%.c $(UNIT_MAIN) $(BUILD)/libremora.a
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -Itests/unit -o $@ $< $(UNIT_MAIN) $(BUILD)/libremora.a $(LDLIBS)

unit-bins: $(UNIT_BINS)

-include $(shell find $(BUILD)/obj build/fuzz/obj -name '*.d' 2>/dev/null)

# Install missing Debian packages (root, apt-get).  Idempotent and quick when
# everything is there.
deps:
	@sh deploy/install-deps.sh

# Sanitizer build used by the tests.
asan:
	$(MAKE) BUILD=build/asan EXTRA_CFLAGS="$(SAN)" CFLAGS="-O1 -g" build/asan/remora unit-bins

run: deps all
	./build/remora -c deploy/examples/quickstart.yaml

test: deps
	$(MAKE) asan
	$(MAKE) fuzz-bins
	@sh tests/run.sh

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
FUZZ_CFLAGS  := -std=gnu11 -g -O1 -fsanitize=fuzzer-no-link,address,undefined -D_GNU_SOURCE -pthread -I.
FUZZ_OBJS    := $(LIB_SRCS:%.c=build/fuzz/obj/%.o)

build/fuzz/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) $(PKG_CFLAGS) -MMD -MP -c $< -o $@

build/fuzz/libremora.a: $(FUZZ_OBJS)
	@rm -f $@
	ar rcs $@ $^

build/fuzz/%: tests/fuzz/%.c build/fuzz/libremora.a
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer $(PKG_CFLAGS) -o $@ $< build/fuzz/libremora.a $(LDLIBS)

fuzz-bins: $(FUZZ_BINS)

fuzz: deps fuzz-bins
	@for f in $(FUZZ_BINS); do n=$$(basename $$f _fuzz); \
		sh tests/fuzz/run-one.sh $$f tests/fuzz/corpus/$$n $(FUZZ_SECONDS) || exit 1; done

bench: deps all
	@sh tests/bench/run.sh

clean:
	rm -rf build

format:
	clang-format -i $$(find proxy filters stats tls xds tests -name '*.[ch]')
