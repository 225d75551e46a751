#!/usr/bin/env bash
# Installs the Debian packages the test suite needs, once; a no-op when they are present.
set -euo pipefail
need=()
command -v chromium    >/dev/null 2>&1 || need+=(chromium)
command -v inotifywait >/dev/null 2>&1 || need+=(inotify-tools)
command -v wrk         >/dev/null 2>&1 || need+=(wrk)
[ ${#need[@]} -eq 0 ] && exit 0
echo "installing Debian packages: ${need[*]}"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" fonts-dejavu-core
