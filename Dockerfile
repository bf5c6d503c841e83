# The collector image. At run time it needs the host's /sys/kernel/tracing,
# /sys/kernel/btf, /lib/modules and /usr/src (kernel headers) mounted, hostPID,
# and privileges to load BPF programs: see k8s/daemonset.yaml.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv python3-bpfcc bpftool ca-certificates \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/akto-collector
COPY setup.py setup.cfg pyproject.toml README.md ./
COPY akto_collector ./akto_collector
# The compiler is needed only to build the compiled core (setup.py): removed
# in the same layer.
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc python3-dev \
 && /usr/bin/python3 -m venv --system-site-packages .venv \
 && .venv/bin/pip install --no-cache-dir . \
 && (cd / && /opt/akto-collector/.venv/bin/python -c 'from akto_collector.compiled import summary; assert summary() == "compiled", summary()') \
 && apt-get purge -y gcc python3-dev && apt-get autoremove -y && rm -rf /var/lib/apt/lists/* \
 && ln -s /opt/akto-collector/.venv/bin/akto-collector /usr/local/bin/akto-collector
ENTRYPOINT ["akto-collector"]
CMD ["run"]
