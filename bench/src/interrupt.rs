//! Ctrl-C, SIGTERM and SIGHUP: remove what the run created, then exit.
//!
//! The default action of these signals ends the process without unwinding, so the RAII
//! guards of the round in progress (namespaces, `lb run`, nginx, HAProxy, wrk, MariaDB,
//! pins, temporary directories) never drop and everything stays behind; a SIGTERM (no
//! terminal) does not even reach the children, which keep serving and forwarding. So
//! [`install`] blocks the three signals in every thread of this process (children get a
//! clean mask: std resets it before `exec`) and one thread waits for them. On a signal it
//! kills this process's descendants by PID, then removes everything the harness named
//! after this process (`lb_tests::remove_created_by`), and exits with 128 + the signal.
//! A MariaDB server of the `app` scenario is killed with the other descendants, and its
//! data directory removed by its harness's exit hook.

use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::bail;

/// Set once a signal arrived; the process exits as soon as the cleanup is done.
static STOPPING: AtomicBool = AtomicBool::new(false);

/// Called by the main thread after each round: once a signal arrived, the round it
/// returns from failed only because its children were killed, so it must not be
/// reported (BENCHMARKS.md keeps its last real results). Waits for the exit instead.
pub fn park_if_stopping() {
    while STOPPING.load(Ordering::SeqCst) {
        std::thread::park();
    }
}

/// Blocks SIGINT, SIGTERM and SIGHUP and starts the thread that handles them. Call
/// before any other thread starts (threads inherit the mask from their creator).
pub fn install() -> anyhow::Result<()> {
    // SAFETY: sigset_t is plain data, filled by sigemptyset/sigaddset; pthread_sigmask
    // only changes this thread's mask.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::sigaddset(&mut set, sig);
        }
        let r = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        if r != 0 {
            bail!(
                "blocking SIGINT/SIGTERM: {}",
                std::io::Error::from_raw_os_error(r)
            );
        }
        set
    };
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut sig = 0;
            // SAFETY: waits for one of the signals blocked above.
            if unsafe { libc::sigwait(&set, &mut sig) } != 0 {
                return;
            }
            let name = match sig {
                libc::SIGINT => "SIGINT",
                libc::SIGTERM => "SIGTERM",
                _ => "SIGHUP",
            };
            STOPPING.store(true, Ordering::SeqCst);
            eprintln!("\nlb-bench: {name}: stopping; removing what this run created");
            // Twice: the main thread may have started something between the two passes
            // (its current step fails once its children are killed).
            for _ in 0..2 {
                for line in cleanup() {
                    eprintln!("  {line}");
                }
            }
            std::process::exit(128 + sig);
        })?;
    Ok(())
}

/// Kills every descendant of this process, then removes the harness's namespaces,
/// pins, temporary directories and sockets named after it.
fn cleanup() -> Vec<String> {
    let mut done = lb_tests::kill_descendants();
    done.extend(lb_tests::remove_created_by(std::process::id()));
    done
}
