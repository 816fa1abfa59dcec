#!/usr/bin/env bash
# Build the worker image with no registry and no Docker daemon (root, Debian/Ubuntu).
#
#   tests/image/build_image.sh [IMAGE]          # default IMAGE: localhost/killsafe-worker:test
#
# 1. base: a Debian bookworm rootfs holding python3 (+venv) and nothing else, no shell
#    (mmdebstrap, from this machine's apt sources), imported into podman as localhost/killsafe-base;
# 2. wheels: the locked dependencies downloaded by the BASE's own python3 (so environment markers such
#    as python_full_version match the interpreter that will run them), hashes checked;
# 3. image: `buildah bud --pull=never --network=none` of worker_image/Dockerfile against both.
# Steps 1 and 2 are cached under $KILLSAFE_IMAGE_CACHE (default .cache/image), keyed by a hash of their
# inputs, so only the first run pays for the bootstrap. Podman/buildah use the containers.conf and
# storage.conf written there (runc, cgroupfs, host network), never the machine's global config:
#   export CONTAINERS_CONF=$KILLSAFE_IMAGE_CACHE/containers.conf CONTAINERS_STORAGE_CONF=$KILLSAFE_IMAGE_CACHE/storage.conf
# to use `podman` on the result by hand.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
CACHE=$(mkdir -p "${KILLSAFE_IMAGE_CACHE:-$REPO/.cache/image}" && cd "${KILLSAFE_IMAGE_CACHE:-$REPO/.cache/image}" && pwd)
IMAGE=${1:-localhost/killsafe-worker:test}
APT_SOURCES=${KILLSAFE_APT_SOURCES:-/etc/apt/sources.list.d/debian.sources}
BASE_REPO=localhost/killsafe-base
CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
BUILD_REQUIREMENT="setuptools>=69"  # worker_image/pyproject.toml [build-system] requires

log() { printf '[build_image %s] %s\n' "$(date +%T)" "$*" >&2; }
sha() { sha256sum | cut -c1-16; }

mkdir -p "$CACHE/run" "$CACHE/storage" "$CACHE/wheels"
cat > "$CACHE/containers.conf" <<EOF
[containers]
netns = "host"
cgroups = "enabled"
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]
[engine]
cgroup_manager = "cgroupfs"
runtime = "runc"
events_logger = "file"
events_logfile_path = "$CACHE/run/events.log"
tmp_dir = "$CACHE/run/libpod"
static_dir = "$CACHE/storage/libpod"
volume_path = "$CACHE/storage/volumes"
EOF
cat > "$CACHE/storage.conf" <<EOF
[storage]
driver = "overlay"
runroot = "$CACHE/run/storage"
graphroot = "$CACHE/storage"
EOF
export CONTAINERS_CONF="$CACHE/containers.conf" CONTAINERS_STORAGE_CONF="$CACHE/storage.conf"

# --- 1. base image ----------------------------------------------------------------------------------
# extract variant: the packages and their dependencies unpacked, no maintainer scripts, no apt/dpkg
# tooling needed at runtime (54 MB). The Dockerfile's builder stage needs `python3 -m venv` with pip.
MMDEBSTRAP_ARGS=(--quiet --variant=extract --include=python3-minimal,libpython3.11-stdlib,python3.11-venv
  "--dpkgopt=path-exclude=/usr/share/doc/*" "--dpkgopt=path-exclude=/usr/share/man/*"
  "--dpkgopt=path-exclude=/usr/share/locale/*"
  "--customize-hook=rm -f \"\$1\"/usr/lib/python3.11/EXTERNALLY-MANAGED")
BASE_KEY=$( { printf '%s\n' "${MMDEBSTRAP_ARGS[@]}"; cat "$APT_SOURCES"; } | sha)
BASE=$BASE_REPO:bookworm-$BASE_KEY
if podman image exists "$BASE"; then
  log "base $BASE cached"
else
  log "base $BASE: mmdebstrap bookworm from $APT_SOURCES"
  mmdebstrap "${MMDEBSTRAP_ARGS[@]}" bookworm - "$APT_SOURCES" \
    | podman import --quiet \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'CMD ["python3"]' - "$BASE" >/dev/null
fi
podman tag "$BASE" "$BASE_REPO:bookworm"

# --- 2. wheels, resolved by the base's own interpreter ------------------------------------------------
WHEELS_KEY=$( { echo "$BASE_KEY $BUILD_REQUIREMENT"; cat "$REPO/worker_image/requirements.lock"; } | sha)
WHEELS=$CACHE/wheels/$WHEELS_KEY
if [ -d "$WHEELS" ]; then
  log "wheels $WHEELS cached"
else
  log "wheels: pip download by $BASE's python3"
  rm -rf "$WHEELS.partial" && mkdir -p "$WHEELS.partial"
  # The base has no pip module, only Debian's pip wheel (for ensurepip): run pip from that wheel. Debian's
  # pip trusts the system CA bundle, which the unconfigured base lacks: lend it the host's.
  PIP_FROM_WHEEL='import glob, runpy, sys
sys.path.insert(0, glob.glob("/usr/share/python-wheels/pip-*.whl")[0])
sys.argv[0] = "pip"
runpy.run_module("pip", run_name="__main__", alter_sys=True)'
  pip_download() {
    podman run --rm --network host -e PIP_DISABLE_PIP_VERSION_CHECK=1 -v "$CA_BUNDLE:$CA_BUNDLE:ro" \
      -v "$REPO/worker_image/requirements.lock:/src/requirements.lock:ro" -v "$WHEELS.partial:/wheels" \
      "$BASE" python3 -c "$PIP_FROM_WHEEL" download --quiet --only-binary=:all: --dest /wheels "$@"
  }
  pip_download --require-hashes -r /src/requirements.lock
  pip_download "$BUILD_REQUIREMENT"
  mv "$WHEELS.partial" "$WHEELS"
fi

# --- 3. the image -----------------------------------------------------------------------------------
log "image $IMAGE: buildah bud (offline)"
cd "$REPO"
# --format docker: the OCI image config has no HEALTHCHECK field; the docker format keeps it.
# --isolation oci (runc): buildah 1.28 refuses --network=none with chroot isolation.
buildah bud --quiet --pull=never --network=none --isolation oci --format docker --layers \
  --build-arg BASE_IMAGE="$BASE" --build-arg PIP_NO_INDEX=1 --build-arg PIP_FIND_LINKS=/wheels \
  -v "$WHEELS:/wheels:ro" -f worker_image/Dockerfile -t "$IMAGE" . >/dev/null
# Old builds' layers (dangling now); the current image's layer cache is kept for the next run.
podman image prune --force >/dev/null
log "image $IMAGE: $(podman image inspect --format '{{.Size}}' "$IMAGE") bytes"
