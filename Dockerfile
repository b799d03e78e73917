# syntax=docker/dockerfile:1
# kedge in a container image, for running nodes in containers (as k3d does
# with k3s):
#
#   docker build -t kedge .
#   docker run -d --privileged --name kedge -p 6443:6443 kedge server
#   docker exec kedge kubectl get nodes
#
# The build stage builds kedge with scripts/build, as every developer and
# CI does; the image holds kedge, its kubectl/crictl/ctr symlinks,
# kedge-killall.sh and the few host tools kedge uses. No Docker engine runs
# where kedge is developed: tests/install/dockerfile_test.go checks this
# file's structure instead (see its comments for the rules).

FROM golang:1.26-bookworm AS build
# runc, which kedge carries, is built with cgo against a static libseccomp.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libseccomp-dev pkg-config \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# .git is not in the build context: the version comes from the build arg.
ARG VERSION=dev
RUN --mount=type=cache,target=/root/go/pkg/mod \
    --mount=type=cache,target=/root/.cache \
    VERSION="$VERSION" ./scripts/build bin/kedge

FROM debian:bookworm-slim
# What kedge needs from a host besides the kernel: iptables (pod network,
# kube-proxy), nftables (kube-proxy's nftables mode), iproute2, mount, and
# CA certificates for pulling from registries.
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        ca-certificates iptables nftables iproute2 mount kmod \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/bin/kedge /usr/local/bin/kedge
COPY scripts/kedge-killall.sh /usr/local/bin/kedge-killall.sh
RUN ln -s kedge /usr/local/bin/kubectl \
    && ln -s kedge /usr/local/bin/crictl \
    && ln -s kedge /usr/local/bin/ctr
# Data (database, certificates, images, containers) and pod logs outlive
# the container, and stay off the container's overlay filesystem.
VOLUME /var/lib/kedge /var/log
EXPOSE 6443
ENTRYPOINT ["/usr/local/bin/kedge"]
CMD ["server"]
