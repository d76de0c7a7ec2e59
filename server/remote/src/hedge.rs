//! The hedging backend: local first unless the policy sends a request remote; then
//! remote first, the local engine started too when the remote has no first token
//! within the hedge delay (or at once when the remote fails or answers nothing),
//! the first good answer (one post-processing leaves something of) wins and the
//! loser is cancelled (its HTTP request dropped, its decode stopped at the next
//! token). The default hedge delay
//! is the remote's p90 time to first token over its last [`RECENT`] samples (zero
//! until it is measured, and while it is no shorter than local's median time to a
//! whole answer: both start at once). While the remote's recent median time to a
//! whole answer is no shorter than the local engine's, the order turns: local
//! first, the remote started too when local has not answered within its own p95
//! (the remote hedges local's tail; at the 95th percentile, as "The Tail at Scale"
//! advises, about one race in twenty starts both). Waiting for a remote slower than
//! local would only add its delay to local's time, and running both on every
//! request costs local the CPU and memory bandwidth the remote's answers rarely
//! repay. Every [`PROBE_EVERY`]th such request, and the breaker's half-open probe,
//! start both at once, so the remote's speed is measured again: a remote that
//! became fast goes first again once half of its last answers came sooner than
//! local's median.
//!
//! Invariants:
//! - Nothing leaves the machine unless a remote is configured and its policy (with
//!   the deny-list first) allows the request; background work never does.
//! - A request never waits on the remote longer than the hedge delay before the
//!   local engine starts, nor at all once the remote failed; with local first it
//!   never waits on the remote.
//! - A remote outrun (no first token when local's answer is ready) counts as failed
//!   only under a configured hedge delay, the time the user gave it. Under the
//!   adaptive delay it was slow: the time it had goes into its samples (a lower
//!   bound), which turns the order for a remote slower than local, so a stalled or
//!   cold remote costs local nothing and is not locked out (the probes measure it
//!   again).
//! - The remote's time to first token is sampled only when it started first or with
//!   local: one started late for local's tail is outrun by design, and its wins are
//!   the fast ones.
//! - The user's cancel flag stops both legs; dropping the future stops both too,
//!   and tells the breaker the race gave no verdict (a probe out is released).
//! - Only one leg streams partial text to the client: the first to produce any,
//!   or local after the remote failed.

use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use inkling_core::generate::{
    Backend, BackendError, CancelFlag, CompletionRequest, Generation, TextSink,
};
use inkling_core::{lock, postprocess};
use tokio::sync::watch;

use crate::breaker::{Admission, Breaker};
use crate::client::{self, Failure};
use crate::config::{RemoteConfig, Resolved};
use crate::policy::{self, Local};
use crate::stats::{HedgeStats, Samples, Source};

/// Time-to-first-token samples needed before the order and the hedge delay adapt to
/// them; until then both legs start at once.
const ADAPT_AFTER: usize = 5;
/// The adapted hedge delay is never shorter than this (a local start costs CPU).
const MIN_HEDGE_DELAY: Duration = Duration::from_millis(20);
/// How many recent samples of the remote the adapted order and delay are computed
/// from: its speed changes (a cold cache warms, a cluster gets busy) and the hedge
/// follows. The local engine's are many and steadier: all of its window count.
const RECENT: usize = 10;
/// While local goes first, every this many requests start both legs at once, to
/// measure the remote again.
pub const PROBE_EVERY: u64 = 16;

/// How often a race looks whether the settings replaced its remote.
const SETTINGS_POLL: Duration = Duration::from_millis(20);

/// Requests refused in a row for their size that make a configuration mistake (the
/// remote's context is smaller than inkling's prompts).
const REFUSALS_TO_REPORT: u32 = 3;

/// Called with a sentence for the user (a configuration mistake of the remote).
pub type Reporter = Arc<dyn Fn(String) + Send + Sync>;

/// A configured remote engine.
struct Remote {
    config: RemoteConfig,
    policy: Resolved,
    http: reqwest::Client,
    breaker: Mutex<Breaker>,
    /// Set by a configuration mistake: requests stay local until the settings change.
    misconfigured: AtomicBool,
    /// Requests refused for their size since the last answer.
    refused_in_a_row: AtomicU32,
}

/// The remote engine in use (if any), its statistics, and how to tell the user
/// about a mistake: shared by the pipelines a server runs, so the breaker and the
/// counters survive a restart of the local engine.
#[derive(Default)]
pub struct Remotes {
    remote: Mutex<Option<Arc<Remote>>>,
    stats: Mutex<HedgeStats>,
    reporter: Mutex<Option<Reporter>>,
}

/// `inkling/stats`' view of the remote.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// The counters.
    pub stats: HedgeStats,
    /// The remote's endpoint, when one is configured.
    pub endpoint: Option<String>,
    /// The breaker's state (`closed`, `open`, `half-open`), when a remote is configured.
    pub breaker: Option<&'static str>,
    /// Times the breaker opened.
    pub breaker_trips: u64,
    /// The order of races and the hedge delay in use, when a remote is configured.
    pub order: Option<Order>,
    /// Whether a configuration mistake keeps requests local.
    pub misconfigured: bool,
}

impl Snapshot {
    /// The delay before the second leg of a race starts (zero without a remote).
    pub fn hedge_delay(&self) -> Duration {
        self.order.map_or(Duration::ZERO, Order::delay)
    }
}

impl Remotes {
    /// Uses `config` from the next request on (`None`: no remote). A remote whose
    /// settings did not change is kept, with its breaker.
    pub fn configure(&self, config: Option<&RemoteConfig>) -> Result<(), String> {
        let mut remote = lock(&self.remote);
        if remote.as_ref().map(|r| &r.config) == config {
            return Ok(());
        }
        let Some(config) = config else {
            *remote = None;
            return Ok(());
        };
        let policy = config.resolve()?;
        let http = reqwest::Client::builder()
            .connect_timeout(policy.connect_timeout)
            // The code goes to the configured URL or nowhere (and the audit log names
            // where it went): a redirect is an answer, a configuration mistake.
            .redirect(reqwest::redirect::Policy::none())
            .pool_idle_timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| format!("cannot start an HTTP client: {e}"))?;
        tracing::info!(
            "remote engine: {} ({:?})",
            policy.shown_endpoint,
            policy.format
        );
        // Another remote: how fast the last one was says nothing about it.
        self.record(|s| {
            s.remote.first_token = Samples::default();
            s.remote_answers = Samples::default();
            s.remote_slower = 0;
        });
        *remote = Some(Arc::new(Remote {
            config: config.clone(),
            breaker: Mutex::new(Breaker::new(policy.breaker_failures, policy.breaker_open)),
            policy,
            http,
            misconfigured: AtomicBool::new(false),
            refused_in_a_row: AtomicU32::new(0),
        }));
        Ok(())
    }

    /// Whether a remote is configured and not known to be misconfigured.
    fn may_answer(&self) -> bool {
        lock(&self.remote)
            .as_ref()
            .is_some_and(|r| !r.misconfigured.load(Ordering::Relaxed))
    }

    /// Tells `reporter` about configuration mistakes from now on.
    pub fn set_reporter(&self, reporter: Reporter) {
        *lock(&self.reporter) = Some(reporter);
    }

    /// The statistics and the remote's state.
    pub fn snapshot(&self) -> Snapshot {
        let remote = lock(&self.remote).clone();
        let stats = lock(&self.stats).clone();
        let order = remote.as_ref().map(|r| order(&r.policy, &stats));
        let breaker = remote.as_ref().map(|r| lock(&r.breaker).state().name());
        Snapshot {
            endpoint: remote.as_ref().map(|r| r.policy.shown_endpoint.clone()),
            breaker,
            breaker_trips: remote.as_ref().map_or(0, |r| lock(&r.breaker).trips()),
            order,
            misconfigured: remote
                .as_ref()
                .is_some_and(|r| r.misconfigured.load(Ordering::Relaxed)),
            stats,
        }
    }

    /// Where the last answer came from, when a remote is configured (without one,
    /// every answer is local and there is nothing to tell).
    pub fn last_answer_source(&self) -> Option<Source> {
        lock(&self.remote).as_ref()?;
        lock(&self.stats).last_source
    }

    /// The remote `request` goes to, if any (counting why not), and how its breaker
    /// admitted it (as the half-open probe or not).
    fn route(&self, request: &CompletionRequest) -> Option<(Arc<Remote>, Admission)> {
        let remote = lock(&self.remote).clone()?;
        if request.background {
            return None;
        }
        let mut stats = lock(&self.stats);
        match policy::check(&remote.policy, request) {
            Err(Local::Denied) => {
                stats.denied += 1;
                return None;
            }
            Err(Local::NotAllowed) => {
                stats.kept_local += 1;
                return None;
            }
            Ok(()) => {}
        }
        if remote.misconfigured.load(Ordering::Relaxed) {
            stats.kept_local += 1;
            return None;
        }
        match lock(&remote.breaker).admit(Instant::now()) {
            admission @ (Admission::Allowed | Admission::Probe) => {
                Some((remote.clone(), admission))
            }
            Admission::Refused => {
                stats.skipped_by_breaker += 1;
                None
            }
        }
    }

    /// Counts a remote failure of a request admitted as `admission`: into the
    /// breaker, or (a configuration mistake) reported once; a request the server
    /// refused for its size is neither.
    fn remote_failed(&self, remote: &Remote, failure: &Failure, admission: Admission) {
        tracing::warn!("remote engine {}: {failure}", remote.policy.shown_endpoint);
        lock(&self.stats).remote.failures += 1;
        // One request too large says nothing about the remote (the race's drop guard
        // releases a probe); every one refused so is a remote whose context is
        // smaller than our prompts: a configuration mistake.
        let refused = failure.is_request_refused();
        let refused_in_a_row = if refused {
            remote.refused_in_a_row.fetch_add(1, Ordering::Relaxed) + 1
        } else {
            0
        };
        if refused && refused_in_a_row < REFUSALS_TO_REPORT {
            return;
        }
        if refused || failure.is_configuration_mistake() {
            if !remote.misconfigured.swap(true, Ordering::Relaxed) {
                let what = match failure {
                    Failure::Misconfigured(_) => "cannot be asked",
                    _ if refused => "refused every request as too large",
                    _ => "refused a completion request",
                };
                let message = format!(
                    "inkling: the remote engine at {} {what} ({failure}); requests stay local until its settings change",
                    remote.policy.shown_endpoint
                );
                if let Some(report) = lock(&self.reporter).clone() {
                    report(message);
                }
            }
        } else {
            lock(&remote.breaker).failed(Instant::now(), admission);
        }
    }

    fn record(&self, update: impl FnOnce(&mut HedgeStats)) {
        update(&mut lock(&self.stats));
    }
}

/// Which leg of a race starts first, and when the other starts too.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    /// The remote; the local engine after this delay without a first token.
    RemoteFirst(Duration),
    /// The local engine; the remote after this delay without local's answer.
    LocalFirst(Duration),
}

impl Order {
    /// The delay before the second leg starts.
    pub fn delay(self) -> Duration {
        match self {
            Order::RemoteFirst(delay) | Order::LocalFirst(delay) => delay,
        }
    }

    /// The name of the leg that starts first, for `inkling/stats`.
    pub fn first(self) -> &'static str {
        match self {
            Order::RemoteFirst(_) => Source::Remote.name(),
            Order::LocalFirst(_) => Source::Local.name(),
        }
    }
}

/// The order of a race, given what the remote and the local engine took lately.
fn order(policy: &Resolved, stats: &HedgeStats) -> Order {
    if let Some(delay) = policy.hedge_delay {
        return Order::RemoteFirst(delay);
    }
    let (remote, local) = (&stats.remote.first_token, &stats.local.total);
    if remote.len() < ADAPT_AFTER {
        // Unmeasured: waiting for it could only add to local's time.
        return Order::RemoteFirst(Duration::ZERO);
    }
    let remote_p90 = remote.recent_quantile(0.9, RECENT);
    if local.len() >= ADAPT_AFTER {
        let local_median = local.quantile(0.5);
        // Who goes first: whoever usually has the whole answer first.
        if stats.remote_answers.recent_quantile(0.5, RECENT) >= local_median {
            return Order::LocalFirst(local.quantile(0.95).max(MIN_HEDGE_DELAY));
        }
        if remote_p90 >= local_median {
            // It usually answers first, but waiting for its slow first tokens would
            // hold local's answers back: both at once.
            return Order::RemoteFirst(Duration::ZERO);
        }
    }
    // Not `clamp`: a first-token timeout may be set under the minimum.
    Order::RemoteFirst(
        remote_p90
            .max(MIN_HEDGE_DELAY)
            .min(policy.first_token_timeout),
    )
}

/// Whether post-processing leaves something of `generation` to show, as the
/// pipeline will finish it (a panic in it counts as nothing).
fn shows_something(generation: &Generation, request: &CompletionRequest) -> bool {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        postprocess::finish(generation.text_to_finish(), &request.context, &request.stop).is_some()
    }))
    .unwrap_or(false)
}

/// Which leg owns the partial text stream.
const NOBODY: u8 = 0;
const REMOTE: u8 = 1;
const LOCAL: u8 = 2;

/// `sink`, passing text on only while leg `me` owns the stream (taking it if free).
fn owned_sink(sink: &Option<TextSink>, owner: &Arc<AtomicU8>, me: u8) -> Option<TextSink> {
    let sink = sink.clone()?;
    let owner = owner.clone();
    Some(TextSink::new(move |text| {
        let mine = owner
            .compare_exchange(NOBODY, me, Ordering::Relaxed, Ordering::Relaxed)
            .map_or_else(|holder| holder == me, |_| true);
        if mine {
            sink.send(text);
        }
    }))
}

/// Sets a flag when dropped: stops the local leg whatever way the race ends.
struct CancelOnDrop(CancelFlag);

/// Tells the remote's breaker, when dropped, that the race gave no verdict unless it
/// gave one (after a success or a failure `inconclusive` changes nothing): however
/// a race ends, returned or dropped (a cancelled request), no probe stays out.
struct InconclusiveOnDrop(Arc<Remote>, Admission);

impl Drop for InconclusiveOnDrop {
    fn drop(&mut self) {
        lock(&self.0.breaker).inconclusive(Instant::now(), self.1);
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// The local engine with a remote engine hedged against it. See the module docs.
pub struct Hedged<L> {
    local: L,
    remotes: Arc<Remotes>,
}

type LocalLeg<'a> = Pin<Box<dyn Future<Output = Result<Generation, BackendError>> + Send + 'a>>;

impl<L: Backend> Hedged<L> {
    /// `local`, hedged against the remote in `remotes` (if any).
    pub fn new(local: L, remotes: Arc<Remotes>) -> Hedged<L> {
        Hedged { local, remotes }
    }

    /// The in-process engine.
    pub fn local(&self) -> &L {
        &self.local
    }

    /// The remote engine's state, shared with other pipelines.
    pub fn remotes(&self) -> &Arc<Remotes> {
        &self.remotes
    }

    /// Runs `request` on the local engine alone.
    async fn local_only(&self, request: CompletionRequest) -> Result<Generation, BackendError> {
        let counted = !request.background;
        let started = Instant::now();
        let result = self.local.generate(request).await;
        if counted {
            self.remotes.record(|s| {
                s.local.requests += 1;
                if let Ok(generation) = &result {
                    s.local.answered(started.elapsed(), generation);
                    s.last_source = Some(Source::Local);
                }
            });
        }
        result
    }

    /// Starts the local leg of a race with `request`, unless it was started already;
    /// notes when in `started`.
    fn start_local(
        &self,
        request: &mut Option<CompletionRequest>,
        started: &mut Option<Instant>,
    ) -> Option<LocalLeg<'_>> {
        let request = request.take()?;
        self.remotes.record(|s| s.local.requests += 1);
        *started = Some(Instant::now());
        Some(Box::pin(self.local.generate(request)))
    }

    /// The remote leg is out of a race: local owns the partial text and answers,
    /// started now unless it was; its failure, if it failed already, is the race's.
    fn leave_to_local<'a>(
        &'a self,
        owner: &AtomicU8,
        local_failed: &mut Option<BackendError>,
        local_leg: &mut Option<LocalLeg<'a>>,
        local_request: &mut Option<CompletionRequest>,
        local_started: &mut Option<Instant>,
    ) -> Result<(), BackendError> {
        owner.store(LOCAL, Ordering::Relaxed);
        if let Some(error) = local_failed.take() {
            return Err(error);
        }
        if local_leg.is_none() {
            *local_leg = self.start_local(local_request, local_started);
        }
        Ok(())
    }

    /// The order of a race now, counting the requests that find the remote slower
    /// and turning every [`PROBE_EVERY`]th of them into a race of both at once (and
    /// the breaker's probe: it must reach the remote).
    fn order_now(&self, remote: &Remote, admission: Admission) -> Order {
        let mut stats = lock(&self.remotes.stats);
        match order(&remote.policy, &stats) {
            Order::LocalFirst(_) if admission == Admission::Probe => {
                Order::RemoteFirst(Duration::ZERO)
            }
            Order::LocalFirst(delay) => {
                stats.remote_slower += 1;
                if stats.remote_slower.is_multiple_of(PROBE_EVERY) {
                    Order::RemoteFirst(Duration::ZERO)
                } else {
                    stats.local_first += 1;
                    Order::LocalFirst(delay)
                }
            }
            remote_first => remote_first,
        }
    }

    /// Races `remote` against the local engine for `request`.
    async fn race(
        &self,
        remote: Arc<Remote>,
        admission: Admission,
        request: CompletionRequest,
    ) -> Result<Generation, BackendError> {
        let started = Instant::now();
        let order = self.order_now(&remote, admission);
        let owner = Arc::new(AtomicU8::new(NOBODY));
        let local_cancel = CancelFlag::default();
        let _stop_local = CancelOnDrop(local_cancel.clone());
        let _no_verdict = InconclusiveOnDrop(remote.clone(), admission);
        let user_cancel = request.cancel.clone();
        let remote_request = CompletionRequest {
            partial: owned_sink(&request.partial, &owner, REMOTE),
            ..request.clone()
        };
        let local_request = CompletionRequest {
            partial: owned_sink(&request.partial, &owner, LOCAL),
            cancel: local_cancel.clone(),
            ..request
        };
        let (first_token, first_seen) = watch::channel(None);
        // Polled (so sent) only once started.
        let mut remote_leg = pin!(client::stream(
            &remote.http,
            &remote.policy,
            &remote_request,
            &first_token
        ));
        let mut remote_started: Option<Instant> = None;
        let mut local_leg: Option<LocalLeg<'_>> = None;
        let mut local_request = Some(local_request);
        let mut local_started = None;
        let mut remote_failed = false;
        let mut local_failed: Option<BackendError> = None;
        let second_at = tokio::time::Instant::from_std(started + order.delay());
        // When the remote leg starts unless started already (then: never again).
        let mut remote_at = second_at;
        match order {
            Order::RemoteFirst(_) => {
                // Counted from before local's start, even at a zero delay: the time it
                // had is then at least local's.
                remote_started = Some(started);
                self.remotes.record(|s| s.remote.requests += 1);
            }
            Order::LocalFirst(_) => {
                local_leg = self.start_local(&mut local_request, &mut local_started);
            }
        }
        // Whether the remote's time to first token is sampled (see the module docs).
        let samples_remote = matches!(order, Order::RemoteFirst(_));
        // A branch's guard is read once per `select!`, and the remote leg's poll that
        // sees the first token does not end the `select!`: the timer checks it itself.
        let mut hedge_pending = true;
        let cancelled = async {
            while !user_cancel.is_cancelled() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        let mut cancelled = pin!(cancelled);
        // The settings changed the remote (or removed it) meanwhile: its answer is
        // no longer wanted, whatever it says.
        let replaced = async {
            loop {
                tokio::time::sleep(SETTINGS_POLL).await;
                let current = lock(&self.remotes.remote).clone();
                if !current.is_some_and(|current| Arc::ptr_eq(&current, &remote)) {
                    return;
                }
            }
        };
        let mut replaced = pin!(replaced);
        loop {
            tokio::select! {
                () = &mut replaced, if !remote_failed => {
                    remote_failed = true;
                    self.leave_to_local(&owner, &mut local_failed, &mut local_leg, &mut local_request, &mut local_started)?;
                }
                () = tokio::time::sleep_until(remote_at), if remote_started.is_none() => {
                    remote_started = Some(Instant::now());
                    // Local went first: the remote is its hedge, unless local failed.
                    let hedge = local_failed.is_none();
                    self.remotes.record(|s| {
                        s.remote.requests += 1;
                        s.hedges += u64::from(hedge);
                    });
                }
                result = &mut remote_leg, if remote_started.is_some() && !remote_failed => match result {
                    // Good: something to show once post-processed, as local's answer is.
                    Ok(streamed) if shows_something(&streamed.generation, &remote_request) => {
                        lock(&remote.breaker).succeeded(admission);
                        remote.refused_in_a_row.store(0, Ordering::Relaxed);
                        let remote_time = remote_started.map_or(Duration::ZERO, |at| at.elapsed());
                        self.remotes.record(|s| {
                            s.remote.wins += 1;
                            if samples_remote {
                                s.remote.first_token.record(streamed.first_token);
                                s.remote_answers.record(remote_time);
                            }
                            s.remote.total.record(remote_time);
                            s.last_source = Some(Source::Remote);
                        });
                        return Ok(streamed.generation);
                    }
                    Err(Failure::Cancelled) => return Err(BackendError::Cancelled),
                    // No good answer: the local engine's counts.
                    outcome => {
                        match outcome {
                            // Nothing to show (a server out of time, say): healthy.
                            Ok(streamed) => {
                                lock(&remote.breaker).succeeded(admission);
                                remote.refused_in_a_row.store(0, Ordering::Relaxed);
                                // Its time to an empty answer counts for the hedge
                                // delay too: a slow remote must not look fast.
                                let remote_time = remote_started.map_or(Duration::ZERO, |at| at.elapsed());
                                self.remotes.record(|s| {
                                    s.remote.empty += 1;
                                    if samples_remote {
                                        s.remote.first_token.record(streamed.first_token);
                                        s.remote_answers.record(remote_time);
                                    }
                                });
                            }
                            // Another client's request took the server: no verdict.
                            Err(Failure::Superseded) => {}
                            Err(failure) => self.remotes.remote_failed(&remote, &failure, admission),
                        }
                        remote_failed = true;
                        self.leave_to_local(&owner, &mut local_failed, &mut local_leg, &mut local_request, &mut local_started)?;
                    }
                },
                () = tokio::time::sleep_until(second_at), if hedge_pending && local_leg.is_none() => {
                    hedge_pending = false;
                    if first_seen.borrow().is_none() {
                        self.remotes.record(|s| s.hedges += 1);
                        local_leg = self.start_local(&mut local_request, &mut local_started);
                    }
                }
                result = async { local_leg.as_mut().expect("enabled only when started").await }, if local_leg.is_some() && local_failed.is_none() => match result {
                    Ok(generation) => {
                        let remote_first_token = *first_seen.borrow();
                        // The remote's times to first token and to an answer, at
                        // least, when it gets no verdict.
                        let mut remote_waited = None;
                        let mut remote_answer_after = None;
                        // Not asked, or asked late for local's tail: no verdict.
                        let raced = remote_started.filter(|_| samples_remote && !remote_failed);
                        if let Some(remote_started) = raced {
                            if remote_first_token.is_none() && remote.policy.hedge_delay.is_some() {
                                self.remotes.remote_failed(&remote, &Failure::Outrun, admission);
                            } else {
                                // Answering or merely slow: no verdict.
                                remote_waited = Some(remote_first_token.unwrap_or_else(|| remote_started.elapsed()));
                                remote_answer_after = Some(remote_started.elapsed());
                            }
                        }
                        let local_time = local_started.map_or(Duration::ZERO, |at| at.elapsed());
                        self.remotes.record(|s| {
                            if let Some(waited) = remote_waited {
                                s.remote.first_token.record(waited);
                            }
                            if let Some(after) = remote_answer_after {
                                s.remote_answers.record(after);
                            }
                            s.local.answered(local_time, &generation);
                            // Local went first anyway when the remote was its hedge.
                            s.fallbacks += u64::from(remote_failed && samples_remote);
                            s.last_source = Some(Source::Local);
                        });
                        return Ok(generation);
                    }
                    Err(error) if remote_failed || error == BackendError::Cancelled => return Err(error),
                    // The model is not loaded (or failed): the remote may still answer.
                    Err(error) => {
                        local_failed = Some(error);
                        remote_at = tokio::time::Instant::now();
                    }
                },
                () = &mut cancelled => return Err(BackendError::Cancelled),
            }
        }
    }
}

impl<L: Backend> Backend for Hedged<L> {
    fn is_ready(&self) -> bool {
        self.local.is_ready()
    }

    /// Local's readiness, or, once local failed to load (or is still loading after
    /// `limit`), whether a remote may answer: the requests its policy sends it then
    /// get its answers, the others none, as without a remote.
    async fn ready_within(&self, limit: Duration) -> bool {
        self.local.ready_within(limit).await || self.remotes.may_answer()
    }

    async fn generate(&self, request: CompletionRequest) -> Result<Generation, BackendError> {
        match self.remotes.route(&request) {
            Some((remote, admission)) => self.race(remote, admission, request).await,
            None => self.local_only(request).await,
        }
    }
}

#[cfg(test)]
mod tests;
