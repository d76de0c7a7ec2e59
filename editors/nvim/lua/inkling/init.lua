-- inkling for Neovim: ghost-text completions from the inkling language server.
--
-- Neovim 0.12 has LSP inline completion built in (vim.lsp.inline_completion): there
-- this plugin only turns it on in the buffers inkling attaches to and maps the keys.
-- Neovim 0.10 and 0.11 have no such client, so the plugin does the job itself:
-- after a pause in Insert mode it asks inkling for `textDocument/inlineCompletion`
-- and shows the answer as virtual text (extmarks) until the cursor moves.
--
-- Accepting a word or a line inserts that much of the suggestion; the rest comes
-- back with the next request, from the server's typed-through cache. The plugin
-- tells the server which suggestions were shown, accepted (whole or in part) or
-- dismissed, for its local statistics (`inkling/stats`; nothing leaves the machine).
local M = {}

local defaults = {
  -- Accepts the suggestion; types itself as usual when none is shown.
  accept_key = '<Tab>',
  -- Accept the suggestion's next word / its (next) line; the rest stays suggested.
  accept_word_key = '<M-Right>',
  accept_line_key = '<M-C-Right>',
  -- Show the next / previous candidate (0.12's vim.lsp.inline_completion only).
  -- Any key set to false is left unmapped.
  next_key = '<M-]>',
  prev_key = '<M-[>',
  -- Pause in Insert mode before asking for a suggestion (extmark path; 0.12 waits 200 ms).
  debounce_ms = 150,
  -- Use the extmark path even where vim.lsp.inline_completion exists.
  force_extmarks = false,
  -- Merged into the client configuration of lsp/inkling.lua (cmd, init_options, ...).
  lsp = {},
}

local ns = vim.api.nvim_create_namespace('inkling')

-- Extmark path state per buffer: `timer` (debounce), `request` in flight
-- ({client, id}), `suggestion` shown ({row, col, tick, lines, client, id}).
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

-- The identity inkling gives an item ({answer, item}, its command's argument), or nil.
local function item_id(command)
  local argument = command and command.command == 'inkling.didAccept' and (command.arguments or {})[1]
  if type(argument) == 'table' and argument.answer and argument.item then
    return { answer = argument.answer, item = argument.item }
  end
end

-- Tells the server what became of item `id`: `method` is inkling/didShow,
-- inkling/didAccept or inkling/didDismiss.
local function report(client, method, id, fields)
  client_call(client, 'notify', method, vim.tbl_extend('force', id, fields or {}))
end

-- How far (in lines) the cursor moves in Normal mode before the server hears of it again.
local FOCUS_LINES = 20

-- Tells the server where the cursor is when buffer `bufnr` becomes active or its
-- cursor moves far (`inkling/didFocus`), so that the prompt there is decoded in the
-- background before the first keystroke instead of after it.
local function watch_focus(client, bufnr)
  local last_line
  local timer = assert(vim.uv.new_timer())
  local function focus()
    if not vim.api.nvim_buf_is_valid(bufnr) or vim.api.nvim_get_current_buf() ~= bufnr then
      return
    end
    local params = vim.lsp.util.make_position_params(0, client.offset_encoding)
    if last_line and math.abs(params.position.line - last_line) < FOCUS_LINES then
      return
    end
    last_line = params.position.line
    client_call(client, 'notify', 'inkling/didFocus', params)
  end
  local group = vim.api.nvim_create_augroup('inkling.focus.' .. bufnr, { clear = true })
  vim.api.nvim_create_autocmd({ 'BufEnter', 'CursorMoved' }, {
    group = group,
    buffer = bufnr,
    callback = function(args)
      if args.event == 'BufEnter' then
        last_line = nil
      end
      timer:start(200, 0, vim.schedule_wrap(focus))
    end,
  })
  vim.api.nvim_create_autocmd('BufWipeout', {
    group = group,
    buffer = bufnr,
    callback = function()
      timer:close()
      vim.api.nvim_del_augroup_by_id(group)
    end,
  })
  vim.schedule(focus)
end

-- How much of `text` accepting a word takes: blanks and line breaks, then a run of
-- word characters (non-ASCII ones count as such) or of other symbols.
local function next_word(text)
  return text:match('^%s*[%w_\128-\255]+') or text:match('^%s*[^%w_%s\128-\255]+') or text
end

-- How much of `text` accepting a line takes: the rest of the line, or when `text`
-- starts with a line break, the next line.
local function next_line(text)
  return text:match('^\n?[^\n]*')
end

-- Inserts `text` at (row, col) and puts the cursor after it.
local function insert(bufnr, row, col, text)
  local lines = vim.split(text, '\n', { plain = true })
  vim.api.nvim_buf_set_text(bufnr, row, col, row, col, lines)
  vim.api.nvim_win_set_cursor(0, { row + #lines, (#lines == 1 and col or 0) + #lines[#lines] })
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
  if suggestion.id then
    report(suggestion.client, 'inkling/didShow', suggestion.id)
  end
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
    local id = item_id(item.command)
    show(bufnr, { row = row, col = col, tick = tick, lines = lines, client = client, id = id })
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
    callback = function(args)
      local suggestion = buffers[bufnr].suggestion
      if args.event == 'InsertLeave' and suggestion and suggestion.id then
        report(suggestion.client, 'inkling/didDismiss', suggestion.id)
      end
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

-- Returns whether a suggestion is shown at the cursor; if so, inserts it, or as much
-- of it as `part` (next_word, next_line) takes (scheduled, because an <expr> mapping
-- may not change the text).
local function accept_extmarks(bufnr, part)
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
    local text = table.concat(suggestion.lines, '\n')
    local accepted = part and part(text) or text
    insert(bufnr, row, col, accepted)
    if suggestion.id then
      local partly = #accepted < #text and { acceptedLength = vim.fn.strchars(accepted) } or nil
      report(suggestion.client, 'inkling/didAccept', suggestion.id, partly)
    end
  end)
  return true
end

-- Native path: the inkling item Neovim's inline completion shows, per buffer
-- ({client, id}), as seen in the answers on their way to it (Neovim tells plugins
-- neither what it shows nor what is accepted with vim.lsp.inline_completion.get()).
local native_shown = {}
local observed_clients = {}

-- Wraps the handler of each of `client`'s inline completion requests to report the
-- item Neovim shows (the first) and to remember it for a dismissal.
local function observe_answers(client)
  if observed_clients[client.id] then
    return
  end
  observed_clients[client.id] = true
  local request = client.request
  client.request = function(self, method, params, handler, ...)
    if method == 'textDocument/inlineCompletion' and handler then
      local bufnr = vim.uri_to_bufnr(params.textDocument.uri)
      local handle = handler
      handler = function(err, result, ...)
        handle(err, result, ...)
        -- Neovim keeps what it shows on an error or no answer; an empty one hides it.
        if err or not result then
          return
        end
        local first = (result.items or result)[1]
        local id = first and item_id(first.command)
        native_shown[bufnr] = id and { client = self, id = id } or nil
        if id then
          report(self, 'inkling/didShow', id)
        end
      end
    end
    return request(self, method, params, handler, ...)
  end
end

-- Native path: accepts as much of the shown item as `part` takes (see accept_extmarks).
local function accept_part_native(bufnr, part)
  return vim.lsp.inline_completion.get({
    bufnr = bufnr,
    on_accept = function(item)
      local text = item.insert_text
      if type(text) ~= 'string' then
        return -- A snippet; inkling sends none.
      end
      -- The item starts at its range; what lies between it and the cursor is typed.
      local row, col = cursor()
      local start_row, start_col = row, col
      if item.range then
        start_row, start_col = unpack(item.range.start:to_extmark())
      end
      if start_row ~= row or start_col > col then
        return
      end
      local typed = vim.api.nvim_buf_get_text(bufnr, row, start_col, row, col, {})[1]
      if text:sub(1, #typed) ~= typed then
        return
      end
      local accepted = part(text:sub(#typed + 1))
      insert(bufnr, row, col, accepted)
      local client = vim.lsp.get_client_by_id(item.client_id)
      local id = item_id(item.command)
      if client and id then
        local length = vim.fn.strchars(typed .. accepted)
        report(client, 'inkling/didAccept', id, { acceptedLength = length })
      end
    end,
  })
end

-- The latest `inkling/status` of each client (by id): state, message, percent, and
-- lastAnswerFrom kept from an earlier status when a later one does not say.
local statuses = {}

local function on_status(err, status, ctx)
  if err or type(status) ~= 'table' then
    return
  end
  local previous = statuses[ctx.client_id]
  status.lastAnswerFrom = status.lastAnswerFrom or (previous and previous.lastAnswerFrom)
  statuses[ctx.client_id] = status
  vim.api.nvim_exec_autocmds('User', { pattern = 'InklingStatus', modeline = false })
  pcall(vim.cmd.redrawstatus)
end

--- inkling's state for a statusline, for buffer `bufnr` (default: the current one):
--- 'inkling' (ready), 'inkling 40%' (loading), 'inkling failed', with ' (remote)'
--- while the last suggestion came from a remote engine; '' when not attached.
function M.statusline(bufnr)
  local client = vim.lsp.get_clients({ bufnr = bufnr or 0, name = 'inkling' })[1]
  local status = client and statuses[client.id]
  if not status then
    return client and 'inkling' or ''
  end
  local text = 'inkling'
  if status.state == 'loading' then
    text = text .. (type(status.percent) == 'number' and (' %d%%'):format(status.percent) or ' loading')
  elseif status.state == 'failed' then
    text = text .. ' failed'
  end
  if status.lastAnswerFrom == 'remote' then
    text = text .. ' (remote)'
  end
  return text
end

--- The latest `inkling/status` the server of buffer `bufnr` sent (see M.statusline).
function M.status(bufnr)
  local client = vim.lsp.get_clients({ bufnr = bufnr or 0, name = 'inkling' })[1]
  return client and statuses[client.id]
end

-- Starts inkling for the filetypes of lsp/inkling.lua, with `config` merged in.
local function start(config)
  -- Our status handler runs first; a handler of the user's for it runs after.
  config = vim.deepcopy(config)
  config.handlers = config.handlers or {}
  local theirs = config.handlers['inkling/status']
  config.handlers['inkling/status'] = function(err, status, ctx, ...)
    on_status(err, status, ctx)
    if theirs then
      return theirs(err, status, ctx, ...)
    end
  end
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
      local bufnr = args.buf
      watch_focus(client, bufnr)
      -- accept(part): accepts the suggestion, or as much as part(text) takes.
      local accept
      if native then
        vim.lsp.inline_completion.enable(true, { bufnr = bufnr })
        observe_answers(client)
        accept = function(part)
          local accepted
          if part then
            accepted = accept_part_native(bufnr, part)
          else
            -- Neovim runs the item's command: workspace/executeCommand reports it.
            accepted = vim.lsp.inline_completion.get({ bufnr = bufnr })
          end
          if accepted then
            native_shown[bufnr] = nil
          end
          return accepted
        end
        vim.api.nvim_create_autocmd('InsertLeave', {
          group = vim.api.nvim_create_augroup('inkling.native.' .. bufnr, { clear = true }),
          buffer = bufnr,
          callback = function()
            local shown = native_shown[bufnr]
            native_shown[bufnr] = nil
            if shown then
              report(shown.client, 'inkling/didDismiss', shown.id)
            end
          end,
        })
        for _, key in ipairs({ { opts.next_key, 1 }, { opts.prev_key, -1 } }) do
          local lhs, count = key[1], key[2]
          if lhs then
            vim.keymap.set('i', lhs, function()
              -- Which candidate shows now is Neovim's to know: no dismissal is reported.
              native_shown[bufnr] = nil
              vim.lsp.inline_completion.select({ bufnr = bufnr, count = count })
            end, { buffer = bufnr, desc = 'inkling: show another candidate' })
          end
        end
      else
        attach_extmarks(bufnr, opts.debounce_ms)
        accept = function(part)
          return accept_extmarks(bufnr, part)
        end
      end
      local keys = {
        { opts.accept_key, nil, 'accept the suggestion' },
        { opts.accept_word_key, next_word, 'accept the next word of the suggestion' },
        { opts.accept_line_key, next_line, 'accept the next line of the suggestion' },
      }
      for _, key in ipairs(keys) do
        local lhs, part, desc = key[1], key[2], key[3]
        if lhs then
          vim.keymap.set('i', lhs, function()
            if not accept(part) then
              return lhs
            end
          end, { buffer = bufnr, expr = true, desc = 'inkling: ' .. desc })
        end
      end
    end,
  })
  start(opts.lsp)
end

return M
