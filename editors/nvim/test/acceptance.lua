-- End-to-end test of accepting part of a suggestion and of the acceptance statistics,
-- in a real, headless Neovim against the real server (see helpers.lua):
--   INKLING_BIN=... nvim --headless --clean -u test/acceptance.lua
-- A suggestion dismissed with Esc, one accepted a word (<M-Right>) and then the rest
-- (Tab), one accepted a line (<M-C-Right>) and then what is left (Tab); each rest
-- comes from the server's typed-through cache, not the model, and `inkling/stats`
-- counts it all.
local H = dofile(vim.fn.fnamemodify(debug.getinfo(1, 'S').source:sub(2), ':p:h') .. '/helpers.lua')

-- Answers that do not depend on how busy the machine is: no prompt time limit, a
-- generous generation time limit, a bound on the tokens.
H.setup({ maxTokens = 32, promptTimeLimitMs = 0, generationTimeLimitMs = 20000 })

-- The text between (row, col) and the cursor.
local function since(bufnr, row, col)
  local now_row, now_col = unpack(vim.api.nvim_win_get_cursor(0))
  return table.concat(vim.api.nvim_buf_get_text(bufnr, row - 1, col, now_row - 1, now_col, {}), '\n')
end

-- Presses `key` and waits for the text to change; returns the text it inserted at
-- the cursor.
local function press(bufnr, key)
  local tick = vim.b[bufnr].changedtick
  local row, col = unpack(vim.api.nvim_win_get_cursor(0))
  vim.api.nvim_input(key)
  H.wait_until(key .. ' to change the text', 5000, function()
    return vim.b[bufnr].changedtick ~= tick
  end)
  return since(bufnr, row, col)
end

-- Enters Insert mode at the end of line `row` and waits for a suggestion there;
-- returns it, and `inkling/stats` then.
local function suggestion_at(bufnr, row)
  vim.api.nvim_win_set_cursor(0, { row, 0 })
  vim.api.nvim_input('A')
  local suggestion = table.concat(H.wait_for_ghost_text(bufnr), '\n')
  return suggestion, H.stats(bufnr)
end

-- Leaves Insert mode at once, before the next suggestion can show (Neovim waits
-- 200 ms, the plugin 150 ms), and returns `inkling/stats`.
local function leave(bufnr)
  vim.api.nvim_input('<Esc>')
  H.wait_until('Normal mode', 5000, function()
    return vim.api.nvim_get_mode().mode == 'n'
  end)
  return H.stats(bufnr)
end

-- Checks that `stats.acceptance` is `before.acceptance` with `changes` added.
local function counted(before, stats, changes)
  for _, name in ipairs({ 'shown', 'accepted', 'partlyAccepted', 'dismissed', 'charactersAccepted' }) do
    local expected = before.acceptance[name] + (changes[name] or 0)
    assert(stats.acceptance[name] == expected,
      ('%s: expected %d, got %s'):format(name, expected, vim.inspect(stats.acceptance)))
  end
end

-- Checks that the ghost text at the cursor is `rest` and came without the model.
local function rest_from_memory(bufnr, rest, before)
  local shown = table.concat(H.wait_for_ghost_text(bufnr), '\n')
  assert(shown == rest, ('the rest shown is %q, not %q'):format(shown, rest))
  local stats = H.stats(bufnr)
  assert(stats.typedThrough > before.typedThrough, 'the rest was not answered from memory')
  assert(stats.generatedTokens == before.generatedTokens, 'the model was asked for the rest')
  return stats
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
    '',
    '',
    'class Greeter:',
  })

  -- Shown, then dismissed.
  local _, before = suggestion_at(bufnr, 3)
  counted(before, leave(bufnr), { dismissed = 1 })

  -- A word, then the rest with Tab.
  local suggestion, before_word = suggestion_at(bufnr, 7)
  local word = press(bufnr, '<M-Right>')
  assert(word ~= '' and #word < #suggestion and vim.startswith(suggestion, word),
    ('accepting a word of %q inserted %q'):format(suggestion, word))
  local stats = rest_from_memory(bufnr, suggestion:sub(#word + 1), before_word)
  counted(before_word, stats, { partlyAccepted = 1, charactersAccepted = vim.fn.strchars(word) })
  local tabbed = press(bufnr, '<Tab>')
  assert(word .. tabbed == suggestion, ('accepted %q + %q of %q'):format(word, tabbed, suggestion))
  counted(before_word, leave(bufnr), { accepted = 1, charactersAccepted = vim.fn.strchars(suggestion) })

  -- A line, then what is left with Tab (here the suggestion is several lines).
  local lines, before_line = suggestion_at(bufnr, 10)
  local line = press(bufnr, '<M-C-Right>')
  local left = lines:sub(#line + 1)
  assert(line ~= '' and vim.startswith(lines, line) and (left == '' or left:sub(1, 1) == '\n'),
    ('accepting a line of %q inserted %q'):format(lines, line))
  if left ~= '' then
    stats = rest_from_memory(bufnr, left, before_line)
    counted(before_line, stats, { partlyAccepted = 1, charactersAccepted = vim.fn.strchars(line) })
    assert(line .. press(bufnr, '<Tab>') == lines, 'Tab after a line')
  end
  counted(before_line, leave(bufnr), { accepted = 1, charactersAccepted = vim.fn.strchars(lines) })

  assert(#H.messages == 0, 'the server complained: ' .. table.concat(H.messages, '; '))
  return ('dismissed a suggestion; accepted %q + %q, and %q + %q'):format(word, tabbed, line, left)
end)
