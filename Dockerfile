# kdns as the cluster DNS: docker build -t kdns:0.1.0 .   (manifests/ expects kdns:0.1.0)
# The base image is a build argument: the official slim Python image by default; the tests build
# from a Debian base made with debootstrap (tests/test_container.py).
ARG BASE=python:3.11-slim

# Build: the project installed from its own metadata into a virtual environment.
FROM ${BASE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY kdns ./kdns
RUN python3 -m venv /app/venv && /app/venv/bin/pip install --no-cache-dir . && rm -rf /src

# Run: the same base with only the virtual environment: no build tools, no sources.
FROM ${BASE}
COPY --from=build /app/venv /app/venv
# Not root: the pod lets unprivileged processes bind port 53 through the
# net.ipv4.ip_unprivileged_port_start sysctl (manifests/deployment.yaml).
USER 65532:65532
EXPOSE 53/udp 53/tcp 8080/tcp 8181/tcp 9153/tcp
ENTRYPOINT ["/app/venv/bin/kdns"]
# `:PORT`: every address of both families, as CoreDNS's `.:53`. CoreDNS's own arguments work too:
# `-conf /etc/coredns/Corefile` (kubeadm's Deployment, with only the image changed).
CMD ["serve", "--listen", ":53", "--health-listen", ":8080", "--ready-listen", ":8181", "--metrics-listen", ":9153"]
