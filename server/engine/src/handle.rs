//! The [`Engine`] handle: what other threads hold to talk to the worker, and the
//! engine's side of the [`Backend`] seam.

use std::sync::mpsc::{self, TryRecvError};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use inkling_core::context::CompletionContext;
use inkling_core::generate::{Backend, BackendError, CompletionRequest, Generation};
use tokio::sync::{oneshot, watch};

use crate::counters::{CountersSnapshot, Tallies};
use crate::jobs::Job;
use crate::options::EngineOptions;
use crate::state::{EngineState, PromptView};
use crate::worker;

/// A handle to the engine's worker thread. Cloning shares the same worker, which
/// ends when the last handle is gone.
#[derive(Clone)]
pub struct Engine {
    jobs: mpsc::Sender<Job>,
    state: watch::Receiver<EngineState>,
    tallies: Arc<Tallies>,
    stopped: Arc<Stopped>,
}

/// Set by the worker thread as its last act, when llama.cpp's backend (which one
/// process may hold only once) and the model's memory are released.
#[derive(Default)]
struct Stopped {
    done: Mutex<bool>,
    changed: Condvar,
}

impl Stopped {
    fn set(&self) {
        *self.done.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.changed.notify_all();
    }

    fn wait(&self) {
        let mut done = self.done.lock().unwrap_or_else(|e| e.into_inner());
        while !*done {
            done = self.changed.wait(done).unwrap_or_else(|e| e.into_inner());
        }
    }
}

impl Engine {
    /// Starts the worker, which finds (or fetches) and loads the model in the background.
    pub fn start(options: EngineOptions) -> Engine {
        Engine::start_after(options, None)
    }

    /// Starts an engine that takes over from `previous` (for new options): it loads
    /// once `previous`'s worker has ended, that is once every handle to `previous` is
    /// gone and its request in progress is over, because llama.cpp's backend exists
    /// once per process and two models would need twice the memory. Until then it
    /// reports that it is loading. If it is itself replaced before then, it loads
    /// nothing.
    pub fn replacing(options: EngineOptions, previous: Engine) -> Engine {
        let previous = previous.stopped.clone();
        Engine::start_after(options, Some(previous))
    }

    fn start_after(options: EngineOptions, previous: Option<Arc<Stopped>>) -> Engine {
        let (jobs, job_receiver) = mpsc::channel();
        let (state_sender, state) = watch::channel(EngineState::Loading {
            message: "starting".into(),
            percent: None,
        });
        let tallies = Arc::new(Tallies::default());
        let worker_tallies = tallies.clone();
        let stopped = Arc::new(Stopped::default());
        let worker_stopped = stopped.clone();
        std::thread::Builder::new()
            .name("inkling-engine".into())
            .spawn(move || {
                if let Some(previous) = previous {
                    state_sender.send_replace(EngineState::Loading {
                        message: "waiting for the previous model to be released".into(),
                        percent: None,
                    });
                    previous.wait();
                    // No job is sent before the model is ready, so an empty queue
                    // without senders means nobody holds this engine any more.
                    if let Err(TryRecvError::Disconnected) = job_receiver.try_recv() {
                        worker_stopped.set();
                        return;
                    }
                }
                // A panic (in llama-cpp-2's wrappers, say) must not leave clients
                // waiting on a model that is "loading" for ever: it fails the engine,
                // which then answers every request "not ready", and the server goes on.
                let failed = state_sender.clone();
                let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    worker::run(options, job_receiver, state_sender, worker_tallies)
                }));
                if let Err(panic) = ran {
                    let why = panic
                        .downcast_ref::<&str>()
                        .map(|s| (*s).to_owned())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_default();
                    let message = format!("the engine stopped on an internal error: {why}");
                    tracing::error!("{message}");
                    failed.send_replace(EngineState::Failed(message));
                }
                worker_stopped.set();
            })
            .expect("spawning the engine thread");
        Engine {
            jobs,
            state,
            tallies,
            stopped,
        }
    }

    /// A receiver that sees every state change.
    pub fn subscribe(&self) -> watch::Receiver<EngineState> {
        self.state.clone()
    }

    /// Whether the model is loaded.
    pub fn is_ready(&self) -> bool {
        matches!(*self.state.borrow(), EngineState::Ready(_))
    }

    /// The engine's running totals for requests someone waits for.
    pub fn counters(&self) -> CountersSnapshot {
        self.tallies.foreground.snapshot()
    }

    /// The engine's running totals for background work (prefetches).
    pub fn background_counters(&self) -> CountersSnapshot {
        self.tallies.background.snapshot()
    }

    /// The prompt the model would get for `context`, laid out and tokenized exactly as
    /// for a completion.
    pub async fn prompt(&self, context: CompletionContext) -> Result<PromptView, BackendError> {
        if !self.is_ready() {
            return Err(BackendError::NotReady);
        }
        let (reply, answer) = oneshot::channel();
        let context = Box::new(context);
        self.send(Job::Prompt { context, reply }, answer).await
    }

    async fn send<T>(
        &self,
        job: Job,
        answer: oneshot::Receiver<Result<T, BackendError>>,
    ) -> Result<T, BackendError> {
        let stopped = || BackendError::Failed("the engine thread has stopped".into());
        self.jobs.send(job).map_err(|_| stopped())?;
        answer.await.unwrap_or_else(|_| Err(stopped()))
    }
}

impl Backend for Engine {
    fn is_ready(&self) -> bool {
        Engine::is_ready(self)
    }

    async fn ready_within(&self, limit: Duration) -> bool {
        let mut state = self.subscribe();
        let loaded = state.wait_for(|state| !matches!(state, EngineState::Loading { .. }));
        match tokio::time::timeout(limit, loaded).await {
            Ok(Ok(state)) => matches!(*state, EngineState::Ready(_)),
            _ => false,
        }
    }

    /// Answers [`BackendError::NotReady`] at once while the model is not loaded.
    async fn generate(&self, request: CompletionRequest) -> Result<Generation, BackendError> {
        if !self.is_ready() {
            return Err(BackendError::NotReady);
        }
        let (reply, answer) = oneshot::channel();
        let request = Box::new(request);
        self.send(Job::Complete { request, reply }, answer).await
    }
}
