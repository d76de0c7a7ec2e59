//! The session: the loaded model's state on the worker thread, and one request's
//! run through it — document switch, prompt, KV reuse, prompt decoding under its
//! time limit, then greedy generation with verified drafts and the stop rules.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use inkling_core::candidates;
use inkling_core::context::CompletionContext;
use inkling_core::generate::{BackendError, CancelFlag, CompletionRequest, Generation, StopReason};
use inkling_core::postprocess;
use inkling_core::prompt::{self, CachingTokenizer, Prompt};
use inkling_core::template::{Family, Template};
use inkling_core::tokens::Token;
use inkling_core::tokens::Tokenizer;
use llama_cpp_2::token::LlamaToken;
use llama_cpp_2::vocab::LlamaVocab;

use crate::counters::{Counters, Tallies};
use crate::draft::{Drafter, MAX_DRAFT, MIN_BATCH_MARGIN, greedy};
use crate::kv_plan::{ReusePlan, common_prefix};
use crate::options::EngineOptions;
use crate::sequence::{BACKGROUND_CHUNK, Interrupt, LogitsAt, PROMPT_CHUNK, Sequence};
use crate::slots::Slots;
use crate::state::PromptView;
use crate::vocab::VocabTokenizer;

/// Most cached tokens a background job (a prefetch) may discard from its slot.
pub const MAX_BACKGROUND_DISCARD: usize = 256;

/// Most tokens of the window before the cursor in a short prompt: one that a fresh
/// document's warming brings in within about a second here, so that its first
/// keystrokes are answered while the full prompt is still being decoded.
const SHORT_PREFIX_TOKENS: usize = 256;

/// How long a person looks at a file before typing in it, about: a warm that can
/// bring a full prompt in within it does not bring a short one in first.
const LOOK: Duration = Duration::from_millis(1500);

/// Prompt decoding speed assumed until one is measured, in tokens per second (this
/// machine's is about 200 with the default model).
const ASSUMED_PROMPT_RATE: f64 = 150.0;

/// The full prompt's share (1/n) of a request's prompt time limit: the most of it a
/// request decodes itself while a short prompt could answer at once, and what a
/// request answered from a short prompt owes it, paid after the answer is sent (see
/// [`OwedShare`]).
const FULL_PROMPT_SHARE: u32 = 3;

/// Fewest tokens a fill must decode for its speed to count.
const RATE_SAMPLE_TOKENS: usize = 32;

/// Where the first line of `text` with something other than blanks on it ends (its
/// line break), once it has ended: an answer's first line, or after a line break
/// (at the end of `def f():`), the line below.
fn first_code_line_end(text: &str) -> Option<usize> {
    let start = text.find(|c: char| !c.is_whitespace())?;
    text[start..].find('\n').map(|end| start + end)
}

/// The slot of `document`'s short prompt.
fn short_slot(document: &str) -> String {
    format!("{document}\u{0}short")
}

/// Decoding a request answered from a short prompt owes its full prompt, done after
/// the answer is sent so that the answer is not kept waiting for it, and before the
/// next job so that keystrokes coming without a pause still bring the full prompt in.
struct OwedShare {
    document: String,
    prompt: Vec<Token>,
    time: Duration,
}

/// The answer as it is generated: its text, and the request's stop rules and limits.
struct Output<'r> {
    request: &'r CompletionRequest,
    text: Utf8Stream,
    generated: usize,
    /// Whether the text goes to the request's partial sink (the first candidate's).
    streamed: bool,
    /// The text's length after each token.
    token_ends: Vec<usize>,
    /// Where the answer ends besides the stop rules.
    line_limit: LineLimit,
}

/// Where an answer ends besides the stop rules.
#[derive(Clone, Copy, PartialEq, Eq)]
enum LineLimit {
    /// Nowhere else.
    Rules,
    /// At its first line break (a seeded candidate: one statement).
    FirstLine,
    /// At the end of its first line with code (a short prompt's stand-in: after
    /// `def f():`, the line below).
    FirstCodeLine,
}

impl<'r> Output<'r> {
    fn new(request: &'r CompletionRequest, streamed: bool) -> Output<'r> {
        Output {
            request,
            text: Utf8Stream::default(),
            generated: 0,
            streamed,
            token_ends: Vec::new(),
            line_limit: LineLimit::Rules,
        }
    }

    /// Where the answer ends in the text so far, if that is known (see
    /// `StopRules::end_of_answer`).
    fn end(&self, finished: bool) -> Option<usize> {
        let text = self.text.as_str();
        let rules = self.request.stop.end_of_answer(text, finished);
        let line_end = match self.line_limit {
            LineLimit::Rules => None,
            LineLimit::FirstLine => text.find('\n'),
            LineLimit::FirstCodeLine => first_code_line_end(text),
        };
        match (rules, line_end) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The text up to where the stop rules end it, generation being over.
    fn answer(&self) -> &str {
        let text = self.text.as_str();
        &text[..self.end(true).unwrap_or(text.len())]
    }

    /// Whether the answer ends before a token that leads the runner-up by `lead`
    /// logits (see [`CompletionRequest::stop_when_unsure`]).
    fn ends_unsure(&self, lead: f32) -> bool {
        let text = self.text.as_str();
        // And not where the stop rules would then end it sooner (inside a string
        // that must end on its line, the whole line would go).
        self.request.stop_when_unsure
            && ends_unsure(text, lead)
            && self
                .request
                .stop
                .end_of_answer(text, true)
                .is_none_or(|end| end >= text.len())
    }

    /// Adds a token's text; returns why generation must end now, if it must.
    fn push(&mut self, piece: &[u8]) -> Option<StopReason> {
        self.text.push(piece);
        self.generated += 1;
        self.token_ends.push(self.text.as_str().len());
        let end = self.end(false);
        let text = self.text.as_str();
        if let Some(partial) = self.request.partial.as_ref().filter(|_| self.streamed) {
            let so_far = &text[..end.unwrap_or(text.len())];
            partial.send(so_far);
        }
        if end.is_some() {
            Some(StopReason::StopRule)
        } else if self.generated >= self.request.max_tokens as usize {
            Some(StopReason::TokenLimit)
        } else {
            None
        }
    }
}

/// A token whose lead over the runner-up is below this many logits (the model
/// finds it less than e ≈ 2.7 times as likely) is one the model is unsure of.
/// Measured on the peer benchmark's typing (README): 0.5 saved fewer characters;
/// 2.0 saved a few more but showed a suggestion on fewer keystrokes, and answered
/// fewer from memory.
const UNSURE_LEAD: f32 = 1.0;

/// Whether an answer that is `so_far` ends before a token leading the runner-up by
/// `lead` logits: the token is unsure, and the answer already has enough text on its
/// first line to be shown (two characters, as post-processing wants) and no other
/// line (what is sure of the line being typed).
fn ends_unsure(so_far: &str, lead: f32) -> bool {
    lead < UNSURE_LEAD && so_far.trim().chars().count() >= 2 && !so_far.contains('\n')
}

/// The worker's state once the model is loaded.
pub(crate) struct Session<'m> {
    target: Sequence<'m>,
    drafter: Drafter<'m>,
    vocab: LlamaVocab<'m>,
    tokenizer: CachingTokenizer<VocabTokenizer<'m>>,
    /// The text of every token, by id (for token healing).
    pieces: Vec<Box<[u8]>>,
    template: Template,
    budget: prompt::Budget,
    /// The budget of a short prompt (see [`SHORT_PREFIX_TOKENS`]).
    short_budget: prompt::Budget,
    /// Measured prompt decoding speed, tokens per second.
    prompt_rate: f64,
    /// Which document's cache `target` holds, and the others' saved caches.
    slots: Slots,
    /// Each document's last prompt, to count the tokens a keystroke left unchanged.
    previous_prompts: HashMap<String, Vec<Token>>,
    tallies: Arc<Tallies>,
    /// Whether the job being run is background work (counted apart).
    background: bool,
    /// What the last request owes its full prompt (see [`Session::pay_owed_share`]).
    owed: Option<OwedShare>,
}

impl<'m> Session<'m> {
    /// A session on a loaded model's sequence, its drafter and its prompt format,
    /// whose other documents' saved caches take at most `saved_states_budget` bytes.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        target: Sequence<'m>,
        drafter: Drafter<'m>,
        vocab: LlamaVocab<'m>,
        tokenizer: CachingTokenizer<VocabTokenizer<'m>>,
        template: Template,
        options: &EngineOptions,
        saved_states_budget: usize,
        tallies: Arc<Tallies>,
    ) -> Session<'m> {
        let pieces = vocab
            .tokens()
            .map(|t| vocab.token_to_piece(t, false, None).into_boxed_slice())
            .collect();
        Session {
            target,
            drafter,
            vocab,
            tokenizer,
            pieces,
            template,
            budget: options.budget,
            short_budget: prompt::Budget {
                prefix_tokens: options.budget.prefix_tokens.min(SHORT_PREFIX_TOKENS),
                extra_tokens: 0,
                ..options.budget
            },
            prompt_rate: ASSUMED_PROMPT_RATE,
            slots: Slots::new(options.warm_states, saved_states_budget),
            previous_prompts: HashMap::new(),
            tallies,
            background: false,
            owed: None,
        }
    }

    /// The counters of the job being run.
    fn counters(&self) -> &Counters {
        self.tallies.of(self.background)
    }

    /// Counts the prompt's tokens, those unchanged since the document's previous prompt
    /// (requests only: background prompts are not compared) and the time it took to
    /// build.
    fn count_prompt(&mut self, document: &str, prompt: &[Token], build_time: Duration) {
        let previous = self
            .previous_prompts
            .get(document)
            .filter(|_| !self.background)
            .map_or(&[][..], Vec::as_slice);
        let unchanged = common_prefix(previous, prompt);
        let add = |counter: &AtomicU64, n: usize| counter.fetch_add(n as u64, Ordering::Relaxed);
        add(&self.counters().prompt_tokens, prompt.len());
        add(&self.counters().prompt_tokens_unchanged, unchanged);
        add(
            &self.counters().prompt_build_micros,
            build_time.as_micros() as usize,
        );
        if self.background {
            // Compared against the requests' own prompts only.
            return;
        }
        if self.previous_prompts.len() >= 64 && !self.previous_prompts.contains_key(document) {
            self.previous_prompts.clear();
        }
        self.previous_prompts
            .insert(document.to_owned(), prompt.to_vec());
    }

    /// Whether `token` ends generation: the vocabulary's end-of-generation tokens and
    /// the template's stop tokens (CodeLlama's `<EOT>`, file separators).
    fn ends_answer(&self, token: LlamaToken) -> bool {
        self.vocab.is_eog(token) || self.template.stop.contains(&token.0)
    }

    /// Runs one completion job: counted, cancellable, a panic contained.
    pub(crate) fn run(&mut self, request: &CompletionRequest) -> Result<Generation, BackendError> {
        self.background = request.background;
        self.counters().requests.fetch_add(1, Ordering::Relaxed);
        let result = if request.cancel.is_cancelled() {
            Err(BackendError::Cancelled)
        } else {
            // A panic here (a bug) fails this request, not the worker: the caches are
            // forgotten, since they may no longer match what they hold.
            std::panic::catch_unwind(AssertUnwindSafe(|| self.generate(request))).unwrap_or_else(
                |_| {
                    self.target.forget();
                    if let Drafter::Model(sequence) = &mut self.drafter {
                        sequence.forget();
                    }
                    Err(BackendError::Failed("generation panicked".into()))
                },
            )
        };
        if result == Err(BackendError::Cancelled) {
            self.counters().cancelled.fetch_add(1, Ordering::Relaxed);
        }
        if result.is_err() {
            // A request given up (cancelled, failed) owes nothing.
            self.owed = None;
        }
        result
    }

    /// Decodes what the last request owes its full prompt (see [`OwedShare`]), as
    /// background work. A failure or a panic (a bug) leaves the cache forgotten, as
    /// in [`Session::run`].
    pub(crate) fn pay_owed_share(&mut self) {
        let Some(owed) = self.owed.take() else {
            return;
        };
        self.background = true;
        let paid = std::panic::catch_unwind(AssertUnwindSafe(|| {
            self.switch_to(&owed.document);
            let started = Instant::now();
            let never = CancelFlag::default();
            let (_, filled) = self.bring_in(
                &never,
                &owed.prompt,
                started,
                Some(owed.time),
                BACKGROUND_CHUNK,
            );
            filled.map(|interrupt| {
                if interrupt.is_none() {
                    // The full prompt is cached whole: its stand-in is no longer needed.
                    self.slots.discard(&short_slot(&owed.document));
                }
            })
        }));
        if !matches!(paid, Ok(Ok(()))) {
            tracing::warn!(document = owed.document, "decoding a full prompt failed");
            self.target.forget();
        }
    }

    /// The prompt for `context`, shown as text.
    pub(crate) fn view(&self, context: &CompletionContext) -> PromptView {
        let prompt = prompt::build(context, &self.template, self.budget, &self.tokenizer);
        let piece = |t: Token| self.vocab.token_to_piece(LlamaToken(t), true, None);
        let text = |tokens: &[Token]| {
            let bytes: Vec<u8> = tokens.iter().flat_map(|&t| piece(t)).collect();
            String::from_utf8_lossy(&bytes).into_owned()
        };
        PromptView {
            template: self.template.family.to_string(),
            text: text(&prompt.tokens),
            pieces: prompt
                .tokens
                .iter()
                .map(|&t| String::from_utf8_lossy(&piece(t)).into_owned())
                .collect(),
            healed: text(prompt.healed.as_slice()),
            tokens: prompt.tokens,
        }
    }

    fn generate(&mut self, request: &CompletionRequest) -> Result<Generation, BackendError> {
        let started = Instant::now();
        let (mut prompt, mut heal) = self.prepare(request)?;
        if self.background && !request.keeps_cache && request.max_tokens == 0 {
            self.warm_short_first(request, &prompt)?;
        }
        let build_time = started.elapsed();
        let mut short_prompt = false;
        let limit = request.prompt_time_limit;
        let (reuse, filled) = match self.short_instead(request, &prompt, started) {
            Some(short) => {
                // The full prompt cannot be decoded in time: the short one answers at
                // once, and the full one gets a share of the time after the answer
                // is sent; what it lacks after that, the next requests and the
                // warming decode.
                self.switch_to(&short_slot(&request.document));
                let full = std::mem::replace(&mut prompt, short.0);
                heal = short.1;
                short_prompt = true;
                self.counters()
                    .short_prompts
                    .fetch_add(1, Ordering::Relaxed);
                self.owed = limit.map(|limit| OwedShare {
                    document: request.document.clone(),
                    prompt: full,
                    time: limit / FULL_PROMPT_SHARE,
                });
                self.bring_in(&request.cancel, &prompt, started, limit, PROMPT_CHUNK)
            }
            None => {
                let chunk = if self.background {
                    BACKGROUND_CHUNK
                } else {
                    PROMPT_CHUNK
                };
                self.bring_in(&request.cancel, &prompt, started, limit, chunk)
            }
        };
        if !short_prompt && matches!(filled, Ok(None)) {
            // The full prompt is cached: its stand-in would only hold a warm state
            // another document could use.
            self.slots.discard(&short_slot(&request.document));
        }
        let prompt_done = started.elapsed();
        let mut output = Output::new(request, true);
        let mut alternatives: Vec<String> = Vec::new();
        let stop_reason = match filled? {
            None => {
                let generation_started = started + prompt_done;
                let at_indentation = {
                    let line = &request.context.line_prefix;
                    !line.is_empty() && line.trim().is_empty()
                };
                let firsts = self.first_tokens(&heal, request.candidates, at_indentation);
                let after_blank = match firsts.as_slice() {
                    [blank] if at_indentation && self.is_blank(*blank) => Some(*blank),
                    _ => None,
                };
                // Names the code below needs defined: unless the first answer defines
                // one, each starts a candidate of its own.
                let names: &[String] = if request.unbound_seeds {
                    &request.context.unbound_names
                } else {
                    &[]
                };
                // A single answer where names are wanted is one line: the greedy one
                // if it defines one, else the first name's if that does, else the
                // greedy answer in full after all.
                let single = request.candidates <= 1 && !names.is_empty();
                // Rescoring, and choosing a name's value, need the prompt's own
                // logits, which generating overwrites.
                let branches = firsts.len() > 1 || after_blank.is_some();
                let rescoring = request.suffix_rescoring && branches;
                let prompt_logits = (rescoring || !single && !names.is_empty())
                    .then(|| self.target.context.get_logits_ith(-1).to_vec());
                let first_seed = names
                    .first()
                    .filter(|_| single)
                    .and_then(|name| self.seed_tokens(&request.context, name, &heal));
                // The greedy answer's first token, chosen from the prompt's logits
                // before an attempt overwrites them (a rewound cache does not bring
                // them back).
                let greedy_first = [if heal.is_empty() {
                    LlamaToken(greedy(self.target.context.get_logits_ith(-1)).0)
                } else {
                    self.healing_token(&heal, LogitsAt(-1))
                }];
                // The answers to try, in order, each (first tokens, where it ends);
                // the last is kept whatever it gives.
                let mut attempts: Vec<(&[LlamaToken], LineLimit)> = Vec::new();
                if short_prompt {
                    // An answer from a short prompt stands in for a moment: its
                    // greedy first line comes soonest.
                    attempts.push((&[], LineLimit::FirstCodeLine));
                } else if single {
                    attempts.push((&greedy_first, LineLimit::FirstLine));
                    attempts.extend(
                        first_seed
                            .as_deref()
                            .map(|seed| (seed, LineLimit::FirstLine)),
                    );
                    attempts.push((&greedy_first, LineLimit::Rules));
                } else {
                    attempts.push((&[], LineLimit::Rules));
                }
                let last = attempts.len() - 1;
                let mut reason = StopReason::StopRule;
                for (i, (forced, line_limit)) in attempts.into_iter().enumerate() {
                    if i > 0 {
                        self.counters()
                            .generated_tokens
                            .fetch_add(output.generated as u64, Ordering::Relaxed);
                        self.rewind_to(prompt.len())?;
                        output = Output::new(request, true);
                    }
                    output.line_limit = line_limit;
                    reason = self.answer(
                        request,
                        &prompt,
                        &heal,
                        &mut output,
                        generation_started,
                        forced,
                    )?;
                    if i == last || candidates::defines(output.answer(), names) {
                        break;
                    }
                }
                if output.line_limit != LineLimit::Rules {
                    // What streamed past the line break is not the answer.
                    let kept = output.answer().len();
                    output.text.text.truncate(kept);
                }
                let greedy = output.answer().to_owned();
                // A single answer has tried its seed already.
                let seeds = if single || candidates::defines(&greedy, names) {
                    &[][..]
                } else {
                    names
                };
                if branches || !seeds.is_empty() {
                    let (mut answers, mut order) = self.candidates(
                        request,
                        &prompt,
                        &heal,
                        Alternatives {
                            seeds,
                            firsts: firsts.get(1..).unwrap_or_default(),
                            after_blank,
                            prompt_logits: prompt_logits.as_deref(),
                        },
                        greedy,
                        prompt_logits.as_deref().filter(|_| rescoring),
                        generation_started,
                    )?;
                    if reason.cuts_last_line() {
                        // The streamed answer is judged, and offered if another wins,
                        // without the line the limit cut (as the pipeline cuts it).
                        answers[0] = postprocess::whole_lines(&answers[0]).to_owned();
                    }
                    order = candidates::finished_first(
                        &order,
                        &answers,
                        &request.context,
                        &request.stop,
                    );
                    order = candidates::binding_first(&order, &answers, names);
                    tracing::debug!(?answers, ?order, "candidates ordered");
                    order.truncate(request.candidates.max(1) as usize);
                    if order[0] != 0 {
                        // Another candidate won: it replaces the streamed one.
                        if let Some(partial) = &request.partial {
                            partial.send(&answers[order[0]]);
                        }
                        output.text.text = answers[order[0]].clone();
                        // Its tokens' ends are not known here: counted in proportion.
                        output.token_ends.clear();
                        // It ended by the stop rules (one a limit cut is dropped): what
                        // ended the streamed one, a limit maybe, would cut its last line.
                        reason = StopReason::StopRule;
                    }
                    alternatives = order[1..].iter().map(|&i| answers[i].clone()).collect();
                }
                reason
            }
            Some(Interrupt::Cancelled) => return Err(BackendError::Cancelled),
            // What was decoded stays cached: the next request carries on from there.
            Some(Interrupt::OutOfTime) => StopReason::PromptTimeLimit,
        };
        let generation_time = started.elapsed() - prompt_done;
        for (counter, value) in [
            (&self.counters().generated_tokens, output.generated as u64),
            (
                &self.counters().prompt_micros,
                prompt_done.as_micros() as u64,
            ),
            (
                &self.counters().generation_micros,
                generation_time.as_micros() as u64,
            ),
        ] {
            counter.fetch_add(value, Ordering::Relaxed);
        }
        tracing::debug!(
            prompt_tokens = prompt.len(),
            reused = reuse.kept,
            shifted = reuse.shifted(),
            generated = output.generated,
            ?stop_reason,
            prompt_ms = prompt_done.as_millis() as u64,
            total_ms = started.elapsed().as_millis() as u64,
            "generation"
        );
        Ok(Generation {
            text: output.text.text,
            alternatives,
            prompt_tokens: prompt.len(),
            reused_tokens: reuse.kept,
            generated_tokens: output.generated,
            token_ends: output.token_ends,
            stop_reason,
            build_time,
            prompt_time: prompt_done,
            generation_time,
            short_prompt,
        })
    }

    /// Makes `slot` (a document's, or its short prompt's) the one in the context.
    fn switch_to(&mut self, slot: &str) {
        if self.slots.switch_to(slot, &mut self.target) {
            self.counters()
                .warm_restores
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The prompt for `context` within `budget`: its tokens, and the text the first
    /// generated token must start with (see `Prompt::healed`).
    fn build(&self, context: &CompletionContext, budget: prompt::Budget) -> (Vec<Token>, Vec<u8>) {
        let Prompt { tokens, healed } =
            prompt::build(context, &self.template, budget, &self.tokenizer);
        let heal = healed.map_or(&[][..], |t| self.piece(t)).to_vec();
        (tokens, heal)
    }

    /// How long decoding `tokens` prompt tokens should take.
    fn decode_time(&self, tokens: usize) -> Duration {
        Duration::from_secs_f64(tokens as f64 / self.prompt_rate)
    }

    /// The short prompt to answer `request` from instead of `prompt`: when the cache
    /// lacks more of `prompt` than its share of the time limit can decode (see
    /// [`FULL_PROMPT_SHARE`]; the answer would come late) and the short prompt's own cache
    /// lacks what half of it can (a fresh document being warmed: an answer from less
    /// context beats none). Only with several warm states, so the full prompt's
    /// cache stays.
    fn short_instead(
        &self,
        request: &CompletionRequest,
        prompt: &[Token],
        started: Instant,
    ) -> Option<(Vec<Token>, Vec<u8>)> {
        if self.background || !self.slots.keeps_several() {
            return None;
        }
        let left = request.prompt_time_limit?.saturating_sub(started.elapsed());
        // At most what the common prefix leaves: enough to decide while typing on.
        let at_most = prompt.len() - common_prefix(&self.target.cached, prompt);
        let share = left / FULL_PROMPT_SHARE;
        // Typing on, the common prefix decides it without a reuse plan per keystroke.
        if self.decode_time(at_most) <= share {
            return None;
        }
        let missing = self.target.missing(&self.target.cached, prompt);
        if self.decode_time(missing) <= share {
            return None;
        }
        let (short, heal) = self.build(&request.context, self.short_budget);
        let cached = self
            .slots
            .tokens_of(&short_slot(&request.document), &self.target);
        let short_missing = self.target.missing(cached, &short);
        // And at most half the cost of the full one (not after an edit both lack).
        let fits = self.decode_time(short_missing) <= left / 2 && short_missing * 2 <= missing;
        (fits && short.len() < prompt.len()).then_some((short, heal))
    }

    /// For a warm whose full prompt `full` lacks more than [`LOOK`] can decode:
    /// brings the short prompt in first (see [`Session::short_instead`]), then
    /// makes the document's slot current again.
    fn warm_short_first(
        &mut self,
        request: &CompletionRequest,
        full: &[Token],
    ) -> Result<(), BackendError> {
        if !self.slots.keeps_several() {
            return Ok(());
        }
        let (short, _) = self.build(&request.context, self.short_budget);
        let missing = self.target.missing(&self.target.cached, full);
        let short_first = self.decode_time(missing) > LOOK && short.len() < full.len();
        tracing::debug!(
            short = short.len(),
            full = full.len(),
            missing,
            rate = self.prompt_rate,
            short_first,
            "warm"
        );
        if !short_first {
            return Ok(());
        }
        self.switch_to(&short_slot(&request.document));
        let (_, filled) = self.bring_in(
            &request.cancel,
            &short,
            Instant::now(),
            None,
            BACKGROUND_CHUNK,
        );
        self.switch_to(&request.document);
        match filled? {
            Some(Interrupt::Cancelled) => Err(BackendError::Cancelled),
            _ => Ok(()),
        }
    }

    /// Makes the request's document the one in the context and builds its prompt:
    /// the tokens, and the text the first generated token must start with (see
    /// `Prompt::healed`). Refuses prompts that do not fit, and prefetches
    /// ([`CompletionRequest::keeps_cache`]) that would throw away much of the document's cache.
    fn prepare(
        &mut self,
        request: &CompletionRequest,
    ) -> Result<(Vec<Token>, Vec<u8>), BackendError> {
        let started = Instant::now();
        self.switch_to(&request.document);
        let (prompt, heal) = self.build(&request.context, self.budget);
        self.count_prompt(&request.document, &prompt, started.elapsed());
        let n_ctx = self.target.n_ctx();
        if prompt.len() + 1 >= n_ctx {
            return Err(BackendError::Failed(format!(
                "the prompt ({} tokens) does not fit the context ({n_ctx} tokens)",
                prompt.len()
            )));
        }
        if self.background && request.keeps_cache {
            // A prefetch may cost the document the answer it follows and the
            // cursor line, not the body of its prompt: a request that comes instead
            // would have to decode that again.
            let common = common_prefix(&self.target.cached, &prompt);
            if self.target.cached.len() - common > MAX_BACKGROUND_DISCARD {
                return Err(BackendError::Cancelled);
            }
        }
        Ok((prompt, heal))
    }

    /// Brings the cache in line with `prompt` (the reuse plan) and decodes what it
    /// lacks, in chunks, until done, cancelled or out of `limit` (counted from
    /// `started`). Returns the plan applied and why decoding stopped early, if it did.
    fn bring_in(
        &mut self,
        cancel: &CancelFlag,
        prompt: &[Token],
        started: Instant,
        limit: Option<Duration>,
        chunk_size: usize,
    ) -> (ReusePlan, Result<Option<Interrupt>, BackendError>) {
        let reuse = self.target.reuse(prompt);
        self.counters()
            .prompt_tokens_reused
            .fetch_add(reuse.kept as u64, Ordering::Relaxed);
        self.counters()
            .prompt_tokens_shifted
            .fetch_add(reuse.shifted() as u64, Ordering::Relaxed);
        let (tallies, background) = (self.tallies.clone(), self.background);
        // At least one chunk is decoded whatever the time limit, so that a run of
        // requests that each run out of time still makes progress.
        let mut first_chunk = true;
        let (fill_started, cached_before) = (Instant::now(), self.target.cached.len());
        let filled = self.target.fill(
            prompt,
            chunk_size,
            || {
                let out_of_time = limit.is_some_and(|limit| started.elapsed() >= limit);
                if cancel.is_cancelled() {
                    Some(Interrupt::Cancelled)
                } else if out_of_time && !std::mem::take(&mut first_chunk) {
                    Some(Interrupt::OutOfTime)
                } else {
                    first_chunk = false;
                    None
                }
            },
            |n| {
                tallies
                    .of(background)
                    .prompt_tokens_evaluated
                    .fetch_add(n as u64, Ordering::Relaxed);
            },
        );
        let decoded = self.target.cached.len().saturating_sub(cached_before);
        if decoded >= RATE_SAMPLE_TOKENS {
            let rate = decoded as f64 / fill_started.elapsed().as_secs_f64().max(1e-6);
            self.prompt_rate = (self.prompt_rate + rate) / 2.0;
        }
        (reuse, filled)
    }

    /// Generates the answer after a decoded prompt, with drafts verified in batches
    /// when a drafter is set. Greedy either way: a draft token is kept only when it is
    /// the token the model itself picks at its position.
    fn answer(
        &mut self,
        request: &CompletionRequest,
        prompt: &[Token],
        heal: &[u8],
        output: &mut Output<'_>,
        generation_started: Instant,
        forced: &[LlamaToken],
    ) -> Result<StopReason, BackendError> {
        let n_ctx = self.target.n_ctx();
        let mut history = prompt.to_vec();
        let mut logits = LogitsAt(-1);
        // The answer's first tokens, when the caller chose them.
        let mut forced = forced.iter().copied();
        // The next token, and its lead over the runner-up, when verifying drafts
        // already revealed it.
        let mut known_next: Option<(LlamaToken, f32)> = None;
        // Bytes of `heal` still to drop from the tokens' text: the prompt has them.
        let mut heal_left = heal.len();
        loop {
            if request.cancel.is_cancelled() {
                return Err(BackendError::Cancelled);
            }
            if output.generated >= request.max_tokens as usize {
                return Ok(StopReason::TokenLimit);
            }
            if generation_started.elapsed() >= request.generation_time_limit {
                return Ok(StopReason::TimeLimit);
            }
            if self.target.cached.len() + 1 >= n_ctx {
                return Ok(StopReason::ContextFull);
            }
            // The caller's tokens and healing's are chosen, not doubted.
            let (token, lead) = if let Some(token) = forced.next() {
                (token, f32::INFINITY)
            } else if let Some(known) = known_next.take() {
                known
            } else if output.generated == 0 && !heal.is_empty() {
                (self.healing_token(heal, logits), f32::INFINITY)
            } else {
                let (token, lead) = greedy(self.target.context.get_logits_ith(logits.0));
                (LlamaToken(token), lead)
            };
            if output.ends_unsure(lead) {
                return Ok(StopReason::Unsure);
            }
            if self.ends_answer(token) {
                return Ok(StopReason::EndOfGeneration);
            }
            let piece = self.piece(token.0);
            let healed = heal_left.min(piece.len());
            heal_left -= healed;
            if let Some(reason) = output.push(&piece[healed..]) {
                return Ok(reason);
            }
            history.push(token.0);
            let room = (request.max_tokens as usize - output.generated)
                .min(n_ctx.saturating_sub(self.target.cached.len() + 2))
                .min(if forced.len() > 0 { 0 } else { MAX_DRAFT });
            let stop = || {
                request.cancel.is_cancelled()
                    || generation_started.elapsed() >= request.generation_time_limit
            };
            let draft = self.drafter.draft(&history, room, &stop);
            let mut batch = Vec::with_capacity(draft.len() + 1);
            batch.push(token.0);
            batch.extend(&draft);
            let start = self.target.cached.len();
            logits = self.target.decode(&batch, !draft.is_empty())?;
            if draft.is_empty() {
                continue;
            }
            self.counters()
                .drafted_tokens
                .fetch_add(draft.len() as u64, Ordering::Relaxed);
            // Position i of the batch predicts the token after `batch[i]`.
            for (i, &decoded) in batch.iter().enumerate() {
                let (best, margin) = greedy(self.target.context.get_logits_ith(i as i32));
                if margin < MIN_BATCH_MARGIN {
                    // Too close to call from batched arithmetic, which rounds differently
                    // from one-token decoding: decode `decoded` alone and pick from that,
                    // as plain decoding would.
                    self.rewind_to(start + i)?;
                    logits = self.target.decode(&[decoded], false)?;
                    break;
                }
                let Some(&drafted) = draft.get(i) else {
                    known_next = Some((LlamaToken(best), margin));
                    break;
                };
                if best != drafted || output.ends_unsure(margin) {
                    // The cache keeps the token and the accepted drafts before this one
                    // (an unsure one ends the answer in the next turn).
                    self.rewind_to(start + 1 + i)?;
                    known_next = Some((LlamaToken(best), margin));
                    break;
                }
                self.counters()
                    .accepted_tokens
                    .fetch_add(1, Ordering::Relaxed);
                if self.ends_answer(LlamaToken(drafted)) {
                    return Ok(StopReason::EndOfGeneration);
                }
                if let Some(reason) = output.push(self.piece(drafted)) {
                    return Ok(reason);
                }
                history.push(drafted);
            }
        }
    }

    /// The first tokens of up to `n` candidates, best first: the most likely tokens
    /// after the prompt whose text starts with `heal` (see token healing) and, when
    /// the cursor is `at_indentation` (only blanks before it on its line), goes on
    /// with no blank: there, more blanks only indent the greedy answer's line
    /// differently (`    return p, v, t` after `return p, v, t`), which in Python
    /// breaks it. Empty when one candidate is asked for: the greedy answer picks its
    /// own.
    fn first_tokens(&self, heal: &[u8], n: u32, at_indentation: bool) -> Vec<LlamaToken> {
        if n <= 1 {
            return Vec::new();
        }
        // More than the candidates wanted: some lead to the same answer.
        let wanted = n as usize + FIRST_TOKENS_SPARE;
        most_likely(self.target.context.get_logits_ith(-1), wanted, |id| {
            let piece = &self.pieces[id];
            piece.starts_with(heal) && !(at_indentation && starts_blank(&piece[heal.len()..]))
        })
    }

    /// Generates the other candidates after the `greedy` one (its text cut by the stop
    /// rules), each from the prompt: first one line after each seed, then one after
    /// each of the next first tokens, until `request.candidates` distinct ones (and
    /// every seed's) are found or the generation time is
    /// over (with rescoring, two thirds of it); candidates cut by the time limit are
    /// dropped. Returns the candidates (the greedy one first) and their order, best
    /// first: by their likelihood followed by the text after the cursor when
    /// `first_logits` (the prompt's last logits) are given and all are scored within
    /// the time limit, else as generated. The cache is left holding the prompt.
    #[allow(clippy::too_many_arguments)]
    fn candidates(
        &mut self,
        request: &CompletionRequest,
        prompt: &[Token],
        heal: &[u8],
        alternatives: Alternatives<'_>,
        greedy: String,
        first_logits: Option<&[f32]>,
        generation_started: Instant,
    ) -> Result<(Vec<String>, Vec<usize>), BackendError> {
        let limit = request.generation_time_limit;
        let out_of_time = || generation_started.elapsed() >= limit;
        // With rescoring, the last third of the time is kept for it.
        let generating_until = if first_logits.is_some() {
            limit * 2 / 3
        } else {
            limit
        };
        let mut answers = vec![greedy];
        let seeded: Vec<Vec<LlamaToken>> = alternatives
            .seeds
            .iter()
            .filter_map(|name| self.seed_tokens(&request.context, name, heal))
            .collect();
        let wanted = (request.candidates as usize).max(1 + seeded.len());
        let after_blank: Vec<[LlamaToken; 2]> = match alternatives.after_blank {
            // As many as the first tokens would have been, the greedy answer's own
            // left out.
            Some(blank) => self
                .code_tokens_after(prompt, blank, wanted - 1 + FIRST_TOKENS_SPARE)?
                .into_iter()
                .map(|next| [blank, next])
                .collect(),
            None => Vec::new(),
        };
        let starts = seeded
            .iter()
            .map(|tokens| (tokens.as_slice(), true))
            .chain(
                alternatives
                    .firsts
                    .iter()
                    .map(|first| (std::slice::from_ref(first), false)),
            )
            .chain(after_blank.iter().map(|tokens| (tokens.as_slice(), false)));
        for (forced, one_line) in starts {
            if answers.len() >= wanted || generation_started.elapsed() >= generating_until {
                break;
            }
            let (text, cut_short) =
                self.another_answer(request, prompt, heal, forced, one_line, generation_started)?;
            let known = answers.iter().any(|a| a.trim_end() == text.trim_end());
            // A name's line that does not define it is no better than the model's own.
            let undefined = one_line && !candidates::defines(&text, alternatives.seeds);
            if !cut_short && !known && !undefined && !text.trim().is_empty() {
                let text = match alternatives.prompt_logits.filter(|_| one_line) {
                    Some(logits) => self.best_value(
                        request,
                        prompt,
                        heal,
                        logits,
                        alternatives.seeds,
                        text,
                        generation_started,
                        generating_until,
                    )?,
                    None => text,
                };
                answers.push(text);
            }
        }
        self.rewind_to(prompt.len())?;
        let generated_order: Vec<usize> = (0..answers.len()).collect();
        let Some(first_logits) = first_logits.filter(|_| answers.len() > 1) else {
            return Ok((answers, generated_order));
        };
        let following = candidates::following_text(&request.context);
        let heal = String::from_utf8_lossy(heal);
        let mut scores = Vec::with_capacity(answers.len());
        for answer in &answers {
            if request.cancel.is_cancelled() {
                return Err(BackendError::Cancelled);
            }
            if out_of_time() {
                // Some candidates unscored: they cannot be compared.
                return Ok((answers, generated_order));
            }
            let text = format!("{heal}{answer}{following}");
            scores.push(self.log_likelihood(prompt.len(), first_logits, &text, 0)?);
        }
        tracing::debug!(?answers, ?scores, "candidates rescored");
        let order = candidates::best_first(&scores);
        Ok((answers, order))
    }

    /// Whether `token`'s text is blanks only.
    fn is_blank(&self, token: LlamaToken) -> bool {
        let piece = self.piece(token.0);
        !piece.is_empty() && piece.iter().all(u8::is_ascii_whitespace)
    }

    /// The `n` most likely tokens after the prompt and `blank` that start with no
    /// blank, end nothing and are not the greedy choice there (the greedy answer's
    /// own). The cache is left holding the prompt and `blank`.
    fn code_tokens_after(
        &mut self,
        prompt: &[Token],
        blank: LlamaToken,
        n: usize,
    ) -> Result<Vec<LlamaToken>, BackendError> {
        self.rewind_to(prompt.len())?;
        let at = self.target.decode(&[blank.0], false)?;
        let logits = self.target.context.get_logits_ith(at.0);
        let greedy_next = greedy(logits).0 as usize;
        Ok(most_likely(logits, n, |id| {
            let token = LlamaToken(id as i32);
            id != greedy_next
                && !self.pieces[id].is_empty()
                && !starts_blank(&self.pieces[id])
                && !self.ends_answer(token)
        }))
    }

    /// One more answer from the prompt (the cache rewound to it), beginning with
    /// `forced`, which must hold its first token (a rewound cache does not bring the
    /// prompt's logits back), not streamed, ending at the first line break with
    /// `one_line`: its text as the stop rules cut it, and whether a limit cut it short.
    fn another_answer(
        &mut self,
        request: &CompletionRequest,
        prompt: &[Token],
        heal: &[u8],
        forced: &[LlamaToken],
        one_line: bool,
        generation_started: Instant,
    ) -> Result<(String, bool), BackendError> {
        self.rewind_to(prompt.len())?;
        let mut output = Output::new(request, false);
        if one_line {
            output.line_limit = LineLimit::FirstLine;
        }
        let reason = self.answer(
            request,
            prompt,
            heal,
            &mut output,
            generation_started,
            forced,
        )?;
        self.counters()
            .generated_tokens
            .fetch_add(output.generated as u64, Ordering::Relaxed);
        let cut_short = matches!(reason, StopReason::TimeLimit | StopReason::ContextFull);
        // A token limit's cut line goes (as the pipeline cuts the greedy answer's): the
        // answer may replace the greedy one, whose stop reason then no longer applies.
        let answer = if reason == StopReason::TokenLimit {
            postprocess::whole_lines(output.answer())
        } else {
            output.answer()
        };
        Ok((answer.to_owned(), cut_short))
    }

    /// The value of a name's `line` (`name = value`, one of `names`) that makes the
    /// text after the cursor likeliest: the line up to its `=`, then each of the
    /// [`VALUE_BRANCHES`] most likely next tokens continued greedily to the line's
    /// end, and the line as the model writes it after reading the code below
    /// ([`Session::value_after_the_code_below`]); those that read the name they
    /// define dropped, each scored by the log-probability of the text after the
    /// cursor alone (not of its own tokens, which favour the greedy value); ties and
    /// a lack of time keep `line`. The cache is left holding the prompt.
    #[allow(clippy::too_many_arguments)]
    fn best_value(
        &mut self,
        request: &CompletionRequest,
        prompt: &[Token],
        heal: &[u8],
        prompt_logits: &[f32],
        names: &[String],
        line: String,
        generation_started: Instant,
        until: Duration,
    ) -> Result<String, BackendError> {
        let out_of_time = || generation_started.elapsed() >= until;
        self.rewind_to(prompt.len())?;
        let Some(value_at) = candidates::value_start(&line) else {
            return Ok(line);
        };
        let Some(head_tokens) = self.forced_tokens(&line[..value_at], heal) else {
            return Ok(line);
        };
        let following = candidates::following_text(&request.context);
        let heal_text = String::from_utf8_lossy(heal);
        let ids: Vec<Token> = head_tokens.iter().map(|t| t.0).collect();
        self.target.decode(&ids, false)?;
        let branches = most_likely(
            self.target.context.get_logits_ith(-1),
            VALUE_BRANCHES,
            |_| true,
        );
        // Still an assignment at the same `=` (not `==`) defining a name, and a new
        // value.
        let wanted = |variants: &[String], text: &str| {
            candidates::value_start(text) == Some(value_at)
                && candidates::defines(text, names)
                && !variants.iter().any(|v| v.trim_end() == text.trim_end())
        };
        let mut variants = vec![line];
        for branch in branches {
            if out_of_time() {
                break;
            }
            let mut forced = head_tokens.clone();
            forced.push(branch);
            let (text, cut_short) =
                self.another_answer(request, prompt, heal, &forced, true, generation_started)?;
            if !cut_short && wanted(&variants, &text) {
                variants.push(text);
            }
        }
        // A template with a suffix shows the model the code below already.
        if !out_of_time() && self.template.family == Family::PrefixOnly {
            let read_ahead = self.value_after_the_code_below(
                request,
                prompt,
                &format!("{heal_text}{following}"),
                &variants[0][..value_at],
                generation_started,
                until,
            )?;
            if let Some(text) = read_ahead.filter(|text| wanted(&variants, text)) {
                variants.push(text);
            }
        }
        self.rewind_to(prompt.len())?;
        let mut scores = Vec::with_capacity(variants.len());
        for variant in variants.iter().filter(|_| variants.len() > 1) {
            if request.cancel.is_cancelled() {
                return Err(BackendError::Cancelled);
            }
            if out_of_time() {
                break;
            }
            let text = format!("{heal_text}{variant}{following}");
            let after = heal_text.len() + variant.len();
            scores.push(self.log_likelihood(prompt.len(), prompt_logits, &text, after)?);
        }
        if scores.len() < variants.len() {
            return Ok(variants.swap_remove(0));
        }
        tracing::debug!(?variants, ?scores, "values scored");
        let best = candidates::best_first(&scores)[0];
        Ok(variants.swap_remove(best))
    }

    /// The line starting with `head` (a name's line up to its `=`) as the model
    /// writes it after reading the code below: after the prompt come `after_cursor`
    /// (the text `heal` stands for and `candidates::following_text`) and then the
    /// cursor line's start and `head`, continued greedily to the line's end. A
    /// prefix-only model sees there how the name is used (and lines like it: `gc = (maxc-g) / rangec`
    /// below `rc = `). `None` when that text is over [`MAX_SCORED_TOKENS`] long, or
    /// there is no room or time (`until`, counted from `generation_started`). The
    /// cache is left holding the prompt.
    fn value_after_the_code_below(
        &mut self,
        request: &CompletionRequest,
        prompt: &[Token],
        after_cursor: &str,
        head: &str,
        generation_started: Instant,
        until: Duration,
    ) -> Result<Option<String>, BackendError> {
        self.rewind_to(prompt.len())?;
        let below = if after_cursor.ends_with('\n') {
            self.tokenizer.tokenize(after_cursor)
        } else {
            self.tokenizer.tokenize(&format!("{after_cursor}\n"))
        };
        let line_prefix = &request.context.line_prefix;
        let forced: Vec<LlamaToken> = self
            .tokenizer
            .tokenize(&format!("{line_prefix}{head}"))
            .into_iter()
            .map(LlamaToken)
            .collect();
        let room = self.target.n_ctx().saturating_sub(prompt.len() + 2);
        let time_left = until.saturating_sub(generation_started.elapsed());
        if below.len() > MAX_SCORED_TOKENS
            || below.len() + forced.len() + MAX_VALUE_TOKENS > room
            || self.decode_time(below.len()) >= time_left
        {
            return Ok(None);
        }
        for chunk in below.chunks(PROMPT_CHUNK) {
            if request.cancel.is_cancelled() {
                return Err(BackendError::Cancelled);
            }
            if generation_started.elapsed() >= until {
                self.rewind_to(prompt.len())?;
                return Ok(None);
            }
            self.target.decode(chunk, false)?;
        }
        let read_prompt: Vec<Token> = prompt.iter().chain(&below).copied().collect();
        let mut output = Output::new(request, false);
        output.line_limit = LineLimit::FirstLine;
        let reason = self.answer(
            request,
            &read_prompt,
            &[],
            &mut output,
            generation_started,
            &forced,
        )?;
        self.counters()
            .generated_tokens
            .fetch_add(output.generated as u64, Ordering::Relaxed);
        self.rewind_to(prompt.len())?;
        let cut_short = matches!(reason, StopReason::TimeLimit | StopReason::ContextFull);
        Ok(output
            .answer()
            .strip_prefix(line_prefix.as_str())
            .filter(|_| !cut_short)
            .map(str::to_owned))
    }

    /// The log-probability the model gives the tokens of `text` that start at or
    /// after byte `scored_from` (at most [`MAX_SCORED_TOKENS`] of them), `text` coming
    /// right after the prompt (its first `prompt_len` cached tokens), whose last
    /// token's logits are `first_logits`. The cache is left holding the prompt.
    fn log_likelihood(
        &mut self,
        prompt_len: usize,
        first_logits: &[f32],
        text: &str,
        scored_from: usize,
    ) -> Result<f64, BackendError> {
        let mut tokens = self.tokenizer.tokenize(text);
        // Where each token starts in `text`.
        let mut starts = Vec::with_capacity(tokens.len());
        let mut offset = 0;
        for &token in &tokens {
            starts.push(offset);
            offset += self.piece(token).len();
        }
        let first_scored = starts.partition_point(|&start| start < scored_from);
        let room = self.target.n_ctx().saturating_sub(prompt_len + 2);
        tokens.truncate(room.min(first_scored + MAX_SCORED_TOKENS));
        let Some(&first) = tokens.first() else {
            return Ok(0.0);
        };
        let scored = |position: usize| starts[position] >= scored_from;
        let mut total = if scored(0) {
            log_probability(first_logits, first)
        } else {
            0.0
        };
        self.rewind_to(prompt_len)?;
        let mut position = 1;
        for chunk in tokens.chunks(SCORE_CHUNK) {
            self.target.decode(chunk, true)?;
            for i in 0..chunk.len() {
                if let Some(&next) = tokens.get(position)
                    && scored(position)
                {
                    total += log_probability(self.target.context.get_logits_ith(i as i32), next);
                }
                position += 1;
            }
        }
        self.rewind_to(prompt_len)?;
        Ok(total)
    }

    /// The tokens an answer starting with `name` at `context` begins with: those of
    /// the text `heal` stands for (see token healing) and `candidates::seed_text`;
    /// `None` when there is no such text or it does not start with `heal`.
    fn seed_tokens(
        &self,
        context: &CompletionContext,
        name: &str,
        heal: &[u8],
    ) -> Option<Vec<LlamaToken>> {
        self.forced_tokens(&candidates::seed_text(context, name)?, heal)
    }

    /// The tokens of the text `heal` stands for followed by `text`, forced as an
    /// answer's first tokens; `None` when their text does not start with `heal`.
    fn forced_tokens(&self, text: &str, heal: &[u8]) -> Option<Vec<LlamaToken>> {
        let text = format!("{}{text}", String::from_utf8_lossy(heal));
        let tokens: Vec<LlamaToken> = self
            .tokenizer
            .tokenize(&text)
            .into_iter()
            .map(LlamaToken)
            .collect();
        let pieces: Vec<u8> = tokens
            .iter()
            .flat_map(|t| self.piece(t.0).to_vec())
            .collect();
        (!tokens.is_empty() && pieces.starts_with(heal)).then_some(tokens)
    }

    /// Drops the cache after `len` tokens, or fails the request when the model's
    /// cache cannot remove its end (recurrent models): generating on from an
    /// emptied cache would produce nonsense.
    fn rewind_to(&mut self, len: usize) -> Result<(), BackendError> {
        self.target.truncate(len);
        if self.target.cached.len() == len {
            Ok(())
        } else {
            Err(BackendError::Failed(
                "the model's cache cannot be rewound for speculative decoding".into(),
            ))
        }
    }

    fn piece(&self, token: Token) -> &[u8] {
        usize::try_from(token)
            .ok()
            .and_then(|i| self.pieces.get(i))
            .map_or(&[][..], |p| &p[..])
    }

    /// The most likely next token whose text starts with `heal` (greedy, like the sampler).
    fn healing_token(&self, heal: &[u8], at: LogitsAt) -> LlamaToken {
        let logits = self.target.context.get_logits_ith(at.0);
        let mut best: Option<(usize, f32)> = None;
        for (id, &logit) in logits.iter().enumerate() {
            if best.is_none_or(|(_, b)| logit > b) && self.pieces[id].starts_with(heal) {
                best = Some((id, logit));
            }
        }
        // The healed token itself always qualifies, so `best` is set.
        LlamaToken(best.map_or(0, |(id, _)| id as i32))
    }
}

/// How the candidates after the greedy one start.
struct Alternatives<'a> {
    /// Texts each of which starts a one-line candidate (names the code below needs).
    seeds: &'a [String],
    /// Next most likely first tokens, each of which starts a candidate.
    firsts: &'a [LlamaToken],
    /// At the indentation, where the only first token is the blank the prompt's last
    /// token was healed to: the candidates branch at the token after it.
    after_blank: Option<LlamaToken>,
    /// The prompt's last logits, to choose a seeded line's value by the text after
    /// the cursor (see `Session::best_value`).
    prompt_logits: Option<&'a [f32]>,
}

/// Values tried for a name's line: the model's most likely first tokens after `=`.
const VALUE_BRANCHES: usize = 3;

/// Room left for a value written after the code below (see
/// `Session::value_after_the_code_below`).
const MAX_VALUE_TOKENS: usize = 48;

/// The `n` tokens with the highest `logits` among those `allowed` (by id), best first.
fn most_likely(logits: &[f32], n: usize, allowed: impl Fn(usize) -> bool) -> Vec<LlamaToken> {
    if n == 0 {
        return Vec::new();
    }
    let mut best: Vec<(f32, usize)> = Vec::with_capacity(n + 1);
    for (id, &logit) in logits.iter().enumerate() {
        if best.len() == n && logit <= best[n - 1].0 || !allowed(id) {
            continue;
        }
        let at = best.partition_point(|&(l, _)| l >= logit);
        best.insert(at, (logit, id));
        best.truncate(n);
    }
    best.into_iter()
        .map(|(_, id)| LlamaToken(id as i32))
        .collect()
}

/// Whether `text` starts with a blank.
fn starts_blank(text: &[u8]) -> bool {
    text.first().is_some_and(u8::is_ascii_whitespace)
}

/// First tokens considered beyond the candidates wanted (some lead to the same answer).
const FIRST_TOKENS_SPARE: usize = 2;

/// Most tokens rescoring scores (of a candidate and the text after it, or of the
/// text after a value alone).
const MAX_SCORED_TOKENS: usize = 64;

/// Tokens per decode call when rescoring (every one's logits are read).
const SCORE_CHUNK: usize = 32;

/// `log p(token)` under `logits`: the logit minus the log of the sum of exponentials.
fn log_probability(logits: &[f32], token: Token) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&l| f64::from(l - max).exp()).sum();
    let logit = usize::try_from(token)
        .ok()
        .and_then(|i| logits.get(i))
        .copied()
        .unwrap_or(f32::NEG_INFINITY);
    f64::from(logit - max) - sum.ln()
}

/// Generated text, decoded as token bytes arrive. A token may end inside a character
/// (kept pending until the next completes it); bytes that can never be valid UTF-8
/// become U+FFFD rather than stopping the text there.
#[derive(Debug, Default)]
struct Utf8Stream {
    text: String,
    pending: Vec<u8>,
}

impl Utf8Stream {
    fn push(&mut self, bytes: &[u8]) {
        self.pending.extend_from_slice(bytes);
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(valid) => {
                    self.text.push_str(valid);
                    self.pending.clear();
                    return;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    self.text
                        .push_str(std::str::from_utf8(&self.pending[..valid]).expect("valid"));
                    match e.error_len() {
                        // An unfinished character at the end: wait for more bytes.
                        None => {
                            self.pending.drain(..valid);
                            return;
                        }
                        Some(bad) => {
                            self.text.push(char::REPLACEMENT_CHARACTER);
                            self.pending.drain(..valid + bad);
                        }
                    }
                }
            }
        }
    }

    fn as_str(&self) -> &str {
        &self.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_one_line_answer_is_its_first_line_with_code_on_it() {
        assert_eq!(first_code_line_end("x = 1\ny = 2"), Some(5));
        // After `def f():` the answer starts below: that line is the one.
        assert_eq!(first_code_line_end("\n    return x\n"), Some(13));
        assert_eq!(first_code_line_end("\n\n    "), None);
        assert_eq!(first_code_line_end("x = 1"), None);
    }

    #[test]
    fn an_answer_ends_before_an_unsure_token_once_its_line_has_text() {
        let (unsure, sure) = (UNSURE_LEAD - 0.1, UNSURE_LEAD);
        assert!(ends_unsure("space_left =", unsure));
        assert!(!ends_unsure("space_left =", sure));
        // Not before the answer has text enough to be shown.
        assert!(!ends_unsure("", unsure));
        assert!(!ends_unsure("   ", unsure));
        assert!(!ends_unsure(" (", unsure));
        assert!(ends_unsure(" (x", unsure));
        // Not after its first line: the lines after it were planned whole.
        assert!(!ends_unsure("x = 1\n    y", unsure));
    }

    #[test]
    fn most_likely_keeps_the_best_allowed_tokens_best_first() {
        let logits = [0.5, 3.0, -1.0, 2.0, 4.0];
        let ids = |tokens: Vec<LlamaToken>| tokens.iter().map(|t| t.0).collect::<Vec<_>>();
        assert_eq!(ids(most_likely(&logits, 2, |_| true)), [4, 1]);
        assert_eq!(ids(most_likely(&logits, 3, |id| id != 4)), [1, 3, 0]);
        assert!(most_likely(&logits, 0, |_| true).is_empty());
    }

    #[test]
    fn log_probability_is_the_log_softmax_of_the_token() {
        let logits = [1.0f32, 2.0, 3.0];
        let sum: f64 = logits.iter().map(|&l| f64::from(l).exp()).sum();
        for (token, &logit) in logits.iter().enumerate() {
            let expected = f64::from(logit) - sum.ln();
            assert!((log_probability(&logits, token as Token) - expected).abs() < 1e-9);
        }
        assert_eq!(log_probability(&logits, 7), f64::NEG_INFINITY);
    }

    #[test]
    fn utf8_split_across_tokens_is_joined_and_invalid_bytes_replaced() {
        let bytes = "a😀".as_bytes();
        let mut stream = Utf8Stream::default();
        stream.push(&bytes[..3]);
        assert_eq!(stream.as_str(), "a");
        stream.push(&bytes[3..]);
        assert_eq!(stream.as_str(), "a😀");
        stream.push(&[0xE4]);
        stream.push(b"x = 1\n");
        assert_eq!(stream.as_str(), "a😀\u{FFFD}x = 1\n");
    }
}
