#!/usr/bin/env bash
# Builds the container image (deploy/container/Dockerfile) on a Debian machine that has no
# container engine daemon and cannot pull base images: the Debian bookworm base is made with
# debootstrap from the host's own apt source (cached), imported into podman, and the Dockerfile is
# built on it with podman's chroot isolation and vfs storage (no daemon, no overlay mounts).
#   bash deploy/container/image.sh build [TAG]    build TAG (default flashcard:latest)
#   bash deploy/container/image.sh base           only make (or reuse) the base image; prints its name
# Sourced (tests/integration/test_container_image.sh), it only defines the functions below.
# Settings (environment):
#   FC_IMAGE_CACHE    where the base root filesystem tarball is kept between runs [/var/tmp/flashcard-image]
#   FC_IMAGE_STORE    podman/buildah storage root [podman's default]; its run state goes to FC_IMAGE_STORE/run
#   FC_DEBIAN_MIRROR  Debian mirror for debootstrap [the host's apt source for bookworm]
#   FC_BASE_MAX_AGE   days after which the cached base is made again [30]

FC_IMAGE_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
FC_IMAGE_CACHE=${FC_IMAGE_CACHE:-/var/tmp/flashcard-image}
FC_IMAGE_TOOLS=(podman buildah debootstrap)
FC_IMAGE_SUDO=""
[ "$(id -u)" -eq 0 ] || FC_IMAGE_SUDO="sudo"

fc_image_log() { echo "image: $*" >&2; }

# fc_image_store_flags: the storage flags podman and buildah both take (same store for both).
fc_image_store_flags() {
    local flags=(--storage-driver vfs)
    [ -n "${FC_IMAGE_STORE:-}" ] && flags+=(--root "$FC_IMAGE_STORE/storage" --runroot "$FC_IMAGE_STORE/run")
    printf '%s\n' "${flags[@]}"
}
fc_podman() { local f; mapfile -t f < <(fc_image_store_flags); $FC_IMAGE_SUDO podman "${f[@]}" "$@"; }
fc_buildah() { local f; mapfile -t f < <(fc_image_store_flags); $FC_IMAGE_SUDO buildah "${f[@]}" "$@"; }

# fc_image_tools: installs podman, buildah and debootstrap from Debian's packages if missing.
# Returns 1 when they cannot be installed (no root, no apt, no network).
fc_image_tools() {
    local p missing=()
    for p in "${FC_IMAGE_TOOLS[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    command -v apt-get >/dev/null || { fc_image_log "no apt-get to install ${missing[*]}"; return 1; }
    [ -z "$FC_IMAGE_SUDO" ] || command -v sudo >/dev/null || { fc_image_log "not root, no sudo"; return 1; }
    fc_image_log "installing ${missing[*]}"
    # Other jobs may hold the dpkg lock for a while: wait for it rather than fail.
    $FC_IMAGE_SUDO apt-get -o DPkg::Lock::Timeout=600 update -q >/dev/null &&
        DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 $FC_IMAGE_SUDO apt-get -o DPkg::Lock::Timeout=600 \
            install -y -q --no-install-recommends "${missing[@]}" >/dev/null
}

# fc_image_sources: the host's apt entries for bookworm* suites with the main component, one
# "URI SUITE" per line, from one-line (.list) and deb822 (.sources) files.
fc_image_sources() {
    local f
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$f" ] || continue
        awk '$1 == "deb" { i = 2; if ($i ~ /^\[/) { while (i < NF && $i !~ /\]$/) i++; i++ }
                           if ($(i + 1) ~ /^bookworm/ && $0 ~ / main( |$)/) print $i, $(i + 1) }' "$f"
    done
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        # Paragraphs separated by blank lines; Enabled: no skips one.
        awk 'function flush() { if (types ~ /(^| )deb( |$)/ && comps ~ /(^| )main( |$)/ && enabled != "no")
                                  for (u in uris) for (s in suites) if (suites[s] ~ /^bookworm/) print uris[u], suites[s];
                                types = comps = enabled = ""; delete uris; delete suites }
             /^[ \t]*$/ { flush(); next }
             /^Types:/ { types = $0 } /^Components:/ { comps = $0 } /^Enabled:/ { enabled = $2 }
             /^URIs:/ { for (i = 2; i <= NF; i++) uris[i] = $i }
             /^Suites:/ { for (i = 2; i <= NF; i++) suites[i] = $i }
             END { flush() }' "$f"
    done
}

# fc_image_mirror: the mirror debootstrap uses: FC_DEBIAN_MIRROR, else the host's source of bookworm.
fc_image_mirror() {
    if [ -n "${FC_DEBIAN_MIRROR:-}" ]; then echo "$FC_DEBIAN_MIRROR"; return 0; fi
    fc_image_sources | awk '$2 == "bookworm" { print $1; exit }' | grep . ||
        { fc_image_log "no bookworm source in /etc/apt (set FC_DEBIAN_MIRROR)"; return 1; }
}

# fc_image_rootfs TARBALL: debootstraps a minimal bookworm, points its apt at the host's sources,
# strips what must not be in an image (package caches, the host's resolv.conf, the machine id).
fc_image_rootfs() {
    local tar=$1 mirror dir
    mirror=$(fc_image_mirror) || return 1
    dir=$(mktemp -d "$FC_IMAGE_CACHE/rootfs.XXXXXX")
    chmod 0755 "$dir" # it becomes the image's /: mktemp's 0700 would lock every other user out
    fc_image_log "debootstrap bookworm (minbase) into $dir"
    if ! $FC_IMAGE_SUDO debootstrap --variant=minbase bookworm "$dir" "$mirror" >"$FC_IMAGE_CACHE/debootstrap.log" 2>&1; then
        fc_image_log "debootstrap failed; see $FC_IMAGE_CACHE/debootstrap.log"
        $FC_IMAGE_SUDO rm -rf "$dir"
        return 1
    fi
    { [ -n "${FC_DEBIAN_MIRROR:-}" ] && echo "deb $FC_DEBIAN_MIRROR bookworm main" ||
        fc_image_sources | sort -u | awk '{ print "deb", $1, $2, "main" }'; } |
        $FC_IMAGE_SUDO tee "$dir/etc/apt/sources.list" >/dev/null
    $FC_IMAGE_SUDO rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/* "$dir"/var/log/* \
        "$dir/etc/resolv.conf" "$dir/etc/hostname"
    $FC_IMAGE_SUDO truncate -s 0 "$dir/etc/machine-id" 2>/dev/null || true
    $FC_IMAGE_SUDO tar --numeric-owner -C "$dir" -cf "$tar.tmp" . && $FC_IMAGE_SUDO mv "$tar.tmp" "$tar"
    local rc=$?
    $FC_IMAGE_SUDO rm -rf "$dir"
    return $rc
}

# fc_image_base: prints the name of the base image (localhost/flashcard-base:bookworm-<made at>),
# making the tarball (about 40 s) only when it is missing or older than FC_BASE_MAX_AGE days, and
# importing it only when the store lacks it. Serialized by a lock in FC_IMAGE_CACHE.
fc_image_base() {
    local tar="$FC_IMAGE_CACHE/base-bookworm.tar" name
    $FC_IMAGE_SUDO mkdir -p "$FC_IMAGE_CACHE" || return 1
    (
        flock -w 900 9 || { fc_image_log "$FC_IMAGE_CACHE is locked by another build"; exit 1; }
        if [ -f "$tar" ] && [ -n "$(find "$tar" -mtime +"${FC_BASE_MAX_AGE:-30}")" ]; then
            fc_image_log "cached base is older than ${FC_BASE_MAX_AGE:-30} days: making it again"
            $FC_IMAGE_SUDO rm -f "$tar"
        fi
        [ -f "$tar" ] || fc_image_rootfs "$tar" || exit 1
        name="localhost/flashcard-base:bookworm-$(stat -c %Y "$tar")"
        if ! fc_podman image exists "$name"; then
            fc_image_log "importing $tar as $name"
            fc_podman import --quiet "$tar" "$name" >/dev/null || exit 1
        fi
        echo "$name"
    ) 9>"$FC_IMAGE_CACHE/lock"
}

# fc_image_digest: a digest of the files the build reads (every file git sees, tracked or not
# ignored, but deployment files, integration tests, test data and documentation), so that podman,
# which does not key its cache of a bind-mounted RUN on the files, rebuilds when they change.
# Outside a git work tree it is the time: no cache for that step.
fc_image_digest() {
    (
        cd "$FC_IMAGE_REPO" || exit 1
        git rev-parse --is-inside-work-tree >/dev/null 2>&1 || { date +%s%N; exit 0; }
        git ls-files -z -c -o --exclude-standard |
            grep -zvE '^(deploy/|tests/integration/|tests/data/|\.ci/)|\.md$' | sort -z |
            xargs -0 sha256sum 2>/dev/null | sha256sum | cut -c1-16
    )
}

# fc_image_build TAG: builds deploy/container/Dockerfile from the repository's root as TAG.
fc_image_build() {
    local tag=$1 base
    base=$(fc_image_base) || return 1
    fc_image_log "building $tag on $base"
    fc_podman build --isolation chroot --pull=never --layers --build-arg "BASE_IMAGE=$base" \
        --build-arg "SOURCE_DIGEST=$(fc_image_digest)" \
        -f "$FC_IMAGE_REPO/deploy/container/Dockerfile" \
        --ignorefile "$FC_IMAGE_REPO/deploy/container/Dockerfile.dockerignore" -t "$tag" "$FC_IMAGE_REPO"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    set -euo pipefail
    case "${1:-}" in
    build) fc_image_tools && fc_image_build "${2:-flashcard:latest}" ;;
    base) fc_image_tools && fc_image_base ;;
    *) echo "usage: $0 build [TAG] | base" >&2; exit 2 ;;
    esac
fi
