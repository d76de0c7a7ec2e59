//! The JSON shapes of inkling's own LSP messages (`inkling/stats`,
//! `inkling/prompt`, `inkling/status`, `inkling/partialCompletion`, and the
//! acceptance reports `inkling/didShow`, `inkling/didAccept`, `inkling/didDismiss`
//! with the items' `inkling.didAccept` command), converted from the core's and the
//! engine's types. They live here, at the edge, so that renaming a field inside
//! never changes what clients read; the tests pin every field name.

use inkling_core::workspace::WorkspaceStats;
use inkling_engine::{CountersSnapshot, EngineState, PromptView};
use inkling_remote::hedge::Snapshot;
use inkling_remote::stats::{BackendStats, Samples};
use serde::{Deserialize, Serialize};
use tower_lsp_server::ls_types::{Command, Position, Uri};

use crate::acceptance::{self, AcceptanceStats, ItemId};
use crate::suggest::{self, PrefetchStats};

/// Running totals of the work done for requests (or, under `prefetch`, for
/// prefetches).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Counters {
    /// Requests received.
    pub requests: u64,
    /// Requests that ended cancelled.
    pub cancelled: u64,
    /// Prompt tokens decoded.
    pub prompt_tokens_evaluated: u64,
    /// Prompt tokens whose KV entries were reused.
    pub prompt_tokens_reused: u64,
    /// Tokens generated.
    pub generated_tokens: u64,
    /// Requests answered from the typed-through cache, without the model.
    pub typed_through: u64,
    /// Prompt tokens reused by moving their KV entries into place (part of `reused`).
    pub prompt_tokens_shifted: u64,
    /// Requests whose document's saved cache was restored.
    pub warm_restores: u64,
    /// Tokens drafted for speculative decoding.
    pub drafted_tokens: u64,
    /// Drafted tokens the model confirmed.
    pub accepted_tokens: u64,
    /// Time spent on prompts, in microseconds.
    pub prompt_micros: u64,
    /// Time spent generating, in microseconds.
    pub generation_micros: u64,
    /// Tokens of the prompts built.
    pub prompt_tokens: u64,
    /// Tokens of each prompt equal to the same document's previous prompt.
    pub prompt_tokens_unchanged: u64,
    /// Time spent building prompts (layout and tokenization), in microseconds.
    pub prompt_build_micros: u64,
    /// Requests answered from a short prompt while the full one was not decoded far
    /// enough (a document just opened).
    pub short_prompts: u64,
}

impl Counters {
    /// The engine's counters, with the requests the pipeline answered from the
    /// typed-through cache counted among the requests, and those cancelled before
    /// they reached the engine among the cancelled ones.
    pub fn new(engine: CountersSnapshot, typed_through: u64, cancelled_early: u64) -> Counters {
        Counters {
            requests: engine.requests + typed_through + cancelled_early,
            cancelled: engine.cancelled + cancelled_early,
            prompt_tokens_evaluated: engine.prompt_tokens_evaluated,
            prompt_tokens_reused: engine.prompt_tokens_reused,
            generated_tokens: engine.generated_tokens,
            typed_through,
            prompt_tokens_shifted: engine.prompt_tokens_shifted,
            warm_restores: engine.warm_restores,
            drafted_tokens: engine.drafted_tokens,
            accepted_tokens: engine.accepted_tokens,
            prompt_micros: engine.prompt_micros,
            generation_micros: engine.generation_micros,
            prompt_tokens: engine.prompt_tokens,
            prompt_tokens_unchanged: engine.prompt_tokens_unchanged,
            prompt_build_micros: engine.prompt_build_micros,
            short_prompts: engine.short_prompts,
        }
    }
}

/// Latency percentiles over the most recent requests, in milliseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Latency {
    /// Requests the percentiles are computed over.
    pub samples: usize,
    /// Median.
    pub p50_ms: f64,
    /// 95th percentile.
    pub p95_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
}

impl From<suggest::Latency> for Latency {
    fn from(latency: suggest::Latency) -> Latency {
        Latency {
            samples: latency.samples,
            p50_ms: latency.p50_ms,
            p95_ms: latency.p95_ms,
            p99_ms: latency.p99_ms,
        }
    }
}

/// What prefetching did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Prefetch {
    /// The engine's work on prefetches (not part of the request counters).
    #[serde(flatten)]
    pub engine: Counters,
    /// Prefetches that left an answer in the typed-through cache.
    pub answers: u64,
    /// Requests answered from a prefetched answer (after accepting, or typing on).
    pub hits: u64,
    /// Prompts brought into the cache in the background (a document opened, a
    /// prompt a request ran out of time on).
    pub warmed: u64,
}

impl Prefetch {
    /// The pipeline's prefetch figures with the engine's background counters.
    pub fn new(engine: CountersSnapshot, stats: PrefetchStats) -> Prefetch {
        Prefetch {
            engine: Counters::new(engine, 0, 0),
            answers: stats.answers,
            hits: stats.hits,
            warmed: stats.warmed,
        }
    }
}

/// The workspace index and the ring of chunks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Workspace {
    /// Files in the index.
    pub indexed_files: usize,
    /// Names with definitions in the index.
    pub indexed_names: usize,
    /// Chunks in the ring.
    pub ring_chunks: usize,
    /// Preambles computed (not reused).
    pub preambles_built: u64,
}

impl From<WorkspaceStats> for Workspace {
    fn from(stats: WorkspaceStats) -> Workspace {
        Workspace {
            indexed_files: stats.indexed_files,
            indexed_names: stats.indexed_names,
            ring_chunks: stats.ring_chunks,
            preambles_built: stats.preambles_built,
        }
    }
}

/// The tokens generated for requests (not prefetches) that got their generation,
/// and how many of them the suggestions were made of.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ShownTokens {
    /// Tokens generated.
    pub generated: u64,
    /// Tokens the suggestions were made of (the rest was cut by post-processing).
    pub shown: u64,
    /// `shown / generated` (0 before any).
    pub share: f64,
}

impl From<&suggest::AnswerTokens> for ShownTokens {
    fn from(tokens: &suggest::AnswerTokens) -> ShownTokens {
        let generated = tokens.generated.load(std::sync::atomic::Ordering::Relaxed);
        let shown = tokens.shown.load(std::sync::atomic::Ordering::Relaxed);
        ShownTokens {
            generated,
            shown,
            share: shown as f64 / generated.max(1) as f64,
        }
    }
}

/// The answer to `inkling/stats`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    /// `loading`, `ready` or `failed`.
    pub model_state: String,
    /// Running totals of the requests.
    #[serde(flatten)]
    pub counters: Counters,
    /// Latency from request to answer over the most recent requests.
    pub latency: Latency,
    /// Time to assemble a prompt (context, preamble, layout and tokens).
    pub prompt_assembly: Latency,
    /// The share of generated tokens that reached the user.
    pub shown_tokens: ShownTokens,
    /// The answers computed ahead, for when a suggestion is accepted.
    pub prefetch: Prefetch,
    /// The workspace index and the ring of chunks.
    #[serde(flatten)]
    pub workspace: Workspace,
    /// What became of the suggestions shown, as the editor reported it.
    pub acceptance: Acceptance,
    /// Which backend answered, and how the remote engine (if any) fared.
    pub backends: Backends,
}

/// Milliseconds of a duration.
fn ms(duration: std::time::Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// Percentiles of a backend's times, in milliseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Times {
    /// Samples they are computed over.
    pub samples: usize,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 95th percentile.
    pub p95_ms: f64,
}

impl From<&Samples> for Times {
    fn from(samples: &Samples) -> Times {
        Times {
            samples: samples.len(),
            p50_ms: ms(samples.quantile(0.5)),
            p90_ms: ms(samples.quantile(0.9)),
            p95_ms: ms(samples.quantile(0.95)),
        }
    }
}

/// What one backend did for requests (not prefetches).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Backend {
    /// Requests sent to it.
    pub requests: u64,
    /// Its answers that were used.
    pub wins: u64,
    /// Its requests that failed (remote: connection, status, timeout, stream).
    pub failures: u64,
    /// Its answers with no text (remote: the local engine's answer is used).
    pub empty: u64,
    /// Time to first token (local: of its answers used, the time before it generated).
    pub first_token: Times,
    /// Time to its answers.
    pub total: Times,
}

impl From<&BackendStats> for Backend {
    fn from(stats: &BackendStats) -> Backend {
        Backend {
            requests: stats.requests,
            wins: stats.wins,
            failures: stats.failures,
            empty: stats.empty,
            first_token: (&stats.first_token).into(),
            total: (&stats.total).into(),
        }
    }
}

/// The backends: local, remote, and the hedging between them.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Backends {
    /// The in-process engine.
    pub local: Backend,
    /// The remote engine.
    pub remote: Backend,
    /// The remote's endpoint; `null` when none is configured.
    pub remote_url: Option<String>,
    /// `closed`, `open` or `half-open`; `null` without a remote.
    pub breaker: Option<String>,
    /// Times the breaker opened.
    pub breaker_trips: u64,
    /// Whether a configuration mistake keeps requests local.
    pub misconfigured: bool,
    /// `remote` or `local`: which engine a race starts first now (local while the
    /// remote is measured slower than local); `null` without a remote.
    pub first_leg: Option<String>,
    /// The hedge delay in use, in milliseconds: before the other engine starts too.
    pub hedge_delay_ms: f64,
    /// Races in which the second engine started too: local because the remote had
    /// no first token within the hedge delay (zero while the remote is unmeasured,
    /// and in probes), the remote because local had no answer within it.
    pub hedges: u64,
    /// Races started with the local engine.
    pub local_first: u64,
    /// Answers from the local engine after the remote failed or answered nothing.
    pub fallbacks: u64,
    /// Requests the policy kept local.
    pub kept_local: u64,
    /// Requests the deny-list kept local.
    pub denied: u64,
    /// Requests the open breaker kept local.
    pub skipped_by_breaker: u64,
    /// `local` or `remote`: where the last answer came from; `null` before one.
    pub last_answer_from: Option<String>,
}

impl From<Snapshot> for Backends {
    fn from(snapshot: Snapshot) -> Backends {
        let stats = &snapshot.stats;
        Backends {
            local: (&stats.local).into(),
            remote: (&stats.remote).into(),
            remote_url: snapshot.endpoint.clone(),
            breaker: snapshot.breaker.map(str::to_owned),
            breaker_trips: snapshot.breaker_trips,
            misconfigured: snapshot.misconfigured,
            first_leg: snapshot.order.map(|o| o.first().to_owned()),
            hedge_delay_ms: ms(snapshot.hedge_delay()),
            hedges: stats.hedges,
            local_first: stats.local_first,
            fallbacks: stats.fallbacks,
            kept_local: stats.kept_local,
            denied: stats.denied,
            skipped_by_breaker: stats.skipped_by_breaker,
            last_answer_from: stats.last_source.map(|s| s.name().to_owned()),
        }
    }
}

/// What became of suggestions shown: counted from the editor's reports, kept in
/// memory, never sent anywhere but in `inkling/stats`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AcceptanceCounts {
    /// Suggestions shown (accepted or dismissed ones count as shown).
    pub shown: u64,
    /// Suggestions accepted whole.
    pub accepted: u64,
    /// Suggestions of which only a start was accepted (word or line).
    pub partly_accepted: u64,
    /// Suggestions dismissed with nothing accepted.
    pub dismissed: u64,
    /// (accepted + partlyAccepted) / shown; 0 before any was shown.
    pub acceptance_rate: f64,
    /// Characters inserted by accepting (not those typed).
    pub characters_accepted: u64,
}

impl From<acceptance::Counts> for AcceptanceCounts {
    fn from(counts: acceptance::Counts) -> AcceptanceCounts {
        AcceptanceCounts {
            shown: counts.shown,
            accepted: counts.accepted,
            partly_accepted: counts.partly_accepted,
            dismissed: counts.dismissed,
            acceptance_rate: counts.acceptance_rate(),
            characters_accepted: counts.characters_accepted,
        }
    }
}

/// The `acceptance` object of `inkling/stats`: the counts in total, and split by
/// trigger and by single- or multi-line suggestion.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Acceptance {
    /// All suggestions.
    #[serde(flatten)]
    pub total: AcceptanceCounts,
    /// Suggestions asked for while typing.
    pub automatic: AcceptanceCounts,
    /// Suggestions the user asked for.
    pub invoked: AcceptanceCounts,
    /// Suggestions of one line.
    pub single_line: AcceptanceCounts,
    /// Suggestions of several lines.
    pub multi_line: AcceptanceCounts,
}

impl From<AcceptanceStats> for Acceptance {
    fn from(stats: AcceptanceStats) -> Acceptance {
        Acceptance {
            total: stats.total.into(),
            automatic: stats.automatic.into(),
            invoked: stats.invoked.into(),
            single_line: stats.single_line.into(),
            multi_line: stats.multi_line.into(),
        }
    }
}

/// The command on every item inkling answers with; editors run it after accepting
/// the item (generic clients through `workspace/executeCommand`).
pub const ACCEPT_COMMAND: &str = "inkling.didAccept";

/// One item of one answer: the parameters of `inkling/didShow` and
/// `inkling/didDismiss`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SuggestionId {
    /// The answer's id.
    pub answer: u64,
    /// The item's index in the answer.
    pub item: usize,
}

impl From<SuggestionId> for ItemId {
    fn from(id: SuggestionId) -> ItemId {
        ItemId {
            answer: id.answer,
            item: id.item,
        }
    }
}

impl SuggestionId {
    /// The item's command: [`ACCEPT_COMMAND`] with a [`DidAccept`] of the whole item.
    pub fn accept_command(self) -> Command {
        let accepted = DidAccept {
            answer: self.answer,
            item: self.item,
            accepted_length: None,
        };
        Command {
            title: "inkling: count the accepted suggestion".into(),
            command: ACCEPT_COMMAND.into(),
            arguments: Some(vec![
                serde_json::to_value(accepted).expect("plain numbers serialize"),
            ]),
        }
    }
}

/// The parameters of `inkling/didAccept` and the argument of [`ACCEPT_COMMAND`]:
/// an item accepted, whole or (with `acceptedLength`) its first characters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DidAccept {
    /// The answer's id.
    pub answer: u64,
    /// The item's index in the answer.
    pub item: usize,
    /// How many characters (Unicode scalar values) from the item's start are
    /// accepted so far; absent: all of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accepted_length: Option<usize>,
}

impl DidAccept {
    /// The item accepted.
    pub fn item(self) -> ItemId {
        ItemId {
            answer: self.answer,
            item: self.item,
        }
    }
}

/// The answer to `inkling/prompt`: the prompt the model would get at a position.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PromptAnswer {
    /// The template's family.
    pub template: String,
    /// The prompt's tokens.
    pub tokens: Vec<i32>,
    /// The tokens' text, special tokens spelled out.
    pub text: String,
    /// Each token's text (a token may hold part of a character: lossy).
    pub pieces: Vec<String>,
    /// The text the first generated token must start with (token healing).
    pub healed: String,
    /// The document's path in the workspace.
    pub path: String,
}

impl PromptAnswer {
    /// The engine's view of a prompt, for the document at `path`.
    pub fn new(prompt: PromptView, path: String) -> PromptAnswer {
        PromptAnswer {
            template: prompt.template,
            tokens: prompt.tokens,
            text: prompt.text,
            pieces: prompt.pieces,
            healed: prompt.healed,
            path,
        }
    }
}

/// The model's state as our own editor integrations show it (status bar, etc.):
/// the parameters of `inkling/status`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModelStatus {
    /// `loading`, `ready` or `failed`.
    pub state: String,
    /// What is happening, or what went wrong.
    pub message: String,
    /// Loading progress, 0–100, when known.
    pub percent: Option<u32>,
    /// Where the last answer came from (`local` or `remote`): sent, with the model's
    /// state, when that changes while a remote engine is configured; absent otherwise
    /// (unchanged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_answer_from: Option<String>,
}

impl ModelStatus {
    /// The status clients see for an engine state.
    pub fn of(state: &EngineState) -> ModelStatus {
        match state {
            EngineState::Loading { message, percent } => ModelStatus {
                state: "loading".into(),
                message: message.clone(),
                percent: *percent,
                last_answer_from: None,
            },
            EngineState::Ready(info) => ModelStatus {
                state: "ready".into(),
                message: info.describe(),
                percent: Some(100),
                last_answer_from: None,
            },
            EngineState::Failed(error) => ModelStatus {
                state: "failed".into(),
                message: error.clone(),
                percent: None,
                last_answer_from: None,
            },
        }
    }
}

/// The parameters of `inkling/partialCompletion`: the text generated so far for a
/// request, before post-processing (the final answer may be shorter).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PartialCompletion {
    /// The document.
    pub uri: Uri,
    /// The document version the text is generated for.
    pub version: i32,
    /// Where the text would be inserted.
    pub position: Position,
    /// The text so far.
    pub text: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// The field names of `value`'s JSON object, sorted.
    fn fields(value: impl Serialize) -> Vec<String> {
        let Value::Object(map) = serde_json::to_value(value).unwrap() else {
            panic!("not an object");
        };
        let mut names: Vec<String> = map.keys().cloned().collect();
        names.sort();
        names
    }

    fn sorted(names: &[&str]) -> Vec<String> {
        let mut names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        names.sort();
        names
    }

    const COUNTERS: [&str; 16] = [
        "requests",
        "cancelled",
        "promptTokensEvaluated",
        "promptTokensReused",
        "generatedTokens",
        "typedThrough",
        "promptTokensShifted",
        "warmRestores",
        "draftedTokens",
        "acceptedTokens",
        "promptMicros",
        "generationMicros",
        "promptTokens",
        "promptTokensUnchanged",
        "promptBuildMicros",
        "shortPrompts",
    ];

    #[test]
    fn stats_field_names_are_pinned() {
        let stats = Stats {
            model_state: "ready".into(),
            counters: Counters::default(),
            latency: Latency::default(),
            prompt_assembly: Latency::default(),
            shown_tokens: ShownTokens::default(),
            prefetch: Prefetch::default(),
            workspace: Workspace::default(),
            acceptance: Acceptance::default(),
            backends: Backends::default(),
        };
        let mut expected = COUNTERS.to_vec();
        expected.extend([
            "backends",
            "acceptance",
            "modelState",
            "latency",
            "promptAssembly",
            "shownTokens",
            "prefetch",
            "indexedFiles",
            "indexedNames",
            "ringChunks",
            "preamblesBuilt",
        ]);
        assert_eq!(fields(&stats), sorted(&expected));
        assert_eq!(
            fields(Latency::default()),
            sorted(&["samples", "p50Ms", "p95Ms", "p99Ms"])
        );
        assert_eq!(
            fields(ShownTokens::default()),
            sorted(&["generated", "shown", "share"])
        );
        let mut prefetch = COUNTERS.to_vec();
        prefetch.extend(["answers", "hits", "warmed"]);
        assert_eq!(fields(Prefetch::default()), sorted(&prefetch));
        assert_eq!(
            fields(Backends::default()),
            sorted(&[
                "local",
                "remote",
                "remoteUrl",
                "breaker",
                "breakerTrips",
                "misconfigured",
                "firstLeg",
                "hedgeDelayMs",
                "hedges",
                "localFirst",
                "fallbacks",
                "keptLocal",
                "denied",
                "skippedByBreaker",
                "lastAnswerFrom",
            ])
        );
        assert_eq!(
            fields(Backend::default()),
            sorted(&[
                "requests",
                "wins",
                "failures",
                "empty",
                "firstToken",
                "total"
            ])
        );
        assert_eq!(
            fields(Times::default()),
            sorted(&["samples", "p50Ms", "p90Ms", "p95Ms"])
        );
    }

    #[test]
    fn typed_through_answers_count_as_requests() {
        let engine = CountersSnapshot {
            requests: 3,
            ..CountersSnapshot::default()
        };
        let counters = Counters::new(engine, 2, 1);
        assert_eq!((counters.requests, counters.typed_through), (6, 2));
        assert_eq!(counters.cancelled, 1);
    }

    #[test]
    fn prompt_status_and_partial_field_names_are_pinned() {
        let prompt = PromptAnswer::new(
            PromptView {
                template: "prefix-only".into(),
                tokens: vec![1],
                text: "a".into(),
                pieces: vec!["a".into()],
                healed: String::new(),
            },
            "a.py".into(),
        );
        assert_eq!(
            fields(&prompt),
            sorted(&["template", "tokens", "text", "pieces", "healed", "path"])
        );
        let status = ModelStatus::of(&EngineState::Failed("no".into()));
        assert_eq!(fields(&status), sorted(&["state", "message", "percent"]));
        let status = ModelStatus {
            last_answer_from: Some("remote".into()),
            ..status
        };
        assert_eq!(
            fields(&status),
            sorted(&["state", "message", "percent", "lastAnswerFrom"])
        );
        let partial = PartialCompletion {
            uri: "file:///a.py".parse().unwrap(),
            version: 1,
            position: Position::new(0, 0),
            text: String::new(),
        };
        assert_eq!(
            fields(&partial),
            sorted(&["uri", "version", "position", "text"])
        );
    }

    const ACCEPTANCE_COUNTS: [&str; 6] = [
        "shown",
        "accepted",
        "partlyAccepted",
        "dismissed",
        "acceptanceRate",
        "charactersAccepted",
    ];

    #[test]
    fn acceptance_field_names_are_pinned() {
        assert_eq!(
            fields(AcceptanceCounts::default()),
            sorted(&ACCEPTANCE_COUNTS)
        );
        let mut acceptance = ACCEPTANCE_COUNTS.to_vec();
        acceptance.extend(["automatic", "invoked", "singleLine", "multiLine"]);
        assert_eq!(fields(Acceptance::default()), sorted(&acceptance));

        let id = SuggestionId { answer: 7, item: 1 };
        assert_eq!(fields(id), sorted(&["answer", "item"]));
        let partly = DidAccept {
            answer: 7,
            item: 1,
            accepted_length: Some(3),
        };
        assert_eq!(
            fields(partly),
            sorted(&["answer", "item", "acceptedLength"])
        );
        let command = id.accept_command();
        assert_eq!(command.command, "inkling.didAccept");
        assert_eq!(
            command.arguments,
            Some(vec![serde_json::json!({"answer": 7, "item": 1})])
        );
        // What clients send back is read with the same names.
        let read: DidAccept = serde_json::from_value(
            serde_json::json!({"answer": 7, "item": 1, "acceptedLength": 3}),
        )
        .unwrap();
        assert_eq!(read, partly);
        let whole: DidAccept =
            serde_json::from_value(command.arguments.unwrap()[0].clone()).unwrap();
        assert_eq!((whole.item(), whole.accepted_length), (id.into(), None));
    }
}
