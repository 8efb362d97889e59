//! Termination signals, reported to the caller: the first starts a graceful shutdown, the
//! second asks to stop without waiting for the drain. What to do then is the caller's choice.

use std::future::Future;

use tokio::sync::oneshot;

/// Two futures: the first SIGTERM/Ctrl-C, and the second. Must be called inside a runtime.
pub fn signals() -> (impl Future<Output = ()>, impl Future<Output = ()>) {
    let (first_tx, first_rx) = oneshot::channel::<()>();
    let (second_tx, second_rx) = oneshot::channel::<()>();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown signal received: draining");
        let _ = first_tx.send(());
        wait_for_signal().await;
        tracing::warn!("second signal: stopping without waiting for the drain");
        let _ = second_tx.send(());
    });
    // A dropped sender (the runtime going away) is not a signal.
    let fired = |rx: oneshot::Receiver<()>| async move {
        if rx.await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    (fired(first_rx), fired(second_rx))
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
