#!/usr/bin/env bash
# Screenshot a run's report.html with headless Chromium, to look at the page as a reader would.
#
#   benchmarks/render_report.sh RUN_DIR OUT.png [WIDTHxHEIGHT]
#
# Writes RUN_DIR/report.html first when only report.json is there (needs the project's Python:
# $PYTHON, else .venv/bin/python, else python3). Chromium runs offline with a throw-away profile;
# the page itself loads nothing from the network (everything is inlined).
# Debian: apt-get update && apt-get install -y chromium
set -euo pipefail

if [[ $# -lt 2 || $# -gt 3 ]]; then
  echo "usage: $0 RUN_DIR OUT.png [WIDTHxHEIGHT]  (default 1280x3000)" >&2
  exit 2
fi
run_dir=$1
out=$2
size=${3:-1280x3000}
if [[ ! "$size" =~ ^[0-9]+x[0-9]+$ ]]; then
  echo "error: size $size: expected WIDTHxHEIGHT, e.g. 1280x3000" >&2
  exit 2
fi
if [[ ! -d "$run_dir" ]]; then
  echo "error: $run_dir: no such run directory" >&2
  exit 2
fi

here=$(cd "$(dirname "$0")/.." && pwd)
if [[ ! -f "$run_dir/report.html" ]]; then
  if [[ ! -f "$run_dir/report.json" ]]; then
    echo "error: $run_dir: neither report.html nor report.json" >&2
    exit 2
  fi
  py=${PYTHON:-}
  [[ -z "$py" && -x "$here/.venv/bin/python" ]] && py="$here/.venv/bin/python"
  py=${py:-python3}
  "$py" - "$run_dir" <<'EOF'
import json
import sys
from pathlib import Path

from compress.report.html import write_html

run_dir = Path(sys.argv[1])
print(write_html(json.loads((run_dir / "report.json").read_text()), run_dir))
EOF
fi

browser=""
for b in chromium chromium-browser google-chrome; do
  if command -v "$b" >/dev/null 2>&1; then browser=$b; break; fi
done
if [[ -z "$browser" ]]; then
  echo "error: no chromium found (Debian: apt-get update && apt-get install -y chromium)" >&2
  exit 2
fi

page="$(cd "$run_dir" && pwd)/report.html"
out_abs="$(cd "$(dirname "$out")" && pwd)/$(basename "$out")"
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
"$browser" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --hide-scrollbars --user-data-dir="$profile" --screenshot="$out_abs" \
  --window-size="${size/x/,}" "file://$page" >/dev/null 2>&1 || true
if [[ ! -s "$out_abs" ]]; then
  echo "error: $browser wrote no screenshot to $out_abs" >&2
  exit 1
fi
echo "$out_abs"
