//! Which requests may go remote: the user's policy, checked per request. The
//! deny-list wins over everything; background work (prefetches, warming) never
//! leaves the machine.

use inkling_core::context::Snippet;
use inkling_core::generate::CompletionRequest;
use inkling_core::postprocess::Trigger;
use inkling_core::workspace::file_path;

use crate::config::{Lines, Resolved};

/// Why a request stays local.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Local {
    /// Its path matches a glob of `denyPaths`.
    Denied,
    /// The policy does not send this kind of request (trigger, lines, language,
    /// workspace, background work).
    NotAllowed,
}

/// The document's path: the file path of a `file:` URI, else the URI itself.
pub fn document_path(document: &str) -> String {
    file_path(document).map_or_else(|| document.to_owned(), |p| p.to_string_lossy().into_owned())
}

/// `path` with `.`, `..` and repeated separators resolved in its text, so that
/// every spelling of a path meets the same globs.
fn lexical(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            part => parts.push(part),
        }
    }
    let joined = parts.join("/");
    if path.starts_with('/') {
        format!("/{joined}")
    } else {
        joined
    }
}

/// Whether the file at `absolute` (`relative` to its workspace, when known) is on
/// the deny-list, as spelled, resolved in its text, or resolved on disk (a link
/// into a denied folder).
fn denied(policy: &Resolved, absolute: &str, relative: &str) -> bool {
    let on_disk = std::fs::canonicalize(absolute)
        .ok()
        .map(|path| path.to_string_lossy().into_owned());
    // A client on Windows may name `secret\x.py`: read both ways.
    let slashed = [absolute, relative].map(|path| path.replace('\\', "/"));
    [absolute, relative]
        .into_iter()
        .chain(on_disk.as_deref())
        .chain(slashed.iter().map(String::as_str))
        .filter(|path| !path.is_empty())
        .any(|path| policy.deny.path(path) || policy.deny.path(&lexical(path)))
}

/// Whether the file at `absolute` is in one of the policy's workspace folders (or
/// no folders are named), its path resolved first.
fn in_workspaces(policy: &Resolved, absolute: &str) -> bool {
    let absolute = lexical(absolute);
    policy.workspaces.is_empty()
        || policy.workspaces.iter().any(|folder| {
            let folder = lexical(folder);
            absolute
                .strip_prefix(folder.trim_end_matches('/'))
                .is_some_and(|rest| rest.starts_with('/'))
        })
}

/// The other files' material of `request` that may go remote: none from a file on
/// the deny-list (a ring chunk of a denied file, a signature defined in one), none
/// from outside the policy's workspace folders.
pub fn allowed_snippets<'r>(
    policy: &'r Resolved,
    request: &'r CompletionRequest,
) -> impl Iterator<Item = &'r Snippet> {
    request.context.preamble.snippets.iter().filter(|snippet| {
        !denied(policy, &snippet.source, &snippet.path) && in_workspaces(policy, &snippet.source)
    })
}

/// Whether `request` may go remote under `policy`.
pub fn check(policy: &Resolved, request: &CompletionRequest) -> Result<(), Local> {
    let absolute = document_path(&request.document);
    // A `file:` URI that names no path on this machine (another host, a NUL) cannot
    // be matched against the globs: it stays.
    let unreadable = request
        .document
        .get(..5)
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("file:"))
        && file_path(&request.document).is_none();
    // A request naming no file at all (the HTTP endpoint asked without a
    // `filename`) cannot be matched either: with a deny-list, it stays.
    let unnamed = file_path(&request.document).is_none()
        && request.context.preamble.path.is_empty()
        && !policy.deny.is_empty();
    if unreadable || unnamed || denied(policy, &absolute, &request.context.preamble.path) {
        return Err(Local::Denied);
    }
    let multi_line = request.stop.multi_line();
    let allowed = !request.background
        && request.max_tokens > 0
        && (policy.automatic || request.trigger == Trigger::Invoked)
        && match policy.lines {
            Lines::Any => true,
            Lines::Single => !multi_line,
            Lines::Multi => multi_line,
        }
        && (policy.languages.is_empty()
            || policy
                .languages
                .iter()
                .any(|l| l.eq_ignore_ascii_case(&request.context.language_id)))
        && in_workspaces(policy, &absolute);
    if allowed {
        Ok(())
    } else {
        Err(Local::NotAllowed)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use inkling_core::context;
    use inkling_core::generate::CancelFlag;
    use inkling_core::postprocess::{self, Options, StopRules};
    use std::time::Duration;

    use crate::config::RemoteConfig;

    pub(crate) fn request(document: &str, trigger: Trigger, suffix: &str) -> CompletionRequest {
        let context = context::from_parts("fn main() {\n    ", suffix, "rust");
        let options = Options {
            enabled: true,
            in_comments: false,
            stop_when_unsure: false,
        };
        let plan = postprocess::plan(&context, trigger, options).unwrap();
        CompletionRequest {
            stop: StopRules::new(&context, &plan, options),
            context,
            max_tokens: 64,
            prompt_time_limit: None,
            generation_time_limit: Duration::from_secs(1),
            cancel: CancelFlag::default(),
            document: document.into(),
            partial: None,
            background: false,
            keeps_cache: false,
            trigger,
            candidates: 1,
            suffix_rescoring: false,
            unbound_seeds: false,
            stop_when_unsure: false,
        }
    }

    fn policy(json: &str) -> Resolved {
        json.parse::<RemoteConfig>().unwrap().resolve().unwrap()
    }

    #[test]
    fn only_invoked_requests_go_remote_by_default() {
        let policy = policy(r#"{"url": "http://h"}"#);
        let invoked = request("file:///w/a.rs", Trigger::Invoked, "\n}\n");
        assert_eq!(check(&policy, &invoked), Ok(()));
        let automatic = request("file:///w/a.rs", Trigger::Automatic, "\n}\n");
        assert_eq!(check(&policy, &automatic), Err(Local::NotAllowed));
        let mut background = invoked.clone();
        background.background = true;
        assert_eq!(check(&policy, &background), Err(Local::NotAllowed));
    }

    #[test]
    fn the_deny_list_wins_over_everything() {
        let policy = policy(
            r#"{"url": "http://h", "triggers": "all", "languages": ["rust"], "denyPaths": ["**/secrets/**", "*.env"]}"#,
        );
        for uri in ["file:///w/secrets/key.rs", "file:///w/prod.env"] {
            let request = request(uri, Trigger::Invoked, "\n}\n");
            assert_eq!(check(&policy, &request), Err(Local::Denied), "{uri}");
        }
        let mut relative = request("file:///w/a.rs", Trigger::Invoked, "\n}\n");
        relative.context.preamble.path = "secrets/a.rs".into();
        assert_eq!(check(&policy, &relative), Err(Local::Denied));
        assert_eq!(
            check(
                &policy,
                &request("file:///w/a.rs", Trigger::Automatic, "\n}\n")
            ),
            Ok(())
        );
    }

    #[test]
    fn every_spelling_of_a_denied_path_is_denied() {
        let policy = policy(r#"{"url": "http://h", "denyPaths": ["/w/private.rs"]}"#);
        for uri in [
            "file:///w/private.rs",
            "FILE:///w/private.rs",
            "file:/w/private.rs",
            "file://LOCALHOST/w/private.rs",
            "file://127.0.0.1/w/private.rs",
            // No path of this machine: not matched, so kept.
            "file://elsewhere/w/private.rs",
            "file:///w/private.rs%00.txt",
            "file://localhost/w/private.rs",
            "file:///w/./private.rs",
            "file:///w//private.rs",
            "file:///w/x/../private.rs",
        ] {
            let request = request(uri, Trigger::Invoked, "\n}\n");
            assert_eq!(check(&policy, &request), Err(Local::Denied), "{uri}");
        }
    }

    #[test]
    fn a_request_naming_no_file_goes_remote_only_without_a_deny_list() {
        let guarded = policy(r#"{"url": "http://h", "denyPaths": ["**/secrets/**"]}"#);
        let open = policy(r#"{"url": "http://h"}"#);
        let mut unnamed = request("http", Trigger::Invoked, "\n}\n");
        unnamed.context.preamble.path = String::new();
        assert_eq!(check(&guarded, &unnamed), Err(Local::Denied));
        assert_eq!(check(&open, &unnamed), Ok(()));
        let mut named = unnamed;
        named.context.preamble.path = "src/main.rs".into();
        assert_eq!(check(&guarded, &named), Ok(()));
        named.context.preamble.path = "secrets/main.rs".into();
        assert_eq!(check(&guarded, &named), Err(Local::Denied));
        named.context.preamble.path = "secrets\\main.rs".into();
        assert_eq!(check(&guarded, &named), Err(Local::Denied));
    }

    #[test]
    fn a_link_into_a_denied_folder_is_denied() {
        let root = std::env::temp_dir().join(format!("inkling-deny-link-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("secrets")).unwrap();
        std::fs::write(root.join("secrets/vault.rs"), "let key = 1;\n").unwrap();
        std::os::unix::fs::symlink(root.join("secrets"), root.join("link")).unwrap();
        let policy = policy(r#"{"url": "http://h", "denyPaths": ["**/secrets/**"]}"#);
        let uri = format!("file://{}/link/vault.rs", root.display());
        let verdict = check(&policy, &request(&uri, Trigger::Invoked, "\n}\n"));
        let _ = std::fs::remove_dir_all(&root);
        assert_eq!(verdict, Err(Local::Denied));
    }

    #[test]
    fn material_from_denied_files_never_rides_on_another_files_request() {
        use inkling_core::context::Snippet;
        let snippet = |path: &str| Snippet {
            path: path.into(),
            source: format!("/w/{path}"),
            text: format!("MARKER of {path}\n"),
        };
        for format in ["infill", "openai", "ollama"] {
            let policy = policy(&format!(
                r#"{{"url": "http://h", "format": "{format}", "template": "qwen", "denyPaths": ["**/secrets/**", "*.env", "/w/private.rs"]}}"#
            ));
            let mut request = request("file:///w/src/a.rs", Trigger::Invoked, "\n}\n");
            request.context.preamble.path = "src/a.rs".into();
            request.context.preamble.snippets = vec![
                snippet("secrets/keys.rs"),
                snippet("prod.env"),
                snippet("private.rs"),
                snippet("lib/ok.rs"),
            ];
            assert_eq!(check(&policy, &request), Ok(()));
            let body = crate::format::body(&policy, &request).to_string();
            assert!(body.contains("MARKER of lib/ok.rs"), "{format}: {body}");
            assert_eq!(body.matches("MARKER").count(), 1, "{format}: {body}");
        }
        // Nor from outside the workspace folders the policy names, however spelled.
        let policy = policy(r#"{"url": "http://h", "workspaces": ["/w/"]}"#);
        let mut request = request("file:///w/src/a.rs", Trigger::Invoked, "\n}\n");
        request.context.preamble.snippets = vec![
            Snippet {
                path: "/work/x.rs".into(),
                source: "/w/../work/x.rs".into(),
                text: "MARKER outside\n".into(),
            },
            snippet("lib/ok.rs"),
        ];
        let kept: Vec<&str> = allowed_snippets(&policy, &request)
            .map(|s| s.path.as_str())
            .collect();
        assert_eq!(kept, ["lib/ok.rs"]);
    }

    #[test]
    fn languages_workspaces_and_lines_narrow_it() {
        let policy = policy(
            r#"{"url": "http://h", "languages": ["python"], "workspaces": ["/team/"], "lines": "multi"}"#,
        );
        let rust = request("file:///team/a.rs", Trigger::Invoked, "\n}\n");
        assert_eq!(check(&policy, &rust), Err(Local::NotAllowed));
        let mut python = rust.clone();
        python.context.language_id = "python".into();
        assert_eq!(check(&policy, &python), Ok(()));
        python.document = "file:///teammate/a.py".into();
        assert_eq!(check(&policy, &python), Err(Local::NotAllowed));
        // Code right of the cursor: a single-line completion.
        let single = request("file:///team/a.rs", Trigger::Invoked, "x }\n");
        let mut single_python = single.clone();
        single_python.context.language_id = "python".into();
        assert!(!single_python.stop.multi_line());
        assert_eq!(check(&policy, &single_python), Err(Local::NotAllowed));
    }
}
