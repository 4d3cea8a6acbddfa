//! Deferred deletion at the lowest priority. What a removal moved out of the way (a trash
//! entry: one rename on the path of the removal) is deleted by one thread of the process at
//! nice 19, so emptying it never takes a processor from a container starting or a reply on its
//! way (on a filesystem mounted with `discard`, each deleted file with data is also a
//! synchronous discard). A trash entry the process did not get to is swept by its owner at its
//! next start.

use std::path::PathBuf;
use std::sync::mpsc::{channel, Sender};
use std::sync::{Mutex, OnceLock};

/// The lowest priority.
pub const NICE: i32 = 19;

static QUEUE: OnceLock<Mutex<Sender<PathBuf>>> = OnceLock::new();
static TID: OnceLock<i32> = OnceLock::new();

/// Delete each of `dirs` (a directory tree or a file) later, on the janitor thread.
pub fn remove_later(dirs: impl IntoIterator<Item = PathBuf>) {
    let q = QUEUE.get_or_init(|| {
        let (tx, rx) = channel::<PathBuf>();
        std::thread::Builder::new()
            .name("berth-janitor".into())
            .spawn(move || {
                // SAFETY: plain syscalls on this thread's own id.
                let tid = unsafe { nix::libc::gettid() };
                let _ = TID.set(tid);
                unsafe {
                    nix::libc::setpriority(nix::libc::PRIO_PROCESS, tid as nix::libc::id_t, NICE)
                };
                for p in rx {
                    let r = match std::fs::symlink_metadata(&p) {
                        Ok(m) if m.is_dir() => std::fs::remove_dir_all(&p),
                        Ok(_) => std::fs::remove_file(&p),
                        Err(e) => Err(e),
                    };
                    match r {
                        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                            tracing::warn!(%e, path = %p.display(), "deleting a trash entry failed")
                        }
                        _ => {}
                    }
                }
            })
            .expect("the janitor thread starts");
        Mutex::new(tx)
    });
    let q = q.lock().expect("janitor queue");
    for d in dirs {
        let _ = q.send(d);
    }
}

/// The janitor thread's id, once it has started.
pub fn thread_id() -> Option<i32> {
    TID.get().copied()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn entries_go_later_on_a_thread_at_the_lowest_priority() {
        let t = tempfile::tempdir().unwrap();
        let tree = t.path().join("tree");
        std::fs::create_dir_all(tree.join("a/b")).unwrap();
        std::fs::write(tree.join("a/b/f"), b"data").unwrap();
        let file = t.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        let gone = t.path().join("never-there");
        remove_later([tree.clone(), file.clone(), gone]);
        let deadline = Instant::now() + Duration::from_secs(10);
        while tree.exists() || file.exists() {
            assert!(Instant::now() < deadline, "not deleted");
            std::thread::sleep(Duration::from_millis(5));
        }
        let tid = thread_id().expect("started");
        let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap();
        // Field 19 is the nice value; the command name (field 2) has no spaces here.
        let nice: i32 = stat.split_whitespace().nth(18).unwrap().parse().unwrap();
        assert_eq!(nice, NICE, "{stat}");
    }
}
