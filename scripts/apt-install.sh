# Sourced by the ensure-*.sh scripts: apt_install PACKAGE... installs
# Debian packages quietly, as root or with sudo, or says that this machine
# has no apt-get and what to install by hand (exit 1).
apt_install() {
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "No apt-get here: install $* yourself." >&2
    exit 1
  fi
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq "$@" >/dev/null
}
