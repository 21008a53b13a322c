# The few things a person runs in the kit's checkout. Each reference plugin in
# reference/*/ is an author's project: these targets run its own Makefile,
# with the checkout's kit (DPK) instead of an installed docker-plugin-kit.
PYTHON ?= python3
REFERENCES := $(patsubst %/plugin.toml,%,$(wildcard reference/*/plugin.toml))
DPK = $(PYTHON) -m plugin.bundle
EACH = for project in $(REFERENCES); do \
	PYTHONPATH=$(CURDIR) $(MAKE) --no-print-directory -C $$project DPK="$(DPK)" PYTHON="$(PYTHON)"

.PHONY: plugin build enable disable dev clean test bench deps engine

## plugin: build every reference plugin, create it (replacing it) and enable it
plugin: deps engine
	@$(EACH) plugin || exit 1; done

## build: only build each reference plugin's bundle (reference/*/rootfs-build/)
build: deps engine
	@$(EACH) build || exit 1; done

enable:
	@$(EACH) enable || exit 1; done

disable:
	@$(EACH) disable || exit 1; done

## dev: dev mode for one reference plugin (REF=localvol): it runs reference/$(REF)/
## from this checkout and reloads on every save; Ctrl-C leaves it
REF ?= localvol
dev: deps engine
	@PYTHONPATH=$(CURDIR) $(MAKE) --no-print-directory -C reference/$(REF) DPK="$(DPK)" \
		PYTHON="$(PYTHON)" dev

## clean: remove the plugins these projects made, their bundles and build caches
clean:
	@$(EACH) clean; done

## test: unit tests (tests/ and reference/*/tests/) and end-to-end tests against a real Docker daemon
test:
	scripts/test

## bench: build and enable the plugins, then the figures of the README (bench/run, < 3 min)
bench: plugin
	bench/run

deps:
	@scripts/install-deps

engine:
	@scripts/engine start
