#!/usr/bin/env bash
# Install a Shotline sensor node on 64-bit Raspberry Pi OS (Bookworm).
#
#   sudo scripts/install-node.sh            # from a checkout of the repository
#   sudo scripts/install-node.sh --no-gps   # no GPS HAT: network time only ("ntp" detections)
#
# What it does (each step is safe to repeat):
#   1. Debian packages: Python, PortAudio, libsndfile, ALSA tools, chrony, gpsd, pps-tools.
#   2. A service user `shotline` in the `audio` group; /etc/shotline, /var/lib/shotline.
#   3. A virtualenv in /opt/shotline/venv with Shotline and its sensor extra.
#   4. gpsd + chrony PPS configuration (GPS on /dev/serial0, PPS on GPIO 18 -> /dev/pps0),
#      the UART and pps-gpio overlay in /boot/firmware/config.txt.
#   5. /etc/shotline/sensor.toml from the example if there is none, a clip token,
#      the systemd unit, enabled (started once the config is filled in).
# Then: edit /etc/shotline/sensor.toml, `shotline-sensor check-config`, `shotline-sensor level`,
# `sudo systemctl start shotline-sensor`. docs/sensor-node.md walks through it.
set -euo pipefail

GPS=1
PPS_GPIO=18
for arg in "$@"; do
  case "$arg" in
    --no-gps) GPS=0 ;;
    --pps-gpio=*) PPS_GPIO="${arg#*=}" ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "unknown option: $arg" >&2; exit 2 ;;
  esac
done

if [ "$(id -u)" != 0 ]; then echo "run as root: sudo $0 $*" >&2; exit 1; fi
SRC="$(cd "$(dirname "$0")/.." && pwd)"
PREFIX=/opt/shotline
ETC=/etc/shotline
STATE=/var/lib/shotline
say() { printf '\n==> %s\n' "$*"; }

if [ "$(uname -m)" != aarch64 ]; then
  echo "warning: $(uname -m) is not 64-bit ARM; continuing (useful for testing on a PC)" >&2
fi

say "Debian packages"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
PKGS="python3 python3-venv python3-dev libportaudio2 libsndfile1 alsa-utils chrony"
[ "$GPS" = 1 ] && PKGS="$PKGS gpsd gpsd-clients pps-tools"
# shellcheck disable=SC2086
apt-get install -y -q --no-install-recommends $PKGS

say "service user and directories"
id shotline >/dev/null 2>&1 || useradd --system --home-dir "$STATE" --shell /usr/sbin/nologin shotline
usermod -a -G audio shotline
install -d -o root -g shotline -m 0750 "$ETC"
install -d -o shotline -g shotline -m 0750 "$STATE"

say "virtualenv in $PREFIX/venv"
install -d "$PREFIX"
rm -rf "$PREFIX/src"
cp -a "$SRC" "$PREFIX/src"
rm -rf "$PREFIX/src/.venv" "$PREFIX/src/.git"
[ -x "$PREFIX/venv/bin/python" ] || python3 -m venv "$PREFIX/venv"
"$PREFIX/venv/bin/pip" install -q --upgrade pip
"$PREFIX/venv/bin/pip" install -q "$PREFIX/src[sensor]"
ln -sf "$PREFIX/venv/bin/shotline-sensor" /usr/local/bin/shotline-sensor

if [ "$GPS" = 1 ]; then
  say "GPS time: gpsd + chrony with PPS on GPIO $PPS_GPIO"
  CONFIG_TXT=/boot/firmware/config.txt
  [ -f "$CONFIG_TXT" ] || CONFIG_TXT=/boot/config.txt
  if [ -f "$CONFIG_TXT" ]; then
    grep -q "^dtoverlay=pps-gpio" "$CONFIG_TXT" || echo "dtoverlay=pps-gpio,gpiopin=$PPS_GPIO" >> "$CONFIG_TXT"
    grep -q "^enable_uart=1" "$CONFIG_TXT" || echo "enable_uart=1" >> "$CONFIG_TXT"
    # The serial console would fight gpsd for the UART.
    if [ -f /boot/firmware/cmdline.txt ]; then sed -i 's/console=serial0,[0-9]* //' /boot/firmware/cmdline.txt; fi
  else
    echo "warning: no config.txt: add dtoverlay=pps-gpio,gpiopin=$PPS_GPIO and enable_uart=1 yourself" >&2
  fi
  grep -qx pps-gpio /etc/modules 2>/dev/null || echo pps-gpio >> /etc/modules
  install -m 0644 "$SRC/scripts/gpsd/gpsd" /etc/default/gpsd
  install -d /etc/chrony/conf.d
  install -m 0644 "$SRC/scripts/chrony/shotline-pps.conf" /etc/chrony/conf.d/shotline-pps.conf
  systemctl enable gpsd.socket gpsd.service >/dev/null 2>&1 || true
  systemctl restart gpsd.service || true
fi
systemctl enable chrony.service >/dev/null 2>&1 || true
systemctl restart chrony.service || true

say "configuration"
if [ ! -f "$ETC/sensor.toml" ]; then
  install -o root -g shotline -m 0640 "$SRC/scripts/sensor.example.toml" "$ETC/sensor.toml"
  echo "wrote $ETC/sensor.toml from the example: fill in the CHANGE-ME values"
fi
if [ ! -f "$ETC/clip-token" ]; then
  (umask 037; head -c 24 /dev/urandom | base64 > "$ETC/clip-token")
  chgrp shotline "$ETC/clip-token"
  echo "clip token for the hub: $ETC/clip-token"
fi

say "systemd unit"
install -m 0644 "$SRC/scripts/systemd/shotline-sensor.service" /etc/systemd/system/shotline-sensor.service
# In an image being prepared (chroot, no systemd running) enabling still
# works offline; reloading and starting wait for the first boot.
if [ -d /run/systemd/system ]; then SYSTEMD_UP=1; else SYSTEMD_UP=0; fi
[ "$SYSTEMD_UP" = 1 ] && systemctl daemon-reload
systemctl enable shotline-sensor.service
if [ "$SYSTEMD_UP" = 0 ]; then
  echo "systemd is not running (chroot or image build): the unit is enabled and starts at boot"
elif grep -q CHANGE-ME "$ETC/sensor.toml"; then
  echo
  echo "Enabled but not started: edit $ETC/sensor.toml, then"
  echo "  shotline-sensor check-config $ETC/sensor.toml"
  echo "  shotline-sensor list-devices && shotline-sensor level --config $ETC/sensor.toml"
  echo "  sudo systemctl start shotline-sensor && journalctl -fu shotline-sensor"
else
  systemctl restart shotline-sensor.service
  echo "started: journalctl -fu shotline-sensor"
fi
[ "$GPS" = 1 ] && echo "A reboot is needed once for the PPS overlay and the UART (check: sudo ppstest /dev/pps0; chronyc sources)."
exit 0
