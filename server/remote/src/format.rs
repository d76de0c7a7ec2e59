//! The wire formats: a request body built from the same [`CompletionContext`] the
//! local engine gets, and the text in each streamed event.
//!
//! The start of every prompt stays stable across keystrokes as the local one does:
//! material from other files and the outline come first, the window's lines next,
//! and the cursor line last (llama.cpp's `prompt` field), so a server's prefix
//! cache (`cache_prompt`, vLLM/SGLang prefix caching) keeps all but the end.
//!
//! [`CompletionContext`]: inkling_core::context::CompletionContext

use inkling_core::context::CompletionContext;
use inkling_core::generate::CompletionRequest;
use serde_json::{Value, json};

use crate::config::{Format, Resolved};
use crate::policy::allowed_snippets;

/// The text of the lines before the cursor line (the window's part that a
/// keystroke does not change) and the cursor line up to the cursor.
fn split_cursor_line(context: &CompletionContext) -> (&str, &str) {
    let at = context.prefix.len() - context.line_prefix.len().min(context.prefix.len());
    context.prefix.split_at(at)
}

/// Other files' material (none from a denied file) and the outline as comments
/// ahead of the window, for formats that take one prompt text (as the local prompt
/// does for models without file separators).
fn commented_preamble(policy: &Resolved, request: &CompletionRequest) -> String {
    let preamble = &request.context.preamble;
    let marker = if preamble.comment.is_empty() {
        "//"
    } else {
        &preamble.comment
    };
    let mut text = String::new();
    for snippet in allowed_snippets(policy, request) {
        text.push_str(&format!("{marker} {}\n", snippet.path));
        for line in snippet.text.lines() {
            text.push_str(&format!("{marker} {line}\n"));
        }
    }
    text.push_str(&preamble.outline);
    text
}

/// The prompt text of `openai` and `ollama` requests: the commented preamble and
/// the window, laid out with the family's FIM markers when configured, else the
/// prefix alone.
fn raw_prompt(policy: &Resolved, request: &CompletionRequest) -> String {
    let context = &request.context;
    let prefix = format!("{}{}", commented_preamble(policy, request), context.prefix);
    match policy.fim {
        Some(fim) => fim.prompt(&prefix, &context.suffix),
        None => prefix,
    }
}

/// A stable 64-bit FNV-1a hash: the same key in every process and version.
pub fn stable_hash(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The request body for `request`.
pub fn body(policy: &Resolved, request: &CompletionRequest) -> Value {
    let context = &request.context;
    let mut body = match policy.format {
        Format::Infill => {
            let (lines_before, cursor_line) = split_cursor_line(context);
            let preamble = &context.preamble;
            let mut extra: Vec<Value> = allowed_snippets(policy, request)
                .map(|s| json!({"filename": s.path, "text": s.text}))
                .collect();
            if !preamble.outline.is_empty() {
                extra.push(json!({"filename": preamble.path, "text": preamble.outline}));
            }
            let mut body = json!({
                "input_prefix": lines_before,
                "input_suffix": context.suffix,
                "input_extra": extra,
                "prompt": cursor_line,
                "n_predict": request.max_tokens,
                "t_max_predict_ms": request.generation_time_limit.as_millis() as u64,
                "cache_prompt": true,
                "samplers": ["top_k"],
                "top_k": 1,
                "stream": true,
            });
            if let Some(slots) = policy.slots {
                body["id_slot"] = json!(stable_hash(&request.document) % u64::from(slots));
            }
            body
        }
        Format::Openai => {
            let mut body = json!({
                "prompt": raw_prompt(policy, request),
                "max_tokens": request.max_tokens,
                "temperature": 0,
                "stream": true,
            });
            if policy.fim.is_none() {
                body["suffix"] = json!(context.suffix);
            }
            body
        }
        Format::Ollama => json!({
            "prompt": raw_prompt(policy, request),
            "raw": true,
            "stream": true,
            "options": {"num_predict": request.max_tokens, "temperature": 0},
        }),
    };
    if let (Some(model), Format::Openai | Format::Ollama) = (&policy.model, policy.format) {
        body["model"] = json!(model);
    }
    body
}

/// What one streamed event says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chunk {
    /// Text to append.
    pub text: String,
    /// The server says the answer is complete.
    pub done: bool,
    /// It stopped at its token limit.
    pub length: bool,
}

/// The error `type` an inkling endpoint answers a request with when a newer request
/// (maybe another client's) took its engine: the request is gone, the server is fine.
pub const SUPERSEDED: &str = "superseded";

/// Whether `body` (an error answer, or a stream's error event) says the request was
/// superseded at the server (see [`SUPERSEDED`]).
pub fn superseded(body: &str) -> bool {
    serde_json::from_str::<Value>(body.trim())
        .is_ok_and(|v| v["error"]["type"].as_str() == Some(SUPERSEDED))
}

/// Reads one event's data (an SSE `data:` field, or an NDJSON line). OpenAI's
/// `[DONE]` ends the stream; anything that is not the format's JSON is an error.
pub fn parse_event(format: Format, data: &str) -> Result<Chunk, String> {
    let data = data.trim();
    if format == Format::Openai && data == "[DONE]" {
        return Ok(Chunk {
            text: String::new(),
            done: true,
            length: false,
        });
    }
    let value: Value = serde_json::from_str(data).map_err(|e| format!("not a JSON event ({e})"))?;
    if let Some(error) = value.get("error").filter(|e| !e.is_null()) {
        return Err(format!("the server reported an error: {error}"));
    }
    let text = |v: Option<&Value>| -> Result<String, String> {
        match v {
            Some(Value::String(s)) => Ok(s.clone()),
            None | Some(Value::Null) => Ok(String::new()),
            Some(other) => Err(format!("text is not a string: {other}")),
        }
    };
    match format {
        Format::Infill => {
            let done = value
                .get("stop")
                .and_then(Value::as_bool)
                .ok_or("no `stop` field")?;
            Ok(Chunk {
                text: text(value.get("content"))?,
                done,
                length: value.get("stop_type").and_then(Value::as_str) == Some("limit"),
            })
        }
        Format::Openai => {
            let choice = value
                .get("choices")
                .and_then(|c| c.get(0))
                .ok_or("no `choices`")?;
            let finish = choice.get("finish_reason").and_then(Value::as_str);
            Ok(Chunk {
                text: text(choice.get("text"))?,
                done: finish.is_some(),
                length: finish == Some("length"),
            })
        }
        Format::Ollama => {
            let done = value
                .get("done")
                .and_then(Value::as_bool)
                .ok_or("no `done` field")?;
            Ok(Chunk {
                text: text(value.get("response"))?,
                done,
                length: value.get("done_reason").and_then(Value::as_str) == Some("length"),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use inkling_core::context::Snippet;
    use inkling_core::postprocess::Trigger;

    use crate::config::RemoteConfig;
    use crate::policy::tests::request;

    fn policy(json: &str) -> Resolved {
        json.parse::<RemoteConfig>().unwrap().resolve().unwrap()
    }

    #[test]
    fn infill_bodies_carry_our_material_and_a_stable_slot() {
        let policy = policy(r#"{"url": "http://h", "slots": 4}"#);
        let mut request = request("file:///w/a.rs", Trigger::Invoked, "\n}\n");
        request.context.preamble.snippets.push(Snippet {
            path: "b.rs".into(),
            source: "/w/b.rs".into(),
            text: "fn helper() {}\n".into(),
        });
        let body = body(&policy, &request);
        assert_eq!(body["input_prefix"], "fn main() {\n");
        assert_eq!(body["prompt"], "    ");
        assert_eq!(body["input_suffix"], "\n}\n");
        assert_eq!(body["input_extra"][0]["filename"], "b.rs");
        assert_eq!(body["cache_prompt"], true);
        assert_eq!(body["stream"], true);
        let slot = body["id_slot"].as_u64().unwrap();
        assert!(slot < 4);
        assert_eq!(stable_hash("file:///w/a.rs") % 4, slot);
        assert_eq!(stable_hash("abc"), 0xe71f_a219_0541_574b);
    }

    #[test]
    fn openai_bodies_send_suffix_or_a_laid_out_prompt() {
        let request = request("file:///w/a.rs", Trigger::Invoked, "\n}\n");
        let plain = body(
            &policy(r#"{"url": "http://h", "format": "openai", "model": "m"}"#),
            &request,
        );
        assert_eq!(plain["prompt"], "fn main() {\n    ");
        assert_eq!(plain["suffix"], "\n}\n");
        assert_eq!(plain["model"], "m");
        let vllm = body(
            &policy(r#"{"url": "http://h", "preset": "vllm", "template": "qwen"}"#),
            &request,
        );
        assert_eq!(
            vllm["prompt"],
            "<|fim_prefix|>fn main() {\n    <|fim_suffix|>\n}\n<|fim_middle|>"
        );
        assert!(vllm.get("suffix").is_none());
        let ollama = body(
            &policy(r#"{"url": "http://h", "preset": "ollama", "template": "qwen"}"#),
            &request,
        );
        assert_eq!(ollama["raw"], true);
        assert_eq!(ollama["options"]["num_predict"], 64);
    }

    #[test]
    fn events_of_each_format_are_read() {
        let infill = parse_event(Format::Infill, r#"{"content": "x", "stop": false}"#).unwrap();
        assert_eq!((infill.text.as_str(), infill.done), ("x", false));
        let last = parse_event(
            Format::Infill,
            r#"{"content": "", "stop": true, "stop_type": "limit"}"#,
        )
        .unwrap();
        assert!(last.done && last.length);
        let openai = parse_event(
            Format::Openai,
            r#"{"choices": [{"text": "y", "finish_reason": null}]}"#,
        )
        .unwrap();
        assert_eq!((openai.text.as_str(), openai.done), ("y", false));
        assert!(parse_event(Format::Openai, "[DONE]").unwrap().done);
        let ollama = parse_event(Format::Ollama, r#"{"response": "z", "done": true}"#).unwrap();
        assert_eq!((ollama.text.as_str(), ollama.done), ("z", true));
        for garbage in [
            "<html>",
            r#"{"content": 3, "stop": false}"#,
            r#"{"choices": []}"#,
            r#"{"error": "boom"}"#,
        ] {
            assert!(
                parse_event(Format::Infill, garbage).is_err()
                    || parse_event(Format::Openai, garbage).is_err(),
                "{garbage}"
            );
        }
        assert!(parse_event(Format::Infill, "<html>").is_err());
        assert!(parse_event(Format::Openai, r#"{"choices": []}"#).is_err());
    }
}
