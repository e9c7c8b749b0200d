# kdns as the cluster DNS. Build: docker build -t kdns:0.1.0 .   (manifests/ expects kdns:0.1.0)
FROM python:3.11-slim

WORKDIR /src
COPY pyproject.toml README.md ./
COPY kdns ./kdns
RUN pip install --no-cache-dir . && rm -rf /src

# Not root: the pod lets unprivileged processes bind port 53 through the
# net.ipv4.ip_unprivileged_port_start sysctl (manifests/deployment.yaml).
USER 65532:65532
EXPOSE 53/udp 53/tcp 8080/tcp 8181/tcp 9153/tcp
ENTRYPOINT ["kdns"]
CMD ["serve", "--listen", "0.0.0.0:53", "--health-listen", "0.0.0.0:8080", "--ready-listen", "0.0.0.0:8181"]
