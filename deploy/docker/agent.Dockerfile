# The node agent: Debian's python3-bpfcc supplies bcc for the system Python 3.11 (the PyPI
# package named "bcc" is unrelated), so the venv is made from /usr/bin/python3 with
# --system-site-packages. bcc compiles the eBPF program at start-up against the HOST's kernel
# headers, which the compose file and the DaemonSet mount read-only from /lib/modules and
# /usr/src; no headers are baked in (they would match the build machine's kernel, not the node's).
# It runs as root: eBPF and RAPL's energy_uj (root-only since Linux 5.10) need it.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv python3-bpfcc \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/joulestream
COPY pyproject.toml README.md ./
COPY joulestream joulestream
COPY schemas schemas
COPY agents agents
COPY stream_processors stream_processors
COPY sinks sinks
COPY models models
RUN /usr/bin/python3 -m venv --system-site-packages /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir . \
 && /opt/venv/bin/python -c "import bcc"
ENV PATH=/opt/venv/bin:$PATH
ENTRYPOINT ["joulestream", "agent"]
