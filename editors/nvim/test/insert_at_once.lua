-- Entering Insert mode the moment the server attaches, while the model is still
-- loading: Neovim 0.12 asks once on entering Insert mode and not again until a key
-- is typed, so that one request must wait for the load and be answered.
--   INKLING_BIN=... nvim --headless --clean -u test/insert_at_once.lua
-- Prints PASS or FAIL and exits non-zero on failure.
local root = vim.fn.fnamemodify(debug.getinfo(1, 'S').source:sub(2), ':p:h:h')
vim.opt.runtimepath:prepend(root)
vim.o.swapfile = false
vim.o.showmode = false

local states = {}
require('inkling').setup({
  lsp = {
    cmd = { (assert(os.getenv('INKLING_BIN'), 'set INKLING_BIN')) },
    init_options = { maxTokens = 24 },
    handlers = {
      ['inkling/status'] = function(_, status)
        states[#states + 1] = status.state
      end,
    },
  },
})

local function finish(ok, message)
  io.stdout:write(('%s: %s (%s)\n'):format(ok and 'PASS' or 'FAIL', message, tostring(vim.version())))
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
    sleep(20)
  end
end

local function ghost_text(bufnr)
  local ns = vim.api.nvim_get_namespaces()['nvim.lsp.inline_completion']
  if not ns then
    return nil
  end
  for _, mark in ipairs(vim.api.nvim_buf_get_extmarks(bufnr, ns, 0, -1, { details = true })) do
    local details = mark[4]
    if details.virt_text then
      return details.virt_text[1][1]
    end
  end
end

local function test()
  if vim.lsp.inline_completion == nil then
    return 'skipped: this Neovim has no vim.lsp.inline_completion'
  end
  local dir = vim.fn.tempname()
  vim.fn.mkdir(dir, 'p')
  local file = dir .. '/shapes.py'
  -- A file of a realistic size, so that its prompt does not fit a 500 ms slice.
  local text = { 'import math', '' }
  for i = 1, 12 do
    vim.list_extend(text, {
      ('def area_%d(radius):'):format(i),
      ('    """The area of circle number %d."""'):format(i),
      ('    return math.pi * radius * radius * %d'):format(i),
      '',
    })
  end
  vim.list_extend(text, { 'def perimeter(radius):', '    ' })
  vim.fn.writefile(text, file)
  vim.cmd.edit(file)
  local bufnr = vim.api.nvim_get_current_buf()
  wait_until('inkling to attach', 10000, function()
    return #vim.lsp.get_clients({ bufnr = bufnr, name = 'inkling' }) > 0
  end)
  -- At once: no key is typed after this.
  vim.api.nvim_input('GA')
  local entered = vim.uv.now()
  local loading_seen = states[#states] ~= 'ready'
  local shown
  wait_until('ghost text without typing', 60000, function()
    shown = ghost_text(bufnr)
    return shown ~= nil
  end)
  assert(vim.api.nvim_get_mode().mode == 'i', 'left Insert mode')
  return ('ghost text %d ms after entering Insert mode (model %s then): %s'):format(
    vim.uv.now() - entered,
    loading_seen and 'still loading' or 'ready',
    vim.inspect(shown)
  )
end

vim.api.nvim_create_autocmd('VimEnter', {
  once = true,
  nested = true,
  callback = coroutine.wrap(function()
    vim.defer_fn(function()
      finish(false, 'the test took more than 90 s')
    end, 90000)
    local ok, result = pcall(test)
    finish(ok, ok and result or tostring(result))
  end),
})
