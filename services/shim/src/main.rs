//! `berth-shim`: `run` (a container's shim) or `exec` (a process in a running container);
//! see the crate's documentation and docs/isolator.md.

use berth_shim::{exec, run, wire};
use std::path::PathBuf;

fn usage() -> ! {
    eprintln!(
        "usage: berth-shim run    (the container comes as a JSON line on stdin)\n       \
         berth-shim exec --id ID --bundle DIR --run-dir DIR --request JSON"
    );
    std::process::exit(2)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(cmd) = args.first() else { usage() };
    let mut opts = std::collections::HashMap::new();
    let mut it = args[1..].iter();
    while let Some(k) = it.next() {
        let Some(name) = k.strip_prefix("--") else {
            usage()
        };
        let Some(v) = it.next() else { usage() };
        opts.insert(name.to_string(), v.clone());
    }
    let get = |k: &str| opts.get(k).cloned().unwrap_or_else(|| usage());
    // Nothing the shim inherited beyond what it was given (`run`: the report socket as stdin;
    // `exec`: the status pipe as fd 3) stays open in it, nor in the container it starts.
    let keep = if cmd == "exec" { 4 } else { 3 };
    if let Err(e) = berth_shim::process::close_from(keep) {
        eprintln!("berth-shim: {e}");
        std::process::exit(1)
    }
    let code = match cmd.as_str() {
        "run" => {
            // The isolator hands the report socket over as stdin (so it can start the shim with
            // posix_spawn, without copying its own address space): move it to the report fd
            // and put /dev/null in its place.
            // SAFETY: dup2/open/close on the standard descriptors of this single-threaded
            // process.
            unsafe {
                if libc::dup2(0, wire::REPORT_FD) < 0 {
                    eprintln!("berth-shim: dup2 of the report socket failed");
                    std::process::exit(1)
                }
                let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
                if null > 0 {
                    libc::dup2(null, 0);
                    libc::close(null);
                }
            }
            // Leave the isolator at once: the isolator reaps this first process and the shim
            // goes on as its child, reparented to init (or the nearest subreaper), in a session
            // of its own so that signals to the isolator's group never reach it.
            // SAFETY: single-threaded here.
            match unsafe { nix::unistd::fork() } {
                Ok(nix::unistd::ForkResult::Parent { .. }) => std::process::exit(0),
                Ok(nix::unistd::ForkResult::Child) => {}
                Err(e) => {
                    eprintln!("berth-shim: fork: {e}");
                    std::process::exit(1)
                }
            }
            if let Err(e) = nix::unistd::setsid() {
                eprintln!("berth-shim: setsid: {e}");
                std::process::exit(1)
            }
            run::run()
        }
        "exec" => {
            let request = match serde_json::from_str(&get("request")) {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("berth-shim exec: --request: {e}");
                    std::process::exit(2)
                }
            };
            exec::run(exec::ExecArgs {
                id: get("id"),
                bundle: PathBuf::from(get("bundle")),
                run_dir: PathBuf::from(get("run-dir")),
                request,
            })
        }
        _ => usage(),
    };
    std::process::exit(code)
}
