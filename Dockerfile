# The rootfs of the reference plugin. The builder (python -m plugin.bundle build)
# builds this, exports the filesystem into rootfs-build/rootfs/ and renders
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
COPY plugin/ /opt/plugin/plugin/
COPY reference/ /opt/plugin/reference/
RUN python3 -m compileall -q /opt/plugin/plugin /opt/plugin/reference
