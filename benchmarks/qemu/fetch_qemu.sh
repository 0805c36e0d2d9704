#!/usr/bin/env bash
# Fetch qemu-user 10.x from Debian bookworm-backports and unpack it (no system change) into
# .cache/qemu/root. Bookworm's own qemu 7.2 segfaults on `import onnxruntime` (it hands the
# host's /proc/cpuinfo to the guest); 10.x works. Prints the bin directory.
set -euo pipefail
cd "$(dirname "$0")/../.."
DEST=${QEMU_DEST:-.cache/qemu}
if [ -x "$DEST/root/usr/bin/qemu-aarch64" ] && [ -x "$DEST/root/usr/bin/qemu-x86_64" ]; then
  echo "$DEST/root/usr/bin"; exit 0
fi
mkdir -p "$DEST/apt/lists/partial" "$DEST/apt/cache/archives/partial" "$DEST/debs"
cat > "$DEST/apt/sources.list" <<SRC
deb http://deb.debian.org/debian bookworm-backports main
SRC
: > "$DEST/apt/status"
APT=(-o Dir::Etc::SourceList="$PWD/$DEST/apt/sources.list" -o Dir::Etc::SourceParts=/dev/null
     -o Dir::State::Lists="$PWD/$DEST/apt/lists" -o Dir::Cache="$PWD/$DEST/apt/cache"
     -o Dir::State::Status="$PWD/$DEST/apt/status" -o Debug::NoLocking=1)
apt-get "${APT[@]}" update -qq >&2
(cd "$DEST/debs" && apt-get "${APT[@]}" download -qq -t bookworm-backports qemu-user >&2)
for deb in "$DEST"/debs/*.deb; do dpkg-deb -x "$deb" "$DEST/root"; done
"$DEST/root/usr/bin/qemu-x86_64" --version | head -1 >&2
echo "$DEST/root/usr/bin"
