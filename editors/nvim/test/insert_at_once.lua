-- Entering Insert mode the moment the server attaches, while the model is still
-- loading: Neovim 0.12 asks once on entering Insert mode and not again until a key
-- is typed, so that one request must wait for the load and be answered.
--   INKLING_BIN=... nvim --headless --clean -u test/insert_at_once.lua
local H = dofile(vim.fn.fnamemodify(debug.getinfo(1, 'S').source:sub(2), ':p:h') .. '/helpers.lua')

H.setup({ maxTokens = 24 })

H.run(function()
  if not H.native then
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
  H.wait_until('inkling to attach', 10000, function()
    return H.client(bufnr) ~= nil
  end)
  -- At once, and no key is typed after this.
  vim.api.nvim_input('GA')
  local entered = vim.uv.now()
  local shown = H.wait_for_ghost_text(bufnr, 60000)
  assert(vim.api.nvim_get_mode().mode == 'i', 'left Insert mode')
  return ('ghost text %d ms after entering Insert mode at attach: %s'):format(
    vim.uv.now() - entered,
    vim.inspect(shown)
  )
end)
