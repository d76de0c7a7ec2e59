-- inkling for Neovim: ghost-text completions from the inkling language server.
--
-- Neovim 0.12 has LSP inline completion built in (vim.lsp.inline_completion): there
-- this plugin only turns it on in the buffers inkling attaches to and maps the accept
-- key. Neovim 0.10 and 0.11 have no such client, so the plugin does the job itself:
-- after a pause in Insert mode it asks inkling for `textDocument/inlineCompletion`
-- and shows the answer as virtual text (extmarks) until the cursor moves.
local M = {}

local defaults = {
  -- Accepts the suggestion; types itself as usual when none is shown.
  accept_key = '<Tab>',
  -- Pause in Insert mode before asking for a suggestion (extmark path; 0.12 waits 200 ms).
  debounce_ms = 150,
  -- Use the extmark path even where vim.lsp.inline_completion exists.
  force_extmarks = false,
  -- Merged into the client configuration of lsp/inkling.lua (cmd, init_options, ...).
  lsp = {},
}

local ns = vim.api.nvim_create_namespace('inkling')

-- Extmark path state per buffer: `timer` (debounce), `request` in flight
-- ({client, id}), `suggestion` shown ({row, col, tick, lines}).
---@type table<integer, {timer: uv.uv_timer_t, request?: table, suggestion?: table}>
local buffers = {}

-- Client methods take `self` from 0.11 on; in 0.10 they are plain functions.
local function client_call(client, method, ...)
  if vim.fn.has('nvim-0.11') == 1 then
    return client[method](client, ...)
  end
  return client[method](...)
end

local function cursor()
  local pos = vim.api.nvim_win_get_cursor(0)
  return pos[1] - 1, pos[2]
end

local function clear(bufnr)
  local state = buffers[bufnr]
  state.timer:stop()
  state.suggestion = nil
  if state.request then
    -- Neovim does not cancel superseded requests by itself; the server can stop
    -- generating for this one at once.
    client_call(state.request.client, 'cancel_request', state.request.id)
    state.request = nil
  end
  vim.api.nvim_buf_clear_namespace(bufnr, ns, 0, -1)
end

local function show(bufnr, suggestion)
  local rest = {}
  for i = 2, #suggestion.lines do
    rest[#rest + 1] = { { suggestion.lines[i], 'Comment' } }
  end
  vim.api.nvim_buf_set_extmark(bufnr, ns, suggestion.row, suggestion.col, {
    virt_text = { { suggestion.lines[1], 'Comment' } },
    virt_text_pos = 'inline',
    virt_lines = #rest > 0 and rest or nil,
    hl_mode = 'combine',
  })
  buffers[bufnr].suggestion = suggestion
end

-- Only an insertion at the cursor can be drawn as ghost text there; that is all
-- inkling sends (a zero-width range, or none).
local function at_cursor(range, position)
  return range == nil
    or (range.start.line == position.line and range.start.character == position.character
      and range['end'].line == position.line and range['end'].character == position.character)
end

local function request(bufnr)
  local client = vim.lsp.get_clients({ bufnr = bufnr, name = 'inkling' })[1]
  local mode = vim.api.nvim_get_mode().mode
  if not client or vim.api.nvim_get_current_buf() ~= bufnr or not mode:match('^i') then
    return
  end
  local state = buffers[bufnr]
  local params = vim.lsp.util.make_position_params(0, client.offset_encoding)
  params.context = { triggerKind = 2 } -- Automatic
  local row, col = cursor()
  local tick = vim.b[bufnr].changedtick
  local ok, id
  local function handler(err, result)
    if not (state.request and state.request.id == id) then
      return -- superseded
    end
    state.request = nil
    local now_row, now_col = cursor()
    local moved = vim.b[bufnr].changedtick ~= tick or now_row ~= row or now_col ~= col
    if err or not result or moved then
      return
    end
    local item = (result.items or result)[1]
    local text = item and item.insertText
    if type(text) ~= 'string' or text == '' or not at_cursor(item.range, params.position) then
      return
    end
    local lines = vim.split(text, '\n', { plain = true })
    show(bufnr, { row = row, col = col, tick = tick, lines = lines })
  end
  ok, id = client_call(client, 'request', 'textDocument/inlineCompletion', params, handler, bufnr)
  if ok then
    state.request = { client = client, id = id }
  end
end

local function attach_extmarks(bufnr, debounce_ms)
  if buffers[bufnr] then
    return
  end
  buffers[bufnr] = { timer = assert(vim.uv.new_timer()) }
  local group = vim.api.nvim_create_augroup('inkling.buffer.' .. bufnr, { clear = true })
  vim.api.nvim_create_autocmd({ 'InsertEnter', 'CursorMovedI', 'TextChangedI' }, {
    group = group,
    buffer = bufnr,
    callback = function()
      clear(bufnr)
      buffers[bufnr].timer:start(debounce_ms, 0, vim.schedule_wrap(function()
        request(bufnr)
      end))
    end,
  })
  vim.api.nvim_create_autocmd({ 'InsertLeave', 'BufLeave' }, {
    group = group,
    buffer = bufnr,
    callback = function()
      clear(bufnr)
    end,
  })
  vim.api.nvim_create_autocmd('BufWipeout', {
    group = group,
    buffer = bufnr,
    callback = function()
      buffers[bufnr].timer:close()
      buffers[bufnr] = nil
      vim.api.nvim_del_augroup_by_id(group)
    end,
  })
end

-- Returns whether a suggestion is shown at the cursor; if so, inserts it (scheduled,
-- because an <expr> mapping may not change the text).
local function accept_extmarks(bufnr)
  local state = buffers[bufnr]
  local suggestion = state and state.suggestion
  local row, col = cursor()
  local here = suggestion
    and suggestion.tick == vim.b[bufnr].changedtick
    and suggestion.row == row
    and suggestion.col == col
  if not here then
    return false
  end
  vim.schedule(function()
    if state.suggestion ~= suggestion then
      return
    end
    clear(bufnr)
    local lines = suggestion.lines
    vim.api.nvim_buf_set_text(bufnr, row, col, row, col, lines)
    vim.api.nvim_win_set_cursor(0, { row + #lines, (#lines == 1 and col or 0) + #lines[#lines] })
  end)
  return true
end

-- Starts inkling for the filetypes of lsp/inkling.lua, with `config` merged in.
local function start(config)
  if vim.lsp.config then
    vim.lsp.config('inkling', config)
    vim.lsp.enable('inkling')
    return
  end
  -- 0.10 has neither vim.lsp.config nor vim.lsp.enable: start a client per buffer.
  local file = vim.api.nvim_get_runtime_file('lsp/inkling.lua', false)[1]
  config = vim.tbl_deep_extend('force', dofile(file), config, { name = 'inkling' })
  vim.api.nvim_create_autocmd('FileType', {
    group = vim.api.nvim_create_augroup('inkling.start', { clear = true }),
    pattern = config.filetypes,
    callback = function(args)
      local root = vim.fs.root(args.buf, config.root_markers)
      vim.lsp.start(vim.tbl_extend('force', config, { root_dir = root }), { bufnr = args.buf })
    end,
  })
end

--- Starts inkling and shows its suggestions as ghost text; see README.md for `opts`.
function M.setup(opts)
  opts = vim.tbl_deep_extend('force', defaults, opts or {})
  local native = vim.lsp.inline_completion ~= nil and not opts.force_extmarks
  vim.api.nvim_create_autocmd('LspAttach', {
    group = vim.api.nvim_create_augroup('inkling', { clear = true }),
    callback = function(args)
      local client = vim.lsp.get_client_by_id(args.data.client_id)
      if not client or client.name ~= 'inkling' then
        return
      end
      local accept
      if native then
        vim.lsp.inline_completion.enable(true, { bufnr = args.buf })
        accept = vim.lsp.inline_completion.get
      else
        attach_extmarks(args.buf, opts.debounce_ms)
        accept = function()
          return accept_extmarks(args.buf)
        end
      end
      vim.keymap.set('i', opts.accept_key, function()
        if not accept() then
          return opts.accept_key
        end
      end, { buffer = args.buf, expr = true, desc = 'inkling: accept the suggestion' })
    end,
  })
  start(opts.lsp)
end

return M
