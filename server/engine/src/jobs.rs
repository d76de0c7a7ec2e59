//! The messages the [`crate::Engine`] handle sends its worker thread.

use inkling_core::context::CompletionContext;
use inkling_core::generate::{BackendError, CompletionRequest, Generation};
use tokio::sync::oneshot;

use crate::state::PromptView;

/// One piece of work for the worker, with where its answer goes.
pub(crate) enum Job {
    Complete {
        request: Box<CompletionRequest>,
        reply: oneshot::Sender<Result<Generation, BackendError>>,
    },
    Prompt {
        context: Box<CompletionContext>,
        reply: oneshot::Sender<Result<PromptView, BackendError>>,
    },
}
