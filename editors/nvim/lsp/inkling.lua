-- nvim-lspconfig style configuration for inkling (Neovim 0.11+):
--   put editors/nvim on 'runtimepath' (or copy this file to ~/.config/nvim/lsp/),
--   then: vim.lsp.enable('inkling')
-- For ghost text with a Tab-to-accept key (0.12 built in, 0.10/0.11 drawn by the
-- plugin), call require('inkling').setup() instead: it enables this config too.
return {
  cmd = { 'inkling' },
  filetypes = {
    'c', 'cpp', 'go', 'java', 'javascript', 'lua', 'python', 'rust', 'sh', 'typescript',
  },
  root_markers = { '.git' },
  -- Settings go in init_options, any of: model (path of a GGUF), contextSize, threads,
  -- maxTokens, postprocess, commentCompletions; e.g. init_options = { maxTokens = 32 }.
}
