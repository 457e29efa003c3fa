#!/usr/bin/env bash
# Render a report.html in headless Chromium to PNG, for looking at it by eye (issue #14).
#
#   benchmarks/screenshot_report.sh runs/demo/report.html [OUT.png] [HEIGHT]
#
# Needs the Debian package `chromium` (apt-get install -y chromium). Writes OUT.png (default:
# report_screenshot.png beside the page), 1200 px wide and HEIGHT px tall (default 9000: the whole
# page of a demo report; the part below the page's end is white). --no-sandbox because the check
# runs as root in a container; the page is our own file, loaded from disk, with no network.
set -euo pipefail
page=${1:?usage: $0 REPORT.html [OUT.png] [HEIGHT]}
out=${2:-$(dirname "$page")/report_screenshot.png}
height=${3:-9000}
[ -f "$page" ] || { echo "no such page: $page (write one with: htsr-diag report RUN)" >&2; exit 2; }
browser=$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)
[ -n "$browser" ] || { echo "chromium not found: apt-get install -y chromium" >&2; exit 3; }
"$browser" --headless --no-sandbox --disable-gpu --hide-scrollbars --force-device-scale-factor=1 \
  --window-size=1200,"$height" --screenshot="$(realpath -m "$out")" "file://$(realpath "$page")" 2>/dev/null
[ -s "$out" ] || { echo "chromium wrote no screenshot" >&2; exit 1; }
echo "$out"
