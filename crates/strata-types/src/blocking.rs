//! Running short blocking work (a file parse, an fsync, a SQLite commit) from async code.

/// Runs `work`, which blocks for a short while, without stalling the async runtime.
///
/// `tokio::task::spawn_blocking` hands the work to another thread and back: two thread
/// wake-ups, tens of microseconds each on a virtual machine, around work that itself takes
/// about as long. On the multi-threaded runtime `block_in_place` runs it on the calling thread
/// instead: on a worker, the worker's other tasks move to another thread first; on a thread
/// that drives a future with `Handle::block_on` (a DIMSE association), nothing needs to move
/// and the work costs no hand-off at all. The current-thread runtime (tests) cannot do that,
/// so there the work goes to the blocking pool.
///
/// A panic in `work` is returned as an error, as `spawn_blocking` would.
pub async fn run_blocking<R, F>(work: F) -> Result<R, BlockingTaskFailed>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    use std::panic::{AssertUnwindSafe, catch_unwind};
    let multi_threaded = tokio::runtime::Handle::try_current()
        .is_ok_and(|handle| handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    if multi_threaded {
        tokio::task::block_in_place(|| catch_unwind(AssertUnwindSafe(work)))
            .map_err(|_| BlockingTaskFailed)
    } else {
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|_| BlockingTaskFailed)
    }
}

/// Blocking work panicked (or its thread was cancelled at shutdown).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a blocking task failed")]
pub struct BlockingTaskFailed;

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn test_work_runs_in_place_on_the_multi_threaded_runtime() {
        let caller = std::thread::current().id();
        let ran_on = run_blocking(|| std::thread::current().id()).await.unwrap();
        assert_eq!(ran_on, caller);
    }

    #[tokio::test]
    async fn test_work_moves_to_the_blocking_pool_on_the_current_thread_runtime() {
        let caller = std::thread::current().id();
        let ran_on = run_blocking(|| std::thread::current().id()).await.unwrap();
        assert_ne!(ran_on, caller);
    }

    #[test]
    fn test_work_runs_in_place_under_block_on_from_a_plain_thread() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .build()
            .unwrap();
        let handle = runtime.handle().clone();
        let caller = std::thread::current().id();
        let ran_on = handle.block_on(run_blocking(|| std::thread::current().id()));
        assert_eq!(ran_on.unwrap(), caller);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn test_a_panic_is_an_error() {
        let result = run_blocking(|| -> u32 { panic!("boom") }).await;
        assert_eq!(result, Err(BlockingTaskFailed));
    }
}
