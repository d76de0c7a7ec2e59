-- What the headless end-to-end tests share: the plugin set up against the real
-- server ($INKLING_BIN), keys typed through nvim_input (so they run through Neovim's
-- own input loop: autocommands, <expr> mappings, as if typed), and a test body run in
-- a coroutine that sleeps on timers so that loop keeps going. A test file calls
-- `run(test)`; it prints PASS or FAIL and exits non-zero on failure.
-- INKLING_FORCE_EXTMARKS=1 tests the 0.10/0.11 path on 0.12.
local H = {}

local root = vim.fn.fnamemodify(debug.getinfo(1, 'S').source:sub(2), ':p:h:h')
vim.opt.runtimepath:prepend(root)
vim.o.swapfile = false
vim.o.showmode = false

local force_extmarks = os.getenv('INKLING_FORCE_EXTMARKS') == '1'
H.native = vim.lsp.inline_completion ~= nil and not force_extmarks
local label = ('%s, %s'):format(
  tostring(vim.version()),
  H.native and 'vim.lsp.inline_completion' or 'extmarks'
)

local model_state
-- What the server said with window/showMessage (refused options, failures).
H.messages = {}

--- Sets the plugin up with `init_options` for the server.
function H.setup(init_options)
  require('inkling').setup({
    force_extmarks = force_extmarks,
    lsp = {
      cmd = { (assert(os.getenv('INKLING_BIN'), 'set INKLING_BIN')) },
      init_options = init_options,
      handlers = {
        ['inkling/status'] = function(_, status)
          model_state = status.state
        end,
        ['window/showMessage'] = function(_, message)
          H.messages[#H.messages + 1] = message.message
        end,
      },
    },
  })
end

function H.sleep(ms)
  local co = coroutine.running()
  vim.defer_fn(function()
    coroutine.resume(co)
  end, ms)
  coroutine.yield()
end

function H.wait_until(what, timeout_ms, predicate)
  local deadline = vim.uv.now() + timeout_ms
  while not predicate() do
    if vim.uv.now() > deadline then
      error('timed out waiting for ' .. what, 0)
    end
    H.sleep(50)
  end
end

--- Types `text` one character at a time.
function H.type_keys(text)
  for _, char in ipairs(vim.fn.split(text, '\\zs')) do
    vim.api.nvim_input(char == '<' and '<lt>' or char)
    H.sleep(80)
  end
end

--- The ghost text shown at the cursor, as lines, or nil.
function H.ghost_text(bufnr)
  local ns = vim.api.nvim_get_namespaces()[H.native and 'nvim.lsp.inline_completion' or 'inkling']
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

--- Waits for ghost text at the cursor and returns it as lines.
function H.wait_for_ghost_text(bufnr, timeout_ms)
  local shown
  H.wait_until('ghost text at the cursor', timeout_ms or 60000, function()
    shown = H.ghost_text(bufnr)
    return shown ~= nil
  end)
  return shown
end

--- Opens `lines` as a new Python file; returns its buffer once inkling is attached
--- and its model ready.
function H.open_python(lines)
  local dir = vim.fn.tempname()
  vim.fn.mkdir(dir, 'p')
  local file = dir .. '/greet.py'
  vim.fn.writefile(lines, file)
  vim.cmd.edit(file)
  local bufnr = vim.api.nvim_get_current_buf()
  H.wait_until('inkling to attach', 10000, function()
    return H.client(bufnr) ~= nil
  end)
  H.wait_until('the model', 60000, function()
    return model_state == 'ready' or model_state == 'failed'
  end)
  assert(model_state == 'ready', 'the model failed to load')
  return bufnr
end

--- The inkling client of `bufnr`.
function H.client(bufnr)
  return vim.lsp.get_clients({ bufnr = bufnr, name = 'inkling' })[1]
end

--- The server's `inkling/stats`.
function H.stats(bufnr)
  local client = assert(H.client(bufnr))
  local response = vim.fn.has('nvim-0.11') == 1 and client:request_sync('inkling/stats', nil, 5000, bufnr)
    or client.request_sync('inkling/stats', nil, 5000, bufnr)
  assert(response and response.result, 'inkling/stats: ' .. vim.inspect(response))
  return response.result
end

--- Runs `test` once Neovim has started; it returns what passed, or raises.
function H.run(test)
  -- After start-up, so that filetype detection and vim.lsp.enable's FileType hook are in place.
  vim.api.nvim_create_autocmd('VimEnter', {
    once = true,
    nested = true, -- :edit in the test must fire FileType
    callback = coroutine.wrap(function()
      local function finish(ok, message)
        io.stdout:write(('%s: %s (%s)\n'):format(ok and 'PASS' or 'FAIL', message, label))
        vim.cmd(ok and 'qall!' or 'cquit!')
      end
      vim.defer_fn(function()
        finish(false, 'the test took more than 150 s')
      end, 150000)
      local ok, result = pcall(test)
      finish(ok, ok and result or tostring(result))
    end),
  })
end

return H
