#!/usr/bin/env bash
# Installs the Debian packages a make target needs, once; a no-op when they are present.
#
#   scripts/install-system-packages.sh lab    # make lab: python3-venv (python3 -m venv needs ensurepip)
#       and a CJK font (fonts-wqy-zenhei), so that the Chinese edition's figures show Chinese
#       instead of boxes (lab/i18n.py registers it with matplotlib)
#   scripts/install-system-packages.sh test   # make test: lab's, plus Chromium and libatomic1 (the
#       browser test: Playwright's driver needs libatomic1, which Chromium does not pull in),
#       inotify-tools and wrk (peers in benchmarks) and DejaVu fonts for screenshots.
#
# As root it runs apt-get itself, otherwise through sudo; with neither it says in one line what to
# install. PYTHON (default python3) is the interpreter the venv is made with.
set -euo pipefail
group=${1:-test}
python=${PYTHON:-python3}

installed() {  # a Debian package is installed (false where there is no dpkg)
  [ "$(dpkg-query -W -f='${db:Status-Abbrev}' "$1" 2>/dev/null)" = "ii " ]
}

command -v "$python" >/dev/null 2>&1 || { echo "make $group: no $python: install Python >= 3.11 (Debian: python3)" >&2; exit 1; }
need=()
"$python" -c 'import ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
[ -d /usr/share/fonts/truetype/wqy ] || need+=(fonts-wqy-zenhei)
case "$group" in
  lab) ;;
  test)
    command -v chromium    >/dev/null 2>&1 || need+=(chromium)
    installed libatomic1                   || need+=(libatomic1)
    command -v inotifywait >/dev/null 2>&1 || need+=(inotify-tools)
    command -v wrk         >/dev/null 2>&1 || need+=(wrk)
    [ -e /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || need+=(fonts-dejavu-core)
    ;;
  *) echo "usage: $0 lab|test" >&2; exit 2 ;;
esac
[ ${#need[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ]; then
  sudo=()
elif command -v sudo >/dev/null 2>&1; then
  sudo=(sudo)
else
  echo "make $group needs these Debian packages: ${need[*]}; install them as root (apt-get install ${need[*]}) or install sudo, then run make $group again" >&2
  exit 1
fi
command -v apt-get >/dev/null 2>&1 || {
  echo "make $group needs these Debian packages (no apt-get here: install their equivalents): ${need[*]}" >&2
  exit 1
}
echo "installing Debian packages: ${need[*]}"
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
