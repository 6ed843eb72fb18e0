#!/usr/bin/env bash
# Renders a loadgen HTML report in headless Chromium and saves a full-page PNG, to look at a report
# as a person would (and to check it renders at all: charts inline, nothing fetched).
#
#   bench/report-screenshot.sh REPORT.html [OUT.png]
#
# Needs Debian's chromium package (apt-get install -y chromium); without it the script says so
# and exits 0, so a machine without a browser skips the check rather than failing it.
set -euo pipefail
report=${1:?usage: $0 REPORT.html [OUT.png]}
out=${2:-${report%.html}.png}
browser=""
for b in chromium chromium-browser google-chrome; do
	if command -v "$b" >/dev/null 2>&1; then
		browser=$b
		break
	fi
done
if [ -z "$browser" ]; then
	echo "SKIP: no chromium installed (apt-get install -y chromium): report screenshot not taken" >&2
	exit 0
fi
abs=$(cd "$(dirname "$report")" && pwd)/$(basename "$report")
# Tall enough for the whole page; Chromium has no full-page flag in this mode.
height=${SCREENSHOT_HEIGHT:-9000}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# --user-data-dir keeps it from touching a real profile; no network is needed (the report is self-contained).
"$browser" --headless --no-sandbox --disable-gpu --hide-scrollbars --user-data-dir="$tmp" \
	--window-size=1280,"$height" --screenshot="$out" "file://$abs" >/dev/null 2>"$tmp/err" || {
	cat "$tmp/err" >&2
	exit 1
}
if [ ! -s "$out" ]; then
	echo "chromium wrote no screenshot" >&2
	cat "$tmp/err" >&2
	exit 1
fi
echo "screenshot: $out"
