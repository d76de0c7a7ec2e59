-- End-to-end test of the plugin in a real, headless Neovim against the real server:
--   INKLING_BIN=... nvim --headless --clean -u test/ghost_text.lua
-- (see helpers.lua). Opens a Python file, types a line, waits for the ghost text,
-- accepts it with Tab and checks the buffer.
local H = dofile(vim.fn.fnamemodify(debug.getinfo(1, 'S').source:sub(2), ':p:h') .. '/helpers.lua')

H.setup({ maxTokens = 24 })

H.run(function()
  local text = { 'def greet(name):', '    return "👋 " + name', '', '', 'def shout(name):', '' }
  local bufnr = H.open_python(text)

  -- On the empty last line: Tab with no suggestion shown must indent as usual.
  vim.api.nvim_win_set_cursor(0, { 6, 0 })
  vim.api.nvim_input('A<Tab>')
  H.sleep(80)
  local indent = vim.api.nvim_get_current_line()
  assert(indent:match('^%s+$'), ('Tab without a suggestion inserted %q'):format(indent))

  -- The emoji is 4 bytes in UTF-8, 2 units in UTF-16 and 1 code point: the columns
  -- after it only line up if Neovim and the server agree on the position encoding.
  local typed = 'return "👋 " + name.'
  H.type_keys(typed)
  local line = indent .. typed
  assert(vim.api.nvim_get_current_line() == line, 'typed text: ' .. vim.api.nvim_get_current_line())

  local typed_at = vim.uv.now()
  local shown = H.wait_for_ghost_text(bufnr)
  io.stdout:write(('ghost text %d ms after the last key: %s\n'):format(
    vim.uv.now() - typed_at,
    vim.inspect(table.concat(shown, '\n'))
  ))
  assert(shown[1] ~= '' or #shown > 1, 'empty ghost text')

  vim.api.nvim_input('<Tab>')
  local expected = vim.list_extend({ line .. shown[1] }, shown, 2)
  local actual
  local inserted = pcall(H.wait_until, 'Tab to insert the suggestion', 5000, function()
    actual = vim.api.nvim_buf_get_lines(bufnr, 5, -1, true)
    return vim.deep_equal(actual, expected)
  end)
  assert(inserted, ('after Tab: %s\nexpected: %s'):format(vim.inspect(actual), vim.inspect(expected)))
  local row, col = unpack(vim.api.nvim_win_get_cursor(0))
  local at_end = row == 5 + #expected and col == #expected[#expected]
  assert(at_end, ('cursor at %d,%d after accepting'):format(row, col))
  assert(vim.api.nvim_get_mode().mode == 'i', 'left Insert mode')
  assert(#H.messages == 0, 'the server complained: ' .. table.concat(H.messages, '; '))
  vim.api.nvim_input('<Esc>')
  return ('accepted %d line(s) of ghost text with Tab'):format(#expected)
end)
