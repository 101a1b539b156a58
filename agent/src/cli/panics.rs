//! A panic anywhere ends the process: a task of the kube client or of a
//! controller that panicked would otherwise leave the agent running but
//! broken, with /healthz still answering 200, and the kubelet would never
//! restart it.

/// The exit status after a panic (EX_SOFTWARE, "internal software error").
pub const PANIC_EXIT_STATUS: i32 = 70;

/// Installs a hook that reports the panic as the default hook does, then
/// exits with [`PANIC_EXIT_STATUS`], whatever thread or task panicked.
pub fn exit_on_panic() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        report(info);
        tracing::error!("panic: {info}; exiting with status {PANIC_EXIT_STATUS}");
        std::process::exit(PANIC_EXIT_STATUS);
    }));
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;

    const CHILD: &str = "IPWARDEN_PANIC_TEST_CHILD";

    /// Runs the child test below in a process of its own: a tokio task's
    /// panic, which the runtime would catch, ends the whole process.
    #[test]
    fn a_panic_in_a_task_ends_the_process_with_status_70() {
        let out = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "cli::panics::tests::child_panics_in_a_task",
                "--ignored",
                "--nocapture",
            ])
            .env(CHILD, "1")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(PANIC_EXIT_STATUS), "{stderr}");
        assert!(stderr.contains("deliberate"), "{stderr}");
    }

    #[test]
    #[ignore = "run by a_panic_in_a_task_ends_the_process_with_status_70"]
    fn child_panics_in_a_task() {
        if std::env::var_os(CHILD).is_none() {
            return;
        }
        exit_on_panic();
        let rt = tokio::runtime::Runtime::new().unwrap();
        let joined = rt.block_on(async { tokio::spawn(async { panic!("deliberate") }).await });
        // Only reached without the hook: the runtime caught the panic.
        let _ = joined;
        std::process::exit(0);
    }
}
