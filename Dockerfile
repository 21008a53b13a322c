# The rootfs of the reference plugin. The builder (python -m plugin.bundle build)
# builds this, keeps what the plugin uses in rootfs-build/rootfs/ (plugin.toml
# sets build.slim; without it the whole filesystem is exported) and renders
# config.json; it also creates the directories the daemon mounts onto.
#
# BASE_IMAGE needs python3 and pip. When it cannot be pulled, the builder makes
# a Debian bookworm base from Debian's packages (scripts/make-base-image).
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}

# Runtime packages come from a wheelhouse the builder downloads on the host:
# no index or TLS access is needed inside the build.
COPY .build/wheels /tmp/wheels
RUN python3 -m pip install --quiet --no-index --no-deps --target /opt/plugin/site /tmp/wheels/*.whl \
 && rm -rf /tmp/wheels

ENV PYTHONPATH=/opt/plugin/site
WORKDIR /opt/plugin
# The plugin's own code last, and no RUN after it: a change of the driver
# rebuilds two COPY layers, no container. Its bytecode is compiled by the slim
# step (which runs the plugin in the image), or by the plugin at its first
# start when the rootfs is not slimmed.
COPY plugin/ /opt/plugin/plugin/
COPY reference/ /opt/plugin/reference/
