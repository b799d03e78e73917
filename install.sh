#!/bin/sh
# kedge installer. Placeholder until the install issue lands: for now,
# build from source with ./scripts/build and run ./bin/kedge server.
set -eu

main() {
    echo "install.sh: not implemented yet; build from source: ./scripts/build && sudo ./bin/kedge server" >&2
    exit 1
}

main "$@"
