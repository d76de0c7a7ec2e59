//! Zed extension for inkling: starts the `inkling` language server (LSP over
//! stdio) for the languages listed in `extension.toml` and hands it the user's
//! `lsp.inkling` settings.
//!
//! The extension downloads nothing: inkling is built from this repository and
//! found on `PATH`, so the server and the model cache stay under the user's control.

use zed_extension_api::{
    self as zed, serde_json, settings::LspSettings, EnvVars, LanguageServerId, Result, Worktree,
};

/// The server's name: the binary looked up on `PATH`, the `[language_servers]`
/// key in `extension.toml` and the key of its `lsp` block in Zed's settings.
const SERVER_NAME: &str = "inkling";

/// Shown by Zed when the server cannot be started because the binary is missing.
const NOT_FOUND: &str = "inkling was not found on PATH. Build it with `cargo build --release` \
     in the inkling repository and put `target/release/inkling` on your PATH (or set \
     `lsp.inkling.binary.path` in settings.json), then restart Zed. See editors/zed/README.md.";

/// The extension. It keeps no state: the binary is looked up each time Zed
/// starts the server, so installing it or changing `PATH` needs no reinstall.
struct InklingExtension;

impl InklingExtension {
    /// The user's `lsp.inkling` settings for this worktree, or empty settings
    /// when there are none or Zed cannot provide them.
    fn lsp_settings(worktree: &Worktree) -> LspSettings {
        LspSettings::for_worktree(SERVER_NAME, worktree).unwrap_or_default()
    }
}

impl zed::Extension for InklingExtension {
    fn new() -> Self {
        Self
    }

    /// Runs `inkling` with no arguments (it speaks LSP on stdio) in the user's
    /// shell environment, so `PATH`, `INKLING_LOG`, `XDG_CACHE_HOME` and the like
    /// are the ones of a terminal. `lsp.inkling.binary` may name another binary,
    /// add arguments (e.g. `--threads 2`) or set environment variables.
    fn language_server_command(
        &mut self,
        _language_server_id: &LanguageServerId,
        worktree: &Worktree,
    ) -> Result<zed::Command> {
        let (path, arguments, extra_env) = Self::lsp_settings(worktree)
            .binary
            .map_or((None, None, None), |binary| {
                (binary.path, binary.arguments, binary.env)
            });

        let command = match path {
            Some(path) => path,
            None => worktree
                .which(SERVER_NAME)
                .ok_or_else(|| NOT_FOUND.to_string())?,
        };

        let mut env = worktree.shell_env();
        for (name, value) in extra_env.into_iter().flatten() {
            set_env(&mut env, name, value);
        }

        Ok(zed::Command {
            command,
            args: arguments.unwrap_or_default(),
            env,
        })
    }

    /// Passes `lsp.inkling.initialization_options` through unchanged: inkling
    /// validates them itself (`model`, `contextSize`, `maxTokens`, `httpPort`, …)
    /// and reports a bad one with `window/showMessage`, which is clearer than
    /// failing here, and new options need no new extension.
    fn language_server_initialization_options(
        &mut self,
        _language_server_id: &LanguageServerId,
        worktree: &Worktree,
    ) -> Result<Option<serde_json::Value>> {
        Ok(Self::lsp_settings(worktree).initialization_options)
    }
}

/// Sets `name` to `value` in `env`, replacing an existing entry so that the
/// user's `binary.env` wins over the shell environment.
fn set_env(env: &mut EnvVars, name: String, value: String) {
    match env.iter_mut().find(|(existing, _)| *existing == name) {
        Some(entry) => entry.1 = value,
        None => env.push((name, value)),
    }
}

zed::register_extension!(InklingExtension);
