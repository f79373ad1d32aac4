#!/usr/bin/env bash
# What bcc needs to compile the agent's eBPF program on this kernel; idempotent, run as root.
#
# bcc compiles at run time against /lib/modules/$(uname -r)/build. Where the running kernel
# ships no headers (custom or VM kernels), Debian's nearest linux-headers-*-amd64 do: the agent
# only reads tracepoint records (laid out from tracefs at compile time) and helpers, never
# kernel structs, so header/kernel version skew is harmless. tracefs must be mounted for bcc to
# read the tracepoint formats.
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
  echo "kernel-headers: must run as root" >&2
  exit 1
fi

release=$(uname -r)
modules=/lib/modules/$release

if [ ! -e "$modules/build/Makefile" ]; then
  if ! dpkg-query -W -f='${Status}' linux-headers-amd64 2>/dev/null | grep -q "install ok installed"; then
    echo "kernel-headers: installing linux-headers-amd64"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      linux-headers-amd64 >/dev/null
  fi
  # Exact match for the running kernel first, else the newest Debian -amd64 headers.
  build=/usr/src/linux-headers-$release
  if [ ! -e "$build/Makefile" ]; then
    build=$(find /usr/src -maxdepth 1 -name 'linux-headers-*-amd64' -type d | sort -V | tail -n 1)
  fi
  if [ -z "$build" ] || [ ! -e "$build/Makefile" ]; then
    echo "kernel-headers: no linux-headers-*-amd64 under /usr/src" >&2
    exit 1
  fi
  source_dir=${build%-amd64}-common
  [ -d "$source_dir" ] || source_dir=$build
  mkdir -p "$modules"
  ln -sfn "$build" "$modules/build"
  ln -sfn "$source_dir" "$modules/source"
  echo "kernel-headers: $modules/build -> $build, source -> $source_dir"
fi

mounted() { findmnt -rn -M "$1" >/dev/null 2>&1; }

if [ ! -e /sys/kernel/tracing/events ]; then
  mounted /sys/kernel/tracing || mount -t tracefs tracefs /sys/kernel/tracing
  echo "kernel-headers: mounted tracefs at /sys/kernel/tracing"
fi
# Older bcc and tools look under /sys/kernel/debug/tracing (debugfs automounts tracefs there).
if [ -d /sys/kernel/debug ] && ! mounted /sys/kernel/debug; then
  if mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null; then
    echo "kernel-headers: mounted debugfs at /sys/kernel/debug"
  fi
fi
