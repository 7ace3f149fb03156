#!/bin/sh
# Builds the release binary: static (no cgo, no libc), without local paths
# or debug symbols. The Dockerfile and .ci/image-check both run this, so CI
# checks the very binary the image ships.
set -eu
out="${1:?usage: scripts/build-static.sh OUTPUT}"
CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION:-dev}" -o "$out" .
