#!/usr/bin/env bash
# Build twinhull's operator image on a machine with no Docker engine and no image registry:
# a Debian base made by debootstrap from the machine's own apt mirror, the operator built
# into it by buildah from image/Containerfile, the result exported as an OCI archive.
# Outputs live outside the repository, in $TWINHULL_IMAGE_CACHE/<key>/ (key = hash of the
# inputs); a second run with the same inputs does nothing but print the result.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: image/build.sh [options]

Builds the twinhull operator image with buildah, without a Docker engine or a registry:
  1. a Debian bookworm root filesystem (debootstrap --variant=minbase, python3 only, apt
     removed, security updates applied) from the mirror this machine's apt uses, imported
     as localhost/twinhull-base:bookworm-<mirror date>;
  2. image/Containerfile on that base: the operator and its dependencies (the exact versions
     in .venv, as wheels fetched here and checked by hash) in a virtualenv at /opt/twinhull;
  3. the image exported as an OCI archive, with a manifest of every Debian package and
     Python wheel in it, under ~/.cache/twinhull/image/<key>/.
The build is keyed by a hash of its inputs: running it again with the same inputs only
prints the result. The operator source is the committed HEAD unless --worktree is given.

options:
  --worktree         build the operator from the working tree, not HEAD (revision label
                     gets "-dirty" when the tree differs from HEAD)
  --rebuild          build the image again even if its key is already built (the base is
                     reused; add --rebuild-base to redo debootstrap too)
  --rebuild-base     make the Debian base again even if its key is already built
  --check            after building, run the image (--version, validate examples/) with
                     podman, falling back to buildah run, and inspect it (user, entrypoint,
                     layers, size, no gcc/pip/apt on PATH)
  --install-deps     apt-get install what is missing (debootstrap buildah podman runc curl)
  --print-key        print the image key for the current inputs and exit
  --prune            after building, delete the other keys' outputs and images (the
                     current image and base stay)
  -h, --help         this text

environment:
  TWINHULL_IMAGE_CACHE   output root (default: ~/.cache/twinhull/image)
  TWINHULL_IMAGE_NAME    image name (default: localhost/twinhull)
  TWINHULL_IMAGE_SOURCE  org.opencontainers.image.source label
                         (default: https://github.com/twinhull/twinhull)
  TWINHULL_CONSTRAINTS   pip constraints file to use instead of `.venv/bin/pip freeze`
  TWINHULL_DEBIAN_MIRROR, TWINHULL_DEBIAN_SECURITY_MIRROR
                         override the mirrors read from /etc/apt/sources.list{,.d/*}
  BUILDAH_ISOLATION      isolation for RUN steps (default: chroot, which works in sandboxes)
  STORAGE_DRIVER         containers storage driver (default: overlay if it works, else vfs)

Runs as root (debootstrap and buildah's storage need it). Only apt's mirror and PyPI are
contacted; the RUN step of the Containerfile runs with no network.
EOF
}

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${TWINHULL_IMAGE_CACHE:-$HOME/.cache/twinhull/image}
IMAGE_NAME=${TWINHULL_IMAGE_NAME:-localhost/twinhull}
IMAGE_SOURCE=${TWINHULL_IMAGE_SOURCE:-https://github.com/twinhull/twinhull}
BASE_NAME=localhost/twinhull-base
SUITE=bookworm
# What the base gets from debootstrap beyond minbase, and what is removed once security
# updates are in: the image has no package manager that could fetch anything.
BASE_INCLUDE=python3
BASE_REMOVE="apt libapt-pkg6.0 gpgv debian-archive-keyring"
# The operator's own wheel is built here with this backend (pyproject: setuptools>=77).
BUILD_BACKEND="setuptools==80.9.0 wheel==0.46.3"
export BUILDAH_ISOLATION=${BUILDAH_ISOLATION:-chroot}

WORKTREE=0 REBUILD=0 REBUILD_BASE=0 CHECK=0 INSTALL_DEPS=0 PRINT_KEY=0 PRUNE=0
while [ $# -gt 0 ]; do
  case $1 in
    --worktree) WORKTREE=1 ;;
    --rebuild) REBUILD=1 ;;
    --rebuild-base) REBUILD_BASE=1 REBUILD=1 ;;
    --check) CHECK=1 ;;
    --install-deps) INSTALL_DEPS=1 ;;
    --print-key) PRINT_KEY=1 ;;
    --prune) PRUNE=1 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "image/build.sh: unknown option: $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

say() { printf '[image] %s\n' "$*" >&2; }
die() { printf '[image] error: %s\n' "$*" >&2; exit 1; }
sha() { sha256sum | cut -d' ' -f1; }

# ---------------------------------------------------------------------------- tools
need_tools() {
  local missing=() t
  for t in debootstrap buildah podman curl git python3; do
    command -v "$t" >/dev/null || missing+=("$t")
  done
  command -v runc >/dev/null || missing+=(runc)
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$INSTALL_DEPS" = 1 ]; then
    say "installing Debian packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    die "missing: ${missing[*]} (apt-get install them, or run with --install-deps)"
  fi
}

pick_storage() {  # overlay where the kernel and filesystem allow it, else vfs
  [ -n "${STORAGE_DRIVER:-}" ] && return 0
  if buildah info 2>/dev/null | grep -q '"GraphDriverName": "overlay"'; then
    export STORAGE_DRIVER=overlay
  else
    export STORAGE_DRIVER=vfs
  fi
}

# ---------------------------------------------------------------------------- apt mirror
apt_uri() {  # apt_uri SUITE: the URI of the first enabled deb source serving SUITE (main)
  python3 - "$1" <<'PY'
import glob, sys
suite = sys.argv[1]
found = []
def add(types, uris, suites, comps):
    if "deb" in types and suite in suites and "main" in comps:
        found.extend(uris)
for path in ["/etc/apt/sources.list"] + sorted(glob.glob("/etc/apt/sources.list.d/*.list")):
    try:
        lines = open(path).read().splitlines()
    except OSError:
        continue
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        words = line.split()
        if len(words) < 2:
            continue
        if words[1].startswith("["):  # options: deb [a=b c=d] uri suite comps
            while not words[1].endswith("]"):
                words.pop(1)
            words.pop(1)
        if len(words) >= 4:
            add([words[0]], [words[1]], [words[2]], words[3:])
for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
    for stanza in open(path).read().split("\n\n"):
        fields, key = {}, None
        for line in stanza.splitlines():
            if line.startswith("#") or not line.strip():
                continue
            if line[0] in " \t" and key:
                fields[key] += " " + line.strip()
                continue
            key, _, value = line.partition(":")
            key = key.strip().lower()
            fields[key] = value.strip()
        if fields.get("enabled", "yes").lower() == "no":
            continue
        add(fields.get("types", "").split(), fields.get("uris", "").split(),
            fields.get("suites", "").split(), fields.get("components", "").split())
if not found:
    sys.exit(f"no enabled apt source serves {suite} main")
print(found[0].rstrip("/"))
PY
}

# ---------------------------------------------------------------------------- base
# The functions below make the base root filesystem; their text is part of the base key,
# so changing how the base is made makes a new base.
debian_rootfs() {  # debian_rootfs DIR: debootstrap, security updates, apt removed, trimmed
  local root=${1:?} m
  for m in proc sys dev/pts; do  # left by an interrupted earlier run
    if mountpoint -q "$root/$m"; then umount "$root/$m"; fi
  done
  rm -rf --one-file-system "$root"
  debootstrap --variant=minbase --include="$BASE_INCLUDE" --components=main \
    --keyring=/usr/share/keyrings/debian-archive-keyring.gpg \
    "$SUITE" "$root" "$MIRROR" >"$BASE_DIR/debootstrap.log" 2>&1 ||
    { tail -20 "$BASE_DIR/debootstrap.log" >&2; die "debootstrap failed (log: $BASE_DIR/debootstrap.log)"; }

  # Security and stable updates with apt inside the new root, then apt goes.
  rm -f "$root/etc/apt/sources.list"
  cat >"$root/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $MIRROR
Suites: $SUITE $SUITE-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $SECURITY_MIRROR
Suites: $SUITE-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  # A dated mirror snapshot may be past its Valid-Until; the signatures are still checked.
  printf 'Acquire::Check-Valid-Until "false";\n' >"$root/etc/apt/apt.conf.d/99build"
  printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
  chmod 0755 "$root/usr/sbin/policy-rc.d"
  cp /etc/resolv.conf "$root/etc/resolv.conf"
  mount -t proc proc "$root/proc"
  local rc=0
  chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive \
    SOURCE_DATE_EPOCH="$BASE_EPOCH" sh -ec "
      apt-get update -qq
      apt-get -y -qq -o Dpkg::Options::=--force-confold upgrade
      dpkg --purge $BASE_REMOVE
    " >"$BASE_DIR/upgrade.log" 2>&1 || rc=$?
  umount "$root/proc"
  [ "$rc" = 0 ] || { tail -20 "$BASE_DIR/upgrade.log" >&2; die "apt upgrade in the new root failed"; }
  # shellcheck disable=SC2016  # dpkg-query's format, not the shell's
  chroot "$root" dpkg-query -W -f '${Package}\t${Version}\t${Architecture}\n' | sort >"$BASE_DIR/packages.txt"

  # A user for USER 65532:65532 (the distroless "nonroot" convention).
  echo 'nonroot:x:65532:65532:nonroot:/home/nonroot:/usr/sbin/nologin' >>"$root/etc/passwd"
  echo 'nonroot:x:65532:' >>"$root/etc/group"
  install -d -m 0755 -o 65532 -g 65532 "$root/home/nonroot"

  # Nothing the runtime provides, nothing that records when or where this ran.
  rm -rf "${root:?}/etc/apt" "${root:?}/var/lib/apt" "${root:?}/var/cache/apt" "${root:?}/var/log/apt" \
    "${root:?}/usr/sbin/policy-rc.d" "${root:?}/etc/resolv.conf" "${root:?}/etc/hostname" \
    "${root:?}/etc/hosts" "${root:?}/var/cache/ldconfig/aux-cache" \
    "${root:?}/usr/share/man" "${root:?}/usr/share/info" "${root:?}/usr/share/lintian" \
    "${root:?}"/var/lib/dpkg/*-old "${root:?}"/var/cache/debconf/*-old \
    "${root:?}"/dev/* "${root:?}"/run/* "${root:?}"/tmp/* "${root:?}"/var/tmp/*
  find "$root/var/log" -type f -delete
  : >"$root/etc/machine-id"
  # Documentation: keep each package's copyright file only; locales: none (C.UTF-8 is built in).
  find "$root/usr/share/doc" -mindepth 1 ! -type d ! -name copyright -delete
  find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete
  find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +
}

rootfs_tar() {  # rootfs_tar DIR OUT: a deterministic tar of DIR
  tar --create --file "$2.tmp" --directory "$1" --sort=name --numeric-owner \
    --mtime="@$BASE_EPOCH" --clamp-mtime --format=posix \
    --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime .
  mv "$2.tmp" "$2"
}

import_base() {  # import_base TAR: the tar as a one-layer image tagged $BASE_TAG
  local ctr mnt
  ctr=$(buildah from scratch)
  mnt=$(buildah mount "$ctr")
  tar --extract --file "$1" --directory "$mnt" --numeric-owner --preserve-permissions
  buildah umount "$ctr" >/dev/null
  buildah config \
    --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env LANG=C.UTF-8 \
    --cmd '["/usr/bin/python3"]' \
    --label org.opencontainers.image.title=twinhull-base \
    --label "org.opencontainers.image.description=Debian $SUITE minbase + python3, no apt (image/build.sh)" \
    --label "org.opencontainers.image.created=$(date -u -d "@$BASE_EPOCH" +%Y-%m-%dT%H:%M:%SZ)" \
    --label "org.opencontainers.image.version=$SUITE-$BASE_DATE" \
    --label "org.twinhull.base.key=$BASE_KEY" \
    --created-by "debootstrap --variant=minbase --include=$BASE_INCLUDE $SUITE $MIRROR; upgrade from $SUITE-updates, $SUITE-security; purge $BASE_REMOVE" \
    "$ctr"
  buildah commit --quiet --rm --format oci --timestamp "$BASE_EPOCH" --identity-label=false \
    "$ctr" "$BASE_TAG" >"$BASE_DIR/image-id"
  buildah tag "$BASE_TAG" "$BASE_NAME:$BASE_KEY"
}

fetch_releases() {  # the three InRelease files, signed by Debian: what the mirror serves now
  local s
  RELEASES=$(mktemp -d)
  for s in "$SUITE" "$SUITE-updates"; do
    curl -fsSL --retry 3 -o "$RELEASES/$s" "$MIRROR/dists/$s/InRelease" || return 1
  done
  curl -fsSL --retry 3 -o "$RELEASES/$SUITE-security" "$SECURITY_MIRROR/dists/$SUITE-security/InRelease"
}

base_inputs() {  # what the base key is a hash of
  local s
  echo "suite: $SUITE"
  echo "arch: $(dpkg --print-architecture)"
  echo "include: $BASE_INCLUDE"
  echo "remove: $BASE_REMOVE"
  echo "mirror: $MIRROR"
  echo "security-mirror: $SECURITY_MIRROR"
  for s in "$SUITE" "$SUITE-updates" "$SUITE-security"; do
    echo "InRelease $s: $(sha <"$RELEASES/$s") $(sed -n 's/^Date: //p' "$RELEASES/$s" | head -1)"
  done
  echo "recipe: $(declare -f debian_rootfs rootfs_tar import_base | sha)"
}

mirror_epoch() {  # the newest Date: of the three InRelease files: when the mirror was cut
  local newest=0 f e
  for f in "$RELEASES"/*; do
    e=$(date -u -d "$(sed -n 's/^Date: //p' "$f" | head -1)" +%s)
    [ "$e" -gt "$newest" ] && newest=$e
  done
  echo "$newest"
}

base_key() {  # sets MIRROR, SECURITY_MIRROR, BASE_KEY, BASE_EPOCH, BASE_TAG, BASE_DIR
  MIRROR=${TWINHULL_DEBIAN_MIRROR:-$(apt_uri "$SUITE")}
  SECURITY_MIRROR=${TWINHULL_DEBIAN_SECURITY_MIRROR:-$(apt_uri "$SUITE-security")}
  local inputs
  fetch_releases || die "cannot read the InRelease files from $MIRROR and $SECURITY_MIRROR"
  inputs=$(base_inputs)
  BASE_KEY=$(printf '%s\n' "$inputs" | sha | cut -c1-16)
  BASE_EPOCH=$(mirror_epoch)
  rm -rf "$RELEASES"
  BASE_DATE=$(date -u -d "@$BASE_EPOCH" +%Y%m%d)
  BASE_TAG="$BASE_NAME:$SUITE-$BASE_DATE"
  BASE_DIR="$CACHE/base/$BASE_KEY"
  BASE_INPUTS=$inputs
}

build_base() {
  mkdir -p "$BASE_DIR"
  printf '%s\n' "$BASE_INPUTS" >"$BASE_DIR/inputs.txt"
  if [ "$REBUILD_BASE" = 0 ] && [ -s "$BASE_DIR/image-id" ] &&
     [ "$(buildah inspect --type image --format '{{.FromImageID}}' "$BASE_NAME:$BASE_KEY" 2>/dev/null)" = "$(cat "$BASE_DIR/image-id")" ]; then
    say "base $BASE_TAG ($BASE_KEY) is built"
    buildah tag "$BASE_NAME:$BASE_KEY" "$BASE_TAG"
    return 0
  fi
  if [ "$REBUILD_BASE" = 1 ] || [ ! -s "$BASE_DIR/rootfs.tar" ] || [ ! -s "$BASE_DIR/packages.txt" ]; then
    say "debootstrap $SUITE from $MIRROR (security: $SECURITY_MIRROR) into $BASE_DIR"
    debian_rootfs "$BASE_DIR/rootfs"
    rootfs_tar "$BASE_DIR/rootfs" "$BASE_DIR/rootfs.tar"
    rm -rf "$BASE_DIR/rootfs"
  fi
  say "importing the base root filesystem as $BASE_TAG"
  import_base "$BASE_DIR/rootfs.tar"
}

# ---------------------------------------------------------------------------- operator
stage_source() {  # the operator's source into $CTX/src: HEAD, or the working tree
  local paths=(pyproject.toml README.md operator policies/tiers.yaml)
  rm -rf "$CTX/src"
  mkdir -p "$CTX/src"
  if [ "$WORKTREE" = 1 ]; then
    (cd "$REPO" && git ls-files -z --cached --others --exclude-standard -- "${paths[@]}" |
      while IFS= read -r -d '' f; do [ -f "$f" ] && printf '%s\0' "$f"; done |
      tar --create --null --no-recursion --files-from=-) | tar -x -C "$CTX/src"
  else
    git -C "$REPO" archive --format=tar HEAD -- "${paths[@]}" | tar -x -C "$CTX/src"
  fi
}

source_digest() {  # content hash of $CTX/src (names and bytes)
  (cd "$CTX/src" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum) | sha
}

pip_platform_args() {  # the wheels Debian's python3.11 on glibc 2.36 can use
  local arch m
  arch=$(uname -m)
  PLATFORM_ARGS=(--only-binary=:all: --python-version 3.11 --implementation cp
                 --abi cp311 --abi abi3 --abi none)
  for m in $(seq 36 -1 5); do PLATFORM_ARGS+=(--platform "manylinux_2_${m}_$arch"); done
  PLATFORM_ARGS+=(--platform "manylinux2014_$arch" --platform "manylinux2010_$arch"
                  --platform "manylinux1_$arch")
}

fetch_wheels() {  # the operator wheel, its dependencies at the pinned versions, a pip to run
  local pip=$VENV/bin/pip
  rm -rf "$CTX/wheels" "$CTX/tools"
  mkdir -p "$CTX/wheels" "$CTX/tools"
  tr ' ' '\n' <<<"$BUILD_BACKEND" >"$CTX/build-constraints.txt"
  say "building the operator wheel (SOURCE_DATE_EPOCH=$SDE)"
  SOURCE_DATE_EPOCH=$SDE PIP_CONSTRAINT="$CTX/build-constraints.txt" \
    "$pip" wheel --quiet --disable-pip-version-check --no-deps --wheel-dir "$CTX/wheels" "$CTX/src" >&2
  rm -rf "$CTX/src/build" "$CTX"/src/operator/*.egg-info
  local whl
  whl=$(ls "$CTX"/wheels/twinhull-*.whl)
  say "fetching the dependency wheels at the versions in $(basename "$CTX/constraints.txt")"
  pip_platform_args
  "$pip" download --quiet --disable-pip-version-check "${PLATFORM_ARGS[@]}" \
    -c "$CTX/constraints.txt" -d "$CTX/wheels" "$whl" >&2
  "$pip" download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
    -d "$CTX/tools" "pip==$PIP_VERSION" >&2
  # Every wheel pinned by version and hash: the build installs exactly these or fails.
  python3 - "$CTX/wheels" >"$CTX/wheels/requirements.lock" <<'PY'
import hashlib, pathlib, sys
for w in sorted(pathlib.Path(sys.argv[1]).glob("*.whl")):
    name, version = w.name.split("-")[:2]
    digest = hashlib.sha256(w.read_bytes()).hexdigest()
    print(f"{name}=={version} --hash=sha256:{digest}")
PY
}

build_image() {
  local bargs=(
    --file "$REPO/image/Containerfile" --format oci --pull=never --network=none
    --timestamp "$SDE" --identity-label=false --iidfile "$OUT/image-id.tmp"
    --build-arg "BASE_IMAGE=$BASE_TAG"
    --build-arg "VERSION=$VERSION" --build-arg "REVISION=$REVISION"
    --build-arg "SOURCE=$IMAGE_SOURCE" --build-arg "CREATED=$CREATED"
    --tag "$IMAGE_NAME:$VERSION" --tag "$IMAGE_NAME:$KEY"
  )
  say "buildah build (isolation $BUILDAH_ISOLATION, storage $STORAGE_DRIVER, timestamp $SDE)"
  buildah build "${bargs[@]}" "$CTX" >"$OUT/build.log" 2>&1 ||
    { tail -30 "$OUT/build.log" >&2; die "buildah build failed (log: $OUT/build.log)"; }
  mv "$OUT/image-id.tmp" "$OUT/image-id"
  sed -i 's/^sha256://' "$OUT/image-id"
  # An OCI layout (blobs are content-addressed, so the same image gives the same bytes), then
  # tarred with fixed names, order and times: the archive is as reproducible as the image.
  local archive="$OUT/twinhull-$VERSION.oci.tar" layout="$OUT/oci-layout"
  rm -rf "$archive" "$layout"
  buildah push --quiet "$IMAGE_NAME:$KEY" "oci:$layout:$IMAGE_NAME:$VERSION" >&2
  tar --create --file "$archive.tmp" --directory "$layout" --sort=name --numeric-owner \
    --owner=0 --group=0 --mtime="@$SDE" --format=posix \
    --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime .
  mv "$archive.tmp" "$archive"
  rm -rf "$layout"
}

write_manifest() {
  {
    echo "# twinhull image $IMAGE_NAME:$VERSION (key $KEY), built by image/build.sh"
    echo "image-id: $(cat "$OUT/image-id")"
    echo "archive: $OUT/twinhull-$VERSION.oci.tar"
    echo "revision: $REVISION"
    echo "source-date-epoch: $SDE ($CREATED)"
    echo "base: $BASE_TAG (key $BASE_KEY, id $(cat "$BASE_DIR/image-id"))"
    echo "mirror: $MIRROR ; security: $SECURITY_MIRROR"
    echo
    echo "## Debian packages (dpkg-query in the base, after updates and removals)"
    cat "$BASE_DIR/packages.txt"
    echo
    echo "## Python wheels in /opt/twinhull (installed with --require-hashes)"
    cat "$CTX/wheels/requirements.lock"
  } >"$OUT/manifest.txt"
  cp "$BASE_DIR/packages.txt" "$OUT/packages.txt"
  cp "$CTX/wheels/requirements.lock" "$OUT/requirements.lock"
}

summary() {
  local id archive size
  id=$(cat "$OUT/image-id")
  archive="$OUT/twinhull-$VERSION.oci.tar"
  size=$(podman image inspect --format '{{.Size}}' "$IMAGE_NAME:$KEY")
  echo "image:    $IMAGE_NAME:$VERSION  $IMAGE_NAME:$KEY"
  echo "id:       $id"
  echo "size:     $size bytes unpacked ($((size / 1024 / 1024)) MiB); archive $(stat -c %s "$archive") bytes ($(du -m "$archive" | cut -f1) MiB)"
  echo "archive:  $archive"
  echo "manifest: $OUT/manifest.txt"
  echo "base:     $BASE_TAG"
}

# ---------------------------------------------------------------------------- checks
run_flags() {  # the podman run flags that work here, or nothing (and the errors on stderr)
  # Tried in order; each failure is reported. Seen in a sandbox without CAP_SYS_RESOURCE and
  # with hybrid cgroups v1/v2: podman's default rlimits (nofile 1048576) cannot be set, the
  # runtime runs with nproc 32768 and may not raise it, and crun refuses hybrid cgroups.
  local img=$1 f out lim
  lim="--ulimit nofile=$(ulimit -Hn):$(ulimit -Hn) --ulimit nproc=32768:32768"
  local -a sets=("" "$lim" "$lim --cgroups=disabled" "--runtime runc $lim")
  for f in "${sets[@]}"; do
    # shellcheck disable=SC2086  # $f holds several flags
    if out=$(podman run --rm --network=none $f "$img" --version 2>&1); then
      echo "$f"; return 0
    fi
    say "podman run --rm --network=none $f $img --version: $(tail -1 <<<"$out")"
  done
  return 1
}

check_image() {
  local img="$IMAGE_NAME:$KEY" flags ctr mnt p d bad=0 examples=/examples
  say "checks on $img"
  echo "config:   $(podman image inspect --format 'user={{.Config.User}} entrypoint={{.Config.Entrypoint}} cmd={{.Config.Cmd}} workdir={{.Config.WorkingDir}}' "$img")"
  echo "env:      $(podman image inspect --format '{{.Config.Env}}' "$img")"
  echo "layers:   $(podman image inspect --format '{{len .RootFS.Layers}}' "$img")"
  podman history --format '  {{.Size}}\t{{.CreatedBy}}' "$img" | cut -c1-140
  ctr=$(buildah from --pull=never "$img")
  mnt=$(buildah mount "$ctr")
  local path
  path=$(podman image inspect --format '{{range .Config.Env}}{{println .}}{{end}}' "$img" | sed -n 's/^PATH=//p')
  for p in gcc cc c++ g++ cpp make ld as pip pip3 pip3.11 apt apt-get apt-cache aptitude curl wget; do
    for d in ${path//:/ }; do
      if [ -e "$mnt$d/$p" ] || [ -L "$mnt$d/$p" ]; then echo "FOUND on PATH: $d/$p"; bad=1; fi
    done
  done
  [ "$bad" = 0 ] && echo "PATH ($path): no gcc cc c++ g++ cpp make ld as pip pip3 pip3.11 apt apt-get apt-cache aptitude curl wget"
  for d in /usr/lib/python3/dist-packages/pip /opt/twinhull/lib/python3.11/site-packages/pip /usr/lib/python3.11/ensurepip /usr/include/python3.11; do
    [ -e "$mnt$d" ] && { echo "FOUND: $d"; bad=1; }
  done
  echo "python:   $(buildah run "$ctr" -- /usr/bin/python3 -VV 2>&1 | head -1)"
  echo "buildah run twinhull --version: $(buildah run "$ctr" -- /opt/twinhull/bin/twinhull --version 2>&1)"
  buildah umount "$ctr" >/dev/null
  buildah rm "$ctr" >/dev/null
  if flags=$(run_flags "$img"); then
    echo "podman run flags that work here: --network=none ${flags:-(none)}"
    # shellcheck disable=SC2086
    echo "podman run --version: $(podman run --rm --network=none $flags "$img" --version 2>&1)"
    # shellcheck disable=SC2086
    podman run --rm --network=none $flags -v "$REPO/examples:$examples:ro" "$img" validate "$examples" ||
      { echo "validate failed"; bad=1; }
  else
    echo "podman run does not work here (errors above); buildah run was used instead"
  fi
  return "$bad"
}

prune() {  # other keys' outputs and the images tagged with them
  local d k
  for d in "$CACHE"/*/ "$CACHE"/base/*/; do
    k=$(basename "$d")
    case $k in base|stage|"$KEY"|"$BASE_KEY") continue ;; esac
    say "pruning $d"
    rm -rf "$d"
    buildah rmi "$IMAGE_NAME:$k" "$BASE_NAME:$k" >/dev/null 2>&1 || true
  done
}

# ---------------------------------------------------------------------------- main
[ "$(id -u)" = 0 ] || die "run as root (debootstrap and buildah's storage need it)"
need_tools
pick_storage
mkdir -p "$CACHE"
exec 9>"$CACHE/.build.lock"
flock -n 9 || { say "another build is running; waiting for it"; flock 9; }

VENV=$REPO/.venv
[ -x "$VENV/bin/pip" ] || die "$VENV is missing: make venv first (its versions are the ones pinned)"
PIP_VERSION=$("$VENV/bin/pip" --version | cut -d' ' -f2)
VERSION=$(python3 -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["project"]["version"])' "$REPO/pyproject.toml")
COMMIT=$(git -C "$REPO" rev-parse HEAD)
SDE=$(git -C "$REPO" log -1 --format=%ct HEAD)
CREATED=$(date -u -d "@$SDE" +%Y-%m-%dT%H:%M:%SZ)

base_key
[ "$PRINT_KEY" = 1 ] || build_base

STAGE="$CACHE/stage"
CTX="$STAGE/context"
rm -rf "$STAGE"
mkdir -p "$CTX"
stage_source
REVISION=$COMMIT
if [ "$WORKTREE" = 1 ]; then
  clean_digest=$(git -C "$REPO" archive --format=tar HEAD -- pyproject.toml README.md operator policies/tiers.yaml |
    (d=$(mktemp -d) && tar -x -C "$d" && cd "$d" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum | sha && rm -rf "$d"))
  [ "$(source_digest)" = "$clean_digest" ] || REVISION="$COMMIT-dirty"
fi
if [ -n "${TWINHULL_CONSTRAINTS:-}" ]; then
  grep -vE '^\s*(#|-e|$)' "$TWINHULL_CONSTRAINTS" >"$CTX/constraints.txt"
else
  "$VENV/bin/pip" freeze --disable-pip-version-check --exclude-editable | grep -vE '^\s*(#|-e|$)' >"$CTX/constraints.txt"
fi
mkdir -p "$CTX/policies"
cp "$CTX/src/policies/tiers.yaml" "$CTX/policies/tiers.yaml"

KEY=$({
  echo "base: $BASE_KEY"
  echo "source: $(source_digest)"
  echo "revision: $REVISION $SDE"
  echo "version: $VERSION"
  echo "label-source: $IMAGE_SOURCE"
  echo "constraints: $(sha <"$CTX/constraints.txt")"
  echo "pip: $PIP_VERSION; backend: $BUILD_BACKEND"
  echo "containerfile: $(sha <"$REPO/image/Containerfile")"
  echo "build.sh: $(sha <"$REPO/image/build.sh")"
} | tee "$STAGE/inputs.txt" | sha | cut -c1-16)
if [ "$PRINT_KEY" = 1 ]; then echo "$KEY"; rm -rf "$STAGE"; exit 0; fi
OUT="$CACHE/$KEY"

if [ "$REBUILD" = 0 ] && [ -e "$OUT/.done" ]; then
  if [ "$(podman image inspect --format '{{.Id}}' "$IMAGE_NAME:$KEY" 2>/dev/null)" != "$(cat "$OUT/image-id")" ]; then
    say "key $KEY is built but not in containers storage: loading $OUT/twinhull-$VERSION.oci.tar"
    buildah pull --quiet "oci-archive:$OUT/twinhull-$VERSION.oci.tar" >/dev/null
    buildah tag "$IMAGE_NAME:$VERSION" "$IMAGE_NAME:$KEY"
  else
    say "key $KEY is built (inputs unchanged); nothing to do"
  fi
  buildah tag "$IMAGE_NAME:$KEY" "$IMAGE_NAME:$VERSION"
  rm -rf "$STAGE"
else
  rm -rf "$OUT"
  mkdir -p "$OUT"
  mv "$STAGE/inputs.txt" "$OUT/inputs.txt"
  fetch_wheels
  build_image
  write_manifest
  touch "$OUT/.done"
  rm -rf "$STAGE"
fi
summary
if [ "$PRUNE" = 1 ]; then prune; fi
if [ "$CHECK" = 1 ]; then check_image; fi
