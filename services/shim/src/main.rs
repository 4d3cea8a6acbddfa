use berth_shim::{exec, run};
use std::path::PathBuf;

fn usage() -> ! {
    eprintln!(
        "usage: berth-shim run --id ID --bundle DIR --run-dir DIR --volumes DIR\n       \
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
    let code = match cmd.as_str() {
        "run" => {
            // Leave the isolator at once: the isolator reaps this first process and the shim
            // goes on as its child, reparented to init (or the nearest subreaper).
            // SAFETY: single-threaded here.
            match unsafe { nix::unistd::fork() } {
                Ok(nix::unistd::ForkResult::Parent { .. }) => std::process::exit(0),
                Ok(nix::unistd::ForkResult::Child) => {}
                Err(e) => {
                    eprintln!("berth-shim: fork: {e}");
                    std::process::exit(1)
                }
            }
            run::run(run::RunArgs {
                id: get("id"),
                bundle: PathBuf::from(get("bundle")),
                run_dir: PathBuf::from(get("run-dir")),
                volumes: PathBuf::from(get("volumes")),
            })
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
