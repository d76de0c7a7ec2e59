-- End-to-end test of accepting part of a suggestion and of the acceptance statistics,
-- in a real, headless Neovim against the real server (see helpers.lua):
--   INKLING_BIN=... nvim --headless --clean -u test/acceptance.lua
-- A suggestion dismissed with Esc, then one accepted a word (<M-Right>), a line
-- (<M-C-Right>) and, if anything is left, the rest (Tab); each rest comes from the
-- server's typed-through cache, not the model, and `inkling/stats` counts it all.
local H = dofile(vim.fn.fnamemodify(debug.getinfo(1, 'S').source:sub(2), ':p:h') .. '/helpers.lua')

-- Answers that do not depend on how busy the machine is: no prompt time limit, a
-- generous generation time limit, a bound on the tokens.
H.setup({ maxTokens = 32, promptTimeLimitMs = 0, generationTimeLimitMs = 20000 })

local function line(bufnr, row)
  return vim.api.nvim_buf_get_lines(bufnr, row - 1, row, true)[1]
end

-- The text between (row, col) and the cursor.
local function since(bufnr, row, col)
  local now_row, now_col = unpack(vim.api.nvim_win_get_cursor(0))
  return table.concat(vim.api.nvim_buf_get_text(bufnr, row - 1, col, now_row - 1, now_col, {}), '\n')
end

-- Presses `key` and waits for the text to change; returns the text it inserted at the cursor.
local function press(bufnr, key)
  local tick = vim.b[bufnr].changedtick
  local row, col = unpack(vim.api.nvim_win_get_cursor(0))
  vim.api.nvim_input(key)
  H.wait_until(key .. ' to change the text', 5000, function()
    return vim.b[bufnr].changedtick ~= tick
  end)
  return since(bufnr, row, col)
end

H.run(function()
  local bufnr = H.open_python({
    'def mean(values):',
    '    total = sum(values)',
    '    return ',
    '',
    '',
    'def add(a, b):',
    '    return ',
  })

  -- Shown, then dismissed.
  vim.api.nvim_win_set_cursor(0, { 3, 0 })
  vim.api.nvim_input('A')
  H.wait_for_ghost_text(bufnr)
  vim.api.nvim_input('<Esc>')
  H.wait_until('Normal mode', 5000, function()
    return vim.api.nvim_get_mode().mode == 'n'
  end)
  local stats = H.stats(bufnr)
  local acceptance = stats.acceptance
  assert(acceptance.shown == 1 and acceptance.dismissed == 1, vim.inspect(acceptance))

  -- Accepted a word, then a line, then the rest.
  vim.api.nvim_win_set_cursor(0, { 7, 0 })
  vim.api.nvim_input('A')
  local suggestion = table.concat(H.wait_for_ghost_text(bufnr), '\n')
  local start_col = #line(bufnr, 7)
  local before = H.stats(bufnr)

  local word = press(bufnr, '<M-Right>')
  assert(word ~= '' and #word < #suggestion and vim.startswith(suggestion, word),
    ('accepting a word of %q inserted %q'):format(suggestion, word))
  local rest = table.concat(H.wait_for_ghost_text(bufnr), '\n')
  assert(rest == suggestion:sub(#word + 1), ('after %q of %q the rest shown is %q'):format(word, suggestion, rest))
  stats = H.stats(bufnr)
  assert(stats.typedThrough > before.typedThrough, 'the rest was not answered from memory')
  assert(stats.generatedTokens == before.generatedTokens, 'the model was asked for the rest')
  acceptance = stats.acceptance
  assert(acceptance.shown == before.acceptance.shown, 'the rest counted as another suggestion')
  assert(acceptance.partlyAccepted == before.acceptance.partlyAccepted + 1, vim.inspect(acceptance))
  assert(acceptance.charactersAccepted == before.acceptance.charactersAccepted + vim.fn.strchars(word),
    vim.inspect(acceptance))

  local through_line = press(bufnr, '<M-C-Right>')
  local accepted = since(bufnr, 7, start_col)
  assert(through_line ~= '' and vim.startswith(suggestion, accepted),
    ('accepting a line of %q left %q'):format(rest, through_line))
  local left = suggestion:sub(#accepted + 1)
  assert(left == '' or left:sub(1, 1) == '\n', ('a line of %q is not %q'):format(rest, through_line))
  if left ~= '' then
    assert(table.concat(H.wait_for_ghost_text(bufnr), '\n') == left, 'the rest after a line')
    press(bufnr, '<Tab>')
    accepted = since(bufnr, 7, start_col)
  end
  -- Before the next suggestion can show (Neovim waits 200 ms, the plugin 150 ms).
  vim.api.nvim_input('<Esc>')
  assert(accepted == suggestion, ('accepted %q of %q'):format(accepted, suggestion))

  H.wait_until('Normal mode', 5000, function()
    return vim.api.nvim_get_mode().mode == 'n'
  end)
  acceptance = H.stats(bufnr).acceptance
  local expected = {
    shown = before.acceptance.shown,
    accepted = before.acceptance.accepted + 1,
    partlyAccepted = before.acceptance.partlyAccepted,
    dismissed = 1,
    charactersAccepted = before.acceptance.charactersAccepted + vim.fn.strchars(suggestion),
  }
  for name, value in pairs(expected) do
    assert(acceptance[name] == value, ('%s: %s'):format(name, vim.inspect(acceptance)))
  end
  assert(#H.messages == 0, 'the server complained: ' .. table.concat(H.messages, '; '))
  return ('dismissed a suggestion, accepted %q as %q + %q + %q'):format(
    suggestion, word, through_line, suggestion:sub(#word + #through_line + 1))
end)
