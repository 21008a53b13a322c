# The few things a person runs. Each target is a thin call to scripts/ or the
# builder's command line (python -m plugin.bundle); NAME=repo[:tag] overrides
# the plugin name of plugin.toml.
PYTHON ?= python3
BUNDLE = $(PYTHON) -m plugin.bundle $(if $(NAME),--name $(NAME))

.PHONY: plugin build enable disable clean test bench deps engine

## plugin: build the bundle, create the plugin (replacing it) and enable it
plugin: deps engine
	$(BUNDLE) plugin

## build: only build rootfs-build/ (config.json + rootfs/)
build: deps engine
	$(BUNDLE) build

enable:
	$(BUNDLE) enable

disable:
	$(BUNDLE) disable

## clean: remove the plugin this project made, the bundle and build caches
clean:
	-$(BUNDLE) rm --force
	rm -rf rootfs-build .build

## test: unit tests and end-to-end tests against a real Docker daemon
test:
	scripts/test

## bench: build and enable the plugin, then the figures of the README (bench/run, < 3 min)
bench: plugin
	bench/run

deps:
	@scripts/install-deps

engine:
	@scripts/engine start
