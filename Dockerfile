# The collector's image:  docker build -t akto-collector .
#
# Both stages get their system packages from scripts/setup-system.sh, the
# script `make setup` runs on a host, so the image cannot drift from a host
# install (tests/unit/test_deploy.py checks that this file installs none
# itself). The build stage compiles; the final stage carries what runs: bcc,
# the venv, and Debian's kernel headers for nodes that have none of their own.
# How it is run (host mounts, capabilities, probes): docs/deployment.md and
# k8s/akto-daemonset-config.yaml.

FROM debian:bookworm-slim AS build
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
COPY scripts/setup-system.sh /tmp/
# The headers go where akto_collector/kernel/headers.py looks besides
# /usr/src: in a pod the host's /usr/src is mounted over the image's.
RUN bash /tmp/setup-system.sh --image-build /opt/akto-collector/kernel-headers
WORKDIR /src
COPY setup.py setup.cfg pyproject.toml README.md ./
COPY probes ./probes
COPY akto_collector ./akto_collector
# Not editable, and with build isolation: pyproject.toml's build requirements
# (Cython) compile the core and do not stay in the venv.
RUN /usr/bin/python3 -m venv --system-site-packages /opt/akto-collector/.venv \
 && /opt/akto-collector/.venv/bin/pip install --no-cache-dir /src

FROM debian:bookworm-slim
# The package's version (akto_collector.__version__; a test keeps them equal)
# and, for the source label, the repository it is built from.
ARG VERSION=0.1.0
ARG SOURCE=""
LABEL org.opencontainers.image.title="akto-collector" \
      org.opencontainers.image.description="eBPF API-traffic collector for Akto: plaintext and in-application TLS HTTP capture" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.source="${SOURCE}"
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
COPY scripts/setup-system.sh /tmp/
RUN bash /tmp/setup-system.sh --image && rm /tmp/setup-system.sh
# The venv keeps its path: its scripts name /opt/akto-collector/.venv/bin/python.
COPY --from=build /opt/akto-collector /opt/akto-collector
ENV PATH=/opt/akto-collector/.venv/bin:$PATH
# A core that fell back to plain Python (a failed compile) runs 25-30% slower:
# the build fails instead. And bcc must load from the venv.
RUN python -I -c 'from akto_collector.compiled import summary; s = summary(); assert s == "compiled", s' \
 && python -I -c 'import bcc' \
 && akto-collector version
ENTRYPOINT ["akto-collector"]
CMD ["run"]
