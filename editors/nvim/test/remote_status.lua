-- With a remote engine set: a second, real inkling serving HTTP stands in for it.
-- The suggestion comes from there, and the plugin's statusline says so.
--   INKLING_BIN=... nvim --headless --clean -u test/remote_status.lua
local H = dofile(vim.fn.fnamemodify(debug.getinfo(1, 'S').source:sub(2), ':p:h') .. '/helpers.lua')

-- `inkling http --port 0`, its whole first prompt decoded (no prompt time limit).
local logged = ''
local remote = vim.system(
  { os.getenv('INKLING_BIN'), '--prompt-time-limit-ms', '0', 'http', '--port', '0' },
  {
    stderr = function(_, data)
      logged = logged .. (data or '')
    end,
  }
)
vim.api.nvim_create_autocmd('VimLeavePre', {
  callback = function()
    remote:kill(15)
  end,
})

H.run(function()
  local address
  H.wait_until('the remote inkling', 60000, function()
    address = logged:match('listening on http://([%d%.:]+)')
    return address ~= nil and logged:find('model ready', 1, true) ~= nil
  end)
  -- Generous limits: a cold prompt on a busy 2-core machine takes seconds, and only
  -- the remote may answer (the local engine starts after the hedge delay).
  H.setup({
    remote = {
      url = 'http://' .. address,
      preset = 'llama-server',
      triggers = 'all',
      hedgeDelayMs = 30000,
      firstTokenTimeoutMs = 30000,
      totalTimeoutMs = 40000,
    },
  })
  local bufnr = H.open_python({ 'def greet(name):', '    return ' })
  local inkling = require('inkling')
  assert(inkling.statusline(bufnr) == 'inkling', 'before any answer: ' .. inkling.statusline(bufnr))
  vim.api.nvim_win_set_cursor(0, { 2, 11 })
  vim.api.nvim_input('A')
  H.type_keys('"')
  local shown = H.wait_for_ghost_text(bufnr, 60000)
  H.wait_until('the status to name the remote', 10000, function()
    return inkling.statusline(bufnr) == 'inkling (remote)'
  end)
  local backends = H.stats(bufnr).backends
  assert(backends.lastAnswerFrom == 'remote', vim.inspect(backends))
  assert(backends.remote.wins >= 1, vim.inspect(backends))
  return ('ghost text %s from the remote; statusline %q'):format(
    vim.inspect(shown),
    inkling.statusline(bufnr)
  )
end)
