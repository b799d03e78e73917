#!/bin/sh
# Build kedge's offline test images as docker-archive tarballs, ready for
# `ctr images import` (no registry or Docker needed).
# Usage: tests/images/build.sh [outdir]   (default bin/images; GOARCH/GOARM honoured)
#   hello-v1.tar  kedge.test/hello:v1
#   simple-server.tar  simple-server:v1 (hello, for the tutorials; port 8080)
#   flask-hello.tar    flask-hello:latest (hello listening on 5000, PORT=5000)
#   hello-v2.tar  kedge.test/hello:v2
#   worker.tar    kedge.test/worker:v1
#   late.tar      kedge.test/late:v1 (the worker, under a name no node has yet)
# Every image also gets a static busybox as /bin/busybox, with sh, cat,
# tar... linked to it, so `kubectl exec` and `kubectl cp` work in test pods.
# It is Debian's busybox-static (installed with apt-get when missing); set
# BUSYBOX=PATH to use another static busybox for the target architecture.
set -eu

tmp=
busybox=

cleanup() {
    if [ -n "$tmp" ]; then
        rm -rf "$tmp"
    fi
}

setup_go() {
    if ! command -v go >/dev/null 2>&1 && [ -x /usr/local/go/bin/go ]; then
        PATH=$PATH:/usr/local/go/bin
        export PATH
    fi
    command -v go >/dev/null 2>&1 || { echo "tests/images/build.sh: Go is not installed (need Go 1.26+)" >&2; exit 1; }
}

# build_static OUT PKG [LDFLAGS]: a static, stripped binary for the target
# GOARCH, so the image needs nothing besides it.
build_static() {
    CGO_ENABLED=0 GOOS=linux go build -trimpath -buildvcs=false -ldflags "-s -w ${3:-}" -o "$1" "$2"
}

# is_static_busybox PATH: PATH is an executable, statically linked busybox.
# Without file(1), trust dpkg that busybox-static provides /bin/busybox.
is_static_busybox() {
    [ -f "$1" ] && [ -x "$1" ] || return 1
    if command -v file >/dev/null 2>&1; then
        file -L "$1" | grep -Eq 'statically linked|static-pie linked'
    else
        [ "$1" = /bin/busybox ] &&
            dpkg -s busybox-static 2>/dev/null | grep -q '^Status: install ok installed'
    fi
}

# as_root CMD...: run CMD as root, through sudo if need be.
as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        echo "tests/images/build.sh: need root to run: $*" >&2
        return 1
    fi
}

# setup_busybox sets $busybox to the static busybox to put in the images,
# installing Debian's busybox-static if it is missing (it replaces the
# dynamically linked busybox package, if that is installed). A host busybox
# only suits images for the host's architecture; for another GOARCH the
# images get none unless BUSYBOX names one.
setup_busybox() {
    if [ -n "${BUSYBOX:-}" ]; then
        is_static_busybox "$BUSYBOX" ||
            { echo "tests/images/build.sh: BUSYBOX=$BUSYBOX is not a static busybox" >&2; exit 1; }
        busybox=$BUSYBOX
        return
    fi
    if [ "$(go env GOARCH)" != "$(go env GOHOSTARCH)" ]; then
        echo "tests/images/build.sh: warning: building for $(go env GOARCH) on $(go env GOHOSTARCH); images get no busybox (set BUSYBOX=PATH to a static $(go env GOARCH) busybox)" >&2
        return
    fi
    if ! is_static_busybox /bin/busybox; then
        command -v apt-get >/dev/null 2>&1 ||
            { echo "tests/images/build.sh: no static /bin/busybox and no apt-get; install one or set BUSYBOX=PATH" >&2; exit 1; }
        echo "installing busybox-static" >&2
        as_root apt-get update -qq >&2
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq busybox-static >&2
        is_static_busybox /bin/busybox ||
            { echo "tests/images/build.sh: /bin/busybox is still not a static busybox" >&2; exit 1; }
    fi
    busybox=/bin/busybox
}

# imagepack runs on this machine, whatever GOARCH the images target.
build_imagepack() {
    GOOS=$(go env GOHOSTOS) GOARCH=$(go env GOHOSTARCH) go build -o "$tmp/imagepack" ./scripts/imagepack
}

# pack BINARY OUT [imagepack flags...]: pack for the target architecture,
# with $busybox if set. POSIX sh has no locals, so the names are prefixed
# to spare main's $out.
pack() {
    pack_binary=$1
    pack_out=$2
    shift 2
    if [ -n "$busybox" ]; then
        set -- "$@" --busybox "$busybox"
    fi
    pack_arch=$(go env GOARCH)
    if [ "$pack_arch" = arm ]; then
        set -- "$@" --variant "v$(go env GOARM | cut -d, -f1)"
    fi
    "$tmp/imagepack" --binary "$pack_binary" --out "$pack_out" --arch "$pack_arch" "$@"
}

main() {
    cd "$(dirname "$0")/../.."
    setup_go
    out=${1:-bin/images}
    mkdir -p "$out"
    tmp=$(mktemp -d)
    trap cleanup EXIT
    trap 'exit 1' HUP INT TERM

    echo "building test images into $out ($(go env GOARCH))" >&2
    setup_busybox
    build_imagepack
    mkdir -p "$tmp/v1" "$tmp/v2"
    build_static "$tmp/v1/hello" ./tests/images/hello "-X main.version=v1"
    build_static "$tmp/v2/hello" ./tests/images/hello "-X main.version=v2"
    build_static "$tmp/worker" ./tests/images/worker

    # All three images get $busybox (see pack), so hello and worker pods
    # alike have sh, cat and tar for kubectl exec and kubectl cp.
    pack "$tmp/v1/hello" "$out/hello-v1.tar" --port 8080 --ref kedge.test/hello:v1
    # The hello server under the names beginners' tutorials use, so their
    # manifests run unchanged against a loaded image. Each is an image of
    # its own (its own config), so removing one never removes another.
    pack "$tmp/v1/hello" "$out/simple-server.tar" --port 8080 --ref simple-server:v1 \
        --env KEDGE_TEST_IMAGE=simple-server
    pack "$tmp/v1/hello" "$out/flask-hello.tar" --port 5000 --ref flask-hello:latest --env PORT=5000
    pack "$tmp/v2/hello" "$out/hello-v2.tar" --port 8080 --ref kedge.test/hello:v2
    pack "$tmp/worker" "$out/worker.tar" --ref kedge.test/worker:v1
    # Not pre-loaded by the tests: dropped into the images dir while running.
    pack "$tmp/worker" "$out/late.tar" --ref kedge.test/late:v1 --env KEDGE_TEST_IMAGE=late
}

main "$@"
