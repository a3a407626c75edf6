#!/bin/sh
# Refresh the console's vendored libraries from the npm registry (needs npm, not at build
# time): fetch the pinned versions, copy the files the console uses and their licenses, and
# record versions and SHA-256 checksums in VERSIONS. Change a version here, run, review the
# diff, commit.
set -eu
HTM=3.1.1      # htm's preact/standalone.module.js bundles Preact 10 with hooks and htm
UPLOT=1.6.32
PREACT=10.2.0   # the license of the Preact bundled in htm's standalone build (htm devDependency ^10.2.0)
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
npm pack --silent "htm@$HTM" "uplot@$UPLOT" "preact@$PREACT" >/dev/null
mkdir htm uplot preact
tar xzf "preact-$PREACT.tgz" -C preact
tar xzf "htm-$HTM.tgz" -C htm
tar xzf "uplot-$UPLOT.tgz" -C uplot
cp htm/package/preact/standalone.module.js "$here/preact-htm.js"
cp htm/package/LICENSE "$here/LICENSE.htm"
cp preact/package/LICENSE "$here/LICENSE.preact"
cp uplot/package/dist/uPlot.iife.min.js "$here/uPlot.iife.min.js"
cp uplot/package/dist/uPlot.min.css "$here/uPlot.min.css"
cp uplot/package/LICENSE "$here/LICENSE.uplot"
cd "$here"
{
  echo "htm $HTM (npm), preact/standalone.module.js -> preact-htm.js (Preact 10 + hooks + htm; htm Apache-2.0 LICENSE.htm, Preact MIT LICENSE.preact)"
  echo "uplot $UPLOT (npm), dist/uPlot.iife.min.js and dist/uPlot.min.css (MIT, LICENSE.uplot)"
  sha256sum preact-htm.js uPlot.iife.min.js uPlot.min.css
} > VERSIONS
cat VERSIONS
