#!/bin/sh
# `make images`: build every image in images/ for this machine's platform with docker or podman, whichever
# is present, tagged as the chart and the operator pull them: ghcr.io/modeldeploy/<image>:<package version>
# (the release workflow builds the same for linux/amd64 and linux/arm64 and pushes them).
# Usage: scripts/build_images.sh [IMAGE...]   (default: all; REGISTRY=... to tag for another registry)
set -eu
cd "$(dirname "$0")/.."

if command -v docker >/dev/null 2>&1; then
    engine=docker
elif command -v podman >/dev/null 2>&1; then
    engine=podman
else
    echo "make images: neither docker nor podman is installed; install one of them to build the images" >&2
    exit 1
fi
if ! "$engine" info >/dev/null 2>&1; then
    echo "make images: $engine is installed but cannot reach its engine ('$engine info' failed); start it first" >&2
    exit 1
fi

version=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' operator/modeldeploy/__init__.py)
registry=${REGISTRY:-ghcr.io/modeldeploy}
if [ "$#" -eq 0 ]; then
    set -- $(for f in images/*/Dockerfile; do basename "$(dirname "$f")"; done)
fi
for image in "$@"; do
    if [ ! -f "images/$image/Dockerfile" ]; then
        echo "make images: there is no images/$image/Dockerfile" >&2
        exit 2
    fi
    echo "make images: $engine build $registry/$image:$version" >&2
    "$engine" build -f "images/$image/Dockerfile" -t "$registry/$image:$version" .
done
