//! Root filesystems of containers: `prepare` (snapshots as lower dirs, a fresh upper and
//! work dir, the record first) and `release`.

use super::*;

/// Names trash entries apart (the same container may be released twice in a row).
static TRASH_SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl LayerStore {
    /// Make the root filesystem of a container: snapshots of its image as lower dirs (topmost
    /// first) and a fresh upper and work dir.
    pub fn prepare(&self, req: &PrepareRequest) -> Result<(PrepareReply, Vec<Unpacked>)> {
        check_container_id(&req.container_id)?;
        let cdir = self.containers.join(&req.container_id);
        let upper = cdir.join("upper");
        let work = cdir.join("work");
        let img = {
            let _g = self.lock.lock().expect("lock");
            let digest = self.resolve(&req.image)?;
            let img = self.read_image(&digest)?;
            if img.layers.is_empty() {
                return Err(LayerStoreError::BadImage {
                    digest: digest.to_string(),
                    reason: "it has no layers".into(),
                });
            }
            let rec = ContainerRec {
                image: req.image.clone(),
                manifest: digest.to_string(),
                chain_ids: img.layers.iter().map(|l| l.chain_id.clone()).collect(),
                upper: upper.display().to_string(),
                work: work.display().to_string(),
            };
            match self.read_record(&req.container_id)? {
                // A retried prepare: the same root filesystem.
                Some(old)
                    if old.manifest == rec.manifest
                        && upper.is_dir()
                        && work.is_dir()
                        && img.layers.iter().all(|l| self.has_snapshot(&l.chain_id)) =>
                {
                    return Ok((self.reply(&img, &upper, &work, req.volatile), Vec::new()));
                }
                Some(old) if old.manifest != rec.manifest => {
                    return Err(LayerStoreError::Conflict(format!(
                        "container {} already has a root filesystem from image {}",
                        req.container_id, old.image
                    )));
                }
                _ => {}
            }
            // Recorded first, so a concurrent gc keeps the snapshots this prepare makes.
            self.write_record(&req.container_id, &rec, !req.volatile)?;
            img
        };
        let made = (|| {
            let unpacked = self.ensure_snapshots(&img)?;
            for d in [&upper, &work] {
                if d.exists() {
                    std::fs::remove_dir_all(d).map_err(io("remove stale", d))?;
                }
                std::fs::create_dir_all(d).map_err(io("create", d))?;
            }
            Ok(unpacked)
        })();
        match made {
            Ok(unpacked) => Ok((self.reply(&img, &upper, &work, req.volatile), unpacked)),
            Err(e) => {
                let _ = self.release(&req.container_id);
                Err(e)
            }
        }
    }

    fn reply(&self, img: &Image, upper: &Path, work: &Path, volatile: bool) -> PrepareReply {
        PrepareReply {
            rootfs: RootfsMount {
                lowerdirs: img
                    .layers
                    .iter()
                    .rev()
                    .map(|l| self.snapshot_fs(&l.chain_id).display().to_string())
                    .collect(),
                upperdir: upper.display().to_string(),
                workdir: work.display().to_string(),
                volatile,
            },
            image_digest: img.digest.to_string(),
            config: img.runtime_config(),
        }
    }

    /// Remove a container's upper and work dirs and its references.
    pub fn release(&self, id: &str) -> Result<()> {
        check_container_id(id)?;
        let _g = self.lock.lock().expect("lock");
        let record = self.record_path(id);
        let had = record.exists();
        let cdir = self.containers.join(id);
        // Out of the way at once (a rename each), deleted in the background; the record goes
        // last, so a release cut short leaves a record without an upper dir, dropped at open.
        let mut moved = Vec::new();
        let mut existed = false;
        for d in ["upper", "work"] {
            let from = cdir.join(d);
            let to = self.own.join(TRASH_DIR).join(format!(
                "{id}.{d}.{}.{}",
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|t| t.as_nanos())
                    .unwrap_or_default(),
                TRASH_SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            ));
            match std::fs::rename(&from, &to) {
                Ok(()) => {
                    existed = true;
                    moved.push(to);
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                // The containers dir on a filesystem of its own: deleted in place.
                Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
                    existed = true;
                    std::fs::remove_dir_all(&from).map_err(io("remove", &from))?;
                }
                Err(e) => return Err(io("move to the trash", &from)(e)),
            }
        }
        berth_files::janitor::remove_later(moved);
        // The container dir is shared with the supervisor: removed only when empty.
        let _ = std::fs::remove_dir(&cdir);
        if had {
            std::fs::remove_file(&record).map_err(io("remove", &record))?;
        }
        if !had && !existed {
            return Err(LayerStoreError::NotFound(format!(
                "container {id} has no root filesystem here"
            )));
        }
        Ok(())
    }
}
