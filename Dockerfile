# The collector image. At run time it needs the host's /sys/kernel/tracing,
# /sys/kernel/btf, /lib/modules and /usr/src (kernel headers) mounted, hostPID,
# and privileges to load BPF programs: see k8s/daemonset.yaml.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv python3-bpfcc bpftool ca-certificates \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/akto-collector
COPY setup.cfg pyproject.toml README.md ./
COPY akto_collector ./akto_collector
RUN /usr/bin/python3 -m venv --system-site-packages .venv \
 && .venv/bin/pip install --no-cache-dir . \
 && ln -s /opt/akto-collector/.venv/bin/akto-collector /usr/local/bin/akto-collector
ENTRYPOINT ["akto-collector"]
CMD ["run"]
