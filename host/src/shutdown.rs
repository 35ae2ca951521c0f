//! Ctrl-C and SIGTERM, merged into one future that says which arrived.

/// Resolves on the first Ctrl-C (SIGINT) or SIGTERM, naming it.
///
/// If a signal handler cannot be installed the error is logged and that
/// signal is simply never reported, rather than shutting the host down at once.
pub(crate) async fn signal() -> &'static str {
    let ctrl_c = async {
        match tokio::signal::ctrl_c().await {
            Ok(()) => "SIGINT",
            Err(err) => {
                tracing::error!(cause = %err, "failed to listen for Ctrl-C");
                std::future::pending().await
            }
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut stream) => {
                stream.recv().await;
                "SIGTERM"
            }
            Err(err) => {
                tracing::error!(cause = %err, "failed to listen for SIGTERM");
                std::future::pending().await
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<&'static str>();
    tokio::select! {
        name = ctrl_c => name,
        name = terminate => name,
    }
}
