//! The suite every content store must pass ([`run`]): what a caller of [`Content`] may rely
//! on, whichever store it is given. Each check starts from an empty store made by the
//! caller's function and panics, naming the check, on the first behaviour that differs.
//!
//! ```no_run
//! berth_store::conformance::run(|| berth_store::MemoryStore::new());
//! ```

use crate::content::{Content, Ingest};
use crate::{Digest, StoreError};
use std::io::Write;

/// One check of the suite: its name and its body.
type Check<S> = (&'static str, fn(&S));

/// Run every check on stores made by `fresh` (each must be empty).
pub fn run<S: Content>(fresh: impl Fn() -> S) {
    let checks: [Check<S>; 9] = [
        ("a stored blob reads back", stored_blob_reads_back),
        ("storing twice is not an error", storing_twice_is_fine),
        (
            "a mismatched put keeps nothing",
            mismatched_put_keeps_nothing,
        ),
        ("an interrupted write resumes", interrupted_write_resumes),
        (
            "a wrong digest at commit keeps nothing",
            wrong_digest_keeps_nothing,
        ),
        ("a wrong size keeps nothing", wrong_size_keeps_nothing),
        (
            "a committed blob has no writer",
            committed_blob_has_no_writer,
        ),
        ("abort and restart discard", abort_and_restart_discard),
        ("delete removes", delete_removes),
    ];
    for (name, check) in checks {
        let s = fresh();
        assert!(
            s.list().unwrap().is_empty() && s.ingests().unwrap().is_empty(),
            "{name}: the store given is not empty"
        );
        check(&s);
        eprintln!("content store conformance: {name}: ok");
    }
}

fn stored_blob_reads_back<S: Content>(s: &S) {
    let a = s.put_bytes(b"hello").unwrap();
    assert_eq!(a, Digest::of(b"hello"));
    let b = s.put_bytes(b"").unwrap();
    assert!(s.has(&a) && s.has(&b));
    assert_eq!(s.read(&a).unwrap(), b"hello");
    assert_eq!(s.size(&a).unwrap(), 5);
    assert_eq!(s.read(&b).unwrap(), b"");
    let mut want = vec![a, b];
    want.sort();
    assert_eq!(s.list().unwrap(), want, "list is every blob, sorted");
}

fn storing_twice_is_fine<S: Content>(s: &S) {
    let d = s.put_bytes(b"twice").unwrap();
    assert_eq!(s.put_bytes(b"twice").unwrap(), d);
    s.put_verified(&d, b"twice").unwrap();
    assert_eq!(s.list().unwrap(), vec![d]);
}

fn mismatched_put_keeps_nothing<S: Content>(s: &S) {
    let claimed = Digest::of(b"what was announced");
    match s.put_verified(&claimed, b"what came") {
        Err(StoreError::DigestMismatch {
            expected,
            actual,
            size,
        }) => {
            assert_eq!(expected, claimed);
            assert_eq!(actual, Digest::of(b"what came"));
            assert_eq!(size, 9);
        }
        other => panic!("a mismatched put gave {other:?}"),
    }
    assert!(!s.has(&claimed) && !s.has(&Digest::of(b"what came")));
    assert!(s.list().unwrap().is_empty());
}

fn interrupted_write_resumes<S: Content>(s: &S) {
    let body = b"0123456789abcdef".repeat(64);
    let d = Digest::of(&body);
    {
        let mut w = s.writer(&d, Some(body.len() as u64)).unwrap();
        assert_eq!(w.offset(), 0);
        w.write_all(&body[..300]).unwrap();
        // Dropped: the partial write stays.
    }
    assert!(!s.has(&d), "nothing is visible before a commit");
    assert_eq!(s.ingests().unwrap(), vec![(d.clone(), 300)]);
    let mut w = s.writer(&d, Some(body.len() as u64)).unwrap();
    assert_eq!(
        w.offset(),
        300,
        "a new writer resumes where the last stopped"
    );
    w.write_all(&body[300..]).unwrap();
    w.commit().unwrap();
    assert_eq!(s.read(&d).unwrap(), body);
    assert!(s.ingests().unwrap().is_empty(), "a commit leaves no ingest");
}

fn wrong_digest_keeps_nothing<S: Content>(s: &S) {
    let d = Digest::of(b"expected bytes");
    let mut w = s.writer(&d, None).unwrap();
    w.write_all(b"other bytes!!!").unwrap();
    assert!(matches!(w.commit(), Err(StoreError::DigestMismatch { .. })));
    assert!(!s.has(&d) && s.list().unwrap().is_empty());
    assert_eq!(s.writer(&d, None).unwrap().offset(), 0, "nothing to resume");
}

fn wrong_size_keeps_nothing<S: Content>(s: &S) {
    let d = Digest::of(b"ten bytes!");
    let mut w = s.writer(&d, Some(10)).unwrap();
    assert!(
        w.write_all(b"eleven bytes").is_err(),
        "more than the size is refused"
    );
    w.write_all(b"ten").unwrap();
    match w.commit() {
        Err(StoreError::SizeMismatch {
            expected, actual, ..
        }) => assert_eq!((expected, actual), (10, 3)),
        other => panic!("a short blob gave {other:?}"),
    }
    assert!(!s.has(&d));
    assert_eq!(s.writer(&d, Some(10)).unwrap().offset(), 0);
}

fn committed_blob_has_no_writer<S: Content>(s: &S) {
    let d = s.put_bytes(b"done").unwrap();
    assert!(matches!(
        s.writer(&d, None),
        Err(StoreError::AlreadyExists { digest }) if digest == d
    ));
}

fn abort_and_restart_discard<S: Content>(s: &S) {
    let d = Digest::of(b"abcdef");
    let mut w = s.writer(&d, Some(6)).unwrap();
    w.write_all(b"xyz").unwrap();
    w.abort().unwrap();
    assert!(s.ingests().unwrap().is_empty(), "an abort leaves no ingest");
    let mut w = s.writer(&d, Some(6)).unwrap();
    assert_eq!(w.offset(), 0);
    w.write_all(b"wrong").unwrap();
    w.restart().unwrap();
    assert_eq!(w.offset(), 0);
    w.write_all(b"abcdef").unwrap();
    w.commit().unwrap();
    assert_eq!(s.read(&d).unwrap(), b"abcdef");
}

fn delete_removes<S: Content>(s: &S) {
    let d = s.put_bytes(b"gone soon").unwrap();
    assert!(s.delete(&d).unwrap());
    assert!(!s.delete(&d).unwrap(), "a second delete finds nothing");
    assert!(!s.has(&d));
    assert!(matches!(s.read(&d), Err(StoreError::NotFound { .. })));
    assert!(matches!(s.size(&d), Err(StoreError::NotFound { .. })));
    assert!(s.list().unwrap().is_empty());
    s.put_bytes(b"gone soon").unwrap();
    assert!(s.has(&d), "a deleted blob can be stored again");
}

#[cfg(test)]
mod tests {
    use crate::{ContentStore, MemoryStore};

    #[test]
    fn the_disk_store_conforms() {
        let dir = tempfile::tempdir().unwrap();
        let n = std::sync::atomic::AtomicUsize::new(0);
        super::run(|| {
            let i = n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            ContentStore::open(dir.path().join(format!("content-{i}"))).unwrap()
        });
    }

    #[test]
    fn the_memory_store_conforms() {
        super::run(MemoryStore::new);
    }
}
