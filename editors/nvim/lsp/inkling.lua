-- nvim-lspconfig style configuration for inkling (Neovim 0.11+):
--   put this directory on 'runtimepath' (or copy this file to ~/.config/nvim/lsp/),
--   then: vim.lsp.enable('inkling')
-- On Neovim 0.12, ghost text: vim.lsp.inline_completion.enable()
return {
  cmd = { 'inkling' },
  filetypes = {
    'c', 'cpp', 'go', 'java', 'javascript', 'lua', 'python', 'rust', 'sh', 'typescript',
  },
  root_markers = { '.git' },
  -- Any of: model (path of a GGUF), contextSize, threads, maxTokens.
  init_options = {},
}
