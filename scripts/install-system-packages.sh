#!/usr/bin/env bash
# Installs the Debian packages the test suite needs, once; a no-op when they are present:
# Chromium (the browser test), inotify-tools and wrk (peers in benchmarks), and fonts, so that
# screenshots and figures show the tutorial's Chinese title instead of boxes.
set -euo pipefail
need=()
command -v chromium    >/dev/null 2>&1 || need+=(chromium)
command -v inotifywait >/dev/null 2>&1 || need+=(inotify-tools)
command -v wrk         >/dev/null 2>&1 || need+=(wrk)
[ -e /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || need+=(fonts-dejavu-core)
[ -d /usr/share/fonts/truetype/wqy ] || need+=(fonts-wqy-zenhei)
[ ${#need[@]} -eq 0 ] && exit 0
echo "installing Debian packages: ${need[*]}"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}"
