#!/usr/bin/env bash
# Builds the extension from a fresh clone and tests it against the real server:
# install the locked dependencies, type-check, bundle, package the .vsix, then
# drive the inkling binary ($INKLING_BIN, default ../../target/release/inkling)
# as the extension's language client does.
set -euo pipefail
cd "$(dirname "$0")"
npm ci --no-audit --no-fund
npm run check
npm run bundle
npm run package
npm test
