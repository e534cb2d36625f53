#!/usr/bin/env bash
# Render a maporl report in headless Chromium with the network blocked, and save a full-page screenshot.
#
#   bash scripts/screenshot_report.sh runs/NAME/report.html [out.png] [WIDTHxHEIGHT]
#
# Needs a Chromium (`chromium`, `chromium-browser` or `google-chrome` on PATH; e.g. `apt-get install chromium`).
# Every request that leaves the file is refused (a proxy that does not exist, DNS mapped to nothing), so a page
# that needed the network would show broken images here.
set -euo pipefail
html="${1:?usage: screenshot_report.sh REPORT.html [OUT.png] [WIDTHxHEIGHT]}"
out="${2:-${html%.html}.png}"
size="${3:-1280x4000}"
browser="$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)"
if [ -z "$browser" ]; then
  echo "screenshot_report: no Chromium found; install one (e.g. apt-get install chromium)" >&2
  exit 2
fi
[ -f "$html" ] || { echo "screenshot_report: $html not found" >&2; exit 2; }
profile="$(mktemp -d)"
trap 'rm -rf "$profile"' EXIT
"$browser" --headless --no-sandbox --disable-gpu --hide-scrollbars --user-data-dir="$profile" \
  --proxy-server=127.0.0.1:9 --host-resolver-rules="MAP * ~NOTFOUND" \
  --window-size="${size/x/,}" --screenshot="$(realpath -m "$out")" "file://$(realpath "$html")" 2>/dev/null
echo "wrote $out"
