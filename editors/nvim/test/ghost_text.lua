-- End-to-end test of the plugin in a real, headless Neovim against the real server:
--   INKLING_BIN=... nvim --headless --clean -u test/ghost_text.lua
-- with INKLING_FORCE_EXTMARKS=1 to test the 0.10/0.11 path on 0.12.
-- Keys go through nvim_input, so they run through Neovim's own input loop
-- (autocommands, the <expr> Tab mapping) as if typed; the test itself runs in a
-- coroutine that sleeps on timers so that loop keeps going. Prints PASS or FAIL and
-- exits non-zero on failure.
local root = vim.fn.fnamemodify(debug.getinfo(1, 'S').source:sub(2), ':p:h:h')
vim.opt.runtimepath:prepend(root)
vim.o.swapfile = false
vim.o.showmode = false

local force_extmarks = os.getenv('INKLING_FORCE_EXTMARKS') == '1'
local native = vim.lsp.inline_completion ~= nil and not force_extmarks
local path = native and 'vim.lsp.inline_completion' or 'extmarks'
local label = ('%s, %s'):format(tostring(vim.version()), path)

local model_state
local messages = {}
require('inkling').setup({
  force_extmarks = force_extmarks,
  lsp = {
    cmd = { (assert(os.getenv('INKLING_BIN'), 'set INKLING_BIN')) },
    init_options = { maxTokens = 24 },
    handlers = {
      ['inkling/status'] = function(_, status)
        model_state = status.state
      end,
      -- The server warns this way about options it refuses, and fails this way.
      ['window/showMessage'] = function(_, message)
        messages[#messages + 1] = message.message
      end,
    },
  },
})

local function finish(ok, message)
  io.stdout:write(('%s: %s (%s)\n'):format(ok and 'PASS' or 'FAIL', message, label))
  vim.cmd(ok and 'qall!' or 'cquit!')
end

local function sleep(ms)
  local co = coroutine.running()
  vim.defer_fn(function()
    coroutine.resume(co)
  end, ms)
  coroutine.yield()
end

local function wait_until(what, timeout_ms, predicate)
  local deadline = vim.uv.now() + timeout_ms
  while not predicate() do
    if vim.uv.now() > deadline then
      error('timed out waiting for ' .. what, 0)
    end
    sleep(50)
  end
end

local function type_keys(text)
  for _, char in ipairs(vim.fn.split(text, '\\zs')) do
    vim.api.nvim_input(char == '<' and '<lt>' or char)
    sleep(80)
  end
end

-- The ghost text shown at the cursor, as lines, or nil.
local function ghost_text(bufnr)
  local ns = vim.api.nvim_get_namespaces()[native and 'nvim.lsp.inline_completion' or 'inkling']
  if not ns then
    return nil
  end
  local row, col = unpack(vim.api.nvim_win_get_cursor(0))
  for _, mark in ipairs(vim.api.nvim_buf_get_extmarks(bufnr, ns, 0, -1, { details = true })) do
    local _, mark_row, mark_col, details = unpack(mark)
    if mark_row == row - 1 and mark_col == col and details.virt_text then
      local lines = { details.virt_text[1][1] }
      for _, line in ipairs(details.virt_lines or {}) do
        lines[#lines + 1] = line[1][1]
      end
      return lines
    end
  end
end

local function test()
  local dir = vim.fn.tempname()
  vim.fn.mkdir(dir, 'p')
  local file = dir .. '/greet.py'
  local text = { 'def greet(name):', '    return "👋 " + name', '', '', 'def shout(name):', '' }
  vim.fn.writefile(text, file)
  vim.cmd.edit(file)
  local bufnr = vim.api.nvim_get_current_buf()
  wait_until('inkling to attach', 10000, function()
    return #vim.lsp.get_clients({ bufnr = bufnr, name = 'inkling' }) > 0
  end)
  wait_until('the model', 60000, function()
    return model_state == 'ready' or model_state == 'failed'
  end)
  assert(model_state == 'ready', 'the model failed to load')

  -- On the empty last line: Tab with no suggestion shown must indent as usual.
  vim.api.nvim_win_set_cursor(0, { 6, 0 })
  vim.api.nvim_input('A<Tab>')
  sleep(80)
  local indent = vim.api.nvim_get_current_line()
  assert(indent:match('^%s+$'), ('Tab without a suggestion inserted %q'):format(indent))

  -- The emoji is 4 bytes in UTF-8, 2 units in UTF-16 and 1 code point: the columns
  -- after it only line up if Neovim and the server agree on the position encoding.
  local typed = 'return "👋 " + name.'
  type_keys(typed)
  local line = indent .. typed
  assert(vim.api.nvim_get_current_line() == line, 'typed text: ' .. vim.api.nvim_get_current_line())

  local shown
  local typed_at = vim.uv.now()
  wait_until('ghost text at the cursor', 60000, function()
    shown = ghost_text(bufnr)
    return shown ~= nil
  end)
  io.stdout:write(('ghost text %d ms after the last key: %s\n'):format(
    vim.uv.now() - typed_at,
    vim.inspect(table.concat(shown, '\n'))
  ))
  assert(shown[1] ~= '' or #shown > 1, 'empty ghost text')

  vim.api.nvim_input('<Tab>')
  local expected = vim.list_extend({ line .. shown[1] }, shown, 2)
  local actual
  local inserted = pcall(wait_until, 'Tab to insert the suggestion', 5000, function()
    actual = vim.api.nvim_buf_get_lines(bufnr, 5, -1, true)
    return vim.deep_equal(actual, expected)
  end)
  assert(inserted, ('after Tab: %s\nexpected: %s'):format(vim.inspect(actual), vim.inspect(expected)))
  local row, col = unpack(vim.api.nvim_win_get_cursor(0))
  local at_end = row == 5 + #expected and col == #expected[#expected]
  assert(at_end, ('cursor at %d,%d after accepting'):format(row, col))
  assert(vim.api.nvim_get_mode().mode == 'i', 'left Insert mode')
  assert(#messages == 0, 'the server complained: ' .. table.concat(messages, '; '))
  vim.api.nvim_input('<Esc>')
  return ('accepted %d line(s) of ghost text with Tab'):format(#expected)
end

-- After start-up, so that filetype detection and vim.lsp.enable's FileType hook are in place.
vim.api.nvim_create_autocmd('VimEnter', {
  once = true,
  nested = true, -- :edit in the test must fire FileType
  callback = coroutine.wrap(function()
    vim.defer_fn(function()
      finish(false, 'the test took more than 150 s')
    end, 150000)
    local ok, result = pcall(test)
    finish(ok, ok and result or tostring(result))
  end),
})
