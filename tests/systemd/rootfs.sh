#!/usr/bin/env bash
# Build (once) the rootfs the systemd behaviour suite boots, and the reference worker's venv for it.
#
#   tests/systemd/rootfs.sh VENV_PATH     # prints "ROOTFS=<dir> VENV=<dir>" on its last line
#
# 1. base: Debian bookworm (mmdebstrap, this machine's apt sources) with systemd, python3(-venv),
#    redis-server and curl: what a VM running killsafe units has. Keyed by a hash of this recipe.
# 2. venv: `python3 -m venv VENV_PATH` run inside the base (chroot), the hash-pinned
#    worker_image/requirements.lock installed by the base's own pip (so markers such as
#    python_full_version match the interpreter that runs them) and the killsafe-worker wheel. Keyed by the base key, the lock file and the worker's source.
# Both live in ${XDG_CACHE_HOME:-$HOME/.cache}/killsafe/ (content-addressed: a key never changes
# meaning, so a finished entry is never rebuilt or modified; the suite boots the base read-only
# with a tmpfs overlay and bind-mounts the venv read-only at VENV_PATH).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
VENV_PATH=${1:?usage: rootfs.sh VENV_PATH}
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/killsafe
APT_SOURCES=${KILLSAFE_APT_SOURCES:-/etc/apt/sources.list.d/debian.sources}
log() { printf '[systemd rootfs %s] %s\n' "$(date +%T)" "$*" >&2; }
sha() { sha256sum | cut -c1-16; }
mkdir -p "$CACHE"
exec 9>"$CACHE/.systemd-rootfs.lock"
flock 9   # one builder at a time; a second caller waits and then finds the entry built

MMDEBSTRAP_ARGS=(--quiet --variant=minbase --mode=root
  --include=systemd,systemd-sysv,dbus,procps,python3,python3-venv,redis-server,curl,ca-certificates
  "--dpkgopt=path-exclude=/usr/share/doc/*" "--dpkgopt=path-exclude=/usr/share/man/*"
  "--dpkgopt=path-exclude=/usr/share/locale/*"
  # the packaged redis-server.service is not ours: the suite installs the rendered Redis unit
  "--customize-hook=chroot \"\$1\" systemctl disable redis-server.service"
  "--customize-hook=chroot \"\$1\" systemctl mask systemd-networkd-wait-online.service getty@tty1.service"
  "--customize-hook=rm -f \"\$1\"/etc/machine-id && touch \"\$1\"/etc/machine-id")
BASE_KEY=$( { printf '%s\n' "${MMDEBSTRAP_ARGS[@]}"; cat "$APT_SOURCES"; } | sha)
BASE=$CACHE/systemd-rootfs-$BASE_KEY
if [ -d "$BASE" ]; then
  log "base $BASE cached"
else
  log "base $BASE: mmdebstrap bookworm from $APT_SOURCES"
  rm -rf "$BASE.partial"
  mmdebstrap "${MMDEBSTRAP_ARGS[@]}" bookworm "$BASE.partial" "$APT_SOURCES"
  mv "$BASE.partial" "$BASE"
fi

VENV_KEY=$( { echo "$BASE_KEY $VENV_PATH"; cat "$0" "$REPO/worker_image/requirements.lock" "$REPO/worker_image/pyproject.toml";
  find -L "$REPO/worker_image/src" -type f -name '*.py' -print0 | sort -z | xargs -0 cat; } | sha)
VENV=$CACHE/systemd-venv-$VENV_KEY
if [ -d "$VENV" ]; then
  log "venv $VENV cached"
else
  log "venv $VENV: python3 -m venv + pip install inside the base (its own interpreter resolves the markers)"
  WORK=$(mktemp -d "$CACHE/.venv-build.XXXXXX")
  trap 'rm -rf "$WORK"' EXIT
  mkdir -p "$WORK/wheels" "$WORK/venv"
  # Built from a copy (symlinks resolved: the contract is shared with components/), so no build/
  # folder lands in the source tree.
  mkdir -p "$WORK/src" && cp -rL "$REPO/worker_image/pyproject.toml" "$REPO/worker_image/src" "$WORK/src/"
  rm -rf "$WORK/src/src/"*.egg-info
  "$REPO/.tools/bin/uv" build --quiet --wheel --out-dir "$WORK/wheels" "$WORK/src"
  cp "$REPO/worker_image/requirements.lock" "$WORK/wheels/"
  # A private mount namespace: the binds vanish with it, the cached base is only read.
  unshare --mount --fork bash -euo pipefail -c '
    base=$1; work=$2; venv_path=$3
    mount -t tmpfs tmpfs "$base/opt"   # a writable /opt in this namespace only
    mkdir -p "$base$venv_path"
    mount --bind "$work/venv" "$base$venv_path"
    mount --bind "$work/wheels" "$base/mnt"
    mount --bind /etc/resolv.conf "$base/etc/resolv.conf"
    # pip trusts the system CA bundle; lend it the host'"'"'s (which may hold a proxy'"'"'s CA)
    mount --bind /etc/ssl/certs/ca-certificates.crt "$base/etc/ssl/certs/ca-certificates.crt"
    mount -t proc proc "$base/proc"
    mount --rbind /dev "$base/dev"
    chroot "$base" /usr/bin/env -i PATH=/usr/bin:/bin HOME=/root PIP_DISABLE_PIP_VERSION_CHECK=1 bash -euo pipefail -c "
      python3 -m venv $venv_path
      $venv_path/bin/pip install --quiet --require-hashes --only-binary=:all: -r /mnt/requirements.lock
      $venv_path/bin/pip install --quiet --no-index --no-deps /mnt/killsafe_worker-*.whl
      $venv_path/bin/killsafe-worker --help >/dev/null
    "' _ "$BASE" "$WORK" "$VENV_PATH"
  mv "$WORK/venv" "$VENV"
fi
echo "ROOTFS=$BASE VENV=$VENV"
