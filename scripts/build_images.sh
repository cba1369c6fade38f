#!/bin/sh
# `make images`: build the images in images/ for this machine's platform, tagged as the chart and the
# operator pull them: ghcr.io/modeldeploy/<image>:<package version> (the release workflow builds the same
# Dockerfiles for linux/amd64 and linux/arm64, with the upstream bases, and pushes them).
# - docker or podman, whichever is present and reaches its engine: every image, on the upstream bases.
# - otherwise buildah (a machine without a container engine or a registry, like the dev sandbox): the images
#   the local cluster runs (operator, fetch, ngl, llamacpp, pause) on bases built from Debian's packages,
#   through modeldeploy_dev.images, which also exports docker-archives for containerd (images/README.md).
# Usage: scripts/build_images.sh [IMAGE...]   (default: all; REGISTRY=... to tag for another registry)
set -eu
cd "$(dirname "$0")/.."

engine=
for candidate in docker podman; do
    if command -v "$candidate" >/dev/null 2>&1; then
        if "$candidate" info >/dev/null 2>&1; then
            engine=$candidate
            break
        fi
        echo "make images: $candidate is installed but cannot reach its engine ('$candidate info' failed)" >&2
    fi
done

if [ -z "$engine" ]; then
    if command -v buildah >/dev/null 2>&1; then
        python=${PYTHON:-.venv/bin/python}
        if [ ! -x "$python" ]; then
            echo "make images: building with buildah needs the dev harness: run 'make setup' first" >&2
            exit 1
        fi
        echo "make images: no working docker or podman; building with buildah on local Debian bases" \
            "(python -m modeldeploy_dev.images $*)" >&2
        exec "$python" -m modeldeploy_dev.images "$@"
    fi
    echo "make images: neither docker nor podman works here and buildah is not installed; install one of them" \
        "to build the images" >&2
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
